"""`faceledger redact`: a copy of a video or image with every face not kept blurred."""

from __future__ import annotations

from pathlib import Path

import click

from ..service import FaceService
from ..settings import Settings
from .app import emit_json, main, reports_errors, request_context


@main.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the redacted copy (same kind: video or image).")
@click.option("--keep", multiple=True, metavar="FACE_ID|USER_ID",
              help="A face or user of --collection to leave visible (repeatable).")
@click.option("--collection", default=None, help="The collection --keep ids belong to.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@reports_errors
def redact(source: str, output: str, keep: tuple[str, ...], collection: str | None,
           as_json: bool) -> None:
    """Blur every face in SOURCE (video or JPEG/PNG image) except the --keep ones.

    Video: faces are followed between analysed frames, boxes are padded, interpolated and
    held across frames that were not analysed, and the audio is copied unchanged. The input
    and output SHA-256 go into the ledger.
    """
    service = FaceService(Settings())
    try:
        result = service.redact(Path(source), Path(output), list(keep), collection,
                                ctx=request_context())
    finally:
        service.close()
    if as_json:
        emit_json(result)
        return
    blurred = result.get("persons_blurred", result.get("faces_blurred", 0))
    kept = result.get("persons_kept", result.get("faces_kept", 0))
    unit = "person" if "persons" in result else "face"
    click.echo(f"{output}: {blurred} {unit}{'s' if blurred != 1 else ''} blurred, {kept} kept")
    click.echo(f"  input  sha256 {result['InputSha256']}")
    click.echo(f"  output sha256 {result['OutputSha256']}")
