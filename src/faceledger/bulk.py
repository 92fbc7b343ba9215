"""Bulk enrolment: files and folders of photos into a collection, on every core, resumable.

Each image goes through the service's IndexFaces as one request would (policies, quality filter,
one ledger event in the transaction that stores its faces), from several threads of this
process. Images are read, decoded and analysed in batches (`Settings.embed_batch` images, the
faces of a batch through the embedder together: batched inference), with a PipelinePool in as
many worker processes, one batch per call; then each is written. Writes stay here, in one
process, through the one service.

Resuming is by content: an image whose SHA-256 already has a face in the collection (the faces'
`image_sha256`) is skipped and counted, so a run stopped by Ctrl-C, a crash or a reboot is
simply started again. Every image that IndexFaces acknowledged is committed before it is counted.

Re-enrolment (`reenrol_images`) is the same run over the photos of a source collection's faces
(matched by SHA-256), each carrying its source faces to IndexFaces; the per-image function does
not know which model embeds: the target collection's does.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
from numpy.typing import NDArray

from .cluster import Work, run_batches
from .context import LOCAL, RequestContext
from .errors import FaceledgerError, InvalidParameterException, InvalidS3ObjectException
from .imaging import AnalysedImage, DecodedImage, file_sha256, sha256_hex
from .model_versions import canonical
from .service import FaceService
from .service.core import ServiceCore
from .service.source_faces import ReenrolPlan, ReenrolSource
from .settings import Settings
from .sources import ObjectResolver
from .worker_settings import WorkerSettings

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
ExternalIdFrom = Literal["name", "parent", "relative-path"]
Status = Literal["indexed", "skipped", "not_indexed", "failed"]
# IndexFaces' reason for a face beyond MaxFaces (the faces kept are the largest)
MAX_FACES_REASON = "EXCEEDS_MAX_FACES"


@dataclass(frozen=True)
class ImageFile:
    """One photo to enrol and the ExternalImageId it gets: a file, or (with `bucket`) the
    object named `path` in that configured bucket."""

    path: Path
    external_image_id: str | None
    bucket: str | None = None
    # re-enrolment: the source faces this photo holds (IndexFaces keeps only those)
    reenrol: ReenrolSource | None = None

    @property
    def location(self) -> str:
        """The file's path, or s3://bucket/name (what reports show)."""
        return str(self.path) if self.bucket is None else f"s3://{self.bucket}/{self.key}"

    @property
    def key(self) -> str:
        return self.path.as_posix()

    def read(self, resolver: ObjectResolver) -> bytes:
        """The photo's bytes (OSError for a file, FaceledgerError for an object)."""
        if self.bucket is None:
            return self.path.read_bytes()
        return resolver.fetch(self.bucket, self.key, None)


def safe_external_id(text: str) -> str:
    """`text` within Rekognition's ExternalImageId alphabet ([a-zA-Z0-9_.-:], 1-255 chars)."""
    clean = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_.-:") else "_"
                    for ch in text)
    return (clean or "_")[:255]


def external_id(path: Path, root: Path, how: ExternalIdFrom) -> str:
    """The ExternalImageId of `path` (found under `root`): its name without suffix, its
    folder's name (one person per folder), or its path under root with ':' for '/'."""
    match how:
        case "name":
            return safe_external_id(path.stem)
        case "parent":
            return safe_external_id(path.parent.name or path.stem)
        case "relative-path":
            try:
                rel = path.relative_to(root) if root != path else Path(path.name)
            except ValueError:
                rel = Path(path.name)
            return safe_external_id(":".join(rel.with_suffix("").parts))
    raise ValueError(f"unknown external id source {how!r}")


def parse_s3(source: str) -> tuple[str, str] | None:
    """(bucket, prefix) of `s3://bucket/prefix`, None for anything else (a local path)."""
    if not source.startswith("s3://"):
        return None
    bucket, _, prefix = source[len("s3://"):].partition("/")
    if not bucket:
        raise InvalidParameterException(f"{source!r} names no bucket (s3://BUCKET/PREFIX).")
    return bucket, prefix


