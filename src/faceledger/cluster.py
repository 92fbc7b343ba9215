"""Decoding and inference on a Ray cluster (`--ray ADDRESS|auto`), writes where they are today.

Ray (PyPI `ray`, the optional extra `faceledger[ray]`) places one actor per CPU of the cluster;
each actor builds the face pipeline from the Settings it is given (so the model version is the
caller's: enrolment, re-enrolment into another model and evaluation share it) and loads the
models once. The caller sends batches of images (file paths readable on every node, or objects
of configured buckets) and gets small results back: digests, boxes, templates. Nothing is
written by an actor: the caller writes each result through the same service code as without
Ray (one IndexFaces, one transaction and one ledger event per image), so a node that dies loses
only results that were never written; their batches are sent again to the actors left, and
a rerun skips every image already indexed (by SHA-256).

Placement, transport and failure detection are Ray's. This module only keeps a bounded number
of batches in flight per actor and sends a batch again when the actor running it died.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar

import numpy as np
from numpy.typing import NDArray

from .errors import FaceledgerError
from .settings import Settings
from .text import logger

log = logger("faceledger.cluster")

T = TypeVar("T")
R = TypeVar("R")

# Batches in flight per actor: one running, one waiting, so an actor never idles on a round trip.
IN_FLIGHT = 2
# With every actor lost and none placed again for this long, the run stops (resumable).
STALL_SECONDS = 120.0


class ClusterError(FaceledgerError):
    """The Ray cluster cannot be reached or has no worker that can run."""

    code = "ClusterError"


def connect(address: str) -> None:
    """Join the Ray cluster at `address` ("auto": the one started on this machine by
    `ray start`). The driver itself runs no inference and reserves no CPU."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - the extra is installed where --ray is used
        raise ClusterError("--ray needs Ray: pip install 'faceledger[ray]'") from exc
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(
            f"No Ray cluster at {address!r} ({exc}). Start one with `ray start --head` "
            "(and `ray start --address HEAD:6379` on each other node), or leave out --ray."
        ) from exc


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


@contextmanager
def session(address: str) -> Iterator[TextIO]:
    """Joined to the Ray cluster at `address` for the block, left after it.

    Ray's driver `print`s cluster events (a node marked dead, seen even by the next run) to
    `sys.stdout`, but a command's stdout is its data (`--json` summaries, reports): for the
    session `sys.stdout` is stderr, where such events belong. Yields the real stdout, for
    output of the command's own during the session."""
    real = sys.stdout
    sys.stdout = sys.stderr
    try:
        connect(address)
        yield real
    finally:
        try:
            disconnect()
        finally:
            sys.stdout = real


def cluster_cpus() -> int:
    """CPUs of the live nodes: how many actors to place."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return max(1, int(resources.get("CPU", 1)))


class Worker:
    """A Ray actor's body: a face pipeline (and the service's decoding rules) loaded once."""

    def __init__(self, settings: Settings) -> None:
        import cv2

        from .server.storage import build_resolver
        from .service.core import ServiceCore

        cv2.setNumThreads(1)  # one actor per CPU already
        self.core = ServiceCore(settings, resolver=build_resolver(settings))
        self.core.pipeline.warm_up()

    def ready(self) -> str:
        """This actor's node and process (its models are loaded once this answers)."""
        import ray

        return f"{ray.get_runtime_context().get_node_id()[:8]}/{os.getpid()}"

    def analyse(self, items: list[Any], known: NDArray[np.bytes_]) -> list[Any]:
        """Bulk enrolment: see `faceledger.bulk.analyse_item`."""
        from .bulk import analyse_item

        return [analyse_item(self.core, item, lambda sha: is_known(known, sha))
                for item in items]

    def enrol(self, items: list[tuple[int, str]], embed: bool) -> list[Any]:
        """Evaluation: `faceledger.evaluation.enrolment.enrol_bytes` of each (index, path)."""
        from pathlib import Path

        from .evaluation.enrolment import enrol_bytes

        return [enrol_bytes(self.core.pipeline, Path(p).read_bytes(), embed=embed)
                for _, p in items]


def known_digests(hashes: Iterable[str]) -> NDArray[np.bytes_]:
    """Hex SHA-256 digests as a sorted array of 32-byte values (shared zero-copy by Ray)."""
    return np.array(sorted(bytes.fromhex(h) for h in hashes), dtype="S32")


def is_known(known: NDArray[np.bytes_], sha256: str) -> bool:
    if len(known) == 0:
        return False
    probe = np.array([bytes.fromhex(sha256)], dtype="S32")
    i = int(np.searchsorted(known, probe[0]))
    return i < len(known) and bool(known[i] == probe[0])


