"""Stored video: StartFaceDetection, GetFaceDetection, StartFaceSearch, GetFaceSearch.

StartFace* checks the request, the collection's policy and the threshold floor, copies the
video from configured storage to the job's spool file, reads its metadata (unsupported codec,
too large, too long: refused at once with Rekognition's codes), and stores an IN_PROGRESS job;
its ledger event names the video by SHA-256. A runner thread (video/jobs.py) analyses the video
(video/analysis.py: sampled frames, faces, persons) and ends the job in one transaction: the
results, the status and the job's ledger event ("FaceDetectionJob" / "FaceSearchJob": video
SHA-256, purpose, case, thresholds, summary). In face search each person is searched with the
templates of their best frames; in identification mode the matches are held for review, as for
image search. GetFace* pages through results that never change once written.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from ..context import LOCAL, RequestContext
from ..errors import (
    FaceledgerError,
    IdempotentParameterMismatchException,
    InternalServerError,
    InvalidParameterException,
    LimitExceededException,
    ResourceNotFoundException,
    ThrottlingException,
    VideoTooLargeException,
)
from ..ledger.events import Event
from ..shapes import Shape, bounding_box, face_detail
from ..sources import check_readable
from ..store.catalog import request_hash
from ..imaging import file_sha256
from ..permissions import data_subdir
from ..video.analysis import Analysis, analyse
from ..video.decode import probe
from ..video.jobs import FAILED, IN_PROGRESS, SUCCEEDED, JobRow, JobRunner, JobStore
from ..video.notify import check_channel, completion_message, publish
from ..video.source import download_video, video_ref
from . import collection_members as m
from . import paging
from .collections import DEFAULT_SEARCH_FACES, CollectionOperations
from .core import check_enum
from ..text import logger

log = logger("faceledger.video")

DETECTION, SEARCH = "StartFaceDetection", "StartFaceSearch"
JOB_EVENTS = {DETECTION: "FaceDetectionJob", SEARCH: "FaceSearchJob"}
FACE_ATTRIBUTES = ("DEFAULT", "ALL")
SORT_BY = ("INDEX", "TIMESTAMP")
MAX_VIDEO_RESULTS = 1000
JOB_TAG = re.compile(r"[a-zA-Z0-9_.\-:+=/]{1,1024}")
JOB_ID = re.compile(r"[a-zA-Z0-9\-_]{1,64}")


# Analyses kept in memory for jobs on the same video (persons keep five templates each: small).
RECENT_ANALYSES = 8
_CACHE_LOCK = threading.Lock()


class _Interrupted(Exception):
    """The server is stopping: leave the job IN_PROGRESS for a restart to resume."""


class VideoOperations(CollectionOperations):
    """The four stored-video operations (Rekognition shapes) and their job runner."""

    @cached_property
    def video_jobs(self) -> JobStore:
        """Video jobs and results in the catalog's database."""
        return JobStore(self.engine)

    @cached_property
    def video_runner(self) -> JobRunner:
        s = self.settings
        return JobRunner(self.video_jobs, self._run_job, self._give_up, workers=s.video_workers,
                         stale_seconds=s.video_job_stale_seconds,
                         max_attempts=s.video_max_attempts)

    def start_video_jobs(self) -> None:
        """Start the job runner: resumes jobs a stopped server left IN_PROGRESS."""
        self.video_runner.start()

    def close(self) -> None:
        if "video_runner" in self.__dict__:
            self.video_runner.stop()
        super().close()

    # --- the operations ------------------------------------------------------------------------

    def start_face_detection(self, video: Any = None, client_request_token: str | None = None,
                             notification_channel: Any = None,
                             face_attributes: str | None = None, job_tag: str | None = None,
                             *, ctx: RequestContext = LOCAL) -> Shape:
        """StartFaceDetection: a job that finds every face in a stored video."""
        attrs = "DEFAULT" if face_attributes is None else check_enum(
            face_attributes, FACE_ATTRIBUTES, "FaceAttributes")
        return self._start(DETECTION, ctx, video, client_request_token, notification_channel,
                           job_tag, {"FaceAttributes": attrs})

    def start_face_search(self, video: Any = None, collection_id: str | None = None,
                          client_request_token: str | None = None,
                          face_match_threshold: float | None = None,
                          notification_channel: Any = None, job_tag: str | None = None,
                          *, ctx: RequestContext = LOCAL) -> Shape:
        """StartFaceSearch: a job that follows persons through a stored video and searches a
        collection for each of them."""
        cid = m.collection_id(collection_id)
        threshold = m.threshold(face_match_threshold, "FaceMatchThreshold")
        return self._start(SEARCH, ctx, video, client_request_token, notification_channel,
                           job_tag, {"FaceMatchThreshold": threshold}, collection=cid)

    def get_face_detection(self, job_id: str | None = None, max_results: int | None = None,
                           next_token: str | None = None, *,
                           ctx: RequestContext = LOCAL) -> Shape:
        """GetFaceDetection: the job's status and its faces, in timestamp order."""
        return self._get(DETECTION, "GetFaceDetection", "Faces", ctx, job_id, max_results,
                         next_token, "TIMESTAMP")

    def get_face_search(self, job_id: str | None = None, max_results: int | None = None,
                        next_token: str | None = None, sort_by: str | None = None, *,
                        ctx: RequestContext = LOCAL) -> Shape:
        """GetFaceSearch: the job's status and its persons with their matches."""
        order = "TIMESTAMP" if sort_by is None else check_enum(sort_by, SORT_BY, "SortBy")
        return self._get(SEARCH, "GetFaceSearch", "Persons", ctx, job_id, max_results,
                         next_token, order)

    # --- starting a job ------------------------------------------------------------------------

    def _start(self, kind: str, ctx: RequestContext, video: Any, token: str | None,
               channel: Any, job_tag: str | None, options: dict[str, Any],
               collection: str | None = None) -> Shape:
        ref = video_ref(video)
        tok = m.request_token(token)
        tag = None if job_tag is None else m.match(job_tag, JOB_TAG, "JobTag")
        chan = check_channel(channel, self.settings, ctx)
        check_readable(ref["Bucket"], ref["Name"], ctx)  # before anything is fetched
        params = {"Video": ref, "CollectionId": collection, "JobTag": tag,
                  "NotificationChannel": chan, **options}
        digest = request_hash(params)
        store = self.video_jobs
        self.start_video_jobs()
        spool: Path | None = None
        try:
            with self.audit(kind, ctx, collection=collection) as op:
                if kind == SEARCH and op.policy.require_purpose and not ctx.purpose:
                    # refused now, not after the video was analysed (the job's event checks again)
                    op.refuse_without_purpose()
                op.note(JobTag=tag, Video=ref, **{k: v for k, v in options.items()
                                                   if k != "FaceMatchThreshold"})
                with self.catalog.read() as conn:
                    earlier = None if tok is None else store.by_token(conn, ctx.principal, kind,
                                                                      tok)
                    mine = store.running(conn, ctx.principal)
                    running = store.running(conn)
                    coll = None if collection is None else self._same_model(self._usable(
                        self.catalog.collection(conn, collection), op, embeds=False))
                if earlier is not None:
                    if earlier.request_hash != digest:
                        raise IdempotentParameterMismatchException(
                            f"ClientRequestToken {tok} was used for a different {kind} request.")
                    op.record(job_id=earlier.job_id, replay=True)
                    return {"JobId": earlier.job_id}
                limits = (self.settings.video_max_jobs, self.settings.video_max_jobs_total)
                if mine >= limits[0] or running >= limits[1]:
                    # a quick refusal before the video is fetched; store.admit below decides
                    raise LimitExceededException(
                        f"{mine} of this key's video jobs ({running} in all) are in progress: "
                        f"the limits are {limits[0]} a key and {limits[1]} a server; retry "
                        "when one has ended.")
                point: tuple[float, float] | None = None
                if coll is not None:  # the floor applies before the video is even read
                    point = self._threshold(op, coll, options["FaceMatchThreshold"],
                                            coll.face_count, "FaceMatchThreshold")
                job_id = uuid.uuid4().hex
                spool = self._spool_dir() / job_id
                # the spool file goes if anything below fails, the commit included
                info, sha = self._fetch(ref, spool)
                op.image(sha)
                store.admit(op.conn, ctx.principal, *limits)
                self._insert_job(op.conn, tok, {
                    "job_id": job_id, "kind": kind, "status": IN_PROGRESS,
                    "principal": ctx.principal, "request_id": ctx.request_id,
                    "purpose": ctx.purpose, "case_ref": ctx.case, "client_token": tok,
                    "request_hash": digest, "job_tag": tag, "video": ref,
                    "collection_id": collection,
                    "params": {**params, "Point": point}, "spool": str(spool),
                    "video_sha256": sha, "video_metadata": info,
                    "created_at": time.time(), "owner": self.video_runner.owner,
                    "heartbeat": time.time(), "attempts": 1,
                })
                op.record(job_id=job_id, video_metadata=info)
        except BaseException:
            if spool is not None:
                spool.unlink(missing_ok=True)
            raise
        self.video_runner.submit(job_id)
        return {"JobId": job_id}

    def _insert_job(self, conn: Connection, token: str | None, row: dict[str, Any]) -> None:
        try:
            self.video_jobs.insert(conn, row)
        except IntegrityError:
            if token is None:
                raise
            # the same token arrived twice at once and the other request won: a retry gets
            # its JobId (or the mismatch error) from the token lookup
            raise ThrottlingException(
                f"A request with ClientRequestToken {token} is being started; retry.") from None

    def _spool_dir(self) -> Path:
        return data_subdir(self.settings.data_dir, "video-spool")  # videos: owner-only

    def _fetch(self, ref: dict[str, Any], spool: Path) -> tuple[dict[str, Any], str]:
        """Copy the video to `spool`; its VideoMetadata and SHA-256 (limits checked)."""
        s = self.settings
        download_video(self.resolver, ref, spool, s.max_video_bytes)
        info = probe(spool, s.max_decoded_pixels)
        if info.duration_ms > s.max_video_seconds * 1000:
            raise VideoTooLargeException(
                f"The video lasts {info.duration_ms / 1000:.0f} s; the limit is "
                f"{s.max_video_seconds:.0f} s.")
        return info.shape(), file_sha256(spool)

    # --- running a job -------------------------------------------------------------------------

    def _run_job(self, job_id: str) -> None:
        """The runner's work: analyse, then end the job with results and event (or FAILED)."""
        store = self.video_jobs
        with self.catalog.read() as conn:
            row = store.get(conn, job_id)
        if row is None or row.status != IN_PROGRESS:
            return
        try:
            spool = Path(row.spool) if row.spool else self._spool_dir() / job_id
            if not spool.is_file():  # resumed where the spool file did not survive
                self._fetch(row.video, spool)
                info = probe(spool, self.settings.max_decoded_pixels)
                store.set_video(job_id, file_sha256(spool), info.shape(), str(spool))
            stopping = self.video_runner.stopping

            def progress(_samples: int, _ms: int) -> None:
                if stopping.is_set():
                    raise _Interrupted

            analysis = self._analysis(spool, row, progress)
            if row.kind == SEARCH:
                self._finish_search(row, analysis)
            else:
                self._finish_detection(row, analysis)
        except _Interrupted:
            log.info("video job %s interrupted by shutdown; it resumes on restart", job_id)
            return
        except InternalServerError as exc:
            # a worker process died twice on a frame: the job is resumable, so it starts again
            # (from the beginning: analysis is deterministic) until video_max_attempts
            if self.video_jobs.retry(job_id, self.settings.video_max_attempts):
                log.warning("video job %s: %s; starting it again", job_id, exc.message)
                self.video_runner.submit(job_id)
                return
            self._fail(row, exc.message)
        except FaceledgerError as exc:
            self._fail(row, exc.message)
        except Exception:  # noqa: BLE001 - a bug must end the job, not leave it running
            log.exception("video job %s failed", job_id)
            self._fail(row, "An internal error ended the job; the server log has details.")
        self._ended(job_id)

    def _analysis(self, spool: Path, row: JobRow,
                  progress: Callable[[int, int], None]) -> Analysis:
        """The video's persons: analysed, or remembered from a recent job on the same video
        (same SHA-256, rate and model: a detection then a search, or several collections)."""
        rate = self.settings.video_sample_rate
        key = (row.video_sha256 or file_sha256(spool), rate, self.pipeline.model_version)
        cache: OrderedDict[tuple[str, float, str], Analysis] = self.__dict__.setdefault(
            "_recent_analyses", OrderedDict())
        with _CACHE_LOCK:
            found = cache.get(key)
            if found is not None:
                cache.move_to_end(key)
                return found
        s = self.settings
        found = analyse(spool, self.pipeline, rate, progress=progress,
                        max_pixels=s.max_decoded_pixels, max_frame_rate=s.video_max_frame_rate,
                        max_seconds=s.video_max_job_seconds, max_jpeg_scans=s.max_jpeg_scans)
        with _CACHE_LOCK:
            cache[key] = found
            while len(cache) > RECENT_ANALYSES:
                cache.popitem(last=False)
        return found

    def _context(self, row: JobRow) -> RequestContext:
        return RequestContext(principal=row.principal, purpose=row.purpose, case=row.case,
                              request_id=row.request_id)

    def _finish_detection(self, row: JobRow, analysis: Analysis) -> None:
        info = analysis.info
        entries = []
        for person in analysis.persons:
            for s in person.sightings:
                entries.append((s.timestamp_ms, person.index, {
                    "Timestamp": s.timestamp_ms,
                    "Face": face_detail(s.face, info.width, info.height)}))
        entries.sort(key=lambda e: (e[0], e[1] or 0))
        with self.audit(JOB_EVENTS[DETECTION], self._context(row)) as op:
            self._job_event(op, row, analysis)
            op.record(faces=len(entries))
            self.video_jobs.finish(op.conn, row.job_id, SUCCEEDED, None, entries)

    def _finish_search(self, row: JobRow, analysis: Analysis) -> None:
        info = analysis.info
        cid = str(row.collection_id)
        point = row.params.get("Point")
        with self.audit(JOB_EVENTS[SEARCH], self._context(row), collection=cid) as op:
            self._job_event(op, row, analysis)
            with self.catalog.read() as conn:
                coll = self.catalog.collection(conn, cid)
                coll = self._same_model(self._usable(coll, op, embeds=False))
            searched = coll.face_count
            if point is None:  # pragma: no cover - StartFaceSearch always stores it
                raise InvalidParameterException("The job has no threshold.")
            fmr, similarity = float(point[0]), float(point[1])
            op.note_threshold("FaceMatchThreshold", similarity)
            op.thresholds["FalseMatchRate"] = fmr
            per_person: dict[int, list[Shape]] = {}
            flat: list[Shape] = []
            for person in analysis.persons:
                templates = person.templates()
                if not templates or searched == 0:
                    per_person[person.index] = []
                    continue
                rows, dist = self._nearest(coll, templates, DEFAULT_SEARCH_FACES, set(),
                                           min_similarity=similarity)
                sims = self._calibration_of(coll).similarity(dist)
                order = sorted((i for i in range(len(rows)) if sims[i] >= similarity),
                               key=lambda i: -float(sims[i]))
                matches = [{"Similarity": float(sims[i]),
                            "Face": m.face_shape(rows[i], coll.face_model_version)}
                           for i in order]
                per_person[person.index] = matches
                flat.extend(matches)
            persons_searched = sum(1 for p in analysis.persons if p.templates())
            info_shape = self._info(coll, "FaceMatchThreshold", similarity, fmr, searched)
            info_shape["PersonsSearched"] = persons_searched
            released = op.release({"FaceMatches": flat}, "FaceMatches",
                                  compared=searched * persons_searched)
            held = bool(released.get("ReviewRequired"))
            summary: dict[str, Any] = dict(info_shape)
            if held:
                summary["ReviewRequired"] = True
                summary["ReviewCandidates"] = released.get("ReviewCandidates", [])
            entries = []
            for person in analysis.persons:
                matches = [] if held else per_person.get(person.index, [])
                for s in person.sightings:
                    entries.append((s.timestamp_ms, person.index, {
                        "Timestamp": s.timestamp_ms,
                        "Person": {"Index": person.index,
                                   "BoundingBox": bounding_box(s.face.box, info.width,
                                                               info.height),
                                   "Face": face_detail(s.face, info.width, info.height)},
                        "FaceMatches": matches}))
            op.record(persons=len(analysis.persons),
                      matched_persons=sum(1 for v in per_person.values() if v))
            self.video_jobs.finish(op.conn, row.job_id, SUCCEEDED, None, entries, summary)

    def _job_event(self, op: Any, row: JobRow, analysis: Analysis) -> None:
        if row.video_sha256:
            op.image(row.video_sha256)
        op.note(JobId=row.job_id, JobTag=row.job_tag, Video=row.video,
                SampleRate=self.settings.video_sample_rate)
        op.record(status=SUCCEEDED, samples=analysis.samples, persons=len(analysis.persons),
                  duration_ms=analysis.info.duration_ms)

    def _fail(self, row: JobRow, reason: str) -> None:
        """End the job FAILED with `reason`, and its event, whatever the policy says now."""
        with self.engine.begin() as conn:
            if self.video_jobs.finish(conn, row.job_id, FAILED, reason):
                self.ledger.append(conn, Event(
                    operation=JOB_EVENTS.get(row.kind, row.kind), principal=row.principal,
                    collection=row.collection_id, purpose=row.purpose, case=row.case,
                    images=(row.video_sha256,) if row.video_sha256 else (),
                    params={"JobId": row.job_id}, result={"status": FAILED, "reason": reason},
                    request_id=row.request_id, model_version=self.pipeline.model_version))

    def _give_up(self, job_id: str, reason: str) -> None:
        with self.catalog.read() as conn:
            row = self.video_jobs.get(conn, job_id)
        if row is not None:
            self._fail(row, reason)
            self._ended(job_id)

    def _ended(self, job_id: str) -> None:
        """After a job ended: drop its spool file, publish its notification."""
        with self.catalog.read() as conn:
            row = self.video_jobs.get(conn, job_id)
        if row is None or row.status == IN_PROGRESS:
            return
        (self._spool_dir() / job_id).unlink(missing_ok=True)
        chan = row.params.get("NotificationChannel")
        if chan:
            publish(self.settings, chan["SNSTopicArn"], completion_message(
                job_id, row.status, row.kind, row.job_tag, row.video))

    # --- reading results -----------------------------------------------------------------------

    def _get(self, kind: str, operation: str, key: str, ctx: RequestContext, job_id: Any,
             max_results: Any, next_token: Any, order: str) -> Shape:
        jid = m.match(job_id, JOB_ID, "JobId")
        if isinstance(max_results, int) and not isinstance(max_results, bool):
            max_results = min(max_results, MAX_VIDEO_RESULTS)  # Rekognition caps, not refuses
        limit = m.page_size(max_results, MAX_VIDEO_RESULTS, MAX_VIDEO_RESULTS, "MaxResults",
                            low=1)
        scope = f"{operation}/{order}/{jid}"
        offset = 0 if next_token is None else paging.read_offset_token(next_token, scope)
        store = self.video_jobs
        with self.catalog.read() as conn:
            row = store.get(conn, jid)
        if row is None or row.kind != kind or (row.principal != ctx.principal and not ctx.admin):
            raise ResourceNotFoundException(f"Job {jid} does not exist.")
        page: list[dict[str, Any]] = []
        if row.status == SUCCEEDED:
            # reading results is an event; polling a running or failed job discloses nothing
            # and is not (clients poll every few seconds)
            with self.audit(operation, ctx, collection=row.collection_id,
                            uses_model=False) as op:
                op.note(JobId=jid, MaxResults=limit, SortBy=order if kind == SEARCH else None)
                with self.catalog.read() as conn:
                    page = store.page(conn, jid, order, offset, limit + 1)
                op.record(status=row.status, results=min(len(page), limit))
        out: dict[str, Any] = {"JobStatus": row.status, "JobId": jid,
                               "Video": {"S3Object": row.video}, key: page[:limit]}
        if row.status_message:
            out["StatusMessage"] = row.status_message
        if row.video_metadata:
            out["VideoMetadata"] = row.video_metadata
        if row.job_tag:
            out["JobTag"] = row.job_tag
        if row.summary:
            out.update(row.summary)
        if len(page) > limit:
            out["NextToken"] = paging.make_offset_token(scope, offset + limit)
        return out

