"""Events written by real operations: the real model on real photos, a real SQLite ledger."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceledger.api import FaceLedger
from faceledger.cli import main
from faceledger.errors import InvalidImageFormatException
from faceledger.service import FaceService
from faceledger.settings import Settings


def _bodies(svc: FaceService) -> list[dict[str, Any]]:
    return [json.loads(e.body) for e in svc.ledger.scan()]


@pytest.fixture
def fl(tmp_path: Path) -> FaceLedger:
    return FaceLedger(service=FaceService(Settings(data_dir=tmp_path)))


def test_detect_faces_is_logged_with_context_and_image_digest(fl: FaceLedger,
                                                               astronaut_jpeg: bytes) -> None:
    out = fl.with_context(principal="desk-4", purpose="passport photo check",
                          case="PP-301").detect_faces(astronaut_jpeg)
    (ev,) = _bodies(fl.service)
    assert (ev["operation"], ev["outcome"], ev["principal"]) == ("DetectFaces", "done", "desk-4")
    assert (ev["purpose"], ev["case"]) == ("passport photo check", "PP-301")
    assert ev["images"] == [hashlib.sha256(astronaut_jpeg).hexdigest()]
    assert ev["result"] == {"faces": len(out["FaceDetails"])} and ev["result"]["faces"] >= 1
    assert ev["model_version"] == fl.service.pipeline.model_version and ev["request_id"]
    assert "Bytes" not in json.dumps(ev) and len(json.dumps(ev)) < 2000  # never the image


def test_bad_input_leaves_no_event(fl: FaceLedger) -> None:
    with pytest.raises(InvalidImageFormatException):
        fl.detect_faces(b"GIF89a not a photo")
    assert fl.service.ledger.count() == 0


def _jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def test_compare_faces_is_logged_with_threshold_and_result(fl: FaceLedger,
                                                           faces_dir: Path) -> None:
    person = sorted((faces_dir / "lfw").glob("*/"))
    pair = next(sorted(p.glob("*.jpg")) for p in person if len(list(p.glob("*.jpg"))) >= 2)
    a, b = pair[0].read_bytes(), pair[1].read_bytes()
    out = fl.with_context(purpose="1:1 verification", case="V-1").compare_faces(
        a, b, similarity_threshold=99.0)
    (ev,) = _bodies(fl.service)
    assert ev["operation"] == "CompareFaces" and ev["case"] == "V-1"
    assert ev["images"] == [hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()]
    assert ev["thresholds"] == {"SimilarityThreshold": 99.0, "FalseMatchRate": pytest.approx(0.01)}
    assert ev["result"]["similarities"] == [m["Similarity"] for m in out["FaceMatches"]]
    assert ev["result"]["compared"] == len(out["FaceMatches"]) + len(out["UnmatchedFaces"])
    assert ev["result"]["expected_false_matches"] == pytest.approx(ev["result"]["compared"] * 0.01)


def test_cli_global_purpose_and_case_reach_the_ledger(tmp_path: Path,
                                                      astronaut_jpeg: bytes) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(astronaut_jpeg)
    env = {"FACELEDGER_DATA_DIR": str(tmp_path)}
    res = CliRunner().invoke(main, ["--purpose", "demo run", "--case", "CLI-1", "detect",
                                    str(image)], env=env)
    assert res.exit_code == 0, res.output
    log = CliRunner().invoke(main, ["ledger", "log", "--case", "CLI-1"], env=env)
    (line,) = log.output.strip().splitlines()
    ev = json.loads(line)
    assert (ev["operation"], ev["purpose"], ev["principal"]) == ("DetectFaces", "demo run",
                                                                 "local")