def find_objects(resolver: ObjectResolver, bucket: str, prefix: str,
                 how: ExternalIdFrom = "name") -> list[ImageFile]:
    """Every .jpg/.jpeg/.png object under `prefix` in a configured bucket, sorted by name.
    ExternalImageIds as for folders: the prefix's folder part is the root."""
    lister = getattr(resolver, "list_objects", None)
    if lister is None:
        resolver.fetch(bucket, prefix, None)  # refuses: the bucket is not configured
        raise InvalidS3ObjectException(f"Bucket '{bucket}' cannot be listed.")
    root = Path(prefix.rpartition("/")[0] or ".")
    out = []
    for name in lister(bucket, prefix):
        path = Path(name)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            out.append(ImageFile(path, external_id(path, root, how), bucket))
    return out


def find_sources(sources: Iterable[str], resolver: ObjectResolver,
                 how: ExternalIdFrom = "name") -> list[ImageFile]:
    """Images of local files/folders (see find_images) and s3://bucket/prefix sources."""
    found: dict[str, ImageFile] = {}
    for source in sources:
        s3 = parse_s3(source)
        items = (find_images([Path(source)], how) if s3 is None
                 else find_objects(resolver, s3[0], s3[1], how))
        for item in items:
            found.setdefault(item.location if item.bucket else str(item.path.resolve()), item)
    return list(found.values())


def find_images(paths: Iterable[Path], how: ExternalIdFrom = "name") -> list[ImageFile]:
    """Every JPEG/PNG among `paths`, folders searched recursively, in a stable (sorted) order.
    A file named directly is taken whatever its suffix (IndexFaces judges its content)."""
    found: dict[Path, ImageFile] = {}
    for given in paths:
        if given.is_dir():
            for p in sorted(given.rglob("*")):
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                    found.setdefault(p.resolve(), ImageFile(p, external_id(p, given, how)))
        else:
            found.setdefault(given.resolve(), ImageFile(given, external_id(given, given.parent,
                                                                           how)))
    return list(found.values())


@dataclass(frozen=True)
class Outcome:
    """What happened to one image (one line of the JSON-lines report)."""

    path: str
    status: Status
    sha256: str | None = None
    external_image_id: str | None = None
    face_ids: tuple[str, ...] = ()
    # reasons of each face found but not indexed; ("NO_FACE",) when none was found at all
    reasons: tuple[tuple[str, ...], ...] = ()
    error: str | None = None  # Rekognition error code, or the OS error of reading the file
    message: str | None = None
    # re-enrolment: new face id -> source face id, and source faces not found in the photo
    source_faces: tuple[tuple[str, str], ...] = ()
    source_faces_not_found: tuple[str, ...] = ()

    @property
    def faces_left_out(self) -> int:
        """Faces of this photo that passed the quality filter but exceeded MaxFaces (people
        beside the one the ExternalImageId names, when it names one)."""
        return sum(1 for r in self.reasons if MAX_FACES_REASON in r)

    def to_json(self) -> str:
        out: dict[str, Any] = {"path": self.path, "status": self.status, "sha256": self.sha256,
                               "external_image_id": self.external_image_id,
                               "face_ids": list(self.face_ids)}
        if self.reasons:
            out["unindexed_reasons"] = [list(r) for r in self.reasons]
        if self.faces_left_out:
            out["faces_left_out"] = self.faces_left_out
        if self.error is not None:
            out["error"] = {"code": self.error, "message": self.message}
        if self.source_faces or self.source_faces_not_found:
            out["source_face_ids"] = dict(self.source_faces)
            out["source_faces_not_found"] = list(self.source_faces_not_found)
        return json.dumps(out)


@dataclass
class Summary:
    """Counts of a run, and what was not indexed and why."""

    total: int = 0
    indexed: int = 0
    faces: int = 0
    skipped: int = 0
    not_indexed: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # path, code, message
    # photos with more faces than MaxFaces: the largest were indexed, these paths held others
    crowded: list[str] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.indexed + self.skipped + self.not_indexed + self.failed

    def add(self, o: Outcome) -> None:
        if o.status == "indexed":
            self.indexed += 1
            self.faces += len(o.face_ids)
        elif o.status == "skipped":
            self.skipped += 1
        elif o.status == "not_indexed":
            self.not_indexed += 1
        else:
            self.failed += 1
            self.failures.append((o.path, o.error or "?", o.message or ""))
        # a face left out of an indexed image still counts, by its reasons
        for reasons in o.reasons:
            self.reasons.update(reasons)
        if o.faces_left_out:
            self.crowded.append(o.path)

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.total, "processed": self.done, "indexed": self.indexed,
                "faces_indexed": self.faces, "skipped_already_indexed": self.skipped,
                "not_indexed": self.not_indexed, "failed": self.failed,
                "unindexed_faces_by_reason": dict(self.reasons.most_common()),
                "failed_files": [{"path": p, "code": c, "message": m}
                                 for p, c, m in self.failures],
                "photos_with_faces_left_out": list(self.crowded),
                "interrupted": self.interrupted, "seconds": round(self.seconds, 3),
                "images_per_second": round(self.done / self.seconds, 3) if self.seconds else None}


