"""Bulk enrolment for evaluation: image files -> one face each (the one nearest the image
centre, LFW's labelling convention) -> template, through the full pipeline, cached on disk.

The cache holds one small `.npz` per (model version, detector configuration, image SHA-256),
so a rerun reads templates instead of recomputing them and any number of runs can share it.
Never pickle: `np.load(..., allow_pickle=False)` reads only plain arrays.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import TextIO

import numpy as np
from numpy.typing import NDArray

from ..cluster import Work, run_batches, session
from ..errors import FaceledgerError
from ..imaging import decode_image, sha256_hex
from ..model_versions import canonical, legacy_names
from ..permissions import private_dir, write_private
from ..settings import Settings
from ..vision import FacePipeline
from ..vision.pipeline import detector_name
from ..vision.pool import default_workers
from ..vision.quality import measure_quality, quality_reasons
from ..vision.types import Box, FaceAnalysis, Pose, Quality
from ..worker_settings import WorkerSettings

# Bump when what is stored (or how the face is chosen) changes: old entries are then ignored.
CACHE_FORMAT = 1
_FACE_FIELDS = 10  # left, top, right, bottom, confidence, yaw, pitch, roll, brightness, sharpness


@dataclass(frozen=True)
class Enrolment:
    """What the pipeline made of one image: the chosen face (or none) and its template."""

    sha256: str
    n_faces: int
    width: int
    height: int
    face: NDArray[np.float64] | None  # _FACE_FIELDS values, see above
    embedding: NDArray[np.float32] | None
    error: str = ""  # decoding error (Rekognition code: message), counted as a failure
    # False when read from a cache entry whose Brightness/Sharpness were measured with another
    # quality formula than the current one (`quality_stamp`): enrol_files re-measures them.
    quality_current: bool = True

    @property
    def enrolled(self) -> bool:
        """A face was found (and embedded, when embedding was asked for)."""
        return self.face is not None

    @property
    def box(self) -> Box | None:
        if self.face is None:
            return None
        left, top, right, bottom = (float(v) for v in self.face[:4])
        return Box(left, top, right, bottom)

    def reasons(self, level: str) -> list[str]:
        """Rekognition `Reason` codes why the chosen face fails QualityFilter `level`."""
        if self.face is None:
            return ["NO_FACE"]
        f = [float(v) for v in self.face]
        box = Box(f[0], f[1], f[2], f[3])
        return quality_reasons(level, f[4], box, Pose(f[5], f[6], f[7]), Quality(f[8], f[9]))


def central_face(faces: Sequence[FaceAnalysis], width: int, height: int) -> int:
    """Index of the face whose box centre is nearest the image centre."""
    cx, cy = width / 2.0, height / 2.0

    def off(f: FaceAnalysis) -> float:
        b = f.box
        return ((b.left + b.right) / 2.0 - cx) ** 2 + ((b.top + b.bottom) / 2.0 - cy) ** 2

    return min(range(len(faces)), key=lambda i: off(faces[i]))


@lru_cache(maxsize=1)
def quality_stamp() -> tuple[float, ...]:
    """What `measure_quality` makes of three fixed synthetic patches of increasing contrast.

    Stored with every cache entry: an entry whose stamp differs was measured with another
    Brightness/Sharpness formula (the Sharpness scale has changed before), so its quality
    values are re-measured from the image and its stored box, while its detection and template,
    which do not depend on that formula, are kept."""
    y, x = np.mgrid[0:112, 0:112]
    wave = np.sin(2 * np.pi * x / 7.0) * np.cos(2 * np.pi * y / 11.0)
    values: list[float] = []
    for amplitude in (4.0, 8.0, 16.0):  # Sharpness ~10, ~30, ~73 at the time of writing
        grey = np.clip(128.0 + amplitude * wave, 0, 255).astype(np.uint8)
        q = measure_quality(np.repeat(grey[:, :, None], 3, axis=2), Box(0.0, 0.0, 112.0, 112.0))
        values += [q.brightness, q.sharpness]
    return tuple(values)


def cache_key(settings: Settings, model_version: str) -> str:
    """The directory name that identifies a pipeline configuration's results."""
    # Models named before the numbering keep their old directory ("dlib-resnet-v1" for 1.0):
    # caches of hours of enrolment stay valid across the rename.
    name = (legacy_names(model_version) or (canonical(model_version),))[0]
    detector = detector_name(settings, model_version)  # the model's (1.x: dlib_detector)
    if detector == "yunet":  # the variant and score bar change which faces are found; "c2":
        # rows carry Confidence as yunet_confidence maps it (not 100 x the score, as before)
        detector = f"yunet_{settings.yunet_variant}{settings.yunet_score_threshold:g}c2"
    key = f"{name}/{detector}-min{settings.min_face_px}-max{settings.detect_max_side}-v{CACHE_FORMAT}"
    # Entries made before the face check existed are the check turned off: they keep their key.
    if settings.min_face_probability > 0:
        key += f"-onet{settings.min_face_probability:g}"
    return key


