"""The human review queue: identification-mode search results are held as candidates until
N independent reviewers confirm them (one rejection settles it), every decision is logged.

These tests drive the hook directly (`op.release(response)` with a Rekognition-shaped
SearchFaces response) to cover the queue's rules without the model; the real search operations
in identification mode are covered end to end in tests/test_ledger_collections.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from faceledger.cli import main
from faceledger.context import RequestContext
from faceledger.ledger import schema
from faceledger.errors import (
    AccessDeniedException,
    ConflictException,
    InvalidPaginationTokenException,
    InvalidParameterException,
    ResourceNotFoundException,
)
from faceledger.service import FaceService
from faceledger.settings import Settings

ADMIN = RequestContext(principal="admin", admin=True)
SEARCHER = RequestContext(principal="officer-1", purpose="missing person", case="MP-12")
PROBE = "c0" * 32
ENROLLED = "e1" * 32
# the two photos a reviewer compared: a confirmation (or an inconclusive) names them
EVIDENCE = {"probe_sha256": PROBE, "enrolled_sha256": ENROLLED}


def _reviewer(name: str) -> RequestContext:
    """A reviewer-only key's context (a key that also reads the ledger decides only first)."""
    return RequestContext(principal=name, roles=frozenset({"reviewer"}))


def _search(svc: FaceService, ctx: RequestContext = SEARCHER,
            enrolled: str = ENROLLED) -> dict[str, Any]:
    response = {
        "SearchedFaceBoundingBox": {"Width": 0.2, "Height": 0.2, "Left": 0.1, "Top": 0.1},
        "SearchedFaceConfidence": 99.9,
        "FaceMatches": [
            {"Similarity": 99.995, "Face": {"FaceId": "face-a", "ExternalImageId": "enrol-a"}},
            {"Similarity": 99.95, "Face": {"FaceId": "face-b", "UserId": "user-b"}},
        ],
        "FaceModelVersion": "1.0",
    }
    with svc.audit("IndexFaces", ADMIN, collection="wanted") as op:  # the enrolled photo
        op.image(enrolled)
        op.record(face_ids=["face-a", "face-b"])
    with svc.audit("SearchFacesByImage", ctx, collection="wanted") as op:
        op.threshold(None, default=99.9)
        op.image(PROBE)
        return op.release(response, "FaceMatches", compared=5000)


@pytest.fixture
def svc(tmp_path: Path) -> FaceService:
    s = FaceService(Settings(data_dir=tmp_path))
    s.put_collection_policy("wanted", {"IdentificationMode": True}, ctx=ADMIN)
    return s


def _events(svc: FaceService, operation: str) -> list[dict[str, Any]]:
    bodies = [json.loads(e.body) for e in svc.ledger.scan()]
    return [b for b in bodies if b["operation"] == operation]


def test_identification_mode_holds_matches_as_candidates(svc: FaceService) -> None:
    out = _search(svc)
    assert out["FaceMatches"] == [] and out["ReviewRequired"] is True
    assert [c["Status"] for c in out["ReviewCandidates"]] == ["PENDING", "PENDING"]
    listed = svc.list_review_candidates("wanted")["Candidates"]
    assert {c["FaceId"] for c in listed} == {"face-a", "face-b"}
    a = next(c for c in listed if c["FaceId"] == "face-a")
    assert a["ExternalImageId"] == "enrol-a" and a["ProbeImageSha256"] == PROBE
    assert a["ReviewersRequired"] == 2 and a["Confirmations"] == 0
    assert a["FalseMatchRate"] == pytest.approx(5e-5)
    assert (a["RequestedBy"], a["Purpose"], a["CaseReference"]) == (
        "officer-1", "missing person", "MP-12")
    (search,) = _events(svc, "SearchFacesByImage")
    assert search["result"]["held_for_review"] == [c["CandidateId"]
                                                   for c in out["ReviewCandidates"]]
    assert search["result"]["similarities"] == [99.995, 99.95]
    assert search["result"]["expected_false_matches"] == pytest.approx(5000 * 1e-3)


