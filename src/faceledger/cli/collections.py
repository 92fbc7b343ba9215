"""`faceledger collection ...` and `faceledger user ...`: collections, faces, users and search.

The data directory and database come from FACELEDGER_DATA_DIR / FACELEDGER_DATABASE_URL.
"""

from __future__ import annotations

import io
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import click

from ..api import FaceLedger
from ..bulk import (
    ExternalIdFrom,
    ImageFile,
    Outcome,
    Summary,
    find_images,
    find_sources,
    index_images,
    index_images_ray,
    parse_s3,
    reenrol_images,
    safe_external_id,
    write_reenrol_summary,
    write_summary,
)
from ..evaluation.enrolment import Progress
from ..permissions import open_private
from ..server.storage import build_resolver
from ..service import FaceService
from ..settings import Settings
from ..sources import ObjectResolver
from ..vision.pool import PipelinePool, default_workers
from .app import emit_json, main, reports_errors, request_context

QUALITY = click.Choice(["NONE", "AUTO", "LOW", "MEDIUM", "HIGH"])


@contextmanager
def _client() -> Iterator[FaceLedger]:
    client = FaceLedger(context=request_context())
    try:
        yield client
    finally:
        client.close()


def _matches(result: dict[str, Any], as_json: bool, key: str = "FaceMatches") -> None:
    """A search's answer: what its threshold means, then its matches, or that they were held
    for review (an identification-mode collection answers with no matches then: saying
    "no match" would be false)."""
    if as_json:
        emit_json(result)
        return
    faces = "faces" if key == "FaceMatches" else "faces of users"
    threshold = result["FaceMatchThreshold" if key == "FaceMatches" else "UserMatchThreshold"]
    click.echo(
        f"threshold: Similarity {threshold:.10g} = false-match rate "
        f"{result['FalseMatchRate']:.1e}; {result['FacesSearched']} {faces} searched, "
        f"{result['ExpectedFalseMatches']:.2g} false matches expected")
    if result.get("ReviewRequired"):
        held = result.get("ReviewCandidates") or []
        case = request_context().case
        click.echo(f"held for review: {len(held)} candidate{'s' if len(held) != 1 else ''} "
                   f"({f'case {case}' if case else 'no case given'}); reviewers decide them "
                   "(`faceledger review list`, or the console)")
        for c in held:
            click.echo(f"  candidate {c['CandidateId']}  {c.get('Status', '')}")
        return
    if not result[key]:
        click.echo("no match")
    for m in result[key]:
        if key == "FaceMatches":
            f = m["Face"]
            click.echo(f"MATCH  {f['FaceId']}  {f.get('ExternalImageId', '-')}  "
                       f"similarity {m['Similarity']:.10g}")
        else:
            u = m["User"]
            click.echo(f"MATCH  user {u['UserId']} ({u.get('UserStatus', '-')})  "
                       f"similarity {m['Similarity']:.10g}")


@main.group()
def collection() -> None:
    """Collections of faces: create, index images, search, list and delete."""


@collection.command("create")
@click.argument("collection_id")
@click.option("--model", default=None,
              help="Face model version, e.g. 1.0, 2.0 or 3.0 [default: the configured one].")
@reports_errors
def create(collection_id: str, model: str | None) -> None:
    """Create an empty collection."""
    with _client() as c:
        r = c.create_collection(collection_id, face_model_version=model)
    click.echo(f"created {collection_id} ({r['FaceModelVersion']})")


@collection.command("delete")
@click.argument("collection_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@reports_errors
def delete(collection_id: str, yes: bool) -> None:
    """Delete a collection and every face, template and user it holds."""
    if not yes:
        click.confirm(f"Delete collection {collection_id} and all its faces?", abort=True)
    with _client() as c:
        c.delete_collection(collection_id)
    click.echo(f"deleted {collection_id}")


@collection.command("list")
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def list_(as_json: bool) -> None:
    """List collections."""
    ids: list[str] = []
    models: list[str] = []
    token = None
    with _client() as c:
        while True:
            r = c.list_collections(next_token=token)
            ids += r["CollectionIds"]
            models += r["FaceModelVersions"]
            token = r.get("NextToken")
            if token is None:
                break
    if as_json:
        emit_json({"CollectionIds": ids, "FaceModelVersions": models})
    for i, m in zip(ids, models):
        if not as_json:
            click.echo(f"{i}\t{m}")


@collection.command("describe")
@click.argument("collection_id")
@reports_errors
def describe(collection_id: str) -> None:
    """Face count, user count, model version, creation time."""
    with _client() as c:
        emit_json(c.describe_collection(collection_id))


@collection.command("index")
@click.argument("collection_id")
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True)
@click.option("--external-id", help="ExternalImageId of every image (default: see "
              "--external-id-from).")
