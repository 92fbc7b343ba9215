"""A face pipeline whose inference runs in worker processes, one model set per process.

dlib's HOG detector and 5-point predictor hold the GIL, and FacePipeline serialises its callers
with a lock, so threads give one core per process (bench/parallel.py measures it). PipelinePool
keeps the FacePipeline interface for the service (which stays in the calling process, with the
catalog, the vector index, the ledger and the admission limits) and sends each `analyze` /
`embed_boxes` call to one of N spawned processes: N images are analysed at once.

Pixels travel pickled through a pipe (a 1280x960 RGB image is 3.7 MB: about a millisecond).
A worker that dies (a crash inside a native library, the OOM killer, an operator's kill) breaks
the pool. Before each call a pool with a dead worker is replaced (an idle worker killed between
requests costs no request), and a call whose pool broke under it is sent once more to a fresh
pool (analysis is a pure function of its input): only input that kills a worker twice fails,
with InternalServerError.

Every call names the model version to embed with; each worker loads an embedder the first time
it is asked for its version (collections bound to another model than the configured one).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

import numpy as np
from numpy.typing import NDArray

from ..errors import InternalServerError
from ..model_versions import canonical
from ..settings import Settings
from .pipeline import FacePipeline
from .types import Box, Embedder, FaceAnalysis, FacesOfImage, Landmarks5, RGBImage
from ..text import logger

log = logger("faceledger.vision")

# The pipeline of this worker process, made by the pool initializer (models load once there).
_worker: dict[str, FacePipeline] = {}


def _init_worker(settings_json: str) -> None:
    import signal

    import cv2

    # Ctrl-C reaches the whole process group: the parent decides how to stop (finish what is
    # in progress, then shut the pool down); a worker killed mid-call would break the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)  # one process per core already; nested threads only contend
    _worker["pipeline"] = FacePipeline(Settings.model_validate_json(settings_json))
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True,
                     name="faceledger-orphan-watch").start()


def _exit_with_parent(parent: int) -> None:
    # A server killed outright (SIGKILL, OOM) cannot stop its pool: do not outlive it.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _warm_up() -> tuple[str, int, bool]:
    p = _worker["pipeline"]
    p.warm_up()
    return p.model_version, int(p.embedder.dim), bool(p.embedder.needs_landmarks)


def _describe(model_version: str) -> tuple[str, int, bool]:
    e = _worker["pipeline"].embedder_for(model_version)
    return str(e.model_version), int(e.dim), bool(e.needs_landmarks)


def _analyze(pixels: RGBImage, embed: bool, max_faces: int | None,
             model_version: str | None = None) -> list[FaceAnalysis]:
    return _worker["pipeline"].analyze(pixels, embed=embed, max_faces=max_faces,
                                       model_version=model_version)


def _analyze_batch(images: list[RGBImage], embed: bool, max_faces: int | None,
                   model_version: str | None) -> list[list[FaceAnalysis]]:
    return _worker["pipeline"].analyze_batch(images, embed=embed, max_faces=max_faces,
                                             model_version=model_version)


def _embed_many(items: list[FacesOfImage], model_version: str | None) -> list[NDArray[np.float32]]:
    return _worker["pipeline"].embed_many(items, model_version)


def _embed_boxes(
    pixels: RGBImage, boxes: list[Box], landmarks: list[Landmarks5] | None,
    model_version: str | None = None,
) -> NDArray[np.float32]:
    return _worker["pipeline"].embed_boxes(pixels, boxes, landmarks, model_version)


def default_workers(configured: int = 0) -> int:
    """`configured`, or one per core the process may use when it is 0."""
    if configured > 0:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


class _RemoteEmbedder:
    """`pipeline.embedder` of a pool: its version and dimension, embedding in a worker."""

    def __init__(
        self, pool: PipelinePool, model_version: str, dim: int, needs_landmarks: bool
    ) -> None:
        self.pool = pool
        self.model_version = model_version
        self.dim = dim
        self.needs_landmarks = needs_landmarks

    def embed(
        self, pixels: RGBImage, boxes: list[Box], landmarks: list[Landmarks5] | None = None
    ) -> NDArray[np.float32]:
        return self.pool.embed_boxes(pixels, boxes, landmarks, self.model_version)


class PipelinePool(FacePipeline):
    """FacePipeline with `analyze` and `embed_boxes` run by `processes` worker processes."""

    def __init__(self, settings: Settings | None = None, processes: int = 2) -> None:
        super().__init__(settings)
        if processes < 1:
            raise ValueError("a pipeline pool needs at least one process")
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._remote: _RemoteEmbedder | None = None
        self._remotes: dict[str, _RemoteEmbedder] = {}

    def _executor(self) -> ProcessPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                # spawn, not fork: the parent runs threads (server, request pool) and may hold
                # open database connections that a forked child must never touch.
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(self.settings.model_dump_json(),),
                )
            return self._pool

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        with self._pool_lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

    def _live_executor(self) -> ProcessPoolExecutor:
        """The pool, replaced first if one of its workers has died (or it broke)."""
        pool = self._executor()
        # ProcessPoolExecutor notices a dead worker only from its management thread, a moment
        # after the death: look at the processes themselves (`_processes`, `_broken` are
        # CPython's, unchanged since 3.8)
        procs = dict(getattr(pool, "_processes", None) or {})
        if getattr(pool, "_broken", False) or any(not p.is_alive() for p in procs.values()):
            log.warning("a pipeline worker process had died; replacing the pool")
            self._discard(pool)
            pool = self._executor()
        return pool

    def _call(self, fn: object, *args: object) -> object:
        for attempt in (1, 2):
            pool = self._live_executor()
            try:
                return pool.submit(fn, *args).result()  # type: ignore[arg-type]
            except BrokenProcessPool as exc:
                log.error("a pipeline worker process died during a call (attempt %d)", attempt,
                          exc_info=exc)
                self._discard(pool)
        raise InternalServerError(
            "A face analysis worker stopped unexpectedly twice on this input; retry the request.")

    def warm_up(self) -> None:
        """Start every worker process and load its models now."""
        pool = self._executor()
        futures = [pool.submit(_warm_up) for _ in range(self.processes)]
        try:
            version, dim, needs_landmarks = futures[0].result()
            for f in futures[1:]:
                f.result()
        except BrokenProcessPool as exc:
            self._discard(pool)
            raise RuntimeError("the pipeline worker processes could not start") from exc
        self._remote = _RemoteEmbedder(self, version, dim, needs_landmarks)

    @property
    def embedder(self) -> Embedder:  # the models live in the workers
        if self._remote is None:
            self.warm_up()
        assert self._remote is not None
        return self._remote

    def embedder_for(self, model_version: str | None) -> Embedder:
        """The embedder of `model_version` as the workers run it (its dimension and whether it
        aligns by landmarks asked of one worker once; each worker loads it on first use)."""
        if model_version is None:
            return self.embedder
        version = canonical(model_version)
        if version == self.model_version:
            return self.embedder
        found = self._remotes.get(version)
        if found is None:
            out = self._call(_describe, version)
            assert isinstance(out, tuple)
            found = _RemoteEmbedder(self, *out)
            self._remotes[version] = found
        return found

    def analyze(
        self, pixels: RGBImage, *, embed: bool = True, max_faces: int | None = None,
        model_version: str | None = None,
    ) -> list[FaceAnalysis]:
        out = self._call(_analyze, pixels, embed, max_faces, model_version)
        assert isinstance(out, list)
        return out

    def analyze_batch(
        self, images: Sequence[RGBImage], *, embed: bool = True, max_faces: int | None = None,
        model_version: str | None = None,
    ) -> list[list[FaceAnalysis]]:
        """The images analysed together by one worker (its embedder takes their faces in
        runs of `Settings.embed_batch`): bulk callers send a batch per call."""
        out = self._call(_analyze_batch, list(images), embed, max_faces, model_version)
        assert isinstance(out, list)
        return out

    def embed_boxes(
        self, pixels: RGBImage, boxes: list[Box], landmarks: list[Landmarks5] | None = None,
        model_version: str | None = None,
    ) -> NDArray[np.float32]:
        out = self._call(_embed_boxes, pixels, boxes, landmarks, model_version)
        assert isinstance(out, np.ndarray)
        return out

    def embed_many(
        self, items: Sequence[FacesOfImage], model_version: str | None = None
    ) -> list[NDArray[np.float32]]:
        out = self._call(_embed_many, list(items), model_version)
        assert isinstance(out, list)
        return out

    def close(self) -> None:
        """Stop the worker processes (waiting for calls in progress)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
