"""Work on a Ray cluster (`--ray ADDRESS|auto`): an executor that is handed its work.

Ray (PyPI `ray`, the optional extra `faceledger[ray]`) places one actor per CPU of the cluster.
The caller hands over a `Work`: a setup function and the small value it runs on (once per actor:
load the models), and a function that turns a batch of items into a result per item. Batches go
to the actors, results come back as they are ready, and a batch whose actor (or node) died is
sent again to the actors left. Nothing else is known here: what the work is (bulk enrolment in
`faceledger.bulk`, evaluation in `faceledger.evaluation.enrolment`) and what is done with the
results (written by the caller, through the service) is the caller's.

What reaches an actor is `Work.config`, the functions by name, each batch's items and the
call's extra arguments: never more than the caller hands over. Ray runs any code a driver
sends, so a cluster that lets in drivers without a token is refused (`connect`): token
authentication (`RAY_AUTH_MODE=token`, Ray >= 2.52) on every node and every driver, on a
private network (docs/deployment.md, SECURITY.md).

Placement, transport and failure detection are Ray's. This module only keeps a bounded number
of batches in flight per actor and sends a batch again when the actor running it died.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar

from .errors import FaceledgerError
from .permissions import open_private
from .text import logger

log = logger("faceledger.cluster")

C = TypeVar("C")
S = TypeVar("S")
T = TypeVar("T")

# Batches in flight per actor: one running, one waiting, so an actor never idles on a round trip.
IN_FLIGHT = 2
# With every actor lost and none placed again for this long, the run stops (resumable).
STALL_SECONDS = 120.0
# How long the address may take to accept a TCP connection before it counts as unreachable.
CONNECT_SECONDS = 10.0


class ClusterError(FaceledgerError):
    """The Ray cluster cannot be reached, lets anyone in, or has no worker that can run."""

    code = "ClusterError"


# Run in a child process with token authentication off: can a driver without a token talk to
# the cluster's GCS? Ray's own client, so the answer is Ray's (its C++ client sends no token
# in "disabled" mode and gets AuthenticationError from a cluster that demands one).
_PROBE = """
import json, socket, sys
address = sys.argv[1]
try:
    import ray._private.services as services
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError
    address = services.canonicalize_bootstrap_address_or_die(address)
    host, _, port = address.rpartition(":")
    socket.create_connection((host.strip("[]"), int(port)), timeout=float(sys.argv[2])).close()
    try:
        GcsClient(address=address)
        verdict = "open"
    except AuthenticationError:
        verdict = "token"
except Exception as exc:
    verdict = "unreachable: " + type(exc).__name__ + ": " + str(exc)[:300]
print(json.dumps({"address": address, "verdict": verdict}))
"""


def _probe(address: str) -> tuple[str, str]:
    """(the GCS address `address` stands for, "open" | "token" | "unreachable: why")."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env["RAY_AUTH_MODE"] = "disabled"  # a driver that holds no token
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE, address, str(CONNECT_SECONDS)],
                             env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return address, "unreachable: no answer in 120 s"
    try:
        found = json.loads(out.stdout.strip().splitlines()[-1])
        return str(found["address"]), str(found["verdict"])
    except (ValueError, IndexError, KeyError):
        return address, f"unreachable: the check failed: {out.stderr.strip()[-300:]}"


def check_authenticated(address: str) -> str:
    """The GCS address of the Ray cluster at `address` ("auto": the one started on this
    machine), if it refuses a driver without a token and this process holds one; otherwise
    ClusterError. Anyone who can drive a Ray cluster runs code on every node, and this
    process unpickles what the cluster's actors send back."""
    resolved, verdict = _probe(address)
    shown = address if address == resolved else f"{address} ({resolved})"
    if verdict == "open":
        raise ClusterError(
            f"The Ray cluster at {shown} accepts drivers without a token: anyone who can "
            "reach it can run code on its nodes, and on this command through the results it "
            "sends back. Start every node with token authentication (RAY_AUTH_MODE=token and "
            "the same token on each, `ray get-auth-token --generate`) on a private network, "
            "as docs/deployment.md describes; faceledger does not use an open cluster.")
    if verdict != "token":
        raise ClusterError(
            f"No Ray cluster at {address!r} ({verdict.removeprefix('unreachable: ')}). Start "
            "one as docs/deployment.md describes, or leave out --ray.")
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        raise ClusterError(
            f"The Ray cluster at {shown} requires a token: run this command with "
            "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN_PATH (a file only "
            "you can read) or ~/.ray/auth_token.")
    check_token_file(os.environ)
    return resolved


