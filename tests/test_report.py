"""Transparency reports and per-case exports, computed from a real ledger: detections run the
real model on a real photo; collection searches drive the audit hook directly, the way the
collection operations do (tests/test_ledger_collections.py covers those end to end)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from faceledger.api import FaceLedger
from faceledger.cli import main
from faceledger.context import RequestContext
from faceledger.errors import AccessDeniedException, ResourceNotFoundException
from faceledger.ledger.report import render_html
from faceledger.service import FaceService
from faceledger.settings import Settings

ADMIN = RequestContext(principal="admin", admin=True)


def _search(svc: FaceService, ctx: RequestContext, collection: str, n: int,
            threshold: float | None = None) -> dict[str, Any]:
    matches = [{"Similarity": 99.99, "Face": {"FaceId": f"face-{i}"}} for i in range(n)]
    with svc.audit("SearchFacesByImage", ctx, collection=collection) as op:
        op.threshold(threshold, default=99.9)
        op.image(hashlib.sha256(f"{ctx.principal}{n}".encode()).hexdigest())
        return op.release({"FaceMatches": matches}, compared=10_000)


def held_probe(svc: FaceService, candidate_id: str) -> str:
    """The probe SHA-256 the candidate's search recorded."""
    return str(svc.get_review_candidate(candidate_id)["ProbeImageSha256"])


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory, astronaut_jpeg: bytes
              ) -> tuple[FaceService, Path]:
    folder = tmp_path_factory.mktemp("reported")
    svc = FaceService(Settings(data_dir=folder))
    fl = FaceLedger(service=svc)
    # Two real detections (real model, real photo), each with its purpose and case.
    fl.with_context(principal="desk-1", purpose="id check", case="K-1").detect_faces(
        astronaut_jpeg)
    fl.with_context(principal="desk-2", purpose="demo").detect_faces(astronaut_jpeg)
    svc.put_collection_policy("watch", {"IdentificationMode": True, "RequirePurpose": True,
                                        "MinSimilarityThreshold": 99.5}, ctx=ADMIN)
    officer = RequestContext(principal="officer", purpose="investigation", case="K-1")
    analyst = RequestContext(principal="analyst", purpose="audit sample", case="Z-9")
    held = _search(svc, officer, "watch", 2)["ReviewCandidates"]
    _search(svc, analyst, "watch", 1)
    _search(svc, RequestContext(principal="analyst", purpose="audit sample"), "staff", 3)
    for bad in (RequestContext(principal="officer", case="K-1"),):  # no purpose
        with pytest.raises(AccessDeniedException):
            _search(svc, bad, "watch", 1)
    with pytest.raises(AccessDeniedException):
        _search(svc, officer, "watch", 1, threshold=90.0)
    enrol = RequestContext(principal="admin", admin=True, purpose="enrolment")
    with svc.audit("IndexFaces", enrol, collection="watch") as op:  # the enrolled photo
        op.image("e1" * 32)
        op.record(face_ids=["face-0", "face-1"])
    r1, r2 = (RequestContext(principal=f"rev-{i}", roles=frozenset({"reviewer"}))
              for i in (1, 2))
    compared = {"probe_sha256": held_probe(svc, held[0]["CandidateId"]),
                "enrolled_sha256": "e1" * 32}
    svc.review_candidate(held[0]["CandidateId"], "CONFIRM", "match", **compared, ctx=r1)
    svc.review_candidate(held[0]["CandidateId"], "CONFIRM", "match", **compared, ctx=r2)
    svc.review_candidate(held[1]["CandidateId"], "REJECT", "different person", ctx=r1,
                         probe_sha256=held_probe(svc, held[1]["CandidateId"]),
                         enrolled_sha256="e1" * 32)
    with svc.audit("DeleteFaces", officer, collection="staff") as op:
        op.deleted(["face-0", "face-1"])
    return svc, folder