@click.option("--external-id-from", type=click.Choice(["name", "parent", "relative-path"]),
              default="name", show_default=True,
              help="ExternalImageId from the file name (without suffix), its folder's name "
                   "(a folder per person) or its path under the folder given (':' for '/').")
@click.option("--max-faces", type=click.IntRange(1), default=None,
              help="Index at most this many faces of each photo, the largest [default: 1, "
                   "see --all-faces].")
@click.option("--all-faces", is_flag=True,
              help="Index every face of each photo (as Rekognition's IndexFaces does), each "
                   "labelled with the photo's ExternalImageId. Without it, the id names one "
                   "person, so only the largest face is indexed and the others are reported.")
@click.option("--quality-filter", type=QUALITY, default="AUTO", show_default=True)
@click.option("--workers", type=click.IntRange(0, 256), default=None,
              help="Inference processes [default: FACELEDGER_WORKERS, else one per core].")
@click.option("--report", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              default=None, help="Append one JSON line per image (path, status, sha256, face "
                                 "ids, reasons, faces_left_out, error) to this file.")
@click.option("--verbose", "-v", is_flag=True, help="A line per indexed or refused face.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--ray", "ray_address", metavar="ADDRESS|auto", default=None,
              help="Decode and analyse on this Ray cluster (one actor per CPU, models loaded "
                   "once each; files must be readable at the same path on every node); "
                   "writes stay in this process. Needs faceledger[ray] and a cluster with "
                   "token authentication (docs/deployment.md).")
@click.option("--ray-batch", type=click.IntRange(1, 1024), default=8, show_default=True,
              help="Images per call to a Ray actor.")
@reports_errors
def index(collection_id: str, sources: tuple[str, ...], external_id: str | None,
          external_id_from: ExternalIdFrom, max_faces: int | None, all_faces: bool,
          quality_filter: str, workers: int | None, report: Path | None, verbose: bool,
          no_progress: bool, as_json: bool, ray_address: str | None, ray_batch: int) -> None:
    """Add the faces found in SOURCEs: image files, folders (searched recursively for
    .jpg/.jpeg/.png) and s3://BUCKET/PREFIX of a configured bucket, on every core (or a Ray
    cluster with --ray), with a progress bar. Templates only; photos are never stored.

    Each photo's ExternalImageId comes from a name (its file's, its folder's, or
    --external-id), which names one person: only the photo's largest face is indexed, and
    photos that held others are listed in the summary (and as faces_left_out in --report),
    so that bystanders are never stored under someone else's name. --all-faces indexes
    every face, --max-faces N the N largest.

    Resumable: images already indexed in the collection (same SHA-256) are skipped, so after
    Ctrl-C, a crash or a lost node run the same command again. Exit status 1 if a file
    failed."""
    if all_faces and max_faces is not None:
        raise click.UsageError("--all-faces and --max-faces exclude each other")
    # the id is a person's name: one face per photo unless told otherwise (docs/first-steps.md)
    max_faces = None if all_faces else (max_faces or 1)
    settings = Settings()
    resolver = build_resolver(settings)
    for source in sources:
        if parse_s3(source) is None and not Path(source).exists():
            raise click.BadParameter(f"{source!r} does not exist", param_hint="SOURCE")
    images = find_sources(sources, resolver, external_id_from)
    if external_id is not None:
        images = [ImageFile(i.path, safe_external_id(external_id), i.bucket) for i in images]
    if not images:
        raise click.UsageError("no .jpg, .jpeg or .png files in the sources given")
    if ray_address is not None:
        _index_on_ray(settings, resolver, collection_id, images, ray_address, ray_batch,
                      max_faces, quality_filter, report, verbose, no_progress, as_json)
        return
    n = default_workers(settings.workers if workers is None else workers)
    n = min(n, len(images))
    pipeline = PipelinePool(settings, n) if n > 1 else None
    service = FaceService(settings, pipeline=pipeline, resolver=resolver)
    bar = None if no_progress else Progress(len(images), f"indexing into {collection_id}")
    with _run_closing(service, report, pipeline) as out, _stop_on_interrupt() as stop:
        summary = index_images(service, collection_id, images, threads=2 * n if n > 1 else 1,
                               max_faces=max_faces, quality_filter=quality_filter,
                               ctx=request_context(), on_outcome=_show(out, verbose, bar),
                               stop=stop)
    _finish(summary, bar, as_json, one_face=max_faces == 1)