def test_two_independent_reviewers_confirm_and_nobody_confirms_twice(svc: FaceService) -> None:
    cid = _search(svc)["ReviewCandidates"][0]["CandidateId"]
    with pytest.raises(AccessDeniedException, match="ran the search"):
        svc.review_candidate(cid, "CONFIRM", "looks like him", **EVIDENCE, ctx=SEARCHER)
    r1 = _reviewer("reviewer-1")
    r2 = _reviewer("reviewer-2")
    first = svc.review_candidate(cid, "CONFIRM", "ear shape and scar match", **EVIDENCE, ctx=r1)
    assert (first["Status"], first["Confirmations"]) == ("PENDING", 1)
    with pytest.raises(ConflictException, match="already reviewed"):
        svc.review_candidate(cid, "CONFIRM", "still sure", **EVIDENCE, ctx=r1)
    second = svc.review_candidate(cid, "CONFIRM", "independent check: same person", **EVIDENCE, ctx=r2)
    assert (second["Status"], second["Confirmations"]) == ("CONFIRMED", 2)
    assert second["DecidedAt"] is not None
    assert [r["Reviewer"] for r in second["Reviews"]] == ["reviewer-1", "reviewer-2"]
    # reviewer-3 still has the search's other candidate to decide (blind review): a late
    # conclusion needs the photos like any (the same answer as on an open candidate), and is
    # then refused without naming the outcome
    with pytest.raises(AccessDeniedException, match="must name the probe photo"):
        svc.review_candidate(cid, "REJECT", "late", ctx=_reviewer("reviewer-3"))
    with pytest.raises(ConflictException, match="settled this candidate before your decision"
                       ) as late:
        svc.review_candidate(cid, "REJECT", "late", **EVIDENCE, ctx=_reviewer("reviewer-3"))
    assert "CONFIRMED" not in late.value.message
    decisions = _events(svc, "ReviewCandidate")
    assert [(d["outcome"], d["rule"]) for d in decisions] == [
        ("refused", "reviewer_not_independent"), ("done", None), ("refused", "duplicate_review"),
        ("done", None), ("refused", "evidence_required"), ("refused", "not_pending")]
    assert decisions[-1]["params"]["submitted_probe_sha256"] == PROBE
    # Decisions carry the search's case, so the case export discloses them.
    assert {d["case"] for d in decisions} == {"MP-12"}
    assert decisions[3]["result"]["status"] == "CONFIRMED"
    assert decisions[3]["params"]["reason"] == "independent check: same person"
    confirmed = svc.list_review_candidates("wanted", "CONFIRMED")["Candidates"]
    assert [c["CandidateId"] for c in confirmed] == [cid]
    assert svc.verify_ledger()["ok"]


def test_one_rejection_settles_a_candidate(svc: FaceService) -> None:
    cid = _search(svc)["ReviewCandidates"][1]["CandidateId"]
    out = svc.review_candidate(cid, "REJECT", "different person: eye distance", **EVIDENCE,
                               ctx=_reviewer("reviewer-1"))
    assert out["Status"] == "REJECTED"
    assert svc.get_review_candidate(cid)["Status"] == "REJECTED"


def test_without_identification_mode_results_are_returned(svc: FaceService) -> None:
    svc.put_collection_policy("wanted", {}, ctx=ADMIN)
    out = _search(svc)
    assert len(out["FaceMatches"]) == 2 and "ReviewRequired" not in out
    assert svc.list_review_candidates(status=None)["Candidates"] == []


def test_reviewers_required_follows_the_policy(svc: FaceService) -> None:
    svc.put_collection_policy("wanted", {"IdentificationMode": True, "ReviewersRequired": 1},
                              ctx=ADMIN)
    cid = _search(svc)["ReviewCandidates"][0]["CandidateId"]
    out = svc.review_candidate(cid, "CONFIRM", "sure", **EVIDENCE, ctx=_reviewer("r1"))
    assert out["Status"] == "CONFIRMED"