class _Seen:
    """Image hashes already in the collection or taken by this run (thread-safe)."""

    def __init__(self, hashes: set[str]) -> None:
        self._hashes = hashes
        self._lock = threading.Lock()

    def claim(self, sha: str) -> bool:
        """True if `sha` is new (and now taken); False if indexed before or in this run."""
        with self._lock:
            if sha in self._hashes:
                return False
            self._hashes.add(sha)
            return True

    def taken(self, sha: str) -> bool:
        with self._lock:
            return sha in self._hashes

    def release(self, sha: str) -> None:
        """Give back a claim whose image stored no face (so a later copy is tried again)."""
        with self._lock:
            self._hashes.discard(sha)


@dataclass(frozen=True)
class Analysis:
    """What a worker made of one image, before anything is written: its digest and, unless it
    was already indexed (`known`) or failed (`error`), its faces and templates."""

    sha256: str | None
    image: AnalysedImage | None = None
    known: bool = False
    error: str | None = None
    message: str | None = None


def analyse_item(core: ServiceCore, item: ImageFile, known: Callable[[str], bool]) -> Analysis:
    """The per-image work of bulk enrolment, wherever it runs (a thread here, a Ray actor):
    read, hash, skip if `known`, decode with the service's rules (an object from a bucket has
    S3's size limit) and find and embed the faces with `core.pipeline`, whose models come from
    `core.settings`: nothing here depends on the model version."""
    return analyse_items(core, [item], known)[0]


def analyse_items(core: ServiceCore, items: Sequence[ImageFile], known: Callable[[str], bool],
                  model_version: str | None = None) -> list[Analysis]:
    """`analyse_item` of a batch of images, their faces through the embedder together
    (`Settings.embed_batch` faces per run: batched inference), with model `model_version`
    (None: the configured one). Should the batch fail as a whole for a reason that is not an
    image's own, each image is analysed alone: one bad image must not end a run of millions."""
    out: list[Analysis | None] = []
    todo: list[tuple[int, DecodedImage]] = []
    for item in items:
        try:
            data = item.read(core.resolver)
        except OSError as exc:
            out.append(Analysis(None, error=type(exc).__name__, message=str(exc)))
            continue
        except FaceledgerError as exc:
            out.append(Analysis(None, error=exc.code, message=exc.message))
            continue
        sha = sha256_hex(data)
        if known(sha):
            out.append(Analysis(sha, known=True))
            continue
        try:
            todo.append((len(out), core.decode_bytes(data, from_storage=item.bucket is not None)))
            out.append(None)
        except FaceledgerError as exc:
            out.append(Analysis(sha, error=exc.code, message=exc.message))
    if len(todo) > 1:
        try:
            done = core.analyse_decoded([img for _, img in todo], model_version)
        except Exception:  # noqa: BLE001 - sorted out image by image just below
            done = None
        if done is not None:
            for (i, img), a in zip(todo, done):
                out[i] = Analysis(img.sha256, a)
            todo = []
    for i, img in todo:
        try:
            out[i] = Analysis(img.sha256, core.analyse_decoded([img], model_version)[0])
        except FaceledgerError as exc:
            out[i] = Analysis(img.sha256, error=exc.code, message=exc.message)
        except Exception as exc:  # noqa: BLE001 - one bad image must not end a run of millions
            out[i] = Analysis(img.sha256, error="InternalServerError",
                              message=f"{type(exc).__name__}: {exc}")
    return [a for a in out if a is not None]