@contextmanager
def _stop_on_interrupt() -> Iterator[threading.Event]:
    """An event the first Ctrl-C sets, for a bulk run to stop at its next step. Left to raise
    KeyboardInterrupt, Ctrl-C lands on whatever line runs: between an image's commit and its
    report line, the image was stored but never reported. A second Ctrl-C interrupts at once."""
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT) or signal.default_int_handler

    def first(signum: int, frame: FrameType | None) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, first)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _run_closing(service: FaceService, report: Path | None,
                 pipeline: PipelinePool | None = None) -> Iterator[TextIO | None]:
    """A bulk run's report file (None without --report), open for the run; it, the service and
    the pipeline pool are closed after it, however it ends."""
    # one line per image, with its path and faces: owner-only whatever the umask
    out = None if report is None else io.TextIOWrapper(open_private(report, append=True),
                                                       encoding="utf-8")
    try:
        yield out
    finally:
        if out is not None:
            out.close()
        service.close()
        if pipeline is not None:
            pipeline.close()


def _show(out: TextIO | None, verbose: bool, bar: Progress | None,
          stdout: TextIO | None = None) -> Callable[[Outcome], None]:
    """What happens as each image's outcome arrives: report line, verbose lines (to `stdout`,
    default sys.stdout), progress."""

    def show(o: Outcome) -> None:
        if out is not None:
            out.write(o.to_json() + "\n")
            out.flush()
        if verbose:
            for fid in o.face_ids:
                click.echo(f"{o.path}: indexed {fid}", file=stdout)
            for reasons in o.reasons:
                click.echo(f"{o.path}: not indexed ({', '.join(reasons)})", file=stdout)
            if o.status in ("skipped", "failed"):
                click.echo(f"{o.path}: {o.status}" + (f" ({o.error}: {o.message})"
                                                       if o.error else ""), file=stdout)
        if bar is not None:
            bar.advance()

    return show


def _cluster_event(bar: Progress | None) -> Callable[[str], None]:
    """A Ray cluster's news (an actor ready, an actor lost) as a line of its own on stderr."""
    return lambda text: click.echo(f"\n{text}" if bar and bar.tty else text, err=True)


def _finish(summary: Summary, bar: Progress | None, as_json: bool,
            one_face: bool = False) -> None:
    if bar is not None and bar.tty and bar.done < bar.total:
        click.echo("", err=True)  # end the progress line of an interrupted run
    if as_json:
        emit_json(summary.to_dict())
    else:
        # through click.echo (get_text_stream is deprecated from Click 8.5): the summary is
        # written whole, in the encoding click chose for stdout
        text = io.StringIO()
        write_summary(summary, text)
        if summary.crowded and one_face:
            text.write("  Each photo's ExternalImageId names one person, so only its largest "
                       "face was indexed; --all-faces indexes every face.\n")
        click.echo(text.getvalue(), nl=False)
    if summary.interrupted:
        raise SystemExit(130)
    if summary.failed:
        raise SystemExit(1)


@collection.command("reenrol")
@click.argument("source_collection")
@click.argument("photos", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--into", "target", required=True,
              help="The new collection (created if absent, with the source's policy).")
@click.option("--model", default=None,
              help="Face model of the new collection, e.g. 2.0 or 3.0 [default: the configured one].")
@click.option("--include-unmatched", is_flag=True,
              help="Also index photos none of whose SHA-256 is a source face's (as `collection "
                   "index` would); by default they are reported and skipped.")
@click.option("--quality-filter", type=QUALITY, default="NONE", show_default=True,
              help="The source already chose its faces; a stricter filter drops some of them.")
@click.option("--workers", type=click.IntRange(0, 256), default=None,
              help="Inference processes [default: FACELEDGER_WORKERS, else one per core].")
@click.option("--report", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              default=None, help="Append one JSON line per photo (with source_face_ids).")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS|auto",
              help="Decode and embed on this Ray cluster (the target must be the configured "
                   "model; token authentication: docs/deployment.md); writes stay in this "
                   "process, as without --ray.")