def test_bad_review_input_gets_rekognition_codes(svc: FaceService) -> None:
    cid = _search(svc)["ReviewCandidates"][0]["CandidateId"]
    r1 = _reviewer("r1")
    with pytest.raises(ResourceNotFoundException):
        svc.review_candidate("no-such-candidate", "CONFIRM", "x", ctx=r1)
    for decision, reason in (("MAYBE", "x"), ("CONFIRM", ""), ("CONFIRM", "   "),
                             ("CONFIRM", "x" * 2001), (None, "x")):
        with pytest.raises(InvalidParameterException):
            svc.review_candidate(cid, decision, reason, ctx=r1)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterException):
        svc.list_review_candidates(status="DONE")
    with pytest.raises(InvalidParameterException):
        svc.list_review_candidates(max_results=0)
    with pytest.raises(InvalidPaginationTokenException):
        svc.list_review_candidates(next_token="garbage")
    assert svc.get_review_candidate(cid)["Reviews"] == []  # nothing was recorded


def test_pagination_walks_every_candidate_once(svc: FaceService) -> None:
    for _ in range(3):
        _search(svc)
    seen: list[str] = []
    token = None
    while True:
        page = svc.list_review_candidates("wanted", max_results=4, next_token=token)
        seen += [c["CandidateId"] for c in page["Candidates"]]
        token = page.get("NextToken")
        if token is None:
            break
    assert len(seen) == 6 == len(set(seen))


def test_confirm_and_inconclusive_need_the_recorded_photos_hashes(svc: FaceService) -> None:
    cid = _search(svc)["ReviewCandidates"][0]["CandidateId"]
    r1 = _reviewer("reviewer-1")
    for decision in ("CONFIRM", "INCONCLUSIVE"):
        with pytest.raises(AccessDeniedException, match="must name the probe photo"):
            svc.review_candidate(cid, decision, "looked", ctx=r1)
        with pytest.raises(AccessDeniedException, match="enrolled photo you compared"):
            svc.review_candidate(cid, decision, "looked", probe_sha256=PROBE,
                                 enrolled_sha256="ab" * 32, ctx=r1)
    with pytest.raises(InvalidParameterException, match="64 hex digits"):
        svc.review_candidate(cid, "CONFIRM", "looked", probe_sha256="xyz",
                             enrolled_sha256=ENROLLED, ctx=r1)
    assert svc.get_review_candidate(cid)["Reviews"] == []
    refused = [e for e in _events(svc, "ReviewCandidate") if e["outcome"] == "refused"]
    assert [e["rule"] for e in refused] == ["evidence_required", "evidence_mismatch"] * 2
    assert refused[1]["params"]["submitted_enrolled_sha256"] == "ab" * 32
    done = svc.review_candidate(cid, "CONFIRM", "same", probe_sha256=PROBE.upper(),
                                enrolled_sha256=ENROLLED, ctx=r1)
    assert done["Reviews"][0]["ProbeImageSha256"] == PROBE
    event = _events(svc, "ReviewCandidate")[-1]
    assert event["images"] == [PROBE, ENROLLED]
    assert event["result"]["compared"] == {"probe_sha256": PROBE, "enrolled_sha256": ENROLLED}