class EmbeddingCache:
    """Enrolments on disk, one `.npz` per image digest under `root/<cache_key>/`."""

    def __init__(self, root: Path, key: str) -> None:
        self.dir = Path(root) / key

    def _path(self, sha256: str) -> Path:
        return self.dir / sha256[:2] / f"{sha256}.npz"

    def get(self, sha256: str, *, need_embedding: bool) -> Enrolment | None:
        """The stored enrolment, or None when absent (or stored without a needed template)."""
        path = self._path(sha256)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = z["meta"]
                face = z["face"]
                emb = z["embedding"]
                error = str(z["error"]) if "error" in z.files else ""
                stamp = z["quality_stamp"] if "quality_stamp" in z.files else np.zeros(0)
        except (OSError, ValueError, KeyError):
            return None  # a torn or foreign file: recompute it
        n_faces, width, height, embedded = (int(v) for v in meta)
        if need_embedding and n_faces > 0 and not embedded:
            return None
        return Enrolment(
            sha256=sha256,
            n_faces=n_faces,
            width=width,
            height=height,
            face=face.astype(np.float64) if face.size else None,
            embedding=emb.astype(np.float32) if emb.size else None,
            error=error,
            quality_current=bool(
                stamp.shape == (len(quality_stamp()),)
                and np.allclose(stamp, quality_stamp(), rtol=0.0, atol=1e-6)
            ),
        )

    def put(self, e: Enrolment) -> None:
        """Store an enrolment atomically (write a temporary file, then rename)."""
        path = self._path(e.sha256)
        private_dir(path.parent)  # templates: owner-only whatever the umask
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        buf = io.BytesIO()  # np.savez(path) would create it 0644 under umask 022
        np.savez(
            buf,
            meta=np.array([e.n_faces, e.width, e.height, e.embedding is not None], dtype=np.int64),
            face=np.zeros(0) if e.face is None else e.face,
            embedding=np.zeros(0, np.float32) if e.embedding is None else e.embedding,
            error=np.array(e.error),
            quality_stamp=np.array(quality_stamp(), dtype=np.float64),
        )
        write_private(tmp, buf.getvalue())
        os.replace(tmp, path)


def enrol_images(
    pipeline: FacePipeline, images: Sequence[tuple[NDArray[np.uint8], str]], *, embed: bool
) -> list[Enrolment]:
    """For each (pixels, SHA-256): detect every face, keep the one nearest the centre, and
    embed it if asked; the chosen faces of all the images go through the embedder together
    (`FacePipeline.embed_many`: batched inference)."""
    model = pipeline.model_version
    # the model's own detector (dlib's 1.x embed HOG's faces: Settings.dlib_detector)
    found = pipeline.analyze_batch([px for px, _ in images], embed=False, model_version=model)
    out: list[Enrolment] = []
    chosen: list[tuple[int, NDArray[np.uint8], FaceAnalysis]] = []
    for (pixels, sha256), faces in zip(images, found):
        h, w = pixels.shape[:2]
        if not faces:
            out.append(Enrolment(sha256, 0, w, h, None, None))
            continue
        f = faces[central_face(faces, w, h)]
        row = np.array(
            [f.box.left, f.box.top, f.box.right, f.box.bottom, f.confidence, f.pose.yaw,
             f.pose.pitch, f.pose.roll, f.quality.brightness, f.quality.sharpness],
            dtype=np.float64,
        )  # fmt: skip
        chosen.append((len(out), pixels, f))
        out.append(Enrolment(sha256, len(faces), w, h, row, None))
    if embed and chosen:
        vectors = pipeline.embed_many([(px, [f.box], [f.landmarks]) for _, px, f in chosen],
                                      model_version=model)
        for (i, _, _), v in zip(chosen, vectors):
            out[i] = replace(out[i], embedding=v[0])
    return out


