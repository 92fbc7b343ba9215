"""The command line: readable output, --json, annotated images, errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from faceledger.cli import main


def test_detect_prints_faces_and_writes_annotated_png(tmp_path: Path,
                                                      astronaut_jpeg: bytes) -> None:
    img = tmp_path / "astronaut.jpg"
    img.write_bytes(astronaut_jpeg)
    out = tmp_path / "boxes.png"
    result = CliRunner().invoke(main, ["detect", str(img), "--annotate", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 face" in result.output and "pose yaw" in result.output
    with Image.open(out) as drawn:
        assert drawn.size == (512, 512)


def test_detect_json(tmp_path: Path, astronaut_jpeg: bytes) -> None:
    img = tmp_path / "astronaut.jpg"
    img.write_bytes(astronaut_jpeg)
    result = CliRunner().invoke(main, ["detect", str(img), "--json"])
    assert result.exit_code == 0
    assert len(json.loads(result.output)["FaceDetails"]) == 1


def test_bad_image_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    result = CliRunner().invoke(main, ["detect", str(bad)])
    assert result.exit_code == 2
    assert "InvalidImageFormatException" in result.output
    assert "Traceback" not in result.output


def test_compare_same_person(tmp_path: Path, faces_dir: Path) -> None:
    a = faces_dir / "lfw" / "Colin_Powell" / "Colin_Powell_0001.jpg"
    b = faces_dir / "lfw" / "Colin_Powell" / "Colin_Powell_0002.jpg"
    out = tmp_path / "match.png"
    result = CliRunner().invoke(main, ["compare", str(a), str(b), "--annotate", str(out)])
    assert result.exit_code == 0, result.output
    assert "MATCH" in result.output and "false-match rate 1.0e-04" in result.output
    assert out.is_file()