def check_token_file(env: Mapping[str, str]) -> None:
    """ClusterError if the file Ray would read this process's token from (RAY_AUTH_TOKEN_PATH,
    else ~/.ray/auth_token, unless RAY_AUTH_TOKEN holds it) can be read by others: whoever
    reads it drives the cluster. `ray get-auth-token --generate` writes it 0644 under the
    usual umask."""
    if env.get("RAY_AUTH_TOKEN"):
        return
    path = Path(env.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # no file: Ray says so when it looks for the token
    if mode & 0o077:
        raise ClusterError(
            f"The Ray token file {path} can be read by other users (mode {mode & 0o777:o}), "
            f"and whoever reads it can run code on the cluster: chmod 600 {path}.")


def connect(address: str) -> None:
    """Join the Ray cluster at `address` ("auto": the one started on this machine by
    `ray start`), once `check_authenticated` has accepted it. The driver itself runs no
    inference and reserves no CPU."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - the extra is installed where --ray is used
        raise ClusterError("--ray needs Ray: pip install 'faceledger[ray]'") from exc
    if ray.is_initialized():
        return
    resolved = check_authenticated(address)
    try:
        ray.init(address=resolved, logging_level=logging.WARNING, log_to_driver=False,
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        why = f"{exc} ({exc.__cause__})" if exc.__cause__ is not None else str(exc)
        if "Authentication" in why:
            why += (" This command's token (RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) is not "
                    "the cluster's.")
        raise ClusterError(f"Could not join the Ray cluster at {resolved}: {why}") from exc


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


@dataclass(frozen=True)
class Work(Generic[C, S]):
    """What the actors do: `setup(config)` once per actor (load the models; its result is the
    actor's state), then `run(state, batch, *args)` for each batch, a list of items, returning
    one result per item in the batch's order (a batch may be analysed as one: batched
    inference). `config` is the one value sent when an actor starts; `setup` and `run` travel
    by name, so they must be module-level functions of an importable module (a closure or a
    lambda would be pickled whole, with whatever it holds)."""

    setup: Callable[[C], S]
    config: C
    run: Callable[..., Sequence[Any]]

    def __post_init__(self) -> None:
        for fn in (self.setup, self.run):
            name = getattr(fn, "__qualname__", "")
            module = getattr(fn, "__module__", "")
            if not name.isidentifier() or getattr(fn, "__closure__", None) or not module \
                    or module == "__main__":
                raise ValueError(f"Work needs module-level functions, not {fn!r}")


class _Actor:
    """A Ray actor's body: the work's state, made once, and the work's batch function."""

    def __init__(self, work: Work[Any, Any]) -> None:
        self.state = work.setup(work.config)
        self.work = work

    def ready(self) -> str:
        """This actor's node and process (its setup is done once this answers)."""
        import ray

        return f"{ray.get_runtime_context().get_node_id()[:8]}/{os.getpid()}"

    def run(self, items: list[Any], *args: Any) -> list[Any]:
        return list(self.work.run(self.state, items, *args))


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


def start_workers(work: Work[Any, Any], n: int | None = None) -> list[Any]:
    """`n` actors (default: one per CPU of the cluster), placed by Ray, each set up for `work`
    once. Pass them to run_batches to use them for several runs of the same work."""
    import ray

    remote_cls: Any = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(_Actor)
    return [remote_cls.remote(work) for _ in range(n or cluster_cpus())]


def stop_workers(workers: Iterable[Any]) -> None:
    import ray

    for actor in workers:
        ray.kill(actor, no_restart=True)


def run_batches(work: Work[Any, Any], items: Iterable[T], *args: Any,
                send: Callable[[T], Any] | None = None,
                batch_size: int = 8, actors: int | None = None,
                stop: Callable[[], bool] | None = None,
                on_event: Callable[[str], None] | None = None,
                workers: Sequence[Any] | None = None,
                ) -> Generator[tuple[list[T], list[Any]], None, None]:
    """`work.run(state, batch, *args)` on actors for every batch of `items`; yield each batch
    (the caller's items) with its results as they come (any order). `send(item)` is what of an
    item travels to the actor (default: all of it); `args`, the same for every batch, travel
    once. A batch whose actor died is sent again (to another actor); the dead actor is
    replaced if the cluster has room for it. `stop()` true: nothing new is sent, batches in
    flight are still yielded. `workers` (from start_workers with the same work) are used and
    left running; otherwise actors are started and stopped here."""
    import ray

    arg_refs = [ray.put(a) for a in args]  # shared by every batch, sent once
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
        a = start_workers(work, 1)[0]
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
                    shipped = batch.items if send is None else [send(i) for i in batch.items]
                    running[actor.run.remote(shipped, *arg_refs)] = (actor, batch)
                    live[actor] += 1
            work_left = bool(retry) or not (exhausted or (stop is not None and stop()))
            if not running and not work_left:
                return
            if not running and not live:
                if not starting and init_failures and not started_ok:
                    raise ClusterError("no Ray actor could be set up (load its models; "
                                       "see the Ray worker logs)")
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
                                    f"a Ray actor could not be set up (load its models): {exc}"
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


# --- a cluster on this machine (tests, benchmarks, trying --ray out) -------------------------


def _node_env(auth: Mapping[str, str]) -> dict[str, str]:
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
    env.update(auth)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """Ray nodes on this machine, each a real raylet (`ray start --block`, a process tree of its
    own): a head and `workers` more, `cpus` CPUs each, a small object store, no dashboard.
    Set up as docs/deployment.md says: token authentication (a fresh token in `base`, mode
    0600) and the nodes on a private address (loopback here). `open_to_anyone=True` starts
    the head as the docs said before (plain `ray start --head`): only for the test that shows
    why faceledger refuses such a cluster. Stopped (SIGKILL to each node's processes, never by
    name) with `stop()`."""

    def __init__(self, base: Path, *, workers: int = 1, cpus: int = 1,
                 object_store_mb: int = 200, open_to_anyone: bool = False) -> None:
        import shutil

        self.base = base
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.cpus_per_node = cpus
        self.ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
        self.auth: dict[str, str] = {}
        private: list[str] = []
        if not open_to_anyone:
            token = base / "ray-auth-token"
            with open_private(token) as f:
                f.write(secrets.token_hex(32).encode())
            self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
            private = ["--node-ip-address", "127.0.0.1"]
        self.common = ["--num-cpus", str(cpus), "--object-store-memory",
                       str(object_store_mb * 1024 * 1024), "--disable-usage-stats", "--block",
                       *private]
        self.head = self._start(["--head", "--port", str(self.port), "--include-dashboard",
                                 "false", "--temp-dir", str(base / "ray")] + self.common, "head")
        self.workers: list[subprocess.Popen[bytes]] = []
        self.wait_for_cpus(cpus)
        for _ in range(workers):
            self.start_worker()

    def driver_env(self) -> dict[str, str]:
        """What a driver's environment needs to join this cluster (its token's file)."""
        return dict(self.auth)

    def _start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        with (self.base / f"{name}.log").open("ab") as log:  # the child keeps its own copy
            return subprocess.Popen([self.ray, "start", *args], env=_node_env(self.auth),
                                    stdout=log, stderr=subprocess.STDOUT)

    def cpus(self) -> float:
        """The cluster's CPUs as `ray status` reports them (0 while it is not up)."""
        out = subprocess.run([self.ray, "status", "--address", self.address],
                             env=_node_env(self.auth), capture_output=True, text=True,
                             timeout=60)
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
