"""`faceledger detect`, `faceledger compare` and `faceledger demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..annotate import GREEN, RED, draw_faces, save_png
from ..api import FaceLedger
from ..calibration import SHIPPED_FMRS, similarity_for_fmr, strictest_fmr_passed
from ..imaging import decode_image
from .app import emit_json, main, reports_errors, request_context


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def _describe_face(i: int, face: dict[str, Any]) -> str:
    bb, pose, q = face["BoundingBox"], face["Pose"], face["Quality"]
    return (
        f"  face {i + 1}: box left={bb['Left']:.3f} top={bb['Top']:.3f} "
        f"w={bb['Width']:.3f} h={bb['Height']:.3f}  confidence {face['Confidence']:.1f}\n"
        f"          pose yaw {pose['Yaw']:+.0f} pitch {pose['Pitch']:+.0f} roll {pose['Roll']:+.0f}"
        f"  brightness {q['Brightness']:.0f} sharpness {q['Sharpness']:.0f}"
    )


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the DetectFaces response as JSON.")
@click.option("--annotate", type=click.Path(dir_okay=False), help="Write a PNG with faces drawn.")
@reports_errors
def detect(image: str, as_json: bool, annotate: str | None) -> None:
    """Find faces in IMAGE (JPEG or PNG): boxes, landmarks, pose and quality."""
    data = _read(image)
    result = FaceLedger(context=request_context()).detect_faces(data)
    faces = result["FaceDetails"]
    if as_json:
        emit_json(result)
    else:
        click.echo(f"{image}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
        for i, f in enumerate(faces):
            click.echo(_describe_face(i, f))
    if annotate:
        img = decode_image(data)
        save_png(draw_faces(img, faces, [str(i + 1) for i in range(len(faces))]), annotate)
        click.echo(f"annotated image written to {annotate}", err=as_json)


@main.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.argument("target", type=click.Path(exists=True, dir_okay=False))
@click.option("--threshold", type=float, default=None,
              help="SimilarityThreshold (0-100); default: FMR 1e-4, i.e. 99.99.")
@click.option("--quality-filter", type=click.Choice(["NONE", "AUTO", "LOW", "MEDIUM", "HIGH"]),
              default="NONE", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the CompareFaces response as JSON.")
@click.option("--annotate", type=click.Path(dir_okay=False),
              help="Write a PNG of TARGET with matches (green) and non-matches (red).")
@reports_errors
def compare(source: str, target: str, threshold: float | None, quality_filter: str,
            as_json: bool, annotate: str | None) -> None:
    """Compare the largest face in SOURCE with every face in TARGET."""
    tgt = _read(target)
    client = FaceLedger(context=request_context())
    result = client.compare_faces(_read(source), tgt, similarity_threshold=threshold,
                                  quality_filter=quality_filter)
    matches, unmatched = result["FaceMatches"], result["UnmatchedFaces"]
    if as_json:
        emit_json(result)
    else:
        thr = result["SimilarityThreshold"]
        click.echo(
            f"threshold: Similarity {thr:.6g} = false-match rate {result['FalseMatchRate']:.1e} "
            f"({result['FaceModelVersion']})"
        )
        if not matches and not unmatched:
            click.echo(f"no face found in {target}")
        elif not matches:
            click.echo(_no_match(client, unmatched, target))
        for m in matches:
            click.echo(f"MATCH  similarity {m['Similarity']:.6g}")
        if matches and unmatched:
            click.echo(f"{len(unmatched)} other face(s) in {target} below the threshold")
    if annotate:
        faces = [m["Face"] for m in matches] + unmatched
        labels = [f"{m['Similarity']:.4g}" for m in matches] + ["no match"] * len(unmatched)
        colors = [GREEN] * len(matches) + [RED] * len(unmatched)
        save_png(draw_faces(decode_image(tgt), faces, labels, colors), annotate)
        click.echo(f"annotated image written to {annotate}", err=as_json)


def _no_match(client: FaceLedger, unmatched: list[dict[str, Any]], target: str) -> str:
    """"no match", with the best score and the strictest shipped threshold it reaches: a
    score just below the threshold is not the same answer as a stranger's."""
    best = max(float(f["Similarity"]) for f in unmatched)
    table = client.service.calibration
    fmr = strictest_fmr_passed(best, tuple(f for f in SHIPPED_FMRS if table.is_credible(f)))
    faces = f"{len(unmatched)} face{'s' if len(unmatched) != 1 else ''} in {target}"
    reaches = ("it reaches none of the shipped thresholds (the lowest is Similarity "
               f"{similarity_for_fmr(SHIPPED_FMRS[0]):.6g})" if fmr is None else
               f"it would pass Similarity {similarity_for_fmr(fmr):.6g} (false-match rate "
               f"{fmr:.0e}), the strictest shipped threshold it reaches")
    return f"no match: best similarity {best:.6g} of {faces}, below the threshold;\n  {reaches}"