def test_report_counts_what_happened(populated: tuple[FaceService, Path]) -> None:
    svc, _ = populated
    rep = svc.transparency_report("2000-01-01", "2999-01-01", ctx=ADMIN)
    assert rep["chain"]["ok"] is True
    assert rep["operations"]["DetectFaces"] == {"done": 2, "refused": 0}
    assert rep["operations"]["SearchFacesByImage"] == {"done": 3, "refused": 2}
    s = rep["searches"]
    assert s["total"] == 3
    assert s["by_purpose"] == {"audit sample": 2, "investigation": 1}
    assert s["by_principal"] == {"analyst": 2, "officer": 1}
    assert s["by_collection"] == {"watch": 2, "staff": 1}
    assert s["matches_found"] == 6  # 2 + 1 held for review, 3 returned
    # Each search ran at max(default 99.9, floor 99.5) = FMR 1e-3 over 10,000 faces.
    assert s["expected_false_matches"] == pytest.approx(3 * 10_000 * 1e-3)
    # what the searchers saw: 3 matches returned (staff), 3 candidates held instead (watch)
    assert (s["matches_returned"], s["candidates_held"]) == (3, 3)
    assert [(t["threshold"], t["searches"]) for t in s["by_threshold"]] == [("99.9", 3)]
    ident = rep["identification"]
    assert (ident["candidates_held"], ident["pending"], ident["confirmed"], ident["rejected"],
            ident["inconclusive"], ident["review_decisions"]) == (3, 1, 1, 1, 0, 3)
    assert ident["decisions"]["same person (CONFIRM)"] == 2
    assert rep["refusals"]["by_rule"] == {"purpose_required": 1, "threshold_floor": 1}
    assert rep["refusals"]["of_operations"]["total"] == 2
    assert rep["refusals"]["of_page_views"]["total"] == 0
    assert rep["deletions"]["faces_deleted"] == 2
    (model,) = rep["models"]
    # 2 detections, 5 searches (2 refused), 1 enrolment and 1 deletion ran under the model.
    assert model["model_version"] == svc.pipeline.model_version and model["events"] == 9
    # The published error rates come from the shipped calibration table, if it ships yet.
    assert model["available"] == ("provenance" in model)
    empty = svc.transparency_report("2000-01-01", "2000-01-02", ctx=ADMIN)
    assert empty["totals"]["events"] == 0


def test_report_cli_writes_self_contained_html_and_json(
        populated: tuple[FaceService, Path], tmp_path: Path) -> None:
    _, folder = populated
    out = tmp_path / "rep"
    res = CliRunner().invoke(main, ["report", "--from", "2000-01-01", "--to", "2999-12-31",
                                    "--out", str(out)], env={"FACELEDGER_DATA_DIR": str(folder)})
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text()
    assert data["searches"]["by_purpose"]["investigation"] == 1
    assert page.count("<svg") >= 6 and "investigation" in page and "officer" in page
    # Self-contained: no scripts, no external resources.
    assert "<script" not in page and not re.search(r'(src|href)="https?:', page)
    assert "Ledger verified" in page


def test_report_escapes_what_callers_wrote() -> None:
    page = render_html({
        "period": {"from": "a", "to": "b"}, "generated_at": "t", "generated_by": "<b>x</b>",
        "chain": {}, "totals": {"events": 1, "done": 1, "refused": 0}, "operations": {},
        "searches": {"total": 1, "by_purpose": {"<script>alert(1)</script>": 1},
                     "by_principal": {}, "by_collection": {}, "matches_found": 0,
                     "matches_returned": 0, "candidates_held": 0, "by_threshold": [],
                     "expected_false_matches": 0.0},
        "identification": {"candidates_held": 0, "pending": 0, "confirmed": 0, "rejected": 0,
                           "inconclusive": 0, "review_decisions": 0},
        "refusals": {"by_rule": {}}, "deletions": {"faces_deleted": 0, "faces_expired": 0,
                                                   "collections_deleted": 0},
        "indexing": {"faces_indexed": 0}, "per_day": {}, "models": [],
    })
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>x</b>" not in page


