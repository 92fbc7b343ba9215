"""Evidence a court can trust, in the console (issue 25, items 2, 3 and 4), in Chromium.

Each test plays the attack an examiner found first:
  2. an admin reads a reviewer's confirmation and reason on the ledger page, then decides the
     same candidate as if blind;
  3. one probe face confirmed as two different people, with no warning; decisions shown by
     display name only;
  4. a rejection recorded without opening either photo.

The world: scikit-image's public-domain astronaut portrait enrolled twice under different
ExternalImageIds (its resized copy stands for "someone else"), its mirror image as the probe
(one file per search: searches of one probe photo share blind review). Browser helpers and
Chromium's options are tests/console_helpers.py's.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image, ImageOps

from console_helpers import World, browser, key_ctx, keyed_service, screenshot_dir  # noqa: F401
from console_helpers import sign_in as _sign_in
from faceledger.context import RequestContext
from faceledger.server.keys import KeyInfo
from faceledger.server.run import build_app, running
from faceledger.service import FaceService

from test_console import REJECT, _csrf, _page


def context_for(key: KeyInfo, **extra: Any) -> RequestContext:
    """A signed-in key's context, as the console builds it (spelt out here, so that this
    file also runs against the code before the fix, to show the attacks working there)."""
    return RequestContext(principal=key.access_key_id, admin=key.admin,
                          roles=key.console_roles, collections=("*",), **extra)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, service: FaceService,
          astronaut_jpeg: bytes, request: pytest.FixtureRequest) -> Iterator[World]:
    settings, svc, keys = keyed_service(tmp_path_factory, service, "evidence-data", {
        "Searcher": ("reviewer",), "Ana Reviewer": ("reviewer",),
        "Ben Reviewer": ("reviewer",), "Cy Reviewer": ("reviewer",),
        "Ada Admin": ("admin",)})
    files_dir = tmp_path_factory.mktemp("evidence-files")
    portrait = Image.open(io.BytesIO(astronaut_jpeg))
    files = {"Eileen_Collins": files_dir / "eileen.jpg", "Anna_Other": files_dir / "anna.jpg"}
    files["Eileen_Collins"].write_bytes(astronaut_jpeg)
    portrait.resize((400, 400)).save(files["Anna_Other"], "JPEG", quality=90)
    held: dict[str, str] = {}  # watch, reject, dual-1, dual-2 (rank order) -> candidate id
    searcher = keys["Searcher"].info
    for i, (cid, policy, enrolled) in enumerate((
            ("watch", {"ReviewersRequired": 2}, ["Eileen_Collins"]),
            ("reject", {"ReviewersRequired": 2}, ["Eileen_Collins"]),
            ("dual", {"ReviewersRequired": 1}, ["Eileen_Collins", "Anna_Other"]))):
        svc.create_collection(cid)
        for name in enrolled:
            svc.index_faces(cid, {"Bytes": files[name].read_bytes()}, external_image_id=name)
        svc.put_collection_policy(cid, {"IdentificationMode": True, **policy})
        # the probe: the portrait's mirror image, one file per search (JPEG quality 92, 91, ..)
        files[f"probe-{cid}"] = probe = files_dir / f"probe-{cid}.jpg"
        ImageOps.mirror(portrait).save(probe, "JPEG", quality=92 - i)
        found = svc.search_faces_by_image(cid, {"Bytes": probe.read_bytes()},
                                          ctx=context_for(searcher, case=f"CASE-{cid}"))
        ids = [c["CandidateId"] for c in found["ReviewCandidates"]]
        ranked = sorted(ids, key=lambda i: -svc.get_review_candidate(i)["Similarity"])
        assert len(ranked) == len(enrolled), found
        held.update({cid if len(ranked) == 1 else f"{cid}-{i}": c
                     for i, c in enumerate(ranked, 1)})
    shots = screenshot_dir(tmp_path_factory, request, "evidence screenshots")
    app = build_app(settings, service=svc, warm_up=False)
    with running(app) as url:
        yield World(url, svc, keys, files, held, shots)
    svc.close()


def _ctx(world: World, who: str) -> RequestContext:
    return key_ctx(world, who)


def _hashes(world: World, candidate: str) -> dict[str, str]:
    """The two photos' SHA-256, as a reviewer's browser sends them."""
    found = world.service.get_review_candidate(candidate)
    probe = f"probe-{found['CollectionId']}"
    return {name: hashlib.sha256(world.files[which].read_bytes()).hexdigest()
            for name, which in (("probe_sha256", probe),
                                ("enrolled_sha256", found["ExternalImageId"]))}


def test_an_admin_who_read_the_ledger_cannot_then_decide_as_if_blind(
        browser: Any, world: World) -> None:
    cand = world.candidates["watch"]
    reason = "Scar above the left eyebrow matches the case photo."
    world.service.review_candidate(cand, "CONFIRM", reason, **_hashes(world, cand),
                                   ctx=_ctx(world, "Ana Reviewer"))
    page = _page(browser)
    _sign_in(page, world, "Ada Admin")
    # the admin reads Ana's confirmation and reason on the ledger page (no event written)
    page.goto(f"{world.url}/console/ledger?operation=ReviewCandidate")
    assert ("only the first decision on a search and its probe photo"
            in page.locator("#reads-decisions").inner_text())
    row = page.locator("tbody tr").first
    assert "same person" in row.inner_text()
    with page.expect_navigation():
        row.get_by_role("link", name="open event").click()
    assert reason in page.locator("pre").inner_text()
    # then opens the candidate: no form, and the page says why
    page.goto(f"{world.url}/console/candidates/{cand}")
    assert "can read the ledger" in page.locator("#your-part").inner_text()
    assert page.locator("#decide").count() == 0
    page.screenshot(path=str(world.shots / "admin-reads-decisions.png"), full_page=True)
    # a forged decision with the right photos is refused by the service, and logged
    answer = page.context.request.post(f"{world.url}/console/candidates/{cand}", form={
        "csrf": _csrf(page), "decision": "CONFIRM", "reason": "agree",
        **_hashes(world, cand)})
    assert answer.status == 400 and "can read the ledger" in answer.text()
    page.context.close()
    decided = world.service.get_review_candidate(cand)
    assert decided["Status"] == "PENDING" and len(decided["Reviews"]) == 1
    refused = world.service.ledger_events({"operation": "ReviewCandidate",
                                           "outcome": "refused"})["Events"]
    assert refused[0]["Rule"] == "reviewer_reads_decisions"


def test_a_rejection_needs_both_photos_opened_and_checked(browser: Any,
                                                         world: World) -> None:
    cand = world.candidates["reject"]
    page = _page(browser)
    _sign_in(page, world, "Ben Reviewer")
    page.goto(f"{world.url}/console/candidates/{cand}")
    assert page.get_by_label(REJECT).is_disabled()  # before either photo is opened
    answer = page.context.request.post(f"{world.url}/console/candidates/{cand}", form={
        "csrf": _csrf(page), "decision": "REJECT", "reason": "never opened them"})
    assert answer.status == 400 and "must name the probe photo" in answer.text()
    page.get_by_label("Probe photo file").set_input_files(str(world.files["probe-reject"]))
    page.get_by_label("Enrolled photo file").set_input_files(
        str(world.files["Eileen_Collins"]))
    for which in ("probe", "enrolled"):
        page.locator(f'section.face[data-which="{which}"].good').wait_for()
    assert page.get_by_label(REJECT).is_enabled()
    page.get_by_label(REJECT).check()
    page.get_by_label("Reason (required, recorded in the ledger)").fill("Ears differ.")
    with page.expect_navigation():
        page.get_by_role("button", name="Record decision").click()
    assert page.locator(".status").inner_text().startswith("Status: REJECTED")
    page.context.close()
    (review,) = world.service.get_review_candidate(cand)["Reviews"]
    assert review["ProbeImageSha256"] == _hashes(world, cand)["probe_sha256"]
    assert review["EnrolledImageSha256"] == _hashes(world, cand)["enrolled_sha256"]


def test_one_probe_confirmed_as_two_people_is_flagged_with_key_ids(
        browser: Any, world: World) -> None:
    first, second = world.candidates["dual-1"], world.candidates["dual-2"]
    for cand, who in ((first, "Ana Reviewer"), (second, "Ben Reviewer")):
        world.service.review_candidate(cand, "CONFIRM", "same person", **_hashes(world, cand),
                                       ctx=_ctx(world, who))
    page = _page(browser)
    _sign_in(page, world, "Ana Reviewer")
    page.goto(f"{world.url}/console/candidates/{first}")
    alert = page.locator("#conflict").inner_text()
    assert "also confirmed as" in alert and second[:8] in alert
    assert page.locator(".status").inner_text().startswith("Status: CONFLICT")
    decisions = page.get_by_role("table", name="Decisions").inner_text()
    ana = world.keys["Ana Reviewer"].info.access_key_id
    assert "Ana Reviewer" in decisions and ana in decisions  # the key id, visibly
    page.screenshot(path=str(world.shots / "conflict.png"), full_page=True)
    page.context.close()
    assert world.service.list_review_candidates("dual", "CONFIRMED")["Candidates"] == []
    page = _page(browser)
    _sign_in(page, world, "Ada Admin")
    page.goto(f"{world.url}/console/ledger?operation=ReviewCandidate&collection=dual")
    rows = page.locator("tbody").inner_text()
    assert "CONFLICT" in rows and ana in rows
    page.context.close()
    # a third reviewer finds it in the queue and resolves it: the first stands, the other not
    page = _page(browser)
    _sign_in(page, world, "Cy Reviewer")
    conflicts = page.get_by_role("region", name="Conflicts to resolve")
    with page.expect_navigation():
        conflicts.get_by_role("link").first.click()
    # a forged resolution (no CSRF token) is refused and logged in Cy's name, as a decision's
    forged = page.context.request.post(f"{world.url}/console/candidates/{first}/resolve",
                                       form={"keep": second, "reason": "forged"})
    assert forged.status == 400 and "CSRF token" in forged.text()
    assert world.service.get_review_candidate(first)["Status"] == "CONFLICT"
    cy = world.keys["Cy Reviewer"].info.access_key_id
    (refused,) = world.service.ledger_events({"operation": "ResolveConflict",
                                              "outcome": "refused"})["Events"]
    assert (refused["Principal"], refused["Rule"]) == (cy, "csrf")
    page.locator(f'#resolve input[name="keep"][value="{first}"]').check()
    box = page.get_by_label("Reason for the resolution (required, recorded in the ledger)")
    box.fill("Same \u202eeno\u202c")  # named by the browser, as a decision's reason is
    assert "U+202E" in page.evaluate("document.getElementById('resolve-reason').validationMessage")
    box.fill("Scar visible in the probe and only in this enrolled photo.")
    with page.expect_navigation():
        page.get_by_role("button", name="Resolve the conflict").click()
    assert "Conflict resolved" in page.locator("#message").inner_text()
    assert "Conflict resolved by Cy Reviewer" in page.locator("#resolution").inner_text()
    page.screenshot(path=str(world.shots / "conflict-resolved.png"), full_page=True)
    page.context.close()
    assert world.service.get_review_candidate(first)["Status"] == "CONFIRMED"
    assert world.service.get_review_candidate(second)["Status"] == "REJECTED"