@click.option("--ray-batch", type=click.IntRange(1, 256), default=8, show_default=True)
@reports_errors
def reenrol(source_collection: str, photos: tuple[Path, ...], target: str, model: str | None,
            include_unmatched: bool, quality_filter: str, workers: int | None,
            report: Path | None, no_progress: bool, as_json: bool, ray_address: str | None,
            ray_batch: int) -> None:
    """Re-enrol SOURCE_COLLECTION into a new collection bound to another face model, from its
    original PHOTOS (files and folders): each photo is matched to the source's faces by
    SHA-256 and indexed with their ExternalImageId and users; the ledger links the two
    collections. Resumable like `collection index`. Exit status 1 if a file failed."""
    images = find_images(photos, "name")
    if not images:
        raise click.UsageError("no .jpg, .jpeg or .png files in the paths given")
    settings = Settings()
    n = min(default_workers(settings.workers if workers is None else workers), len(images))
    pipeline = PipelinePool(settings, n) if n > 1 and ray_address is None else None
    bar = None if no_progress else Progress(len(images), f"re-enrolling into {target}")
    with ExitStack() as stack:
        if ray_address is not None:
            from ..cluster import session

            stack.enter_context(session(ray_address))
        service = FaceService(settings, pipeline=pipeline)
        out = stack.enter_context(_run_closing(service, report, pipeline))
        stop = stack.enter_context(_stop_on_interrupt())
        result = reenrol_images(service, source_collection, target, images,
                                model_version=model, include_unmatched=include_unmatched,
                                threads=2 * n if n > 1 else 1, stop=stop,
                                quality_filter=quality_filter, ctx=request_context(),
                                on_outcome=_show(out, False, bar),
                                ray_batch=None if ray_address is None else ray_batch,
                                on_event=_cluster_event(bar))
    if bar is not None and bar.tty and bar.done < bar.total:
        click.echo("", err=True)
    if as_json:
        emit_json(result.to_dict())
    else:
        text = io.StringIO()  # through click.echo, as _finish does (Click 8.5)
        write_reenrol_summary(result, text)
        click.echo(text.getvalue(), nl=False)
    if result.indexing.interrupted:
        raise SystemExit(130)
    if result.indexing.failed:
        raise SystemExit(1)


def _index_on_ray(settings: Settings, resolver: ObjectResolver, collection_id: str,
                  images: list[ImageFile], address: str, batch: int, max_faces: int | None,
                  quality_filter: str, report: Path | None, verbose: bool, no_progress: bool,
                  as_json: bool) -> None:
    """`collection index --ray`: inference on the cluster, writes here (see bulk/cluster)."""
    from ..cluster import session

    bar = None if no_progress else Progress(len(images), f"indexing into {collection_id} "
                                                         f"on Ray")
    with session(address) as stdout:
        # the models load in the actors; this process only writes (its pipeline stays unloaded)
        service = FaceService(settings, resolver=resolver)
        with _run_closing(service, report) as out, _stop_on_interrupt() as stop:
            summary = index_images_ray(
                service, collection_id, images, batch_size=batch, max_faces=max_faces,
                quality_filter=quality_filter, ctx=request_context(),
                on_outcome=_show(out, verbose, bar, stdout), on_event=_cluster_event(bar),
                stop=stop)
    _finish(summary, bar, as_json, one_face=max_faces == 1)


@collection.command("faces")
@click.argument("collection_id")
@click.option("--user", "user_id", default=None, help="Only the faces of this user.")
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def faces(collection_id: str, user_id: str | None, as_json: bool) -> None:
    """List the faces of a collection."""
    out: list[dict[str, Any]] = []
    token = None
    with _client() as c:
        while True:
            r = c.list_faces(collection_id, next_token=token, user_id=user_id)
            out += r["Faces"]
            token = r.get("NextToken")
            if token is None:
                break
    if as_json:
        emit_json({"Faces": out})
        return
    for f in out:
        click.echo(f"{f['FaceId']}\t{f.get('ExternalImageId', '-')}\t{f.get('UserId', '-')}")