def test_an_inconclusive_settles_the_candidate_apart_from_rejections(svc: FaceService) -> None:
    cid = _search(svc)["ReviewCandidates"][0]["CandidateId"]
    r1, r2 = _reviewer("reviewer-1"), _reviewer("reviewer-2")
    svc.review_candidate(cid, "CONFIRM", "same", **EVIDENCE, ctx=r1)
    out = svc.review_candidate(cid, "INCONCLUSIVE", "probe too blurred", **EVIDENCE, ctx=r2)
    assert out["Status"] == "INCONCLUSIVE" and out["DecidedAt"]
    assert svc.list_review_candidates("wanted", "INCONCLUSIVE")["Candidates"][0][
        "CandidateId"] == cid
    report = svc.transparency_report("2000-01-01", "2100-01-01")["identification"]
    assert (report["inconclusive"], report["rejected"], report["confirmed"]) == (1, 0, 0)
    assert report["decisions"]["inconclusive"] == 1
    # a rejection names the photos compared too (tests/test_evidence.py: refused without)
    other = _search(svc)["ReviewCandidates"][1]["CandidateId"]
    assert svc.review_candidate(other, "REJECT", "different", **EVIDENCE,
                                ctx=r1)["Status"] == "REJECTED"


def test_blind_review_hides_others_decisions_until_one_decides(svc: FaceService) -> None:
    cid, other = [c["CandidateId"] for c in _search(svc)["ReviewCandidates"]]
    r1 = RequestContext(principal="reviewer-1", roles=frozenset({"reviewer"}))
    r2 = RequestContext(principal="reviewer-2", roles=frozenset({"reviewer"}))
    auditor = RequestContext(principal="aud", roles=frozenset({"auditor"}))
    svc.review_candidate(cid, "CONFIRM", "ears match", **EVIDENCE, ctx=r1)
    seen = svc.review_case_file(cid, ctx=r2)["Candidate"]
    assert seen["DecisionsHidden"] and seen["Reviews"] == [] and seen["Confirmations"] is None
    assert seen["YourPart"]["State"] == "needs_decision"
    queued = next(c for c in svc.review_queue(ctx=r2)["Candidates"] if c["CandidateId"] == cid)
    assert queued["Reviews"] == [] and queued["Confirmations"] is None
    # blind review covers the search: while r1 has its other candidate to decide, r1 sees
    # no outcome or other decision on either
    mine = svc.review_case_file(cid, ctx=r1)["Candidate"]
    assert mine["DecisionsHidden"] and mine["YourPart"]["State"] == "blind"
    assert mine["MyDecision"] == "CONFIRM" and mine["Status"] is None
    svc.review_candidate(other, "REJECT", "another person", **EVIDENCE, ctx=r1)
    mine = svc.review_case_file(cid, ctx=r1)["Candidate"]
    assert not mine["DecisionsHidden"] and mine["YourPart"]["State"] == "decided"
    assert svc.review_case_file(cid, ctx=auditor)["Candidate"]["Reviews"][0]["Reason"] == (
        "ears match")
    # the view event says whether decisions were shown
    views = _events(svc, "ViewCandidate")
    assert [v["result"]["decisions_shown"] for v in views] == [False, False, True, True]
    # the policy may open the final verification: the last reviewer sees the earlier ones
    svc.put_collection_policy("wanted", {"IdentificationMode": True,
                                         "VerifierSeesEarlierDecisions": True}, ctx=ADMIN)
    opened = svc.review_case_file(cid, ctx=r2)["Candidate"]
    assert opened["Stage"] == "verification" and opened["Reviews"][0]["Reason"] == "ears match"
    done = svc.review_candidate(cid, "CONFIRM", "verified", **EVIDENCE, ctx=r2)
    assert [r["Stage"] for r in done["Reviews"]] == ["independent", "verification"]
    assert _events(svc, "ReviewCandidate")[-1]["result"]["stage"] == "verification"


def test_cli_policy_sets_open_verification(tmp_path: Path) -> None:
    env = {"FACELEDGER_DATA_DIR": str(tmp_path)}
    out = CliRunner().invoke(main, ["policy", "set", "wanted", "--identification",
                                    "--verifier-sees-earlier"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["Policy"]["VerifierSeesEarlierDecisions"] is True
    back = CliRunner().invoke(main, ["policy", "set", "wanted", "--blind-verifier"], env=env)
    assert json.loads(back.output)["Policy"]["VerifierSeesEarlierDecisions"] is False