# ---- the same per-image work on Ray actors (faceledger.cluster runs it) ----------------------


def known_digests(hashes: Iterable[str]) -> NDArray[np.bytes_]:
    """Hex SHA-256 digests as a sorted array of 32-byte values (shared zero-copy by Ray)."""
    return np.array(sorted(bytes.fromhex(h) for h in hashes), dtype="S32")


def is_known(known: NDArray[np.bytes_], sha256: str) -> bool:
    if len(known) == 0:
        return False
    probe = np.array([bytes.fromhex(sha256)], dtype="S32")
    i = int(np.searchsorted(known, probe[0]))
    return i < len(known) and bool(known[i] == probe[0])


def _actor_core(config: WorkerSettings) -> ServiceCore:
    """A Ray actor's state: the service's decoding rules, buckets (no keys: the node's own
    credentials read S3) and face pipeline, from the worker's part of the settings only."""
    import cv2

    from .server.storage import build_resolver

    cv2.setNumThreads(1)  # one actor per CPU already
    settings = config.settings()
    core = ServiceCore(settings, resolver=build_resolver(settings))
    core.pipeline.warm_up()
    return core


def _analyse_batch(core: ServiceCore, where: list[tuple[str, str | None]],
                   known: NDArray[np.bytes_]) -> list[Analysis]:
    """A Ray actor's batch: `analyse_items` of (path or object name, bucket) each, the faces
    of the batch through the embedder together."""
    return analyse_items(core, [ImageFile(Path(path), None, bucket) for path, bucket in where],
                         lambda sha: is_known(known, sha))


def _location(item: ImageFile) -> tuple[str, str | None]:
    """What an actor gets of an image: where to read it (not its ExternalImageId, not the
    source faces of a re-enrolment)."""
    return str(item.path), item.bucket


def analysis_work(settings: Settings) -> Work[WorkerSettings, ServiceCore]:
    """Bulk enrolment's work for Ray actors: the pipeline of `settings`, loaded once each."""
    return Work(_actor_core, WorkerSettings.of(settings), _analyse_batch)


def write_analysis(service: FaceService, collection_id: str, item: ImageFile, a: Analysis,
                   seen: _Seen, max_faces: int | None, quality_filter: str | None,
                   ctx: RequestContext) -> Outcome:
    """IndexFaces for an analysed image, through the service (checks, quality filter, catalog,
    index and its ledger event in one transaction), unless its digest was taken already."""
    path = item.location
    if a.error is not None:
        return Outcome(path, "failed", a.sha256, item.external_image_id, error=a.error,
                       message=a.message)
    assert a.sha256 is not None
    if a.known or not seen.claim(a.sha256):
        return Outcome(path, "skipped", a.sha256, item.external_image_id)
    return _index_claimed(service, collection_id, item, a.sha256, seen, max_faces,
                          quality_filter, ctx, analysed=a.image)


def _index_batch(service: FaceService, collection_id: str, items: list[ImageFile], seen: _Seen,
                 model_version: str, max_faces: int | None, quality_filter: str | None,
                 ctx: RequestContext) -> list[Outcome]:
    """A batch of images analysed together with the collection's model (their faces through
    the embedder in runs: batched inference), then each written by `write_analysis`."""
    analyses = analyse_items(service, items, seen.taken, model_version)
    return [write_analysis(service, collection_id, item, a, seen, max_faces, quality_filter, ctx)
            for item, a in zip(items, analyses)]


def _index_claimed(service: FaceService, collection_id: str, item: ImageFile, sha: str,
                   seen: _Seen, max_faces: int | None, quality_filter: str | None,
                   ctx: RequestContext, *, analysed: AnalysedImage | None) -> Outcome:
    path = item.location
    stored = False
    try:
        # one ledger event per image, each with a request id of its own
        r = service.index_faces(collection_id, None, item.external_image_id,
                                max_faces=max_faces, quality_filter=quality_filter,
                                reenrol_from=item.reenrol,
                                ctx=dataclasses.replace(ctx, request_id=str(uuid.uuid4())),
                                analysed=analysed)
        face_ids = tuple(rec["Face"]["FaceId"] for rec in r["FaceRecords"])
        reasons = tuple(tuple(u["Reasons"]) for u in r["UnindexedFaces"])
        stored = bool(face_ids)
        if not face_ids and not reasons:
            reasons = (("NO_FACE",),)
        return Outcome(path, "indexed" if stored else "not_indexed", sha,
                       item.external_image_id, face_ids, reasons,
                       source_faces=tuple(r.get("SourceFaceIds", {}).items()),
                       source_faces_not_found=tuple(r.get("SourceFacesNotFound", ())))
    except FaceledgerError as exc:
        return Outcome(path, "failed", sha, item.external_image_id, error=exc.code,
                       message=exc.message)
    finally:
        if not stored:
            seen.release(sha)


