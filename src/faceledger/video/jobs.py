"""Video jobs that survive: their state and results in the catalog's database, and the runner.

A job is a row in `fl_video_jobs`, IN_PROGRESS from the moment StartFace* answers. The runner
that owns it (one per server process, `owner` a random id) refreshes the job's `heartbeat`
every few seconds. Any runner that sees an IN_PROGRESS job whose heartbeat is older than
`stale_seconds` (its server was killed, or stopped mid-job) claims it with a compare-and-swap
update and starts it again from the beginning (analysis is deterministic); after
`max_attempts` starts the job ends FAILED with the reason instead. So no job stays
IN_PROGRESS for longer than one stale period after a server is back.

Results (`fl_video_results`) are written only when the job ends, in the same transaction that
marks it SUCCEEDED (and appends its ledger event): a GetFace* page never sees half a job, and
pages of a finished job never change.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from ..db import create_tables
from ..text import logger

log = logger("faceledger.video")

IN_PROGRESS, SUCCEEDED, FAILED = "IN_PROGRESS", "SUCCEEDED", "FAILED"

metadata = sa.MetaData()

jobs = sa.Table(
    "fl_video_jobs",
    metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),  # StartFaceDetection / StartFaceSearch
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_message", sa.Text, nullable=True),
    sa.Column("principal", sa.String(255), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("purpose", sa.Text, nullable=True),
    sa.Column("case_ref", sa.Text, nullable=True),
    sa.Column("client_token", sa.String(64), nullable=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("job_tag", sa.String(1024), nullable=True),
    sa.Column("video", sa.Text, nullable=False),  # the S3Object reference, JSON
    sa.Column("collection_id", sa.String(255), nullable=True),
    sa.Column("params", sa.Text, nullable=False),  # thresholds, attributes, channel: JSON
    sa.Column("spool", sa.Text, nullable=True),  # local copy of the video while the job runs
    sa.Column("video_sha256", sa.String(64), nullable=True),
    sa.Column("video_metadata", sa.Text, nullable=True),
    sa.Column("summary", sa.Text, nullable=True),  # extra response members when done, JSON
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=1),
    sa.UniqueConstraint("principal", "kind", "client_token", name="uq_fl_video_jobs_token"),
    sa.Index("ix_fl_video_jobs_status", "status", "heartbeat"),
)

results = sa.Table(
    "fl_video_results",
    metadata,
    sa.Column("job_id", sa.ForeignKey("fl_video_jobs.job_id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("timestamp_ms", sa.BigInteger, nullable=False),
    sa.Column("person_index", sa.Integer, nullable=True),
    sa.Column("body", sa.Text, nullable=False),  # one Faces/Persons entry, JSON
    sa.PrimaryKeyConstraint("job_id", "seq"),
    sa.Index("ix_fl_video_results_time", "job_id", "timestamp_ms", "person_index", "seq"),
    sa.Index("ix_fl_video_results_person", "job_id", "person_index", "timestamp_ms", "seq"),
)


# One row: starting a job updates it first, which serialises starts (a row lock on PostgreSQL,
# the write lock on SQLite) so that counting the jobs in progress and inserting one is atomic.
gate = sa.Table(
    "fl_video_job_gate",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("starts", sa.BigInteger, nullable=False),
)


@dataclass(frozen=True)
class JobRow:
    """A video job as stored."""

    job_id: str
    kind: str
    status: str
    status_message: str | None
    principal: str
    request_id: str
    purpose: str | None
    case: str | None
    client_token: str | None
    request_hash: str
    job_tag: str | None
    video: dict[str, Any]
    collection_id: str | None
    params: dict[str, Any]
    spool: str | None
    video_sha256: str | None
    video_metadata: dict[str, Any] | None
    summary: dict[str, Any] | None
    created_at: float
    finished_at: float | None
    attempts: int


def _row(r: Any) -> JobRow:
    return JobRow(
        job_id=r.job_id, kind=r.kind, status=r.status, status_message=r.status_message,
        principal=r.principal, request_id=r.request_id, purpose=r.purpose, case=r.case_ref,
        client_token=r.client_token, request_hash=r.request_hash, job_tag=r.job_tag,
        video=json.loads(r.video), collection_id=r.collection_id, params=json.loads(r.params),
        spool=r.spool, video_sha256=r.video_sha256,
        video_metadata=None if r.video_metadata is None else json.loads(r.video_metadata),
        summary=None if r.summary is None else json.loads(r.summary),
        created_at=r.created_at, finished_at=r.finished_at, attempts=r.attempts,
    )


class JobStore:
    """Job rows and their results in SQL (the catalog's engine)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine, metadata)  # servers starting together race to create them
        try:
            with engine.begin() as conn:
                if conn.execute(sa.select(gate.c.id)).first() is None:
                    conn.execute(sa.insert(gate).values(id=1, starts=0))
        except sa.exc.IntegrityError:
            pass  # another server made it first

    def admit(self, conn: Connection, principal: str, per_key: int, total: int) -> None:
        """Take the start gate in `conn`'s transaction (held until it ends), then refuse with
        LimitExceededException if `principal` has `per_key` jobs in progress or the server
        `total`: the count and the caller's insert are atomic across threads and servers."""
        from ..errors import LimitExceededException

        conn.execute(sa.update(gate).where(gate.c.id == 1).values(starts=gate.c.starts + 1))
        mine = self.running(conn, principal)
        if mine >= per_key:
            raise LimitExceededException(
                f"This key has {mine} video jobs in progress, the most one key may run at once "
                f"({per_key}); retry when one has ended.")
        everyone = self.running(conn)
        if everyone >= total:
            raise LimitExceededException(
                f"The server runs the most video jobs it runs at once ({total}); retry when one "
                "has ended.")

    def insert(self, conn: Connection, row: dict[str, Any]) -> None:
        values = dict(row)
        for key in ("video", "params", "video_metadata"):
            if key in values and not isinstance(values[key], str) and values[key] is not None:
                values[key] = json.dumps(values[key], sort_keys=True)
        conn.execute(sa.insert(jobs).values(**values))

    def get(self, conn: Connection, job_id: str) -> JobRow | None:
        r = conn.execute(sa.select(jobs).where(jobs.c.job_id == job_id)).first()
        return None if r is None else _row(r)

    def by_token(self, conn: Connection, principal: str, kind: str, token: str) -> JobRow | None:
        r = conn.execute(sa.select(jobs).where(
            jobs.c.principal == principal, jobs.c.kind == kind, jobs.c.client_token == token,
        )).first()
        return None if r is None else _row(r)

    def running(self, conn: Connection, principal: str | None = None) -> int:
        """Jobs IN_PROGRESS (of `principal`, or of everyone)."""
        where = [jobs.c.status == IN_PROGRESS]
        if principal is not None:
            where.append(jobs.c.principal == principal)
        return int(conn.execute(sa.select(sa.func.count()).select_from(jobs).where(
            *where)).scalar_one())

    def finish(self, conn: Connection, job_id: str, status: str, message: str | None,
               entries: Sequence[tuple[int, int | None, dict[str, Any]]] = (),
               summary: dict[str, Any] | None = None) -> bool:
        """End the job (if still IN_PROGRESS) with its results; False if it had already ended."""
        done = conn.execute(sa.update(jobs).where(
            jobs.c.job_id == job_id, jobs.c.status == IN_PROGRESS,
        ).values(status=status, status_message=message, finished_at=time.time(),
                 summary=None if summary is None else json.dumps(summary, sort_keys=True),
                 spool=None))
        if done.rowcount != 1:
            return False
        rows = [{"job_id": job_id, "seq": i, "timestamp_ms": t, "person_index": p,
                 "body": json.dumps(body, separators=(",", ":"))}
                for i, (t, p, body) in enumerate(entries)]
        for start in range(0, len(rows), 1000):
            conn.execute(sa.insert(results), rows[start:start + 1000])
        return True

    def page(self, conn: Connection, job_id: str, order: str, offset: int, limit: int
             ) -> list[dict[str, Any]]:
        """Results `offset`..`offset+limit` in `order` (TIMESTAMP or INDEX)."""
        r = results.c
        keys = ((r.timestamp_ms, r.person_index, r.seq) if order == "TIMESTAMP"
                else (r.person_index, r.timestamp_ms, r.seq))
        rows = conn.execute(sa.select(r.body).where(r.job_id == job_id).order_by(*keys)
                            .offset(offset).limit(limit)).all()
        return [json.loads(b) for (b,) in rows]

    def retry(self, job_id: str, max_attempts: int) -> bool:
        """Count one more start of an IN_PROGRESS job; False once it has had `max_attempts`."""
        with self.engine.begin() as conn:
            done = conn.execute(sa.update(jobs).where(
                jobs.c.job_id == job_id, jobs.c.status == IN_PROGRESS,
                jobs.c.attempts < max_attempts,
            ).values(attempts=jobs.c.attempts + 1, heartbeat=time.time()))
        return done.rowcount == 1

    def set_video(self, job_id: str, sha256: str, metadata_shape: dict[str, Any],
                  spool: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(jobs).where(jobs.c.job_id == job_id).values(
                video_sha256=sha256, video_metadata=json.dumps(metadata_shape), spool=spool))


class JobRunner:
    """Runs jobs on worker threads, keeps their heartbeats, and takes over stale jobs."""

    def __init__(self, store: JobStore, work: Callable[[str], None],
                 give_up: Callable[[str, str], None], *, workers: int = 1,
                 stale_seconds: float = 30.0, max_attempts: int = 3) -> None:
        self.store = store
        self.work = work
        self.give_up = give_up
        self.owner = uuid.uuid4().hex
        self.workers = max(1, workers)
        self.stale = max(stale_seconds, 0.5)
        self.beat = self.stale / 4
        self.max_attempts = max(1, max_attempts)
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the workers and the heartbeat (idempotent); stale jobs are claimed at once."""
        with self._lock:
            if self._threads:
                return
            self.sweep()
            for i in range(self.workers):
                t = threading.Thread(target=self._worker, daemon=True,
                                     name=f"faceledger-video-{i}")
                t.start()
                self._threads.append(t)
            t = threading.Thread(target=self._heartbeat, daemon=True,
                                 name="faceledger-video-heartbeat")
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work; a job cut short stays IN_PROGRESS, marked stale so that the next
        server (or another one running) resumes it at once."""
        self.stopping.set()
        for _ in range(self.workers):
            self.queue.put(None)
        for t in self._threads:
            t.join(timeout=timeout)
        self._threads = []
        try:  # hand our unfinished jobs over: the next server takes them without waiting
            with self.store.engine.begin() as conn:
                conn.execute(sa.update(jobs).where(
                    jobs.c.owner == self.owner, jobs.c.status == IN_PROGRESS,
                ).values(heartbeat=0.0))
        except Exception:  # noqa: BLE001 - they are taken over once stale anyway
            log.exception("could not hand over unfinished video jobs")

    def submit(self, job_id: str) -> None:
        self.queue.put(job_id)

    def _worker(self) -> None:
        while not self.stopping.is_set():
            job_id = self.queue.get()
            if job_id is None:
                return
            try:
                self.work(job_id)
            except Exception:  # noqa: BLE001 - a job's failure must not end the worker
                log.exception("video job %s failed unexpectedly", job_id)

    def _heartbeat(self) -> None:
        while not self.stopping.wait(self.beat):
            try:
                with self.store.engine.begin() as conn:
                    conn.execute(sa.update(jobs).where(
                        jobs.c.owner == self.owner, jobs.c.status == IN_PROGRESS,
                    ).values(heartbeat=time.time()))
                self.sweep()
            except Exception:  # noqa: BLE001 - the database may be briefly unavailable
                log.exception("video job heartbeat failed")

    def sweep(self) -> list[str]:
        """Claim IN_PROGRESS jobs whose owner stopped beating; resume or fail each."""
        now = time.time()
        with self.store.engine.connect() as conn:
            stale = conn.execute(sa.select(jobs.c.job_id, jobs.c.owner, jobs.c.heartbeat,
                                           jobs.c.attempts).where(
                jobs.c.status == IN_PROGRESS, jobs.c.heartbeat < now - self.stale,
            )).all()
        claimed = []
        for job_id, owner, beat, attempts in stale:
            with self.store.engine.begin() as conn:
                took = conn.execute(sa.update(jobs).where(
                    jobs.c.job_id == job_id, jobs.c.status == IN_PROGRESS,
                    jobs.c.heartbeat == beat,
                    jobs.c.owner.is_(None) if owner is None else jobs.c.owner == owner,
                ).values(owner=self.owner, heartbeat=now, attempts=attempts + 1))
            if took.rowcount != 1:
                continue  # another server claimed it first
            if attempts >= self.max_attempts:
                self.give_up(job_id, f"The job was started {attempts} times and its server "
                                     "stopped each time before it ended; it was not retried.")
                continue
            log.warning("resuming video job %s (its server stopped; start %d)", job_id,
                        attempts + 1)
            claimed.append(job_id)
            self.submit(job_id)
        return claimed