@main.command()
@click.option("-o", "--out", type=click.Path(file_okay=False), default="faceledger-demo",
              show_default=True, help="Folder for the demo's database and annotated image.")
@reports_errors
def demo(out: str) -> None:
    """Detect, compare, index and search public-domain sample faces on the embedded store."""
    import io
    import uuid

    import numpy as np
    from PIL import Image

    from ..settings import Settings

    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - the README's install includes it
        raise click.ClickException("the demo needs scikit-image: pip install scikit-image") from exc

    def jpeg(pixels: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
        return buf.getvalue()

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    portrait = np.asarray(data.astronaut())  # type: ignore[no-untyped-call]
    first = jpeg(portrait)
    # The same face mirrored and darker: a different photo of the same person.
    second = jpeg((portrait[:, ::-1] * 0.8).astype(np.uint8))
    settings = Settings(data_dir=folder / "data")
    client = FaceLedger(settings, context=request_context())
    try:
        click.echo(f"Model {client.service.pipeline.model_version}: detector {settings.detector}, "
                   f"embedder {settings.embedder} (faceledger calibration prints what its "
                   "scores mean; docs/models.md has its card)")
        found = client.detect_faces(first)["FaceDetails"]
        click.echo(f"1. DetectFaces on the astronaut portrait: {len(found)} face(s)")
        for i, f in enumerate(found):
            click.echo(_describe_face(i, f))
        save_png(draw_faces(decode_image(first), found), str(folder / "detect.png"))

        result = client.compare_faces(first, second)
        best = max((m["Similarity"] for m in result["FaceMatches"]), default=None)
        click.echo(f"2. CompareFaces with a mirrored, darker copy at the default threshold "
                   f"(FMR {result['FalseMatchRate']:.0e}): "
                   + ("no match" if best is None else f"MATCH, similarity {best:.8g}"))

        cid = f"demo-{uuid.uuid4().hex[:8]}"
        client.create_collection(cid)
        # One person per enrolment photo: keep only the largest face (MaxFaces=1).
        indexed = client.index_faces(cid, first, external_image_id="astronaut", max_faces=1)
        click.echo(f"3. IndexFaces into collection {cid} (embedded store in {folder / 'data'}): "
                   f"{len(indexed['FaceRecords'])} face(s) indexed, "
                   f"{len(indexed['UnindexedFaces'])} not indexed (MaxFaces=1, AUTO quality filter)")
        hits = client.search_faces_by_image(cid, second)
        click.echo(f"4. SearchFacesByImage with the copy: {len(hits['FaceMatches'])} match(es) "
                   f"among {hits['FacesSearched']} face(s); threshold Similarity "
                   f"{hits['FaceMatchThreshold']:.8g} = FMR {hits['FalseMatchRate']:.0e}, "
                   f"{hits['ExpectedFalseMatches']:.1e} false matches expected")
        check = client.service.verify_ledger()
        click.echo(f"5. Ledger: {check['checked']} events recorded, hash chain "
                   + ("intact" if check["ok"] else "BROKEN"))
    finally:
        client.close()
    click.echo(f"annotated image: {folder / 'detect.png'}")