def index_images(
    service: FaceService,
    collection_id: str,
    images: Sequence[ImageFile],
    *,
    threads: int = 1,
    max_faces: int | None = None,
    quality_filter: str | None = None,
    ctx: RequestContext = LOCAL,
    on_outcome: Callable[[Outcome], None] | None = None,
    stop: threading.Event | None = None,
    batch_size: int | None = None,
) -> Summary:
    """IndexFaces for every image from `threads` threads, in batches of `batch_size` images
    (default `Settings.embed_batch`) whose faces go through the embedder together; each image
    is still its own IndexFaces and ledger event. `on_outcome` sees each result in this thread
    as it comes. `stop` ends the run cleanly: nothing new starts, batches in progress finish
    (and are reported), and the summary says it was interrupted. A KeyboardInterrupt does the
    same as well as it can, but raised in the middle of reporting it skips lines of images
    already stored: turn SIGINT into `stop` (as the CLI does) where that matters."""
    with service.catalog.read() as conn:
        coll = service.catalog.collection(conn, collection_id)
        seen = _Seen(service.catalog.image_hashes(conn, coll.pk))
    model = coll.face_model_version
    size = max(1, batch_size or service.settings.embed_batch)
    summary = Summary(total=len(images))
    started = time.monotonic()
    todo: Iterator[ImageFile] = iter(images)
    # a bounded window of batches: 200,000 files are never all queued at once
    window = max(2, 2 * threads)
    pending: set[Future[list[Outcome]]] = set()

    def record(f: Future[list[Outcome]]) -> None:
        for o in f.result():
            summary.add(o)
            if on_outcome is not None:
                on_outcome(o)

    with ThreadPoolExecutor(max_workers=max(1, threads),
                            thread_name_prefix="faceledger-bulk") as pool:
        try:
            while True:
                while len(pending) < window and not (stop is not None and stop.is_set()):
                    batch = list(itertools.islice(todo, size))
                    if not batch:
                        break
                    pending.add(pool.submit(_index_batch, service, collection_id, batch, seen,
                                            model, max_faces, quality_filter, ctx))
                if not pending:
                    break
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for f in done:
                    record(f)
                if stop is not None and stop.is_set():
                    for f in pending:  # nothing new starts: queued images are dropped
                        f.cancel()
                    pending = {f for f in pending if not f.cancelled()}
                    if not pending:  # ... and those in progress have finished
                        summary.interrupted = True
                        break
        except KeyboardInterrupt:
            summary.interrupted = True
            for f in pending:
                f.cancel()
            # what is already running finishes: it commits, and it is reported
            for f in pending:
                if not f.cancelled():
                    record(f)
        if stop is not None and stop.is_set():
            summary.interrupted = True
    summary.seconds = time.monotonic() - started
    return summary


