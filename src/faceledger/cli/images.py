"""`faceledger detect`, `faceledger compare` and `faceledger demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..annotate import GREEN, RED, draw_faces, save_png
from ..api import FaceLedger
from ..imaging import decode_image
from .app import emit_json, main, reports_errors


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
    result = FaceLedger().detect_faces(data)
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
    client = FaceLedger()
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
        if not matches:
            click.echo(f"no match: {len(unmatched)} face(s) in {target} below the threshold")
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


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="faceledger-demo",
              show_default=True, help="Folder for the annotated images.")
@reports_errors
def demo(out: str) -> None:
    """Detect and compare faces in public-domain sample images (needs scikit-image)."""
    import io

    import numpy as np
    from PIL import Image

    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - the README installs it
        raise click.ClickException("the demo needs scikit-image: pip install scikit-image") from exc
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    portrait = np.asarray(data.astronaut())  # type: ignore[no-untyped-call]
    buf = io.BytesIO()
    Image.fromarray(portrait).save(buf, format="JPEG", quality=95)
    first = buf.getvalue()
    # The same person, mirrored and darkened: a different photo of the same face.
    buf = io.BytesIO()
    Image.fromarray((portrait[:, ::-1] * 0.8).astype(np.uint8)).save(buf, format="JPEG")
    second = buf.getvalue()
    client = FaceLedger()
    found = client.detect_faces(first)["FaceDetails"]
    click.echo(f"astronaut portrait: {len(found)} face(s)")
    for i, f in enumerate(found):
        click.echo(_describe_face(i, f))
    save_png(draw_faces(decode_image(first), found), str(folder / "detect.png"))
    result = client.compare_faces(first, second)
    best = max((m["Similarity"] for m in result["FaceMatches"]), default=None)
    verdict = "same person" if best is not None else "no match"
    click.echo(f"compare with a mirrored, darker copy: {verdict}"
               + ("" if best is None else f", similarity {best:.6g}"))
    click.echo(f"annotated image: {folder / 'detect.png'}")
