"""Collection policies on real storage: only admins change them, every change and every refusal
is a ledger event, and a refused operation changes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from faceledger.cli import main
from faceledger.context import RequestContext
from faceledger.errors import (
    AccessDeniedException,
    InvalidParameterException,
    PolicyRefusedException,
)
from faceledger.ledger import schema
from faceledger.service import FaceService
from faceledger.settings import Settings

ADMIN = RequestContext(principal="admin-key", admin=True)
ALICE = RequestContext(principal="alice", purpose="fraud investigation", case="C-7")


@pytest.fixture
def svc(tmp_path: Path) -> FaceService:
    return FaceService(Settings(data_dir=tmp_path))


def events(svc: FaceService) -> list[dict[str, Any]]:
    return [json.loads(e.body) for e in svc.ledger.scan()]


def retained(svc: FaceService) -> int:
    with svc.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(schema.retention)).scalar_one())


def test_admin_sets_a_policy_and_the_change_is_logged(svc: FaceService) -> None:
    out = svc.put_collection_policy("c1", {"MinSimilarityThreshold": 99.9,
                                           "RequirePurpose": True}, ctx=ADMIN)
    assert out["Policy"]["MinSimilarityThreshold"] == 99.9
    assert out["PreviousPolicy"]["RequirePurpose"] is False
    assert svc.get_collection_policy("c1")["Policy"] == out["Policy"]
    (ev,) = events(svc)
    assert (ev["operation"], ev["outcome"], ev["principal"], ev["collection"]) == (
        "PutCollectionPolicy", "done", "admin-key", "c1")
    assert ev["params"]["policy"]["RequirePurpose"] is True
    assert ev["params"]["previous"]["MinSimilarityThreshold"] is None
    assert ev["model_version"] is None


def test_a_non_admin_cannot_change_a_policy_and_the_refusal_is_logged(svc: FaceService) -> None:
    with pytest.raises(AccessDeniedException) as err:
        svc.put_collection_policy("c1", {"RequirePurpose": True}, ctx=ALICE)
    assert err.value.code == "AccessDeniedException" and "admin" in err.value.message
    assert svc.get_collection_policy("c1")["Policy"]["RequirePurpose"] is False
    (ev,) = events(svc)
    assert (ev["outcome"], ev["rule"], ev["principal"]) == ("refused", "admin_required", "alice")


@pytest.mark.parametrize("policy", [
    {"MinSimilarityThreshold": 120}, {"MinSimilarityThreshold": "99"}, {"RequirePurpose": "yes"},
    {"ReviewersRequired": 0}, {"RetentionDays": 1.5}, {"Unknown": 1}, ["RequirePurpose"], None,
])
def test_bad_policies_are_invalid_parameters_and_change_nothing(svc: FaceService,
                                                                policy: Any) -> None:
    with pytest.raises(InvalidParameterException) as err:
        svc.put_collection_policy("c1", policy, ctx=ADMIN)
    assert err.value.code == "InvalidParameterException"
    assert events(svc) == []


@pytest.mark.parametrize("collection", ["", "bad id", "x" * 256, None, 5])
def test_bad_collection_ids_are_invalid_parameters(svc: FaceService, collection: Any) -> None:
    with pytest.raises(InvalidParameterException):
        svc.put_collection_policy(collection, {}, ctx=ADMIN)
    with pytest.raises(InvalidParameterException):
        svc.get_collection_policy(collection)


def test_purpose_required_refuses_searches_without_one(svc: FaceService) -> None:
    svc.put_collection_policy("c1", {"RequirePurpose": True}, ctx=ADMIN)
    no_purpose = RequestContext(principal="bob", case="C-1")
    with pytest.raises(PolicyRefusedException) as err, svc.audit(
            "SearchFacesByImage", no_purpose, collection="c1"):
        pytest.fail("a refused operation must not run")
    assert err.value.code == "AccessDeniedException" and "purpose" in err.value.message
    with svc.audit("SearchFacesByImage", ALICE, collection="c1") as op:
        op.release({"FaceMatches": []}, compared=0)
    with svc.audit("DeleteFaces", no_purpose, collection="c1") as op:  # deleting stays allowed
        op.deleted([])
    refused, done, deleted = events(svc)[1:]
    assert (refused["outcome"], refused["rule"], refused["principal"]) == (
        "refused", "purpose_required", "bob")
    assert (done["outcome"], done["purpose"], done["case"]) == (
        "done", "fraud investigation", "C-7")
    assert deleted["operation"] == "DeleteFaces" and deleted["outcome"] == "done"


def test_consent_required_refuses_indexing_and_nothing_is_stored(svc: FaceService) -> None:
    svc.put_collection_policy("c1", {"RequireConsent": True}, ctx=ADMIN)
    with pytest.raises(PolicyRefusedException, match="consent"), svc.audit(
            "IndexFaces", ALICE, collection="c1") as op:
        op.indexed(["face-1"])
    assert retained(svc) == 0
    with_consent = RequestContext(principal="alice", consent="form-2024-118")
    with svc.audit("IndexFaces", with_consent, collection="c1") as op:
        op.image("ab" * 32)
        op.indexed(["face-1", "face-2"])
    assert retained(svc) == 2
    refused, done = events(svc)[1:]
    assert refused["rule"] == "consent_required" and refused["result"] == {}
    assert done["consent"] == "form-2024-118" and done["result"]["face_ids"] == [
        "face-1", "face-2"]
    assert done["images"] == ["ab" * 32]


def test_threshold_floor_refuses_lower_thresholds_and_rolls_back_the_change(
        svc: FaceService) -> None:
    svc.put_collection_policy("c1", {"MinSimilarityThreshold": 99.9}, ctx=ADMIN)
    with pytest.raises(PolicyRefusedException, match="below"), svc.audit(
            "IndexFaces", ALICE, collection="c1") as op:
        op.indexed(["written-then-refused"])  # a change already in the transaction
        op.threshold(80.0, default=99.99)
    assert retained(svc) == 0  # rolled back
    with svc.audit("SearchFaces", ALICE, collection="c1") as op:
        assert op.threshold(None, default=99.0) == 99.9  # the floor beats a laxer default
    with svc.audit("SearchFaces", ALICE, collection="c1") as op:
        assert op.threshold(99.95, default=99.0) == 99.95
        op.release({"FaceMatches": [{"Similarity": 99.97, "Face": {"FaceId": "f1"}}]},
                   compared=1000)
    refused, floor, explicit = events(svc)[1:]
    assert refused["rule"] == "threshold_floor"
    assert refused["thresholds"]["FaceMatchThreshold"] == 80.0
    assert floor["thresholds"]["FaceMatchThreshold"] == 99.9
    assert explicit["result"]["face_ids"] == ["f1"]
    assert explicit["result"]["expected_false_matches"] == pytest.approx(1000 * 0.0005)
    assert svc.verify_ledger()["ok"]


def test_errors_that_are_not_refusals_leave_no_event(svc: FaceService) -> None:
    with pytest.raises(InvalidParameterException), svc.audit(
            "IndexFaces", ALICE, collection="c1") as op:
        op.indexed(["f1"])
        raise InvalidParameterException("the image had no face")
    assert events(svc) == [] and retained(svc) == 0


def test_cli_policy_set_merges_options_and_get_prints_it(tmp_path: Path) -> None:
    env = {"FACELEDGER_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    first = runner.invoke(main, ["policy", "set", "c1", "--min-threshold", "99.5",
                                 "--identification", "--reviewers", "3"], env=env)
    assert first.exit_code == 0, first.output
    second = runner.invoke(main, ["policy", "set", "c1", "--retention-days", "30"], env=env)
    assert second.exit_code == 0, second.output
    got = json.loads(runner.invoke(main, ["policy", "get", "c1"], env=env).output)["Policy"]
    assert got == {"MinSimilarityThreshold": 99.5, "RequirePurpose": False,
                   "RequireConsent": False, "IdentificationMode": True, "ReviewersRequired": 3,
                   "RetentionDays": 30, "VerifierSeesEarlierDecisions": False,
                   "VerifyEveryConclusion": False}
    bad = runner.invoke(main, ["policy", "set", "c1", "--reviewers", "0"], env=env)
    assert bad.exit_code == 2 and "InvalidParameterException" in bad.output
    assert "Traceback" not in bad.output