def enrol_batch(pipeline: FacePipeline, datas: Sequence[bytes], *, embed: bool) -> list[Enrolment]:
    """Enrol encoded images (`enrol_images` of those that decode); an undecodable image is a
    failure with its error code."""
    out: list[Enrolment | None] = []
    todo: list[tuple[int, NDArray[np.uint8], str]] = []
    for data in datas:
        digest = sha256_hex(data)
        try:
            todo.append((len(out), _decode(pipeline.settings, data), digest))
            out.append(None)
        except FaceledgerError as exc:
            out.append(Enrolment(digest, 0, 0, 0, None, None, error=f"{exc.code}: {exc.message}"))
    for (i, _, _), e in zip(todo, enrol_images(pipeline, [(px, d) for _, px, d in todo],
                                               embed=embed)):
        out[i] = e
    return [e for e in out if e is not None]


def enrol_bytes(pipeline: FacePipeline, data: bytes, *, embed: bool) -> Enrolment:
    """Enrol encoded image bytes; an undecodable image is a failure with its error code."""
    return enrol_batch(pipeline, [data], embed=embed)[0]


def _decode(s: Settings, data: bytes) -> NDArray[np.uint8]:
    # Evaluation reads local files: no byte limit below the file's size, any side length.
    img = decode_image(
        data, max_bytes=max(s.max_image_bytes, len(data)), max_pixels=s.max_image_pixels, min_side=1
    )
    return img.pixels


def remeasure_quality(e: Enrolment, data: bytes, settings: Settings) -> Enrolment:
    """`e` with Brightness and Sharpness measured again (current formula) in its stored box."""
    if e.face is None or e.box is None:
        return replace(e, quality_current=True)
    q = measure_quality(_decode(settings, data), e.box)
    face = e.face.copy()
    face[8], face[9] = q.brightness, q.sharpness
    return replace(e, face=face, quality_current=True)


# One pipeline per worker process, created by the pool initializer (models load once there).
_worker: dict[str, FacePipeline] = {}


def _init_worker(settings_json: str) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; nested threads only contend
    _worker["pipeline"] = FacePipeline(Settings.model_validate_json(settings_json))


def _enrol_in_worker(task: tuple[list[str], bool]) -> list[Enrolment]:
    paths, embed = task
    return enrol_batch(_worker["pipeline"], [Path(p).read_bytes() for p in paths], embed=embed)