def index_images_ray(
    service: FaceService,
    collection_id: str,
    images: Sequence[ImageFile],
    *,
    batch_size: int = 8,
    actors: int | None = None,
    max_faces: int | None = None,
    quality_filter: str | None = None,
    ctx: RequestContext = LOCAL,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_event: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    workers: Sequence[Any] | None = None,
    writers: int | None = None,
) -> Summary:
    """index_images with decoding and inference on the Ray cluster this process joined
    (`faceledger.cluster.connect`): batches of images go to actors that load the pipeline of
    `service.settings` once each (`analysis_work`: `workers` must run it); every result is
    written here, through `write_analysis`, as without Ray. Images already in the collection
    are skipped by the actors before any decoding. A batch whose actor (or node) died is sent
    again; what was written stays."""
    with service.catalog.read() as conn:
        coll = service.catalog.collection(conn, collection_id)
        hashes = service.catalog.image_hashes(conn, coll.pk)
    seen = _Seen(set(hashes))
    summary = Summary(total=len(images))
    started = time.monotonic()
    stopping = threading.Event()

    def should_stop() -> bool:
        return stopping.is_set() or (stop is not None and stop.is_set())

    batches = run_batches(analysis_work(service.settings), images, known_digests(hashes),
                          send=_location, batch_size=batch_size, actors=actors,
                          stop=should_stop, on_event=on_event, workers=workers)
    # Writes overlap on PostgreSQL (the ledger's chain head is the only serial step); SQLite
    # has one writer at a time, where threads only queue.
    n_writers = writers or (4 if service.catalog.dialect == "postgresql" else 1)
    pending: set[Future[Outcome]] = set()

    def record(done: set[Future[Outcome]]) -> None:
        for f in done:
            o = f.result()
            summary.add(o)
            if on_outcome is not None:
                on_outcome(o)

    with ThreadPoolExecutor(n_writers, thread_name_prefix="faceledger-writer") as pool:
        try:
            while True:
                try:
                    got = next(batches, None)
                    if got is None:
                        break
                    items, results = got
                    for item, a in zip(items, results):
                        pending.add(pool.submit(write_analysis, service, collection_id, item, a,
                                                seen, max_faces, quality_filter, ctx))
                    # report what is written; hold the cluster back if writing lags behind
                    while pending:
                        done, pending = wait(pending, timeout=0 if len(pending) <
                                             4 * n_writers * batch_size else None,
                                             return_when=FIRST_COMPLETED)
                        record(done)
                        if not done:
                            break
                except KeyboardInterrupt:
                    # nothing new is sent; what is analysed or being written is finished
                    stopping.set()
                    summary.interrupted = True
        finally:
            batches.close()
            done, pending = wait(pending)
            record(done)
    if should_stop():
        summary.interrupted = True
    summary.seconds = time.monotonic() - started
    return summary


def write_summary(summary: Summary, stream: TextIO) -> None:
    """The human summary of a run."""
    state = "INTERRUPTED: " if summary.interrupted else ""
    rate = summary.done / summary.seconds if summary.seconds else 0.0
    stream.write(
        f"{state}{summary.done} of {summary.total} images in {summary.seconds:.1f} s "
        f"({rate:.1f}/s): {summary.indexed} indexed ({summary.faces} faces), "
        f"{summary.skipped} skipped (already indexed), {summary.not_indexed} not indexed, "
        f"{summary.failed} failed\n")
    for reason, n in summary.reasons.most_common():
        stream.write(f"  faces not indexed, {reason}: {n}\n")
    if summary.crowded:
        stream.write(f"  photos with more faces than MaxFaces (the largest indexed, the others "
                     f"not): {len(summary.crowded)}\n")
        for path in summary.crowded[:10]:
            stream.write(f"    {path}\n")
        if len(summary.crowded) > 10:
            stream.write(f"    ... {len(summary.crowded) - 10} more (see --report)\n")
    for path, code, message in summary.failures[:20]:
        stream.write(f"  failed {path}: {code}: {message}\n")
    if len(summary.failures) > 20:
        stream.write(f"  ... {len(summary.failures) - 20} more failed files (see --report)\n")
    if summary.interrupted:
        stream.write("Run the same command again to continue: indexed images are skipped.\n")


# ---- re-enrolment ----------------------------------------------------------------------------


@dataclass
class ReenrolSummary:
    """A re-enrolment run: the plan's findings and the indexing summary."""

    plan: ReenrolPlan
    indexing: Summary
    photos_not_in_source: list[str] = field(default_factory=list)  # paths
    # source faces whose photo was indexed but in which the face was not found again
    source_faces_not_found: list[str] = field(default_factory=list)
    faces_linked: int = 0

    def to_dict(self) -> dict[str, Any]:
        p = self.plan
        return {
            "source": {"collection": p.source, "model": p.source_model},
            "target": {"collection": p.target, "model": p.target_model,
                       "created": p.target_created},
            "run_id": p.run_id,
            "faces_linked": self.faces_linked,
            "photos_not_in_source": self.photos_not_in_source,
            "source_faces_without_photo": list(p.faces_without_photo),
            "source_faces_without_image_hash": list(p.faces_without_hash),
            "source_faces_not_found_in_photo": self.source_faces_not_found,
            "indexing": self.indexing.to_dict(),
        }


