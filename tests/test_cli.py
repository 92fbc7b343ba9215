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
    assert "face 1: box" in result.output and "pose yaw" in result.output
    with Image.open(out) as drawn:
        assert drawn.size == (512, 512)


def test_detect_json(tmp_path: Path, astronaut_jpeg: bytes) -> None:
    img = tmp_path / "astronaut.jpg"
    img.write_bytes(astronaut_jpeg)
    result = CliRunner().invoke(main, ["detect", str(img), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["FaceDetails"][0]["Confidence"] > 99


def test_bad_image_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    result = CliRunner().invoke(main, ["detect", str(bad)])
    assert result.exit_code == 2
    assert "InvalidImageFormatException" in result.output
    assert "Traceback" not in result.output


def test_compare_same_person(tmp_path: Path, faces_dir: Path) -> None:
    a = faces_dir / "lfw" / "Jennifer_Lopez" / "Jennifer_Lopez_0003.jpg"
    b = faces_dir / "lfw" / "Jennifer_Lopez" / "Jennifer_Lopez_0004.jpg"
    out = tmp_path / "match.png"
    result = CliRunner().invoke(main, ["compare", str(a), str(b), "--threshold", "95",
                                       "--annotate", str(out)])
    assert result.exit_code == 0, result.output
    assert "MATCH" in result.output and "false-match rate 5.0e-02" in result.output
    assert out.is_file()


def test_demo_runs_the_main_job_on_the_embedded_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "CompareFaces with a mirrored, darker copy" in result.output
    assert "MATCH" in result.output
    assert "1 face(s) indexed" in result.output
    assert "SearchFacesByImage with the copy: 1 match(es)" in result.output
    assert "hash chain intact" in result.output
    assert (tmp_path / "demo" / "detect.png").is_file()
    assert (tmp_path / "demo" / "data" / "faceledger.db").is_file()