@collection.command("delete-faces")
@click.argument("collection_id")
@click.argument("face_ids", nargs=-1, required=True)
@reports_errors
def delete_faces(collection_id: str, face_ids: tuple[str, ...]) -> None:
    """Delete faces (their templates leave the catalog and the index)."""
    with _client() as c:
        r = c.delete_faces(collection_id, list(face_ids))
    for f in r["DeletedFaces"]:
        click.echo(f"deleted {f}")
    for u in r["UnsuccessfulFaceDeletions"]:
        click.echo(f"not deleted {u['FaceId']}: {', '.join(u['Reasons'])}")


@collection.command("search")
@click.argument("collection_id")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--threshold", type=float, default=None,
              help="FaceMatchThreshold; default: at most 0.01 false matches expected per search.")
@click.option("--max-faces", type=int, default=None)
@click.option("--quality-filter", type=QUALITY, default="NONE", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def search(collection_id: str, image: str, threshold: float | None, max_faces: int | None,
           quality_filter: str, as_json: bool) -> None:
    """Search the collection for the largest face in IMAGE."""
    with _client() as c:
        r = c.search_faces_by_image(collection_id, image, max_faces=max_faces,
                                    face_match_threshold=threshold,
                                    quality_filter=quality_filter)
    _matches(r, as_json)


@collection.command("search-face")
@click.argument("collection_id")
@click.argument("face_id")
@click.option("--threshold", type=float, default=None)
@click.option("--max-faces", type=int, default=None)
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def search_face(collection_id: str, face_id: str, threshold: float | None,
                max_faces: int | None, as_json: bool) -> None:
    """Search the collection for faces like a stored face."""
    with _client() as c:
        r = c.search_faces(collection_id, face_id, max_faces=max_faces,
                           face_match_threshold=threshold)
    _matches(r, as_json)


@main.group()
def user() -> None:
    """Users: named groups of faces in a collection."""


@user.command("create")
@click.argument("collection_id")
@click.argument("user_id")
@reports_errors
def user_create(collection_id: str, user_id: str) -> None:
    """Create a user."""
    with _client() as c:
        c.create_user(collection_id, user_id)
    click.echo(f"created user {user_id}")


@user.command("delete")
@click.argument("collection_id")
@click.argument("user_id")
@reports_errors
def user_delete(collection_id: str, user_id: str) -> None:
    """Delete a user (its faces stay, disassociated)."""
    with _client() as c:
        c.delete_user(collection_id, user_id)
    click.echo(f"deleted user {user_id}")


@user.command("list")
@click.argument("collection_id")
@reports_errors
def user_list(collection_id: str) -> None:
    """List users and their status."""
    token = None
    with _client() as c:
        while True:
            r = c.list_users(collection_id, next_token=token)
            for u in r["Users"]:
                click.echo(f"{u['UserId']}\t{u['UserStatus']}")
            token = r.get("NextToken")
            if token is None:
                break


@user.command("associate")
@click.argument("collection_id")
@click.argument("user_id")
@click.argument("face_ids", nargs=-1, required=True)
@click.option("--threshold", type=float, default=None,
              help="UserMatchThreshold (default 99.99: false-match rate 1e-4).")
@reports_errors
def user_associate(collection_id: str, user_id: str, face_ids: tuple[str, ...],
                   threshold: float | None) -> None:
    """Associate faces with a user (each must match the user's faces)."""
    with _client() as c:
        emit_json(c.associate_faces(collection_id, user_id, list(face_ids),
                                    user_match_threshold=threshold))


@user.command("disassociate")
@click.argument("collection_id")
@click.argument("user_id")
@click.argument("face_ids", nargs=-1, required=True)
@reports_errors
def user_disassociate(collection_id: str, user_id: str, face_ids: tuple[str, ...]) -> None:
    """Remove faces from a user (they stay in the collection)."""
    with _client() as c:
        emit_json(c.disassociate_faces(collection_id, user_id, list(face_ids)))


@user.command("search")
@click.argument("collection_id")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--threshold", type=float, default=None,
              help="UserMatchThreshold; default: at most 0.01 false matches expected per "
                   "search.")
@click.option("--json", "as_json", is_flag=True, help="Print the SearchUsersByImage response.")
@reports_errors
def user_search(collection_id: str, image: str, threshold: float | None,
                as_json: bool) -> None:
    """Search users by the largest face in IMAGE."""
    with _client() as c:
        r = c.search_users_by_image(collection_id, image, user_match_threshold=threshold)
    if not as_json and "SearchedFace" not in r:
        click.echo(f"no face found in {image}")
        return
    _matches(r, as_json, "UserMatches")
