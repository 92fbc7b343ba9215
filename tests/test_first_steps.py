"""What a new user trips over (issue 26), on the command line and in the Python API: folders of
photos that hold bystanders, answers that must say what they mean, and the README's own
examples. The SDK side (headers, the boto3 helper, regions, tags) is tests/test_sdk.py."""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from faceledger.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CLI in this process (click's runner) on a data directory of this test's own."""
    monkeypatch.setenv("FACELEDGER_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def _run(*args: str) -> Result:
        return runner.invoke(main, list(args))

    return _run


# --- 1. a folder per person: the folder's name labels one face per photo --------------------

def test_index_from_folder_names_keeps_only_the_largest_face(run: Any, tmp_path: Path,
                                                             faces_dir: Path) -> None:
    blix = faces_dir / "lfw" / "Hans_Blix"  # Hans_Blix_0003.jpg: Blix and two other people
    assert run("collection", "create", "staff").exit_code == 0
    report = tmp_path / "run.jsonl"
    r = run("collection", "index", "staff", str(blix), "--external-id-from", "parent",
            "--report", str(report), "--workers", "1", "--no-progress")
    assert r.exit_code == 0, r.output
    lines = {Path(x["path"]).name: x for x in map(json.loads, report.read_text().splitlines())}
    crowded = {name for name, x in lines.items() if x.get("faces_left_out")}
    assert "Hans_Blix_0003.jpg" in crowded
    assert lines["Hans_Blix_0003.jpg"]["faces_left_out"] == 2
    # one face per photo, each labelled with the folder's name
    assert all(len(x["face_ids"]) <= 1 for x in lines.values())
    assert "photos with more faces than MaxFaces" in r.output
    assert "Hans_Blix_0003.jpg" in r.output and "--all-faces" in r.output
    faces = json.loads(run("collection", "faces", "staff", "--json").output)["Faces"]
    assert len(faces) == sum(len(x["face_ids"]) for x in lines.values())
    assert {f["ExternalImageId"] for f in faces} == {"Hans_Blix"}
    # the one kept is LFW's subject: the face in the middle of the crop
    kept = next(f for f in faces if f["FaceId"] in lines["Hans_Blix_0003.jpg"]["face_ids"])
    box = kept["BoundingBox"]
    assert abs(box["Left"] + box["Width"] / 2 - 0.5) < 0.1

    # told otherwise, every face of the photo is indexed under the folder's name
    assert run("collection", "create", "everyone").exit_code == 0
    r = run("collection", "index", "everyone", str(blix / "Hans_Blix_0003.jpg"),
            "--external-id-from", "parent", "--all-faces", "--workers", "1", "--no-progress",
            "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["faces_indexed"] == 3 and summary["photos_with_faces_left_out"] == []
    r = run("collection", "index", "everyone", str(blix), "--all-faces", "--max-faces", "2")
    assert r.exit_code == 2 and "exclude each other" in r.output


# --- 9. packaging -----------------------------------------------------------------------------

def test_each_dependency_is_listed_once() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lists = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    for name, requirements in lists.items():
        names = Counter(req.split(";")[0].split("[")[0].split(">")[0].split("=")[0]
                        .split("<")[0].strip().lower() for req in requirements)
        assert [n for n, k in names.items() if k > 1] == [], name


# --- 4. compare says how close a "no match" was ----------------------------------------------

def _compare(run: Any, a: Path, b: Path) -> tuple[str, dict[str, Any]]:
    text = run("compare", str(a), str(b))
    raw = run("compare", str(a), str(b), "--json")
    assert text.exit_code == raw.exit_code == 0, text.output + raw.output
    return text.output, json.loads(raw.output)


def test_compare_prints_the_best_score_and_the_threshold_it_passes(run: Any,
                                                                   faces_dir: Path) -> None:
    from faceledger.calibration import similarity_for_fmr

    lfw = faces_dir / "lfw"
    # two photos of one man that model 2.0 scores just below the 99.99 default
    text, raw = _compare(run, lfw / "Ali_Naimi" / "Ali_Naimi_0003.jpg",
                         lfw / "Ali_Naimi" / "Ali_Naimi_0004.jpg")
    assert raw["FaceMatches"] == []
    best = max(f["Similarity"] for f in raw["UnmatchedFaces"])
    assert best < raw["SimilarityThreshold"]
    assert f"no match: best similarity {best:.6g} of 1 face" in text
    passed = float(text.split("would pass Similarity ")[1].split()[0])
    fmr = float(text.split("(false-match rate ")[1].split(")")[0])
    assert passed == pytest.approx(similarity_for_fmr(fmr))
    assert passed <= best < similarity_for_fmr(fmr / 10)  # the strictest it reaches
    # a score below every shipped threshold says so
    text, raw = _compare(run, lfw / "Amelie_Mauresmo" / "Amelie_Mauresmo_0001.jpg",
                         lfw / "Amelie_Mauresmo" / "Amelie_Mauresmo_0021.jpg")
    best = max(f["Similarity"] for f in raw["UnmatchedFaces"])
    assert best < 90 and f"best similarity {best:.6g}" in text
    assert "none of the shipped thresholds" in text
    # a target without a face is not "no match: 0 faces below the threshold"
    text, raw = _compare(run, lfw / "Ali_Naimi" / "Ali_Naimi_0003.jpg",
                         faces_dir / "detection" / "dogs.jpg")
    assert raw["UnmatchedFaces"] == [] and "no face found in" in text


# --- 3 and 9. searches say what they found, readably ---------------------------------------------

def test_searches_print_matches_and_say_when_they_are_held_for_review(run: Any,
                                                                      faces_dir: Path) -> None:
    lopez = faces_dir / "lfw" / "Jennifer_Lopez"
    enrolled, probe = lopez / "Jennifer_Lopez_0003.jpg", lopez / "Jennifer_Lopez_0004.jpg"
    assert run("collection", "create", "door").exit_code == 0
    r = run("collection", "index", "door", str(enrolled), "--workers", "1", "--json")
    face_id = json.loads(run("collection", "faces", "door", "--json").output)["Faces"][0]["FaceId"]
    assert run("user", "create", "door", "jlo").exit_code == 0
    assert run("user", "associate", "door", "jlo", face_id).exit_code == 0
    r = run("user", "search", "door", str(probe), "--threshold", "95")
    assert r.exit_code == 0, r.output
    assert "MATCH  user jlo (ACTIVE)  similarity" in r.output and "{" not in r.output
    r = run("user", "search", "door", str(probe), "--threshold", "95", "--json")
    assert json.loads(r.output)["UserMatches"][0]["User"]["UserId"] == "jlo"

    assert run("policy", "set", "door", "--identification").exit_code == 0
    for command in (["collection", "search"], ["user", "search"]):
        r = run("--case", "INC-26", *command, "door", str(probe), "--threshold", "95")
        assert r.exit_code == 0, r.output
        assert "held for review: 1 candidate (case INC-26)" in r.output, r.output
        assert "no match" not in r.output and "MATCH" not in r.output
        assert "candidate " in r.output.splitlines()[-1]


# --- 7. a collection's purpose rule covers redaction, and each adapter says how to give one ------

def test_redact_needs_the_purpose_a_collection_requires(run: Any, tmp_path: Path,
                                                        faces_dir: Path) -> None:
    photo = faces_dir / "lfw" / "Hans_Blix" / "Hans_Blix_0003.jpg"
    assert run("collection", "create", "staff").exit_code == 0
    assert run("policy", "set", "staff", "--require-purpose").exit_code == 0
    out = tmp_path / "redacted.jpg"
    r = run("redact", str(photo), "-o", str(out), "--collection", "staff")
    assert r.exit_code == 2 and not out.exists()
    assert "PolicyRefusedException" in r.output or "requires a stated purpose" in r.output
    # the CLI's own way, where the option goes: not an HTTP header
    assert "give one with `faceledger --purpose TEXT redact ..." in r.output
    assert "X-Faceledger" not in r.output
    r = run("--purpose", "press photo", "redact", str(photo), "-o", str(out),
            "--collection", "staff")
    assert r.exit_code == 0, r.output
    last = json.loads(run("ledger", "log", "--last", "1").output.splitlines()[-1])
    assert last["operation"] == "Redact" and last["purpose"] == "press photo"
    # the search's refusal names the search command
    r = run("collection", "search", "staff", str(photo))
    assert "`faceledger --purpose TEXT collection search ...`." in r.output


def test_the_python_api_names_with_context(tmp_path: Path) -> None:
    from faceledger import FaceLedger, FaceledgerError, Settings

    fl = FaceLedger(Settings(data_dir=tmp_path / "data"))
    fl.create_collection("staff")
    fl.service.put_collection_policy("staff", {"RequirePurpose": True})
    with pytest.raises(FaceledgerError) as exc:
        fl.list_faces("staff")
    assert "with_context(purpose=...)" in exc.value.message
    assert fl.with_context(purpose="audit").list_faces("staff")["Faces"] == []


# --- 9. the Python API takes pictures as face_recognition users hold them ----------------------

def test_python_api_takes_numpy_arrays_and_pil_images(service: Any, faces_dir: Path) -> None:
    import numpy as np
    from PIL import Image

    from faceledger import FaceLedger, FaceledgerError
    from faceledger.imaging import pixels_sha256

    fl = FaceLedger(service=service)
    lopez = faces_dir / "lfw" / "Jennifer_Lopez"
    a, b = lopez / "Jennifer_Lopez_0003.jpg", lopez / "Jennifer_Lopez_0004.jpg"
    # what face_recognition.load_image_file returns: np.array(PIL.Image.open(f).convert("RGB"))
    array = np.array(Image.open(a).convert("RGB"))
    assert array.dtype == np.uint8 and array.shape[2] == 3
    from_file = fl.detect_faces(a)["FaceDetails"]
    assert fl.detect_faces(array)["FaceDetails"] == from_file
    assert fl.detect_faces(Image.open(a))["FaceDetails"] == from_file
    grey = fl.detect_faces(np.array(Image.open(a).convert("L")))["FaceDetails"]
    assert len(grey) == len(from_file)
    by_path = fl.compare_faces(a, b, similarity_threshold=0)["FaceMatches"][0]["Similarity"]
    mixed = fl.compare_faces(array, Image.open(b), similarity_threshold=0)
    assert mixed["FaceMatches"][0]["Similarity"] == pytest.approx(by_path, abs=1e-9)
    # the ledger names pixels by their own digest (there is no file)
    event = json.loads(service.ledger.get(service.ledger.head().seq).body)
    assert event["operation"] == "CompareFaces" and event["images"][0] == pixels_sha256(array)
    for bad in (array.astype(np.float32), array[:, :, :2], np.zeros((40, 40, 3), np.uint8)):
        with pytest.raises(FaceledgerError) as exc:
            fl.detect_faces(bad)
        assert exc.value.code in ("InvalidParameterException", "ImageTooLargeException")


# --- 9. stopping the server leaves nothing behind ----------------------------------------------

def test_stopping_the_server_leaks_no_semaphores(tmp_path: Path, astronaut_jpeg: bytes) -> None:
    """`faceledger serve` with two inference processes, stopped by SIGTERM as a service manager
    stops it: uvicorn re-raises the signal after its shutdown, so the pool must be closed
    during the shutdown, or the resource tracker reports the pool's 5 queue semaphores."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import boto3

    env = {**os.environ, "FACELEDGER_DATA_DIR": str(tmp_path / "data")}
    cli = [sys.executable, "-c", "from faceledger.cli import main; main()"]
    created = subprocess.run([*cli, "keys", "create", "t", "-o", "DetectFaces", "-c", "*",
                              "--json"], env=env, capture_output=True, text=True, timeout=120,
                             check=False)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*cli, "serve", "--port", str(port), "--workers", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = boto3.session.Session().client(
            "rekognition", endpoint_url=f"http://127.0.0.1:{port}", region_name="eu-west-1",
            aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        deadline = time.monotonic() + 180
        while True:
            try:
                assert client.detect_faces(Image={"Bytes": astronaut_jpeg})["FaceDetails"]
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert "faceledger server stopped" in out
    assert "leaked" not in out, out


# --- 5. the README's examples: what evaluate, report and keys say ------------------------------

def test_impostor_summary_says_which_broken_cells_are_not_covered() -> None:
    """Children's cells break the promise (model 2.0 cannot tell them apart) and the shipped
    calibration says it does not cover them: the summary says so before its first BROKEN."""
    import numpy as np

    from faceledger.cli.evaluation import impostor_summary
    from faceledger.evaluation.impostors import impostor_rates

    rng = np.random.default_rng(7)
    adults = rng.normal(size=(40, 16))
    children = rng.normal(size=(1, 16)) + 0.05 * rng.normal(size=(40, 16))  # packed closely
    templates = np.vstack([adults / np.linalg.norm(adults, axis=1, keepdims=True),
                           children / np.linalg.norm(children, axis=1, keepdims=True)])
    groups = ["adult"] * 40 + ["child"] * 40
    def pair_distances(x: Any) -> Any:
        d = np.linalg.norm(x[:, None] - x[None, :], axis=2)
        return d[np.triu_indices(len(x), 1)]

    # a threshold below every adult pair and above every child pair
    cut = 0.9 * float(pair_distances(templates[:40]).min())
    assert pair_distances(templates[40:]).max() < cut
    imp = impostor_rates(templates, [str(i) for i in range(80)], groups,
                         {"Similarity 99.9": cut}, {"Similarity 99.9": 1e-3}, replicates=20,
                         not_covered=["child"])
    imp["children"] = "not covered"
    lines = impostor_summary(imp)
    assert lines[0].startswith("NOTE") and "(child)" in lines[0]  # before any BROKEN cell
    by_group = {line.split(" (")[0]: line for line in lines[1:]}
    assert "BROKEN (not covered)" in by_group["child"]
    assert "BROKEN" not in by_group["adult"] and "BROKEN" not in by_group["all covered"]
    assert "in groups the calibration does not cover, 0 in groups it covers" in lines[-1]


def test_report_to_a_date_includes_the_day_and_writes_where_o_says(run: Any,
                                                                   tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    assert run("keys", "create", "k", "-o", "DetectFaces", "-c", "*").exit_code == 0  # an event
    today = datetime.now(UTC).date()
    out = tmp_path / "rep"
    r = run("report", "--from", today.isoformat(), "--to", today.isoformat(), "-o", str(out))
    assert r.exit_code == 0, r.output
    data = json.loads((out / "report.json").read_text())
    assert data["totals"]["events"] >= 1  # today's events, though --to names today
    assert data["period"]["to"].startswith((today + timedelta(days=1)).isoformat())
    # a time is the first instant left out, as before
    r = run("report", "--from", (today - timedelta(days=1)).isoformat(), "--to",
            f"{today.isoformat()}T00:00:00", "-o", str(out))
    assert r.exit_code == 0 and json.loads((out / "report.json").read_text())[
        "period"]["to"].startswith(today.isoformat())
    assert "includes that whole day" in run("report", "--help").output


def test_report_and_evaluate_write_to_folders_of_their_own() -> None:
    from faceledger.cli.evaluation import evaluate
    from faceledger.cli.ledger import export, report

    def out_option(command: Any) -> Any:
        return next(p for p in command.params if p.name == "out")

    assert "-o" in out_option(report).opts and "-o" in out_option(export).opts
    evaluations = list(evaluate.commands.values())
    assert evaluations and all("-o" in out_option(c).opts for c in evaluations)
    assert {out_option(c).default for c in evaluations} == {"faceledger-evaluation"}
    assert out_option(report).default == "faceledger-report"