@pytest.mark.parametrize("bad", [("yesterday", "2025-01-01"), ("2025-02-01", "2025-01-01")])
def test_report_refuses_bad_periods(tmp_path: Path, bad: tuple[str, str]) -> None:
    res = CliRunner().invoke(main, ["report", "--from", bad[0], "--to", bad[1], "--out",
                                    str(tmp_path)], env={"FACELEDGER_DATA_DIR": str(tmp_path)})
    assert res.exit_code == 2 and "InvalidParameterException" in res.output


def test_case_export_discloses_only_the_case_and_verifies_standalone(
        populated: tuple[FaceService, Path], tmp_path: Path) -> None:
    svc, folder = populated
    held = svc.anchor_ledger(ctx=ADMIN)  # an auditor holds this head
    env = {"FACELEDGER_DATA_DIR": str(folder)}
    out = tmp_path / "bundle"
    res = CliRunner().invoke(main, ["export", "--case", "K-1", "--out", str(out)], env=env)
    assert res.exit_code == 0, res.output
    bundle_path = out / "case-K-1.json"
    bundle = json.loads(bundle_path.read_text())
    ops = [e["operation"] for e in bundle["events"]]
    assert ops.count("DetectFaces") == 1 and ops.count("ReviewCandidate") == 3
    assert ops[-1] == "ExportCase" and {e["case"] for e in bundle["events"]} == {"K-1"}
    text = bundle_path.read_text()
    assert "audit sample" not in text and "desk-2" not in text  # other cases stay private
    assert len(bundle["segment"]) == bundle["end"]["seq"] - bundle["start"]["seq"]
    # The shipped verifier runs on a bare Python with nothing but the bundle and an anchor.
    run = subprocess.run([sys.executable, "-I", str(out / "verify.py"), str(bundle_path),
                          "--anchor", held["token"]], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"anchor #{held['seq']}: matches" in run.stdout and run.stdout.strip().endswith("OK")
    # A verifier whose anchor disagrees, or a bundle whose disclosed event was edited, fails.
    wrong = f"faceledger-anchor:{held['seq']}:{'0' * 64}"
    run = subprocess.run([sys.executable, "-I", str(out / "verify.py"), str(bundle_path),
                          "--anchor", wrong], capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 1 and "FAILED" in run.stdout
    entry = next(e for e in bundle["segment"] if "body" in e)
    entry["body"] = entry["body"].replace("K-1", "K-2")
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(bundle))
    res = CliRunner().invoke(main, ["ledger", "verify-bundle", str(edited)], env=env)
    assert res.exit_code == 1 and "edited" in res.output


def test_export_starts_at_the_last_anchor_before_the_case(tmp_path: Path,
                                                          astronaut_jpeg: bytes) -> None:
    svc = FaceService(Settings(data_dir=tmp_path))
    fl = FaceLedger(service=svc)
    fl.with_context(case="early").detect_faces(astronaut_jpeg)
    anchor = svc.anchor_ledger(ctx=ADMIN)
    fl.with_context(case="late").detect_faces(astronaut_jpeg)
    bundle = svc.export_case("late", ctx=ADMIN)
    assert bundle["start"] == {"seq": anchor["seq"], "hash": anchor["hash"], "is": "anchor"}
    assert [e["seq"] for e in bundle["segment"]] == [2, 3]


def test_export_refusals(populated: tuple[FaceService, Path]) -> None:
    svc, _ = populated
    with pytest.raises(ResourceNotFoundException):
        svc.export_case("no-such-case", ctx=ADMIN)
    with pytest.raises(AccessDeniedException):
        svc.export_case("K-1", ctx=RequestContext(principal="officer"))
    last = json.loads(list(svc.ledger.scan())[-1].body)
    assert (last["operation"], last["outcome"], last["rule"]) == (
        "ExportCase", "refused", "admin_required")