def _hash_file(item: ImageFile) -> tuple[ImageFile, str | None]:
    try:
        return item, file_sha256(item.path)
    except OSError:
        return item, None  # reported by the indexing run, which reads it again


def reenrol_images(
    service: FaceService,
    source_id: str,
    target_id: str,
    images: Sequence[ImageFile],
    *,
    model_version: str | None = None,
    include_unmatched: bool = False,
    threads: int = 1,
    quality_filter: str | None = "NONE",
    ctx: RequestContext = LOCAL,
    on_outcome: Callable[[Outcome], None] | None = None,
    stop: threading.Event | None = None,
    ray_batch: int | None = None,
    on_event: Callable[[str], None] | None = None,
) -> ReenrolSummary:
    """Re-enrol `source_id` into `target_id` (created, bound to `model_version`, default the
    configured model) from its original photos among `images`: each photo whose SHA-256 a
    source face was indexed from is indexed through `index_images`, keeping that source face's
    ExternalImageId and user; photos of no source face are reported (indexed as plain photos
    with `include_unmatched`). QualityFilter NONE by default: the source already chose its faces.
    With `ray_batch`, decoding and inference run on the Ray cluster this process joined, in
    batches of that many photos (`index_images_ray`; the target must be the configured model,
    which the actors load; `on_event` hears of the cluster's actors, as in that function)."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        hashed = list(pool.map(_hash_file, images))
    plan = service.start_reenrolment(source_id, target_id,
                                     [h for _, h in hashed if h is not None],
                                     model_version, ctx=ctx)
    todo: list[ImageFile] = []
    not_in_source: list[str] = []
    for item, sha in hashed:
        src = None if sha is None else plan.source_for(sha)
        if src is not None:
            ext = next((f.external_image_id for f in src.faces if f.external_image_id), None)
            todo.append(ImageFile(item.path, ext, reenrol=src))
        elif sha is None:
            todo.append(item)  # unreadable: the run reports its error
        else:
            not_in_source.append(str(item.path))
            if include_unmatched:
                todo.append(item)
    result = ReenrolSummary(plan, Summary(), not_in_source)

    def seen(o: Outcome) -> None:
        result.faces_linked += len(o.source_faces)
        result.source_faces_not_found.extend(o.source_faces_not_found)
        if on_outcome is not None:
            on_outcome(o)

    if ray_batch is None:
        result.indexing = index_images(service, target_id, todo, threads=threads,
                                       quality_filter=quality_filter, ctx=ctx, on_outcome=seen,
                                       stop=stop)
        return result
    if canonical(plan.target_model) != canonical(service.pipeline.model_version):
        raise InvalidParameterException(
            f"Re-enrolment on Ray runs the configured model ({service.pipeline.model_version}) "
            f"in its workers; {target_id} is bound to {plan.target_model}: configure that "
            "model, or re-enrol without --ray.")
    result.indexing = index_images_ray(service, target_id, todo, batch_size=ray_batch,
                                       quality_filter=quality_filter, ctx=ctx,
                                       on_outcome=seen, on_event=on_event, stop=stop)
    return result


def write_reenrol_summary(result: ReenrolSummary, stream: TextIO) -> None:
    """The human summary of a re-enrolment run."""
    p = result.plan
    stream.write(f"re-enrolling {p.source} (model {p.source_model}) into {p.target} "
                 f"(model {p.target_model}{', created' if p.target_created else ''}); "
                 f"run {p.run_id}\n")
    write_summary(result.indexing, stream)
    stream.write(f"  faces linked to their source face: {result.faces_linked}\n")
    for label, items in (("photos of no face in the source", result.photos_not_in_source),
                         ("source faces without a photo given", list(p.faces_without_photo)),
                         ("source faces stored without an image hash",
                          list(p.faces_without_hash)),
                         ("source faces not found again in their photo",
                          result.source_faces_not_found)):
        if items:
            stream.write(f"  {label}: {len(items)}\n")
            for x in items[:10]:
                stream.write(f"    {x}\n")
            if len(items) > 10:
                stream.write(f"    ... {len(items) - 10} more (see --json)\n")