class Progress:
    """A one-line progress bar on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total, self.label, self.done = total, label, 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._last_decile = -1

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.total <= 0:
            return
        frac = self.done / self.total
        rate = self.done / max(time.monotonic() - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        text = f"{self.label}: {self.done}/{self.total} ({rate:.1f}/s, {eta:.0f} s left)"
        if self.tty:
            bar = "#" * int(30 * frac)
            self.stream.write(f"\r[{bar:<30}] {text}")
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif int(frac * 10) > self._last_decile:
            self._last_decile = int(frac * 10)
            self.stream.write(text + "\n")
            self.stream.flush()


def _digests(paths: Sequence[Path]) -> list[str]:
    return [sha256_hex(p.read_bytes()) for p in paths]


def enrol_files(
    paths: Sequence[Path],
    *,
    settings: Settings | None = None,
    cache_dir: Path | None = None,
    embed: bool = True,
    workers: int | None = None,
    progress: bool = True,
    label: str = "enrolling",
    ray: str | None = None,
) -> list[Enrolment]:
    """Enrol every file (in order), reading the cache first and using a process pool (or, with
    `ray`, the actors of that Ray cluster: see faceledger.cluster) for the rest."""
    settings = settings or Settings()
    model_version = FacePipeline(settings).model_version
    cache = (
        None if cache_dir is None else EmbeddingCache(cache_dir, cache_key(settings, model_version))
    )
    digests = _digests(paths)
    out: list[Enrolment | None] = [
        None if cache is None else cache.get(d, need_embedding=embed) for d in digests
    ]
    for i, e in enumerate(out):
        if e is not None and cache is not None and not e.quality_current:
            try:
                fresh = remeasure_quality(e, paths[i].read_bytes(), settings)
            except FaceledgerError:
                out[i] = None  # no longer decodes as it did: enrol it again
                continue
            cache.put(fresh)
            out[i] = fresh
    todo = [i for i, e in enumerate(out) if e is None]
    # the cores this process may run on (a container's CPU set), not the machine's count
    n_workers = workers if workers is not None else default_workers(settings.workers)
    n_workers = max(1, min(n_workers, len(todo)))
    bar = Progress(len(todo), label) if progress and todo else None
    results = (_run(paths, todo, settings, n_workers, embed) if ray is None
               else _run_on_ray(ray, paths, todo, settings, embed))
    for i, e in results:
        out[i] = e
        if cache is not None:
            cache.put(e)
        if bar is not None:
            bar.advance()
    result = [e for e in out if e is not None]
    assert len(result) == len(paths)
    return result


def _run(
    paths: Sequence[Path], todo: list[int], settings: Settings, n_workers: int, embed: bool
) -> Iterator[tuple[int, Enrolment]]:
    if not todo:
        return
    # batches of images whose chosen faces are embedded together (batched inference)
    size = max(1, settings.embed_batch)
    batches = [todo[k:k + size] for k in range(0, len(todo), size)]
    if n_workers == 1:
        pipeline = FacePipeline(settings)
        for batch in batches:
            yield from zip(batch, enrol_batch(pipeline, [paths[i].read_bytes() for i in batch],
                                              embed=embed))
        return
    # spawn, not fork: the parent may hold loaded models and threads (a test session, a server).
    with ProcessPoolExecutor(
        n_workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(settings.model_dump_json(),),
    ) as pool:
        tasks: Iterable[tuple[list[str], bool]] = (
            ([str(paths[i]) for i in batch], embed) for batch in batches)
        # map() keeps the order of its input: the k-th result belongs to batches[k].
        for batch, results in zip(batches, pool.map(_enrol_in_worker, tasks)):
            yield from zip(batch, results)


def _run_on_ray(
    address: str, paths: Sequence[Path], todo: list[int], settings: Settings, embed: bool
) -> Iterator[tuple[int, Enrolment]]:
    """The images in `todo` enrolled by Ray actors (any order; a lost batch is sent again).
    The paths must be readable on every node (a shared filesystem)."""
    if not todo:
        return
    work = Work(_actor_pipeline, WorkerSettings.of(settings), _enrol_batch)
    with session(address):
        items = [(i, str(paths[i].resolve())) for i in todo]
        for batch, results in run_batches(work, items, embed, send=lambda item: item[1],
                                          batch_size=16):
            for (i, _), e in zip(batch, results):
                yield i, e


def _actor_pipeline(config: WorkerSettings) -> FacePipeline:
    """A Ray actor's state: the face pipeline of the worker's part of the settings."""
    import cv2

    cv2.setNumThreads(1)  # one actor per CPU already
    pipeline = FacePipeline(config.settings())
    pipeline.warm_up()
    return pipeline


def _enrol_batch(pipeline: FacePipeline, paths: list[str], embed: bool) -> list[Enrolment]:
    """A Ray actor's batch: `enrol_batch` of its files (their faces embedded together)."""
    return enrol_batch(pipeline, [Path(p).read_bytes() for p in paths], embed=embed)


def template_matrix(enrolments: Sequence[Enrolment], dim: int | None = None) -> NDArray[np.float64]:
    """Templates as rows; a row of NaN where the image failed to enrol. `dim` defaults to the
    templates' own length (operator models need not be 128-d)."""
    if dim is None:
        dim = next((len(e.embedding) for e in enrolments if e.embedding is not None), 128)
    out = np.full((len(enrolments), dim), np.nan)
    for i, e in enumerate(enrolments):
        if e.embedding is not None:
            out[i] = e.embedding
    return out


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/faceledger/embeddings` (or `~/.cache/...`): outside any repository."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faceledger" / "embeddings"
