"""The review console in a real browser: Playwright driving Debian's Chromium against a real
server (`faceledger serve`'s app on 127.0.0.1), on a real collection and ledger.

Photos: scikit-image's public-domain astronaut portrait is enrolled three times (three files);
its mirror image is the probe (a different file of the same person), one file per search, so
identification-mode searches hold candidates and no two searches share a probe photo (blind
review covers every search of one probe). The browser, keys and signing in are
tests/console_helpers.py's.
Screenshots of every page go to FACELEDGER_SCREENSHOTS or a pytest temp folder, printed at the
start of the run. The browser tests skip, with the reason, when Chromium is not installed
(`apt-get install -y chromium`); nothing is downloaded. The service-level tests at the end
(roles, recorded hashes, sessions) run without a browser on the same data.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps
from sqlalchemy import text

from console_helpers import (  # noqa: F401  (browser: the fixture)
    DESKTOP,
    PHONE,
    World,
    browser,
    key_ctx,
    keyed_service,
    no_horizontal_scroll,
    screenshot_dir,
    sign_in,
)
from faceledger.context import RequestContext
from faceledger.server.keys import KeyStore
from faceledger.server.run import build_app, running
from faceledger.service import FaceService
from faceledger.settings import Settings

# the searches, each with a probe file of its own (blind review covers every search of one
# probe photo, so searches that shared a file would keep each other's outcomes hidden)
SEARCHES = (("confirm", "INC-1", None, None), ("reject", "INC-2", None, 1),
            ("own", "INC-3", None, None), ("inconclusive", "INC-4", None, 1),
            ("forged", "INC-5", None, None), ("weak", "INC-2026-210", 50.0, None))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, service: FaceService,
          astronaut_jpeg: bytes, request: pytest.FixtureRequest) -> Iterator[World]:
    settings, svc, keys = keyed_service(tmp_path_factory, service, "console-data", {
        "searcher": ("reviewer",), "reviewer-1": ("reviewer",), "reviewer-2": ("reviewer",),
        "auditor": ("auditor",), "admin": ("admin",), "leaver": ("reviewer",),
        "api-only": ()})
    files_dir = tmp_path_factory.mktemp("reviewer-files")
    portrait = Image.open(io.BytesIO(astronaut_jpeg))
    enrolled = files_dir / "eileen-enrolled.jpg"
    enrolled.write_bytes(astronaut_jpeg)
    # two more enrolled photos of the same person (other files): a search holds 3 candidates
    badge = files_dir / "eileen-badge.jpg"
    portrait.resize((400, 400)).save(badge, "JPEG", quality=90)
    older = files_dir / "eileen-2019.jpg"
    ImageOps.autocontrast(portrait).crop((40, 0, 512, 472)).save(older, "JPEG", quality=88)
    wrong = files_dir / "some-other-photo.jpg"
    Image.new("RGB", (200, 200), (120, 90, 60)).save(wrong, "JPEG")
    files = {"enrolled": enrolled, "wrong": wrong, "eileen-enrolled": enrolled,
             "eileen-badge": badge, "eileen-2019": older}

    svc.create_collection("staff")
    for path in (enrolled, badge, older):
        svc.index_faces("staff", {"Bytes": path.read_bytes()}, external_image_id=path.stem)
    svc.put_collection_policy("staff", {"IdentificationMode": True, "ReviewersRequired": 2,
                                        "RequirePurpose": True, "RetentionDays": 365})
    searcher = keys["searcher"].info.access_key_id
    candidates = {}
    for i, (purpose, case, threshold, max_faces) in enumerate(SEARCHES):
        # the probe: the portrait's mirror image (a different file of the same person), one
        # file per search (JPEG quality 92, 91, ...)
        probe = files_dir / f"case-probe-{purpose}.jpg"
        ImageOps.mirror(portrait).save(probe, "JPEG", quality=92 - i)
        files[f"probe-{purpose}"] = probe
        ctx = RequestContext(principal=searcher, purpose=f"door access ({purpose})", case=case)
        found = svc.search_faces_by_image("staff", {"Bytes": probe.read_bytes()},
                                          max_faces=max_faces,
                                          face_match_threshold=threshold, ctx=ctx)
        assert found["ReviewRequired"], found
        candidates[purpose] = found["ReviewCandidates"][0]["CandidateId"]

    shots = screenshot_dir(tmp_path_factory, request, "console screenshots")
    app = build_app(settings, service=svc, warm_up=False)
    with running(app) as url:
        yield World(url, svc, keys, files, candidates, shots)
    svc.close()


def _page(browser: Any, viewport: dict[str, int] = DESKTOP, scale: float = 1) -> Any:
    context = browser.new_context(viewport=viewport, device_scale_factor=scale)
    return context.new_page()


def _shot(page: Any, world: World, name: str) -> None:
    page.screenshot(path=str(world.shots / f"{name}.png"), full_page=True)


def no_horizontal_scroll(page: Any) -> bool:
    return bool(page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _photos(world: World, candidate: str) -> tuple[Path, Path]:
    """The probe and the enrolled photo a candidate names (by hash and ExternalImageId)."""
    cand = world.service.get_review_candidate(candidate)
    probe = next(path for name, path in world.files.items()
                 if name.startswith("probe-") and _sha256(path) == cand["ProbeImageSha256"])
    return probe, world.files[cand["ExternalImageId"]]


def _open_photos(page: Any, world: World, candidate: str) -> None:
    """Open the probe and the enrolled photo this candidate names (by its ExternalImageId)."""
    probe, enrolled = _photos(world, candidate)
    page.get_by_label("Probe photo file").set_input_files(str(probe))
    page.get_by_label("Enrolled photo file").set_input_files(str(enrolled))
    for which in ("probe", "enrolled"):
        page.locator(f'section.face[data-which="{which}"].good').wait_for()


CONFIRM = "Same person (confirm)"
REJECT = "Not the same person (reject)"
INCONCLUSIVE = "Inconclusive: these photos do not allow a conclusion"


def _decide(page: Any, decision: str, reason: str) -> None:
    page.get_by_label(decision).check()
    page.get_by_label("Reason (required, recorded in the ledger)").fill(reason)
    # wait for the form's own navigation (a bare wait_for_load_state can return at once,
    # on the page that is still loaded, before the POST has answered)
    with page.expect_navigation():
        page.get_by_role("button", name="Record decision").click()


def test_sign_in_refuses_a_wrong_secret_and_keys_without_a_role(browser: Any,
                                                                world: World) -> None:
    page = _page(browser)
    page.goto(f"{world.url}/console/")
    assert page.url.endswith("/console/signin")
    page.keyboard.press("Tab")  # the first stop is the skip link
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    # keyboard only: Tab from the key id to the secret, Enter submits
    key_id = world.keys["reviewer-1"].info.access_key_id
    page.get_by_label("Access key id").focus()
    page.keyboard.type(key_id)
    page.keyboard.press("Tab")
    page.keyboard.type("not-the-secret")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.get_by_role("alert").inner_text().startswith("Unknown or revoked key")
    assert page.get_by_label("Access key id").input_value() == key_id  # kept for a retry
    _shot(page, world, "01-signin-refused")
    sign_in(page, world, "api-only")
    assert "has no console role" in page.get_by_role("alert").inner_text()
    sign_in(page, world, "auditor")
    assert page.url.endswith("/console/ledger")
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    assert page.url.endswith("/console/signin")
    page.goto(f"{world.url}/console/ledger")  # the session is gone
    assert page.url.endswith("/console/signin")
    page.context.close()


def _search_block(page: Any, case: str) -> Any:
    return page.locator("section.search").filter(
        has=page.get_by_role("heading", name=case, exact=False))


def _decide_by_service(world: World, who: str, candidate: str, decision: str,
                      reason: str) -> None:
    """`who` decides `candidate` with the photos it names (as the console sends them)."""
    probe, enrolled = _photos(world, candidate)
    world.service.review_candidate(candidate, decision, reason, ctx=key_ctx(world, who),
                                   probe_sha256=_sha256(probe),
                                   enrolled_sha256=_sha256(enrolled))


def test_blind_review_two_reviewers_confirm_and_a_wrong_file_is_refused(
        browser: Any, world: World) -> None:
    cand = world.candidates["confirm"]
    others = [o["CandidateId"] for o in world.service.review_case_file(cand)["Siblings"]]
    assert len(others) == 2  # the search held three candidates
    # reviewer-1 has already found the search's other two candidates inconclusive (settling
    # them): blind review covers the whole search, so only after deciding the last one does
    # reviewer-1 see outcomes
    for other in others:
        _decide_by_service(world, "reviewer-1", other, "INCONCLUSIVE",
                           "Another photo of the same enrolment: compared on rank 1.")
    first_reason = "Same person: face shape, hairline and ears agree."
    page = _page(browser)
    sign_in(page, world, "reviewer-1")
    assert page.url.endswith("/console/queue")
    block = _search_block(page, "INC-1")
    text_ = block.inner_text()
    assert "door access (confirm)" in text_ and "Searched by searcher" in text_
    assert "eileen-enrolled" in text_ and "needs your decision" in text_  # by ExternalImageId
    # ACE-V: no rank or score of the search while one of its candidates awaits a first look;
    # the two decided ones are listed, their outcome not shown
    assert " of 3" not in text_ and text_.count("after your first look") == 3
    assert text_.count("decided by you (inconclusive); status not shown to you") == 2
    # the weak search is flagged in its block
    weak = _search_block(page, "INC-2026-210").inner_text()
    assert "ran at 50" in weak and "false matches expected" in weak
    _shot(page, world, "02-queue")
    # a weak search says so at the top of its candidates' pages, in words
    page.goto(f"{world.url}/console/candidates/{world.candidates['weak']}")
    warning = page.locator(".strength .warn-box").first.inner_text()
    assert warning.startswith("This search ran at 50, below the default")
    assert "50% of pairs of different people score this high" in warning
    _shot(page, world, "02-weak-candidate")
    page.goto(f"{world.url}/console/candidates/{cand}")
    # the wrong file is refused by its hash, the page says which file is expected
    page.get_by_label("Probe photo file").set_input_files(str(world.files["wrong"]))
    refused = page.locator('section.face[data-which="probe"].refused .check')
    refused.wait_for()
    assert "the expected file is the case file's probe photo" in refused.inner_text()
    assert page.get_by_label(CONFIRM).is_disabled()
    assert page.get_by_label(INCONCLUSIVE).is_disabled()
    _shot(page, world, "03-wrong-file-refused")
    _open_photos(page, world, cand)
    assert page.get_by_label(CONFIRM).is_enabled()
    assert "face " in page.locator('figure[data-which="enrolled"] figcaption').inner_text()
    _shot(page, world, "04-candidate-faces-side-by-side")
    # after the first look, the scores (in a tab of their own; the photos stay open here)
    with page.context.expect_page() as tab:
        page.locator("#reveal").click()
    scores = tab.value
    scores.wait_for_load_state()
    assert "with both photos open" in scores.locator("#reveal-record").inner_text()
    rank = int(scores.locator("dl.facts").inner_text().split("Rank")[1].split()[0])
    scores.goto(f"{world.url}/console/queue")
    ranked = _search_block(scores, "INC-1").inner_text()
    # ranked by Similarity now, every candidate of the search
    assert all(f"{n} of 3" in ranked for n in (1, 2, 3)) and f"{rank} of 3" in ranked
    scores.close()
    _decide(page, CONFIRM, first_reason)
    assert "now PENDING (1 of 2 confirmations)" in page.locator("#message").inner_text()
    page.context.close()

    page = _page(browser)
    sign_in(page, world, "reviewer-2")
    # the queue says only that these need the reviewer's decision: no count of others', and
    # the two candidates reviewer-1 settled are listed as open to reviewer-2 like the third
    block = _search_block(page, "INC-1").inner_text()
    assert block.count("needs your decision") == 3 and "confirmations" not in block
    assert "inconclusive" not in block.lower()
    page.goto(f"{world.url}/console/candidates/{cand}")
    before = page.content()
    assert first_reason not in before and "reviewer-1" not in before
    assert "1 of 2" not in before and "hidden until you have decided" in before
    assert page.get_by_role("table", name="Decisions").count() == 0
    _open_photos(page, world, cand)
    _shot(page, world, "05-second-reviewer-before-deciding")
    _decide(page, CONFIRM, "Agree: same person, badge log matches.")
    assert "now CONFIRMED (2 of 2 confirmations)" in page.locator("#message").inner_text()
    assert page.locator(".status").inner_text().startswith("Status: CONFIRMED")
    # after deciding, the earlier decision and its reason are shown, under names
    decisions = page.get_by_role("table", name="Decisions").inner_text()
    assert first_reason in decisions and "reviewer-1" in decisions
    assert page.locator("#decide").count() == 0
    assert "settled" in page.locator("#your-part").inner_text()
    # and so are the outcomes of the search's other candidates
    siblings = page.get_by_role("table", name="The other candidates of this search")
    assert siblings.inner_text().count("INCONCLUSIVE") == 2
    _shot(page, world, "05-confirmed")
    page.context.close()
    decided = world.service.get_review_candidate(cand)
    assert decided["Status"] == "CONFIRMED"
    assert all(r["ProbeImageSha256"] and r["EnrolledImageSha256"] for r in decided["Reviews"])


def test_one_rejection_settles_a_candidate_on_a_phone_with_both_faces_on_screen(
        browser: Any, world: World) -> None:
    cand = world.candidates["reject"]
    page = _page(browser, PHONE)  # a reviewer on a phone-width screen
    sign_in(page, world, "reviewer-1")
    page.goto(f"{world.url}/console/candidates/{cand}")
    assert no_horizontal_scroll(page)
    _open_photos(page, world, cand)
    canvases = page.locator(".compare canvas")
    canvases.first.scroll_into_view_if_needed()
    boxes = [canvases.nth(i).bounding_box() for i in range(2)]
    height = page.viewport_size["height"]
    for box in boxes:  # both faces entirely on the one screen
        assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= height
        assert box["width"] >= 150
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 1  # side by side
    page.screenshot(path=str(world.shots / "06-candidate-phone-both-faces.png"))
    _shot(page, world, "06-candidate-phone-full")
    # by keyboard: Space picks the radio, Tab moves to the (folded) features compared, Tab
    # again to the reason, then to the button
    page.get_by_label(REJECT).focus()
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent").startswith("Features compared")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "reason"
    page.keyboard.type("Ears differ: not the same person.")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Record decision"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.locator(".status").inner_text().startswith("Status: REJECTED")
    assert page.get_by_role("button", name="Record decision").count() == 0
    _shot(page, world, "06-rejected-phone-settled")
    page.context.close()
    assert world.service.get_review_candidate(cand)["Status"] == "REJECTED"


def _csrf(page: Any) -> str:
    return str(page.locator('form.who input[name="csrf"]').input_value())


def test_the_searcher_sees_why_there_is_no_form_and_a_forged_decision_is_refused(
        browser: Any, world: World) -> None:
    cand = world.candidates["own"]
    page = _page(browser)
    sign_in(page, world, "searcher")
    page.goto(f"{world.url}/console/candidates/{cand}")
    assert "You ran this search" in page.locator("#your-part").inner_text()
    assert page.locator("#decide").count() == 0
    _shot(page, world, "07-own-search-no-form")
    answer = page.context.request.post(f"{world.url}/console/candidates/{cand}", form={
        "csrf": _csrf(page), "decision": "REJECT", "reason": "Trying to review my own."})
    assert answer.status == 400 and "cannot review its results" in answer.text()
    page.context.close()
    assert world.service.get_review_candidate(cand)["Status"] == "PENDING"
    refused = world.service.ledger_events({"operation": "ReviewCandidate",
                                           "outcome": "refused"})["Events"]
    assert any(e["Principal"] == world.keys["searcher"].info.access_key_id for e in refused)


def test_a_confirmation_without_the_compared_photos_hashes_is_refused_by_the_service(
        browser: Any, world: World) -> None:
    cand = world.candidates["forged"]
    recorded = world.service.review_case_file(cand)
    probe_sha = recorded["Candidate"]["ProbeImageSha256"]
    # without JavaScript, Confirm is not offered and the page says why
    context = browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    page = context.new_page()
    sign_in(page, world, "reviewer-2")
    page.goto(f"{world.url}/console/candidates/{cand}")
    assert page.get_by_label(CONFIRM).is_disabled()
    assert "offered once both photos are open" in page.locator("#why-disabled").inner_text()
    _shot(page, world, "08-no-javascript")
    # a forged POST (right session and CSRF token) without hashes, then with a wrong one
    url = f"{world.url}/console/candidates/{cand}"
    for form, words in (
            ({"decision": "CONFIRM"}, "must name the probe photo"),
            ({"decision": "INCONCLUSIVE"}, "must name the probe photo"),
            ({"decision": "CONFIRM", "probe_sha256": probe_sha, "enrolled_sha256": "ab" * 32},
             "is not the recorded one")):
        answer = context.request.post(url, form={"csrf": _csrf(page), "reason": "forged",
                                                 **form})
        assert answer.status == 400 and words in answer.text(), answer.text()[-600:]
    context.close()
    assert world.service.get_review_candidate(cand)["Reviews"] == []
    refused = world.service.ledger_events({"operation": "ReviewCandidate",
                                           "outcome": "refused"}, limit=20)["Events"]
    rules = {e["Rule"] for e in refused if cand in e["CandidateIds"]}
    assert {"evidence_required", "evidence_mismatch"} <= rules


def test_inconclusive_settles_the_candidate_and_the_report_counts_it(
        browser: Any, world: World) -> None:
    cand = world.candidates["inconclusive"]
    page = _page(browser)
    sign_in(page, world, "reviewer-2")
    page.goto(f"{world.url}/console/candidates/{cand}")
    _open_photos(page, world, cand)
    _decide(page, INCONCLUSIVE, "Probe too blurred at the eyes to conclude.")
    assert page.locator(".status").inner_text().startswith("Status: INCONCLUSIVE")
    page.context.close()
    decided = world.service.get_review_candidate(cand)
    assert decided["Status"] == "INCONCLUSIVE" and decided["Reviews"][0]["EnrolledImageSha256"]
    event = world.service.ledger_events({"operation": "ReviewCandidate",
                                         "outcome": "done"}, limit=1)["Events"][0]
    body = world.service.ledger_event(event["Seq"])["Body"]
    assert body["images"] == [decided["Reviews"][0]["ProbeImageSha256"],
                              decided["Reviews"][0]["EnrolledImageSha256"]]
    page = _page(browser)
    sign_in(page, world, "auditor")
    page.goto(f"{world.url}/console/report")
    summary = page.locator("#review-summary").inner_text()
    # this one, and the two the blind-review test found inconclusive
    found = world.service.list_review_candidates(status="INCONCLUSIVE")["Candidates"]
    assert cand in {c["CandidateId"] for c in found}
    assert f"{len(found)} inconclusive" in summary and "rejected" in summary
    assert "candidates held for human review instead" in page.content()
    by_threshold = page.get_by_role("table", name="By threshold").inner_text()
    assert "50" in by_threshold
    _shot(page, world, "30-report")
    page.context.close()


def test_a_form_without_the_csrf_token_is_refused(browser: Any, world: World) -> None:
    cand = world.candidates["own"]
    page = _page(browser)
    sign_in(page, world, "reviewer-2")
    # the browser context's cookies (the session) go with the forged posts
    for form in ({"decision": "REJECT", "reason": "forged"},
                 {"decision": "REJECT", "reason": "forged", "csrf": "guessed"}):
        answer = page.context.request.post(f"{world.url}/console/candidates/{cand}", form=form,
                                           max_redirects=0)
        assert answer.status == 400  # Rekognition's status for AccessDeniedException
        assert "AccessDeniedException" in answer.text()
        assert "CSRF token is missing or wrong" in answer.text()
        assert answer.headers["cache-control"] == "no-store"
    page.context.close()
    assert world.service.get_review_candidate(cand)["Reviews"] == []


def test_revoking_the_key_ends_its_session(browser: Any, world: World) -> None:
    page = _page(browser)
    sign_in(page, world, "leaver")
    assert page.url.endswith("/console/queue")
    store = KeyStore.open(world.service.settings, world.service.engine)
    store.revoke(world.keys["leaver"].info.access_key_id)
    page.goto(f"{world.url}/console/queue")
    assert page.url.endswith("/console/signin")
    page.context.close()


def test_pages_at_phone_width_and_200_percent_zoom_and_never_cached(browser: Any,
                                                                   world: World) -> None:
    cand = world.candidates["own"]
    for label, viewport, scale in (("phone", PHONE, 1), ("zoom200", {"width": 640,
                                                                      "height": 400}, 2)):
        page = _page(browser, viewport, scale)
        sign_in(page, world, "admin")
        for path, name in (("queue", "queue"), ("report", "report"),
                           (f"candidates/{cand}", "candidate"), ("ledger", "ledger"),
                           ("collections/staff", "collection")):
            answer = page.goto(f"{world.url}/console/{path}")
            assert answer.status == 200, page.content()
            assert answer.headers["cache-control"] == "no-store"
            _shot(page, world, f"10-{name}-{label}")
            assert no_horizontal_scroll(page), f"{path} scrolls sideways at {label}"
        style = page.goto(f"{world.url}/console/static/review.js")
        assert style.headers["cache-control"] == "no-store"
        page.context.close()


def test_auditor_browses_the_ledger_and_sees_verify_fail_after_tampering(
        browser: Any, world: World) -> None:
    page = _page(browser)
    sign_in(page, world, "auditor")
    assert page.url.endswith("/console/ledger")
    page.get_by_label("Operation").select_option("SearchFacesByImage")
    page.get_by_label("Case", exact=True).fill("INC-2")
    page.get_by_label("From (UTC date or time)").fill("yesterday")
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    # a bad filter is named in words; the other filters stay as typed
    assert "is not an ISO 8601 date" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Case", exact=True).input_value() == "INC-2"
    assert page.get_by_label("Operation").input_value() == "SearchFacesByImage"
    assert "Exception" not in page.locator("main").inner_text()
    page.get_by_label("From (UTC date or time)").fill("")
    # the case's record without the noise of page views
    page.get_by_label("Operation").select_option("")
    page.get_by_label("Hide page views").check()
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    shown = page.locator("tbody").inner_text()
    assert "SearchFacesByImage" in shown and "ViewCandidate" not in shown
    page.get_by_label("Hide page views").uncheck()
    page.get_by_label("Operation").select_option("SearchFacesByImage")
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    rows = page.locator("tbody tr")
    assert rows.count() == 1 and "INC-2" in rows.first.inner_text()
    _shot(page, world, "20-ledger-filtered")
    with page.expect_navigation():
        rows.first.get_by_role("link", name="open event").click()
    seq = int(page.url.rsplit("/", 1)[1])
    assert page.get_by_role("heading", level=1).inner_text() == f"Ledger event #{seq}"
    assert "door access (reject)" in page.locator("pre").inner_text()
    # the held candidates in the body link to their case files
    assert page.locator(f'pre a[href$="/candidates/{world.candidates["reject"]}"]').count() == 1
    _shot(page, world, "21-event")
    world.service.anchor_ledger()
    page.goto(f"{world.url}/console/ledger")
    with page.expect_navigation():
        page.get_by_role("button", name="Verify the whole chain").click()
    assert "Chain intact." in page.get_by_role("status").inner_text()
    assert "faceledger-anchor:" in page.locator("dl.facts").inner_text()
    _shot(page, world, "22-verify-ok")
    # an insider edits the search's purpose in the database
    with world.service.engine.begin() as conn:
        body = conn.execute(text("SELECT body FROM ledger_events WHERE seq = :s"),
                            {"s": seq}).scalar_one()
        conn.execute(text("UPDATE ledger_events SET body = :b WHERE seq = :s"),
                     {"b": body.replace("door access (reject)", "door access (routine)"),
                      "s": seq})
    try:
        page.goto(f"{world.url}/console/ledger/verify")
        alert = page.get_by_role("alert").inner_text()
        assert "Verification FAILED." in alert and f"#{seq}" in alert
        _shot(page, world, "23-verify-failed")
    finally:
        with world.service.engine.begin() as conn:
            conn.execute(text("UPDATE ledger_events SET body = :b WHERE seq = :s"),
                         {"b": body, "s": seq})
    # reviewers have no ledger role: the service refuses
    page.context.close()


def test_report_collections_and_export(browser: Any, world: World) -> None:
    page = _page(browser)
    sign_in(page, world, "admin")
    page.goto(f"{world.url}/console/report")
    assert page.get_by_role("heading", name="Transparency report").count() == 1
    assert page.locator(".chart svg").count() >= 4
    with page.expect_download() as download:
        page.get_by_role("link", name="JSON report").click()
    assert Path(download.value.path()).read_text().lstrip().startswith("{")
    page.goto(f"{world.url}/console/rates")
    groups = page.get_by_role("table", name="groups").inner_text()
    assert "95%" in groups and "0e+00" not in groups and " of " in groups
    _shot(page, world, "33-error-rates")
    page.goto(f"{world.url}/console/collections")
    assert page.get_by_role("img", name="Calibration of model").count() == 1
    _shot(page, world, "31-collections")
    with page.expect_navigation():
        page.get_by_role("link", name="staff").click()
    # the policy requires a purpose to list faces: the page asks first instead of refusing
    assert page.get_by_role("alert").count() == 0
    assert "requires a stated purpose" in page.locator("main").inner_text()
    page.get_by_label("Purpose of viewing (recorded)").fill("quarterly audit")
    with page.expect_navigation():
        page.get_by_role("button", name="List faces").click()
    assert "eileen-enrolled" in page.get_by_role("region", name="Faces").inner_text()
    assert "Purpose required" in page.locator("main").inner_text()
    _shot(page, world, "32-collection-staff")
    page.goto(f"{world.url}/console/candidates/{world.candidates['confirm']}")  # a case view
    page.goto(f"{world.url}/console/ledger")
    page.get_by_label("Case reference").fill("INC-1")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export case bundle").click()
    assert download.value.suggested_filename == "case-INC-1.zip"
    from click.testing import CliRunner

    from faceledger.cli import main

    checked = CliRunner().invoke(main, ["ledger", "verify-bundle", str(download.value.path())])
    assert checked.exit_code == 0 and checked.output.startswith("OK:"), checked.output
    with zipfile.ZipFile(download.value.path()) as bundle:
        assert sorted(bundle.namelist()) == ["README.txt", "case-INC-1.json", "verify.py"]
        events = json.loads(bundle.read("case-INC-1.json"))["events"]
    # the search, the views of the case file and the export itself are in the case's record
    assert {"SearchFacesByImage", "ViewCandidate", "ExportCase"} <= {
        e["operation"] for e in events}
    page.context.close()


# -- without a browser: the rules live in the service, sessions in the console ----------------


def test_index_faces_keeps_the_image_hash_and_landmarks_with_the_face(world: World) -> None:
    cand = world.service.get_review_candidate(world.candidates["own"])
    external = cand["ExternalImageId"]
    expected = _sha256(world.files[external])
    reviewer = key_ctx(world, "reviewer-1")
    case_file = world.service.review_case_file(cand["CandidateId"], ctx=reviewer)
    # a reviewer who may decide sees no rank or score before a first look (ACE-V)
    assert case_file["Rank"] is None and case_file["Candidate"]["Similarity"] is None
    assert [o["Rank"] for o in case_file["Siblings"]] == [None, None]
    world.service.reveal_scores(cand["CandidateId"], ctx=reviewer)
    case_file = world.service.review_case_file(cand["CandidateId"], ctx=reviewer)
    face = case_file["EnrolledFace"]
    assert face["InCatalog"] and face["ExternalImageId"] == external
    # ranked among the search's three candidates (which rank depends on the model's scores)
    assert len(case_file["Siblings"]) == 2
    assert sorted([case_file["Rank"]] + [o["Rank"] for o in case_file["Siblings"]]) == [1, 2, 3]
    assert case_file["Candidate"]["Similarity"] == cand["Similarity"]
    assert face["ImageSha256"] == face["IndexFacesImageSha256"] == expected
    assert [lm["Type"] for lm in face["Landmarks"]] == [
        "eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight"]
    probe = _sha256(world.files["probe-own"])
    assert cand["ProbeImageSha256"] == case_file["Search"]["ProbeImageSha256"] == probe
    assert len(cand["ProbeFace"]["Landmarks"]) == 5
    # the mirrored probe's left eye is where the enrolled photo's right eye was (to 5% of the
    # width: the enrolled photo may be another crop, and YuNet's points are not exactly mirror-
    # symmetric, 0.04 here)
    assert cand["ProbeFace"]["Landmarks"][0]["X"] == pytest.approx(
        1 - face["Landmarks"][1]["X"], abs=0.05)
    assert case_file["Search"]["FacesSearched"] >= 1
    views = world.service.ledger_events({"operation": "ViewCandidate"})["Events"]
    assert views and views[0]["Principal"] == world.keys["reviewer-1"].info.access_key_id
    assert views[0]["CaseReference"] == "INC-3"  # the view is part of the case's record


def test_roles_are_enforced_by_the_service_and_refusals_logged(world: World) -> None:
    from faceledger.errors import AccessDeniedException

    cand = world.candidates["own"]
    with pytest.raises(AccessDeniedException, match="reviewer role"):
        world.service.review_candidate(cand, "CONFIRM", "auditors may not decide",
                                       ctx=key_ctx(world, "auditor"))
    with pytest.raises(AccessDeniedException, match="auditor role"):
        world.service.ledger_events(ctx=key_ctx(world, "reviewer-1"))
    with pytest.raises(AccessDeniedException, match="may not see collection"):
        world.service.review_case_file(cand, ctx=key_ctx(world, "reviewer-1",
                                                      collections=("other-*",)))
    refused = world.service.ledger_events({"outcome": "refused"})["Events"]
    assert {"ReviewCandidate", "ListLedgerEvents", "ViewCandidate"} <= {
        e["Operation"] for e in refused}
    assert world.service.get_review_candidate(cand)["Reviews"] == []
    with pytest.raises(Exception, match="unknown role"):
        KeyStore.open(world.service.settings, world.service.engine).create(
            "x", ["*"], ["*"], roles=["superuser"])


def test_session_cookie_flags_expiry_and_no_store(world: World) -> None:
    import asyncio
    import re
    from datetime import UTC, datetime, timedelta

    import httpx

    from faceledger.console import build_console

    now = [datetime.now(UTC)]
    store = KeyStore.open(world.service.settings, world.service.engine)
    app = build_console(world.service, store, clock=lambda: now[0], session_hours=1)
    key = world.keys["reviewer-2"]

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            form = await c.get("/console/signin")
            assert form.headers["cache-control"] == "no-store"
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token is not None
            signed = await c.post("/console/signin", data={
                "csrf": token.group(1), "access_key_id": key.info.access_key_id,
                "secret": key.secret_access_key})
            assert signed.status_code == 303
            cookie = signed.headers["set-cookie"].lower()
            for flag in ("httponly", "samesite=strict", "path=/console", "max-age=3600"):
                assert flag in cookie
            queue = await c.get("/console/queue")
            assert queue.status_code == 200 and "Review queue" in queue.text
            assert queue.headers["cache-control"] == "no-store"
            now[0] += timedelta(hours=1, seconds=1)  # the session has expired
            expired = await c.get("/console/queue")
            assert expired.status_code == 303
            assert expired.headers["location"] == "/console/signin"

    # in a thread of its own: Playwright's sync API may hold this thread's event loop
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def test_keys_create_with_roles_and_the_console_command(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from faceledger.cli import main

    monkeypatch.setenv("FACELEDGER_DATA_DIR", str(tmp_path))
    made = CliRunner().invoke(main, ["keys", "create", "rita", "-o", "*", "-c", "staff",
                                     "--role", "reviewer", "--role", "auditor", "--json"])
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["Roles"] == ["auditor", "reviewer"]
    wrong = CliRunner().invoke(main, ["keys", "create", "x", "-o", "*", "-c", "*",
                                      "--role", "boss"])
    assert wrong.exit_code == 2 and "boss" in wrong.output
    helped = CliRunner().invoke(main, ["console", "--help"])
    assert helped.exit_code == 0 and "review console" in helped.output


def test_published_group_rates_come_from_the_tables_coverage() -> None:
    from faceledger.calibration import load_calibration
    from faceledger.service.oversight import _group_rows

    assert _group_rows(None) == []
    rows = _group_rows(load_calibration("1.0").provenance["coverage"])
    assert rows and all(r["Covered"] for r in rows)
    for r in rows:
        for t in r["AtThresholds"]:
            # counts and a 95% interval around each group's own rate (0 of n still has one)
            assert t["FalseMatches"] == round(t["FalseMatchRate"] * r["ImpostorPairs"])
            assert t["Low"] <= t["FalseMatchRate"] <= t["High"] and t["High"] > 0
            assert t["AbovePromise"] == (t["Low"] > t["PromisedFalseMatchRate"])


def test_older_databases_gain_the_new_nullable_columns(tmp_path: Path) -> None:
    from faceledger.db import make_engine
    from faceledger.ledger import Ledger
    from faceledger.store.catalog import Catalog

    settings = Settings(data_dir=tmp_path)
    engine = make_engine(settings.resolved_database_url())
    Catalog(engine), Ledger(engine), KeyStore.open(settings, engine, create_kek=True)
    dropped = [("fl_faces", "image_sha256"), ("fl_faces", "landmarks"), ("fl_faces", "detail"),
               ("ledger_reviews", "probe_sha256"), ("ledger_reviews", "enrolled_sha256"),
               ("ledger_reviews", "stage"),
               ("ledger_candidates", "probe_face"), ("fl_api_keys", "roles")]
    with engine.begin() as conn:  # as a database made before these columns existed
        conn.execute(text("DROP INDEX ix_fl_faces_collection_image_sha256"))  # (bulk index)
        for table, column in dropped:
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    Catalog(engine), Ledger(engine)
    store = KeyStore.open(settings, engine)
    from sqlalchemy import inspect

    for table, column in dropped:
        assert column in {c["name"] for c in inspect(engine).get_columns(table)}
    assert "ix_fl_faces_collection_image_sha256" in {
        ix["name"] for ix in inspect(engine).get_indexes("fl_faces")}
    assert store.create("old-db", ["*"], ["*"], roles=["auditor"]).info.roles == ("auditor",)
    engine.dispose()


def _crawl(page: Any, world: World, start: str, limit: int = 80) -> list[str]:
    """Open every console link reachable from `start` (same origin, no downloads or
    sign-out); return the pages that answered with a refusal ("Not done")."""
    base = f"{world.url}/console"
    seen: set[str] = set()
    todo = [f"{base}/{start}"]
    refused: list[str] = []
    while todo and len(seen) < limit:
        url = todo.pop(0).split("#", 1)[0]
        if url in seen:
            continue
        seen.add(url)
        page.goto(url)
        heading = page.locator("h1").first.inner_text()
        if heading.startswith("Not done"):
            refused.append(f"{url}: {page.locator('main').inner_text()[:200]}")
        hrefs = page.eval_on_selector_all(
            "a[href]:not([download])", "els => els.map(e => e.href)")
        for href in hrefs:
            if href.startswith(base) and "/static/" not in href and href not in seen:
                todo.append(href)
    return refused


@pytest.mark.parametrize("who", ["reviewer-1", "auditor"])
def test_no_link_a_role_sees_leads_to_a_refusal(browser: Any, world: World, who: str) -> None:
    page = _page(browser)
    sign_in(page, world, who)
    start = "queue" if who.startswith("reviewer") else "ledger"
    before = len(world.service.ledger_events({"outcome": "refused"}, limit=500)["Events"])
    assert _crawl(page, world, start) == []
    after = len(world.service.ledger_events({"outcome": "refused"}, limit=500)["Events"])
    assert after == before  # clicking around wrote no refusal into the ledger
    nav = page.get_by_role("navigation", name="Console sections").inner_text()
    assert ("Ledger" in nav) == (who == "auditor")
    page.context.close()


def test_a_scoped_auditor_sees_only_its_collections_events_and_report(world: World) -> None:
    scoped = RequestContext(principal="scoped-auditor", roles=frozenset({"auditor"}),
                            collections=("elsewhere",))
    events = world.service.ledger_events(limit=500, ctx=scoped)["Events"]
    # nothing of "staff", and no collection-less event of another key (key, queue, jobs)
    assert all(e["CollectionId"] == "elsewhere" or e["Principal"] == "scoped-auditor"
               for e in events)
    report = world.service.report_as("2000-01-01", "2100-01-01", ctx=scoped)
    assert report["searches"]["total"] == 0 and report["identification"]["candidates_held"] == 0
    assert report["totals"]["events"] == sum(1 for e in events)
    full = world.service.report_as("2000-01-01", "2100-01-01", ctx=key_ctx(world, "auditor"))
    assert full["searches"]["total"] >= 6
    # the search at 50 is where the expected false matches come from
    rows = {t["threshold"]: t for t in full["searches"]["by_threshold"]}
    assert rows["50"]["expected_false_matches"] == max(
        t["expected_false_matches"] for t in rows.values())
    assert full["searches"]["matches_returned"] == 0  # identification mode: all held
    assert full["searches"]["candidates_held"] >= 6