@dataclass
class _Batch(Generic[T]):
    items: list[T]
    attempts: int = 0


def _lost(exc: BaseException) -> bool:
    """Errors that mean the actor, its node or the result went away (not a bug in the call)."""
    import ray.exceptions as rex

    return isinstance(exc, (rex.RayActorError, rex.ObjectLostError, rex.OwnerDiedError,
                            rex.WorkerCrashedError, rex.NodeDiedError,
                            rex.LocalRayletDiedError))


def start_workers(settings: Settings, n: int | None = None) -> list[Any]:
    """`n` Worker actors (default: one per CPU of the cluster), placed by Ray; each loads the
    pipeline of `settings` once. Pass them to run_batches to use them for several runs."""
    import ray

    remote_cls: Any = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(Worker)
    return [remote_cls.remote(settings) for _ in range(n or cluster_cpus())]


def stop_workers(workers: Iterable[Any]) -> None:
    import ray

    for actor in workers:
        ray.kill(actor, no_restart=True)


def run_batches(settings: Settings, items: Iterable[T], method: str, *args: Any,
                batch_size: int = 8, actors: int | None = None,
                stop: Callable[[], bool] | None = None,
                on_event: Callable[[str], None] | None = None,
                workers: Sequence[Any] | None = None,
                ) -> Generator[tuple[list[T], list[Any]], None, None]:
    """Call `Worker.<method>(batch, *args)` on actors for every batch of `items`; yield each
    batch with its results as they come (any order). A batch whose actor died is sent again
    (to another actor); the dead actor is replaced if the cluster has room for it. `stop()`
    true: nothing new is sent, batches in flight are still yielded. `workers` (from
    start_workers) are used and left running; otherwise actors are started and stopped here."""
    import ray

    arg_refs = [ray.put(a) if isinstance(a, np.ndarray) else a for a in args]
    n = len(workers) if workers else (actors or cluster_cpus())
    given = set(workers or ())
    todo: Iterator[T] = iter(items)
    retry: deque[_Batch[T]] = deque()
    starting: dict[Any, Any] = {}   # ready() ref -> actor
    live: dict[Any, int] = {}       # actor -> batches in flight
    running: dict[Any, tuple[Any, _Batch[T]]] = {}  # result ref -> (actor, batch)
    exhausted = False
    started_ok = 0
    init_failures = 0
    idle_since = time.monotonic()

    def start() -> None:
        a = start_workers(settings, 1)[0]
        starting[a.ready.remote()] = a

    def note(text: str) -> None:
        """To the caller's `on_event` (a command prints it), else to the log: once."""
        if on_event is not None:
            on_event(text)
        else:
            log.warning(text)

    def next_batch() -> _Batch[T] | None:
        nonlocal exhausted
        if retry:
            return retry.popleft()
        if exhausted or (stop is not None and stop()):
            return None
        chunk: list[T] = []
        for item in todo:
            chunk.append(item)
            if len(chunk) >= batch_size:
                break
        if len(chunk) < batch_size:
            exhausted = True
        return _Batch(chunk) if chunk else None

    if workers:
        for a in workers:
            starting[a.ready.remote()] = a
    else:
        for _ in range(n):
            start()
    try:
        while True:
            # send: every live actor up to IN_FLIGHT batches
            for actor in list(live):
                while live[actor] < IN_FLIGHT:
                    batch = next_batch()
                    if batch is None:
                        break
                    batch.attempts += 1
                    running[getattr(actor, method).remote(batch.items, *arg_refs)] = (
                        actor, batch)
                    live[actor] += 1
            work_left = bool(retry) or not (exhausted or (stop is not None and stop()))
            if not running and not work_left:
                return
            if not running and not live:
                if not starting and init_failures and not started_ok:
                    raise ClusterError("no Ray actor could load the face pipeline "
                                       "(see the Ray worker logs)")
                if time.monotonic() - idle_since > STALL_SECONDS:
                    raise ClusterError(
                        f"no Ray actor has been available for {STALL_SECONDS:.0f} s; "
                        "run the same command again once the cluster has CPUs")
                if not starting:
                    start()
            else:
                idle_since = time.monotonic()
            ready, _ = ray.wait(list(running) + list(starting), num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        where = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a failed start, any cause
                        init_failures += 1
                        note(f"a Ray actor was lost before it started ({type(exc).__name__})"
                             if _lost(exc) else f"a Ray actor failed to start: {exc}")
                        if not _lost(exc):
                            if not live and not running:
                                raise ClusterError(
                                    f"a Ray actor could not load the face pipeline: {exc}"
                                ) from exc
                            continue
                        start()
                        continue
                    started_ok += 1
                    if on_event is not None:
                        on_event(f"Ray actor ready on node/pid {where}")
                    live[actor] = 0
                    continue
                actor, batch = running.pop(ref)
                try:
                    results = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - sorted out just below
                    if not _lost(exc):
                        raise
                    # the actor (or its node) is gone: its batch goes again, to another actor
                    note(f"a Ray actor was lost ({type(exc).__name__}); "
                         f"{len(batch.items)} images sent again")
                    if actor in live:
                        del live[actor]
                        ray.kill(actor, no_restart=True)
                        start()  # placed by Ray when (and where) the cluster has room
                    retry.append(batch)
                    continue
                if actor in live:
                    live[actor] -= 1
                yield batch.items, list(results)
    finally:
        stop_workers(a for a in list(live) + list(starting.values()) if a not in given)


def batched(seq: Sequence[T], size: int) -> Iterator[list[T]]:
    for s in range(0, len(seq), size):
        yield list(seq[s:s + size])


# --- a cluster on this machine (tests, benchmarks, trying --ray out) -------------------------


def _node_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACELEDGER_", "RAY_"))}
    # the nodes' worker processes import the faceledger this process runs (not this
    # process's whole sys.path: a script's folder there may shadow the standard library)
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(
        [src] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray runs its workers 15 nicer than the raylet by default; here they share the machine
    # with other work (and benchmarks compare them with a process pool): run them as is
    env["RAY_worker_niceness"] = "0"
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """Ray nodes on this machine, each a real raylet (`ray start --block`, a process tree of its
    own): a head and `workers` more, `cpus` CPUs each, a small object store, no dashboard.
    Stopped (SIGKILL to each node's processes, never by name) with `stop()`."""

    def __init__(self, base: Path, *, workers: int = 1, cpus: int = 1,
                 object_store_mb: int = 200) -> None:
        import shutil

        self.base = base
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.cpus_per_node = cpus
        self.ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
        self.common = ["--num-cpus", str(cpus), "--object-store-memory",
                       str(object_store_mb * 1024 * 1024), "--disable-usage-stats", "--block"]
        self.head = self._start(["--head", "--port", str(self.port), "--include-dashboard",
                                 "false", "--temp-dir", str(base / "ray")] + self.common, "head")
        self.workers: list[subprocess.Popen[bytes]] = []
        self.wait_for_cpus(cpus)
        for _ in range(workers):
            self.start_worker()

    def _start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        with (self.base / f"{name}.log").open("ab") as log:  # the child keeps its own copy
            return subprocess.Popen([self.ray, "start", *args], env=_node_env(), stdout=log,
                                    stderr=subprocess.STDOUT)

    def cpus(self) -> float:
        """The cluster's CPUs as `ray status` reports them (0 while it is not up)."""
        out = subprocess.run([self.ray, "status", "--address", self.address], env=_node_env(),
                             capture_output=True, text=True, timeout=60)
        for line in out.stdout.splitlines():
            if line.strip().endswith(" CPU") and "/" in line:
                return float(line.split("/")[1].split()[0])
        return 0.0

    def wait_for_cpus(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.cpus() != n:
            if self.head.poll() is not None:
                raise ClusterError((self.base / "head.log").read_text()[-2000:])
            if time.monotonic() > deadline:
                raise ClusterError(f"the local Ray cluster never had {n} CPUs")
            time.sleep(1.0)

    def start_worker(self) -> None:
        self.workers.append(self._start(["--address", self.address] + self.common,
                                        f"worker{len(self.workers)}"))
        self.wait_for_cpus(self.cpus_per_node * (1 + len(self.workers)))

    @staticmethod
    def _kill(node: subprocess.Popen[bytes]) -> None:
        """SIGKILL to a node's processes at once: the raylet, its agents and its workers (Ray
        puts each worker in a process group of its own, so a group kill would miss them)."""
        import psutil  # type: ignore[import-untyped]

        try:
            procs = [psutil.Process(node.pid)]
            procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            procs = []
        for proc in procs:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)
        node.wait(timeout=30)

    def kill_worker(self) -> None:
        """The last worker node dies at once, as a machine that loses power."""
        self._kill(self.workers.pop())

    def processes(self) -> list[int]:
        """Pids of every process of the cluster (for CPU accounting)."""
        import psutil

        pids = []
        for node in [self.head, *self.workers]:
            try:
                p = psutil.Process(node.pid)
                pids += [p.pid] + [c.pid for c in p.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return pids

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            self._kill(node)
        self.workers = []
