"""Evidence a court can trust (issue 25, items 1-4 and 10): each test plays the attack first.

  1. a case bundle whose readable events were edited must fail verification, and the bundle
     discloses the enrolment of each face shown and the policy in force;
  2. a caller who can read the ledger's decisions cannot then decide as if blind;
  3. one probe face confirmed as two people is a CONFLICT that stands for nothing until
     resolved, and two reviewer keys cannot share a name;
  4. a rejection or an inconclusive needs the photos too, and the policy may require them
     verified by N reviewers;
 10. the command line decides as a reviewer key proved by its secret (or as the one local
     operator), never as a typed name; `review list` is a table that says which photo to bring.

Like tests/test_review.py these drive the review hook directly (a Rekognition-shaped search
response), so no model is loaded; the browser side is tests/test_console_evidence.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from faceledger.cli import main
from faceledger.context import RequestContext
from faceledger.errors import (
    AccessDeniedException,
    ConflictException,
    InvalidParameterException,
)
from faceledger.ledger.export import write_bundle
from faceledger.server.keys import KeyStore
from faceledger.service import FaceService
from faceledger.settings import Settings

ADMIN = RequestContext(principal="admin", admin=True)
SEARCHER = RequestContext(principal="officer-1", purpose="missing person", case="MP-12")
PROBE_BYTES, ENROLLED_BYTES = b"probe photo", b"enrolled photo"
PROBE = hashlib.sha256(PROBE_BYTES).hexdigest()
ENROLLED = hashlib.sha256(ENROLLED_BYTES).hexdigest()
EVIDENCE = {"probe_sha256": PROBE, "enrolled_sha256": ENROLLED}


def _reviewer(name: str) -> RequestContext:
    return RequestContext(principal=name, roles=frozenset({"reviewer"}))


def _search(svc: FaceService, ctx: RequestContext = SEARCHER, probe: str = PROBE) -> list[str]:
    """One probe face searched: two candidates, Tang_Jiaxuan (rank 1) and Angelo_Reyes (each
    search its own request, as over HTTP)."""
    ctx = dataclasses.replace(ctx, request_id=str(uuid.uuid4()))
    response = {
        "FaceMatches": [
            {"Similarity": 99.995, "Face": {"FaceId": "face-tang",
                                            "ExternalImageId": "Tang_Jiaxuan"}},
            {"Similarity": 99.95, "Face": {"FaceId": "face-angelo",
                                           "ExternalImageId": "Angelo_Reyes"}},
        ],
        "FaceModelVersion": "2.0",
    }
    with svc.audit("IndexFaces", ADMIN, collection="wanted") as op:
        op.image(ENROLLED)
        op.record(face_ids=["face-tang", "face-angelo"])
    with svc.audit("SearchFacesByImage", ctx, collection="wanted") as op:
        op.threshold(None, default=99.9)
        op.image(probe)
        held = op.release(response, "FaceMatches", compared=5000)
    return [c["CandidateId"] for c in held["ReviewCandidates"]]


@pytest.fixture
def svc(tmp_path: Path) -> FaceService:
    s = FaceService(Settings(data_dir=tmp_path))
    s.put_collection_policy("wanted", {"IdentificationMode": True, "ReviewersRequired": 1},
                            ctx=ADMIN)
    return s


def _events(svc: FaceService, operation: str) -> list[dict[str, Any]]:
    return [b for b in (json.loads(e.body) for e in svc.ledger.scan())
            if b["operation"] == operation]


def _verify(folder: Path, bundle_file: Path) -> tuple[subprocess.CompletedProcess[str], Any]:
    """The bundled verify.py (bare Python) and `faceledger ledger verify-bundle`."""
    alone = subprocess.run([sys.executable, "-I", str(folder / "verify.py"), str(bundle_file)],
                           capture_output=True, text=True, timeout=60, check=False)
    cli = CliRunner().invoke(main, ["ledger", "verify-bundle", str(bundle_file)])
    return alone, cli


# -- 1. the bundle ---------------------------------------------------------------------------

def test_an_edited_readable_event_fails_both_verifiers(svc: FaceService, tmp_path: Path) -> None:
    tang, _ = _search(svc)
    svc.review_candidate(tang, "CONFIRM", "ear shape and scar match", **EVIDENCE,
                         ctx=_reviewer("reviewer-1"))
    folder = tmp_path / "bundle"
    paths = write_bundle(svc.export_case("MP-12", ctx=ADMIN), folder)
    alone, cli = _verify(folder, paths[0])
    assert alone.returncode == 0 and cli.exit_code == 0, alone.stdout + cli.output
    # the attack: CONFIRM -> REJECT, a new reason and another principal, in "events" only
    bundle = json.loads(paths[0].read_text())
    decision = next(e for e in bundle["events"] if e["operation"] == "ReviewCandidate")
    decision["params"]["decision"] = "REJECT"
    decision["params"]["reason"] = "different person"
    decision["principal"] = "reviewer-9"
    paths[0].write_text(json.dumps(bundle, indent=1))
    alone, cli = _verify(folder, paths[0])
    assert alone.returncode == 1 and "differs from its hashed body" in alone.stdout
    assert cli.exit_code == 1 and "edited" in cli.output
    # the README says what is checked and what is not
    readme = paths[2].read_text()
    assert "WHAT IS VERIFIED" in readme and "WHAT IS NOT VERIFIED" in readme


def test_the_bundle_discloses_each_faces_enrolment_and_the_policy(svc: FaceService) -> None:
    tang, _ = _search(svc)
    svc.review_candidate(tang, "CONFIRM", "same", **EVIDENCE, ctx=_reviewer("reviewer-1"))
    bundle = svc.export_case("MP-12", ctx=ADMIN)
    enrolments = bundle["enrolments"]
    assert [e["operation"] for e in enrolments] == ["IndexFaces"]
    assert enrolments[0]["images"] == [ENROLLED]
    assert {f["face_id"]: f["enrolment_seq"] for f in bundle["faces"]} == {
        "face-tang": enrolments[0]["seq"], "face-angelo": enrolments[0]["seq"]}
    policy = bundle["policies"][-1]
    assert policy["params"]["policy"]["ReviewersRequired"] == 1
    # all of it is in the verified segment (bodies disclosed, chain from before them)
    disclosed = {e["seq"] for e in bundle["segment"] if "body" in e}
    assert {enrolments[0]["seq"], policy["seq"]} <= disclosed
    assert bundle["start"]["seq"] < policy["seq"]


# -- 2. independence -------------------------------------------------------------------------

def test_a_caller_who_reads_the_ledger_cannot_decide_after_others(svc: FaceService) -> None:
    svc.put_collection_policy("wanted", {"IdentificationMode": True, "ReviewersRequired": 2},
                              ctx=ADMIN)
    tang, angelo = _search(svc)
    svc.review_candidate(tang, "CONFIRM", "scar matches", **EVIDENCE, ctx=_reviewer("ana"))
    # an admin key (reviewer and auditor) reads the decision on the ledger, then decides
    admin_key = RequestContext(principal="FLKADMIN", admin=True,
                               roles=frozenset({"admin"}))
    seen = svc.ledger_events({"operation": "ReviewCandidate"}, ctx=admin_key)["Events"]
    assert seen[0]["Decision"] == "CONFIRM"
    with pytest.raises(AccessDeniedException, match="can read the ledger"):
        svc.review_candidate(tang, "CONFIRM", "agree", **EVIDENCE, ctx=admin_key)
    assert _events(svc, "ReviewCandidate")[-1]["rule"] == "reviewer_reads_decisions"
    part = svc.review_case_file(tang, ctx=admin_key)["Candidate"]["YourPart"]
    assert part["State"] == "reads_decisions" and not part["CanDecide"]
    # nothing is hidden from it (blind review would hide only what the ledger page shows)
    assert svc.review_case_file(tang, ctx=admin_key)["Candidate"]["DecisionsHidden"] is False
    # the search's other candidate: Ana's confirmation of Tang bears on Angelo too (one probe
    # face, one person), so the admin who read it is not independent there either
    file = svc.review_case_file(angelo, ctx=admin_key)
    assert file["Candidate"]["YourPart"]["State"] == "reads_decisions"
    assert [o["Status"] for o in file["Siblings"]] == ["PENDING"]
    with pytest.raises(AccessDeniedException, match="its search or its probe photo"):
        svc.review_candidate(angelo, "REJECT", "different ears", **EVIDENCE, ctx=admin_key)
    # the first decision on a search and probe photo nobody decided has nothing to read
    other = hashlib.sha256(b"another probe photo").hexdigest()
    fresh, _ = _search(svc, dataclasses.replace(SEARCHER, case="MP-14"), probe=other)
    first = svc.review_candidate(fresh, "REJECT", "different ears", probe_sha256=other,
                                 enrolled_sha256=ENROLLED, ctx=admin_key)
    assert first["Reviews"][0]["Stage"] == "independent"


# -- 3. one face, two people -----------------------------------------------------------------

def test_one_probe_confirmed_as_two_people_is_a_conflict_until_resolved(
        svc: FaceService) -> None:
    tang, angelo = _search(svc)
    assert svc.review_candidate(tang, "CONFIRM", "same", **EVIDENCE,
                                ctx=_reviewer("reviewer-1"))["Status"] == "CONFIRMED"
    second = svc.review_candidate(angelo, "CONFIRM", "same", **EVIDENCE,
                                  ctx=_reviewer("reviewer-2"))
    assert second["Status"] == "CONFLICT" and second["ConflictsWith"] == [tang]
    assert svc.get_review_candidate(tang)["Status"] == "CONFLICT"
    assert svc.list_review_candidates("wanted", "CONFIRMED")["Candidates"] == []
    assert _events(svc, "ReviewCandidate")[-1]["result"]["conflicts_with"] == [tang]
    with pytest.raises(AccessDeniedException):  # the searcher does not resolve
        svc.resolve_review_conflict(tang, [tang], "mine", ctx=SEARCHER)
    with pytest.raises(InvalidParameterException):
        svc.resolve_review_conflict(tang, ["not-in-it"], "x", ctx=_reviewer("reviewer-3"))
    out = svc.resolve_review_conflict(tang, [tang], "scar visible only on Tang's photo",
                                      ctx=_reviewer("reviewer-3"))
    assert out["Statuses"] == {tang: "CONFIRMED", angelo: "REJECTED"}
    assert out["Candidate"]["Resolution"]["By"] == "reviewer-3"
    resolved = _events(svc, "ResolveConflict")[-1]
    assert resolved["result"]["statuses"] == {tang: "CONFIRMED", angelo: "REJECTED"}
    report = svc.transparency_report("2000-01-01", "2100-01-01")["identification"]
    assert (report["confirmed"], report["rejected"], report["conflicts"]) == (1, 1, 1)


def test_a_conflict_is_an_outcome_that_blind_review_hides(svc: FaceService) -> None:
    """Blind review (25.5) meets the conflict rule (25.3): a reviewer who still has a candidate
    of the probe photo to decide must not learn from a CONFLICT what others concluded."""
    tang, angelo = _search(svc)
    tang2, angelo2 = _search(svc, dataclasses.replace(SEARCHER, case="MP-12b"))  # same photo
    svc.review_candidate(tang, "CONFIRM", "same", **EVIDENCE, ctx=_reviewer("reviewer-1"))
    svc.review_candidate(angelo, "CONFIRM", "same", **EVIDENCE, ctx=_reviewer("reviewer-2"))
    assert svc.get_review_candidate(tang)["Status"] == "CONFLICT"
    cy = _reviewer("reviewer-3")  # has decided nothing of this probe photo yet
    seen = svc.review_case_file(tang, ctx=cy)["Candidate"]
    assert (seen["Status"], seen["ConflictsWith"], seen["Resolution"]) == (None, [], None)
    assert seen["YourPart"]["State"] == "needs_decision" and not seen["YourPart"]["CanResolve"]
    queue = svc.review_queue(ctx=cy)
    assert queue["Conflicts"] == []
    assert {c["CandidateId"] for c in queue["Candidates"]} == {tang, angelo, tang2, angelo2}
    # resolving is refused before anything tells whether there is a conflict at all
    with pytest.raises(AccessDeniedException, match="still have candidates"):
        svc.resolve_review_conflict(tang, [tang], "scar", ctx=cy)
    assert _events(svc, "ResolveConflict")[-1]["rule"] == "blind_review"
    # a late conclusion needs the photos like one on an open candidate: the same answer
    with pytest.raises(AccessDeniedException) as on_open:
        svc.review_candidate(tang2, "REJECT", "no", ctx=cy)
    with pytest.raises(AccessDeniedException) as on_settled:
        svc.review_candidate(tang, "REJECT", "no", ctx=cy)
    assert on_open.value.message == on_settled.value.message
    # with them it is refused as late, logged with its evidence, naming no outcome
    with pytest.raises(ConflictException, match="before your decision") as late:
        svc.review_candidate(tang, "REJECT", "chin differs", **EVIDENCE, ctx=cy)
    assert "CONFLICT" not in late.value.message and "CONFIRMED" not in late.value.message
    refused = _events(svc, "ReviewCandidate")[-1]
    assert (refused["rule"], refused["params"]["submitted_probe_sha256"]) == (
        "not_pending", PROBE)
    # once cy has decided every open candidate of the photo, the conflict shows, to resolve
    for cand in (tang2, angelo2):
        svc.review_candidate(cand, "REJECT", "no", **EVIDENCE, ctx=cy)
    seen = svc.review_case_file(tang, ctx=cy)["Candidate"]
    assert seen["Status"] == "CONFLICT" and seen["ConflictsWith"] == [angelo]
    assert seen["YourPart"]["CanResolve"]
    assert {c["CandidateId"] for c in svc.review_queue(ctx=cy)["Conflicts"]} == {tang, angelo}
    # a resolution's reason is checked like a decision's (logged, never stored)
    with pytest.raises(InvalidParameterException, match="U\\+202E"):
        svc.resolve_review_conflict(tang, [tang], "same \u202eeno\u202c", ctx=cy)
    assert _events(svc, "ResolveConflict")[-1]["rule"] == "malformed_decision"
    assert "reason" not in _events(svc, "ResolveConflict")[-1]["params"]
    out = svc.resolve_review_conflict(tang, [tang], "scar only on Tang's photo", ctx=cy)
    assert out["Statuses"] == {tang: "CONFIRMED", angelo: "REJECTED"}


def test_two_reviewer_keys_cannot_share_a_name(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = KeyStore.open(settings, FaceService(settings).engine, create_kek=True)
    first = store.create("Bob Verifier", ["*"], ["*"], roles=("reviewer",))
    with pytest.raises(InvalidParameterException, match="in use by active reviewer key"):
        store.create("bob  verifier", ["*"], ["*"], roles=("reviewer",))
    with pytest.raises(InvalidParameterException):
        store.create("Bob Verifier", ["*"], ["*"], admin=True)  # an admin may decide too
    store.create("Bob Verifier", ["*"], ["*"], roles=("auditor",))  # decides nothing
    store.revoke(first.info.access_key_id)
    store.create("Bob Verifier", ["*"], ["*"], roles=("reviewer",))  # reissued


# -- 4. exclusions need evidence and, by policy, verification --------------------------------

def test_a_rejection_needs_the_photos_and_can_require_verification(svc: FaceService) -> None:
    tang, _ = _search(svc)
    # the attack: a rejection without opening either photo settled the candidate
    with pytest.raises(AccessDeniedException, match="must name the probe photo"):
        svc.review_candidate(tang, "REJECT", "never looked", ctx=_reviewer("reviewer-1"))
    with pytest.raises(AccessDeniedException, match="is not the recorded one"):
        svc.review_candidate(tang, "INCONCLUSIVE", "never looked", probe_sha256=PROBE,
                             enrolled_sha256="ab" * 32, ctx=_reviewer("reviewer-1"))
    assert svc.get_review_candidate(tang)["Reviews"] == []
    assert [e["rule"] for e in _events(svc, "ReviewCandidate")] == [
        "evidence_required", "evidence_mismatch"]
    svc.put_collection_policy("wanted", {"IdentificationMode": True, "ReviewersRequired": 2,
                                         "VerifyEveryConclusion": True}, ctx=ADMIN)
    tang, angelo = _search(svc, dataclasses.replace(SEARCHER, case="MP-13"))
    r1, r2 = _reviewer("reviewer-1"), _reviewer("reviewer-2")
    # one rejection does not settle it: it waits for a second reviewer's verification
    assert svc.review_candidate(tang, "REJECT", "ears differ", **EVIDENCE,
                                ctx=r1)["Status"] == "PENDING"
    assert svc.review_candidate(tang, "REJECT", "verified: ears differ", **EVIDENCE,
                                ctx=r2)["Status"] == "REJECTED"
    # reviewers who disagree leave it inconclusive: neither conclusion was verified
    svc.review_candidate(angelo, "REJECT", "no", **EVIDENCE, ctx=r1)
    assert svc.review_candidate(angelo, "CONFIRM", "yes", **EVIDENCE,
                                ctx=r2)["Status"] == "INCONCLUSIVE"
    assert _events(svc, "ReviewCandidate")[-1]["result"]["verify_every_conclusion"] is True


# -- 10. the command line --------------------------------------------------------------------

def test_the_cli_decides_as_a_reviewer_key_never_as_a_typed_name(tmp_path: Path) -> None:
    env = {"FACELEDGER_DATA_DIR": str(tmp_path), "FACELEDGER_CONFIG_DIR": str(tmp_path / "cfg")}
    runner = CliRunner()
    # the README's walk: the local user searches, then reviews with a reviewer key
    svc = FaceService(Settings(data_dir=tmp_path))
    svc.put_collection_policy("wanted", {"IdentificationMode": True, "ReviewersRequired": 2},
                              ctx=ADMIN)
    tang, _ = _search(svc, RequestContext(admin=True, case="MP-12"))  # principal "local"
    probe, enrolled = tmp_path / "probe.jpg", tmp_path / "tang-2019.jpg"
    probe.write_bytes(PROBE_BYTES)
    enrolled.write_bytes(ENROLLED_BYTES)
    files = ["--probe", str(probe), "--enrolled", str(enrolled)]
    # the attack: one person typing two names was two reviewers
    for name in ("bob", "dave"):
        typed = runner.invoke(main, ["review", "confirm", tang, "--reason", "match",
                                     "--reviewer", name, *files], env=env)
        assert typed.exit_code == 2 and "--reviewer NAME is gone" in typed.output
    made = runner.invoke(main, ["keys", "create", "Ana Reviewer", "-o", "ListFaces", "-c",
                                "wanted", "--role", "reviewer", "--json"], env=env)
    assert made.exit_code == 0, made.output
    key = json.loads(made.output)
    wrong = runner.invoke(main, ["review", "confirm", tang, "--reason", "match", "--key",
                                 key["AccessKeyId"], *files],
                          env={**env, "FACELEDGER_REVIEWER_SECRET": "guessed"})
    assert wrong.exit_code == 2 and "wrong secret" in wrong.output
    ok = runner.invoke(main, ["review", "confirm", tang, "--reason", "scar and ear shape match",
                              "--key", key["AccessKeyId"], *files],
                       input=key["SecretAccessKey"] + "\n", env=env)  # the hidden prompt
    assert ok.exit_code == 0, ok.output
    assert f"by {key['AccessKeyId']}" in ok.output and "1 of 2 confirmations" in ok.output
    again = runner.invoke(main, ["review", "confirm", tang, "--reason", "x", "--key",
                                 key["AccessKeyId"], *files],
                          env={**env, "FACELEDGER_REVIEWER_SECRET": key["SecretAccessKey"]})
    assert again.exit_code == 2 and "ConflictException" in again.output
    # without a key it is the local operator, who ran this search: refused, whatever the name
    local = runner.invoke(main, ["review", "confirm", tang, "--reason", "x", *files], env=env)
    assert local.exit_code == 2 and "cannot review its results" in local.output
    reviews = svc.get_review_candidate(tang)["Reviews"]
    assert [r["Reviewer"] for r in reviews] == [key["AccessKeyId"]]


def test_the_cli_records_the_features_compared(svc: FaceService, tmp_path: Path) -> None:
    """`--feature KEY=FINDING` (repeatable) on review confirm/reject/inconclusive: the console's
    structured features (issue 25.8), checked by the service and recorded with the decision."""
    tang, angelo = _search(svc)
    env = {"FACELEDGER_DATA_DIR": str(tmp_path)}
    probe, enrolled = tmp_path / "probe.jpg", tmp_path / "enrolled.jpg"
    probe.write_bytes(PROBE_BYTES)
    enrolled.write_bytes(ENROLLED_BYTES)
    files = ["--probe", str(probe), "--enrolled", str(enrolled)]
    runner = CliRunner()
    # a feature or finding the list does not have: refused by the service and logged
    bad = runner.invoke(main, ["review", "reject", tang, "--reason", "ears differ", *files,
                               "--feature", "earlobes=different"], env=env)
    assert bad.exit_code == 2 and "Unknown feature 'earlobes'" in bad.output
    assert _events(svc, "ReviewCandidate")[-1]["rule"] == "malformed_decision"
    for given in ("ears", "ears=similar=x", "=similar"):  # not KEY=FINDING: a usage error
        typo = runner.invoke(main, ["review", "reject", tang, "--reason", "x", *files,
                                    "--feature", given], env=env)
        assert typo.exit_code == 2 and "KEY=FINDING" in typo.output, (given, typo.output)
    twice = runner.invoke(main, ["review", "reject", tang, "--reason", "x", *files,
                                 "--feature", "ears=similar", "--feature", "ears=different"],
                          env=env)
    assert twice.exit_code == 2 and "ears is given twice" in twice.output
    ok = runner.invoke(main, ["review", "reject", tang, "--reason", "the ears differ", *files,
                              "--feature", "ears=different", "--feature",
                              "chin_jaw=not visible", "--feature", "eyes=similar"], env=env)
    assert ok.exit_code == 0, ok.output
    # said in the feature list's order (comparison.FEATURES), whatever order they were typed in
    assert "features compared: eyes similar, ears different, chin_jaw not visible" in ok.output
    decided = _events(svc, "ReviewCandidate")[-1]
    assert decided["outcome"] == "done"
    assert decided["params"]["features"] == {"eyes": "similar", "ears": "different",
                                             "chin_jaw": "not visible"}
    assert "--feature KEY=FINDING" in runner.invoke(main, ["review", "confirm", "--help"]).output


def test_review_list_is_a_table_with_each_probe_once_and_the_photo_to_bring(
        svc: FaceService, tmp_path: Path) -> None:
    tang, angelo = _search(svc)
    env = {"FACELEDGER_DATA_DIR": str(tmp_path)}
    out = CliRunner().invoke(main, ["review", "list"], env=env)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert sum(1 for line in lines if line.startswith("search ")) == 1
    assert sum(1 for line in lines if PROBE in line) == 1  # the probe, once
    at = next(i for i, line in enumerate(lines) if tang in line)
    assert "Tang_Jiaxuan" in lines[at] and "PENDING" in lines[at]
    assert "bring" in lines[at + 1] and ENROLLED in lines[at + 1]
    tang_line = lines[at]
    assert lines.index(tang_line) < lines.index(next(line for line in lines if angelo in line))
    as_json = json.loads(CliRunner().invoke(main, ["review", "list", "--json"],
                                            env=env).output)
    assert {c["CandidateId"] for c in as_json["Candidates"]} == {tang, angelo}
    assert {c["EnrolledImageSha256"] for c in as_json["Candidates"]} == {ENROLLED}
    # a conflict is named under the pending list, and listed with its decisions by key id
    for cand, who in ((tang, "FLKANA"), (angelo, "FLKBEN")):
        svc.review_candidate(cand, "CONFIRM", "same", **EVIDENCE, ctx=_reviewer(who))
    pending = CliRunner().invoke(main, ["review", "list"], env=env).output
    assert "2 candidate(s) in CONFLICT" in pending
    listed = CliRunner().invoke(main, ["review", "list", "--status", "CONFLICT"], env=env).output
    assert f"CONFLICT with {angelo}" in listed and "by FLKBEN" in listed


def test_the_readmes_review_walk_works_as_written(tmp_path: Path, astronaut_jpeg: bytes) -> None:
    """README's command-line lines, in order, by the one local user: search, then review."""
    runner = CliRunner()
    with contextlib.chdir(tmp_path):  # the photos where the README has them: beside the user
        Path("alice.jpg").write_bytes(astronaut_jpeg)  # a public-domain portrait as "alice"
        ImageOps.mirror(Image.open(io.BytesIO(astronaut_jpeg))).save("probe.jpg", "JPEG")

        def run(*args: str, input: str | None = None) -> str:
            out = runner.invoke(main, list(args), input=input)
            assert out.exit_code == 0, (args, out.output)
            return out.output

        run("collection", "create", "staff")
        run("collection", "index", "staff", "alice.jpg")
        run("policy", "set", "staff", "--identification", "--reviewers", "2",
            "--require-purpose")
        found = json.loads(run("--purpose", "door access", "--case", "INC-17", "collection",
                               "search", "staff", "probe.jpg", "--json"))
        (candidate,) = [c["CandidateId"] for c in found["ReviewCandidates"]]
        made = run("keys", "create", "ana", "-o", "ListFaces", "-c", "staff", "--role",
                   "reviewer")
        key_id = made.split("access key id:", 1)[1].split()[0]
        secret = made.split("secret access key:", 1)[1].split()[0]
        assert candidate in run("review", "list")
        done = run("review", "confirm", candidate, "--key", key_id, "--reason",
                   "checked badge log", "--probe", "probe.jpg", "--enrolled", "alice.jpg",
                   input=secret + "\n")
        assert "1 of 2 confirmations" in done
