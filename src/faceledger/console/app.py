"""The review console: server-rendered pages at /console, an adapter over the service.

Every page calls a FaceService method with the signed-in key's context (principal, roles,
collections); the service checks roles, enforces the review rules and logs views of biometric
data. This module only parses forms, renders templates and keeps sessions. See docs/console.md.
"""

from __future__ import annotations

import hmac
import html
import io
import json
import math
import re
import secrets
import tempfile
import time
import uuid
import zipfile
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..context import RequestContext, stated
from ..errors import (
    AccessDeniedException,
    FaceledgerError,
    InvalidParameterException,
    ResourceNotFoundException,
)
from ..ledger import comparison
from ..ledger.export import write_bundle
from ..ledger.report import (
    bar_chart,
    day_chart,
    headline,
    render_html,
    review_funnel,
    search_sentence,
)
from ..rates import how_often
from ..server.keys import KeyStore, context_for
from ..server.limits import BodyBudget, BodyReader, BodyTiming, FailureThrottle, Slots
from ..service import FaceService
from ..service.governance import ONCE_DECIDED
from ..settings import Settings
from .charts import calibration_chart
from .sessions import Session, SessionStore
from ..text import logger, safe_json, visible

log = logger("faceledger.console")

PREFIX = "/console"
SESSION_COOKIE = "fl_console"
SIGNIN_COOKIE = "fl_console_signin"  # CSRF token of the sign-in form (double submit)
SESSION_HOURS = 8
MAX_FORM_BYTES = 64 * 1024
MAX_SEQ = 2**63 - 1  # ledger sequence numbers are SQL BIGINTs

# Every console response: never cached (faces, case data), no sniffing, no framing, assets and
# scripts from this origin only.
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
     b"connect-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
]

Handler = Callable[[Request], Awaitable[Response]]


class NoStore:
    """ASGI middleware: the security headers above on every response of the console."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in SECURITY_HEADERS}
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message["headers"] = headers + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, sending)


class Guard:
    """ASGI middleware at the console's edge: every request's body is read first - at most
    MAX_FORM_BYTES however it is framed (Content-Length or chunked), under a shared budget and
    the server's body timing - and only then may the request take one of
    `console_max_requests` slots (503 beyond). The app sees the body already read."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.slots = Slots(settings.console_max_requests)
        self.budget = BodyBudget(4 * MAX_FORM_BYTES * settings.console_max_requests)
        self.timing = BodyTiming(settings.server_body_grace_seconds,
                                 settings.server_body_min_rate,
                                 settings.server_body_timeout_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reader = BodyReader(MAX_FORM_BYTES, self.budget, self.timing, _form_too_large)
        declared = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                         if k.lower() == b"content-length"), None)
        try:
            try:
                body = await reader.read(declared, receive)
            except FaceledgerError as exc:
                await _plain_error(send, exc.status, exc.code, exc.message)
                return
            if not self.slots.enter():
                await _plain_error(send, 503, "ThrottlingException",
                                   "The console is busy; try again in a moment.")
                return
            try:
                await self.app(scope, _replay(body, receive), send)
            finally:
                self.slots.leave()
        finally:
            reader.release()


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives `body` once, then waits on the connection (for a disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


class _FormTooLarge(InvalidParameterException):
    status = 413  # Payload Too Large


def _form_too_large(size: int) -> FaceledgerError:
    return _FormTooLarge(
        f"The form is too large (at least {size} bytes; the limit is {MAX_FORM_BYTES}).")


async def _plain_error(send: Send, status: int, code: str, message: str) -> None:
    """A minimal error page, for refusals made before the console's app runs."""
    body = (f"<!doctype html><meta charset=utf-8><title>{html.escape(code)}</title>"
            f"<h1>{html.escape(code)}</h1><p>{html.escape(message)}</p>").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class Console:
    """The console's routes over one FaceService and its key store."""

    def __init__(self, service: FaceService, keys: KeyStore, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 session_hours: float = SESSION_HOURS) -> None:
        self.service = service
        self.keys = keys
        self.clock = clock
        self.sessions = SessionStore(service.engine, keys, timedelta(hours=session_hours))
        s = service.settings
        self.signin_throttle = FailureThrottle(rate=s.console_signin_failures_per_minute / 60,
                                               burst=float(s.console_signin_burst))
        env = Environment(loader=PackageLoader("faceledger.console", "templates"),
                          autoescape=select_autoescape(default=True, default_for_string=True),
                          finalize=_visible)
        env.filters["fmr"] = _fmr
        env.filters["pct"] = lambda v: "–" if v is None else f"{float(v):.4g}%"
        env.filters["when"] = _when
        env.filters["num"] = _num
        env.filters["rate"] = _rate
        self.templates = Jinja2Templates(env=env)

    # -- plumbing ----------------------------------------------------------------------

    def app(self) -> ASGIApp:
        routes = [
            Route("/", self.page(self.home)),
            Route("/signin", self.page(self.signin_form), methods=["GET"]),
            Route("/signin", self.page(self.signin), methods=["POST"]),
            Route("/signout", self.page(self.signout), methods=["POST"]),
            Route("/queue", self.page(self.queue)),
            Route("/candidates/{candidate_id}", self.page(self.candidate), methods=["GET"]),
            Route("/candidates/{candidate_id}", self.page(self.decide), methods=["POST"]),
            Route("/candidates/{candidate_id}/resolve", self.page(self.resolve),
                  methods=["POST"]),
            Route("/candidates/{candidate_id}/scores", self.page(self.scores), methods=["GET"]),
            Route("/ledger", self.page(self.ledger)),
            Route("/ledger/verify", self.page(self.verify)),
            Route("/ledger/export", self.page(self.export), methods=["POST"]),
            Route("/ledger/{seq:int}", self.page(self.event)),
            Route("/report", self.page(self.report)),
            Route("/report.{fmt:str}", self.page(self.report_download)),
            Route("/collections", self.page(self.collections)),
            Route("/collections/{collection_id}", self.page(self.collection)),
            Route("/rates", self.page(self.rates)),
            Mount("/static", StaticFiles(packages=[("faceledger.console", "static")]),
                  name="static"),
        ]
        return NoStore(Guard(Starlette(routes=[Mount(PREFIX, routes=routes)]),
                             self.service.settings))

    def page(self, handler: Handler) -> Handler:
        """Run a handler; faceledger errors become an error page with their code, anything
        else a generic one (the log keeps the traceback): never a traceback to the browser."""

        @wraps(handler)
        async def run(request: Request) -> Response:
            if request.method == "HEAD":
                # a HEAD (link checkers, prefetchers) answers as the GET would start, without
                # doing the GET's work: no page read, so no view event in the ledger
                if self.session(request) is None and handler != self.signin_form:
                    return RedirectResponse(f"{PREFIX}/signin", 303)
                return Response(b"", media_type="text/html")
            try:
                return await handler(request)
            except _SignInNeeded as exc:
                if request.method == "GET":
                    return RedirectResponse(f"{PREFIX}/signin", 303)
                return self.render(request, "error.html", {"code": exc.code,
                                                            "message": exc.message}, status=401)
            except HTTPException as exc:  # Starlette's own (e.g. a malformed form body)
                return self.render(request, "error.html", {
                    "code": "InvalidParameterException", "message": str(exc.detail)},
                    status=exc.status_code)
            except FaceledgerError as exc:
                log.info("console %s: %s", exc.code, exc.message)
                return self.render(request, "error.html", {"code": exc.code,
                                                            "message": exc.message},
                                   status=exc.status)
            except Exception:
                log.exception("console internal error")
                return self.render(request, "error.html", {
                    "code": "InternalServerError",
                    "message": "An internal error occurred; the server log has details."},
                    status=500)

        return run

    def render(self, request: Request, name: str, context: Mapping[str, Any],
               status: int = 200) -> Response:
        session = request.scope.get("fl_session")
        full = {"session": session, "prefix": PREFIX, "can": _can(session), **context}
        names = {k.access_key_id: k.name for k in self.keys.list()} if session else {}

        def who(key_id: Any) -> Markup:
            """A key's display name, its id on hover."""
            if not key_id:
                return Markup("–")
            name = names.get(str(key_id))
            if name is None:
                return Markup('<code>{}</code>').format(key_id)
            return Markup('<span class="who-name" title="{}">{}</span>').format(key_id, name)

        def who_id(key_id: Any) -> Markup:
            """A key's display name and, visibly, its id: two people may share a name, a key
            id names one key (decisions are shown with it)."""
            if not key_id or str(key_id) not in names:
                return who(key_id)
            return Markup('{} <code class="key-id">{}</code>').format(who(key_id), key_id)

        full["who"] = who
        full["who_id"] = who_id
        full["names"] = names
        if session is not None:
            full.setdefault("csrf", session.csrf)
        return self.templates.TemplateResponse(request, name, full, status_code=status)

    def session(self, request: Request) -> Session | None:
        found: Session | None = self.sessions.get(request.cookies.get(SESSION_COOKIE),
                                                  self.clock())
        request.scope["fl_session"] = found
        return found

    def require(self, request: Request) -> Session:
        found = self.session(request)
        if found is None:
            raise _SignInNeeded()
        return found

    def ctx(self, session: Session, **extra: Any) -> RequestContext:
        return context_for(session.key, request_id=str(uuid.uuid4()),
                           purpose_via="the page's Purpose field", **extra)

    async def form(self, request: Request, session: Session | None,
                   operation: str = "SignIn") -> FormData:
        """The posted form, refused unless it carries this session's CSRF token. A signed-in
        session's refusal is logged as a refused `operation` (rule csrf): someone may be
        forging requests in that key's name. (Without a session there is no one to log.)"""
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_FORM_BYTES:
            raise InvalidParameterException("The form is too large.")
        form = await request.form(max_files=0, max_fields=50)
        expected = session.csrf if session is not None else request.cookies.get(SIGNIN_COOKIE)
        given = form.get("csrf")
        if not expected or not isinstance(given, str) or not _same(given, expected):
            message = "The form's CSRF token is missing or wrong: reload the page and try again."
            if session is None:
                raise AccessDeniedException(message)
            await self.call(self.service.refuse_console_form, operation, message,
                            ctx=self.ctx(session),
                            candidate_id=request.path_params.get("candidate_id"))
        return form

    @staticmethod
    def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return run_in_threadpool(fn, *args, **kwargs)

    # -- sign-in -----------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return RedirectResponse(f"{PREFIX}/signin", 303)
        roles = session.key.console_roles
        target = "queue" if roles & {"reviewer", "admin"} else (
            "ledger" if "auditor" in roles else "collections")
        return RedirectResponse(f"{PREFIX}/{target}", 303)

    async def signin_form(self, request: Request, error: str | None = None,
                          status: int = 200, key_id: str = "") -> Response:
        token = secrets.token_urlsafe(32)
        response = self.render(request, "signin.html", {"csrf": token, "error": error,
                                                        "key_id": key_id}, status=status)
        self._cookie(request, response, SIGNIN_COOKIE, token, 600)
        return response

    async def signin(self, request: Request) -> Response:
        form = await self.form(request, None)
        key_id = str(form.get("access_key_id") or "").strip()
        secret = str(form.get("secret") or "")
        now = self.clock()
        # failed sign-ins per client address are throttled (a secret cannot be guessed at
        # line rate); checked before the secret is, charged only when it is wrong
        address = request.client.host if request.client is not None else "-"
        wait = self.signin_throttle.allowed(address, time.monotonic())
        if wait is not None:
            log.info("console sign-in throttled for %s", address)
            return await self.signin_form(
                request, f"ThrottlingException: too many failed sign-ins from your address; "
                         f"try again in {math.ceil(wait)} s.", 429)
        key = await self.call(self.sessions.check_secret, key_id, secret, now) if (
            key_id and secret and len(key_id) <= 64 and len(secret) <= 256) else None
        if key is None:
            self.signin_throttle.failed(address, time.monotonic())
            log.info("console sign-in refused for %r", key_id[:64])
            return await self.signin_form(request, "Unknown or revoked key, or wrong secret.",
                                          401, key_id[:64])
        if not key.console_roles:
            return await self.signin_form(
                request, f"Key {key.access_key_id} has no console role (reviewer, auditor or "
                         "admin); ask an admin for one.", 403)
        previous = request.cookies.get(SESSION_COOKIE)
        if previous:  # signing in again ends the session this browser had
            await self.call(self.sessions.close, previous)
        session_id, _ = await self.call(self.sessions.open, key, now)
        log.info("console sign-in %s (%s)", key.access_key_id, ",".join(sorted(key.roles)))
        response = RedirectResponse(f"{PREFIX}/", 303)
        self._cookie(request, response, SESSION_COOKIE, session_id,
                     int(self.sessions.lifetime.total_seconds()))
        response.delete_cookie(SIGNIN_COOKIE, path=PREFIX)
        return response

    async def signout(self, request: Request) -> Response:
        session = self.require(request)
        await self.form(request, session, "SignOut")
        await self.call(self.sessions.close, request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse(f"{PREFIX}/signin", 303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    @staticmethod
    def _cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
        response.set_cookie(name, value, max_age=age, path=PREFIX, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")

    # -- review ------------------------------------------------------------------------

    async def queue(self, request: Request) -> Response:
        session = self.require(request)
        mine = request.query_params.get("mine") == "1"
        data = await self.call(self.service.review_queue, ctx=self.ctx(session),
                               needs_my_decision=mine)
        return self.render(request, "queue.html", {"queue": data, "nav": "queue",
                                                   "mine": mine})

    async def candidate(self, request: Request, message: str | None = None,
                        status: int = 200, good: bool = False,
                        blind_message: str | None = None) -> Response:
        session = self.require(request)
        cid = request.path_params["candidate_id"]
        data = await self.call(self.service.review_case_file, cid, ctx=self.ctx(session))
        cand = data["Candidate"]
        if blind_message is not None and cand["DecisionsHidden"]:
            message = blind_message  # the outcome would tell what the other reviewers decided
        return self.render(request, "candidate.html", {
            "file": data, "c": cand, "s": data["Search"], "nav": "queue", "message": message,
            "message_ok": good,
            "probe_json": json.dumps(cand.get("ProbeFace") or {}),
            "enrolled_json": json.dumps({
                k: (data["EnrolledFace"] or {}).get(k) for k in ("BoundingBox", "Landmarks")}),
            "enrolled_detail": {k: (data["EnrolledFace"] or {}).get(k)
                                for k in ("Pose", "Quality")},
            "features": comparison.FEATURES, "findings": comparison.FINDINGS,
            "feature_prefix": comparison.FORM_PREFIX,
        }, status=status)

    async def scores(self, request: Request) -> Response:
        """The candidate's scores, asked for after a first look (logged; opens beside the
        comparison, so the photos opened there stay open)."""
        session = self.require(request)
        q = request.query_params
        data = await self.call(self.service.reveal_scores, request.path_params["candidate_id"],
                               probe_sha256=q.get("probe"), enrolled_sha256=q.get("enrolled"),
                               ctx=self.ctx(session))
        return self.render(request, "scores.html", {"r": data, "nav": "queue"})

    async def decide(self, request: Request) -> Response:
        session = self.require(request)
        form = await self.form(request, session, "ReviewCandidate")
        cid = request.path_params["candidate_id"]
        decision = str(form.get("decision") or "")
        reason = str(form.get("reason") or "")
        try:
            decided = await self.call(
                self.service.review_candidate, cid, decision, reason, ctx=self.ctx(session),
                probe_sha256=str(form.get("probe_sha256") or "").strip() or None,
                enrolled_sha256=str(form.get("enrolled_sha256") or "").strip() or None,
                features=comparison.from_form(form))
        except FaceledgerError as exc:
            # the service's refusal (logged), in words, with the reason typed kept to copy; the
            # case file is not shown again here, so a refused form writes no view event
            # (to a reviewer still working blind the service names no outcome: ONCE_DECIDED)
            late = getattr(exc, "rule", None) == "not_pending"
            return self._refused(request, exc, cid, "" if late else reason)
        words = {"CONFIRM": "same person", "REJECT": "not the same person",
                 "INCONCLUSIVE": "inconclusive"}.get(decision, decision)
        note = (f"Recorded: {words}. The candidate is now {decided['Status']} "
                f"({decided['Confirmations']} of {decided['ReviewersRequired']} confirmations).")
        return await self.candidate(request, note, good=True, blind_message=(
            f"Recorded: {words}. The candidate's status is shown {ONCE_DECIDED}"))

    def _refused(self, request: Request, exc: FaceledgerError, cid: str,
                 kept: str) -> Response:
        """A refused candidate form (decision or resolution; the service logged it): the
        refusal in words and what was typed, to copy; the case file is not shown again, so
        the refusal writes no view event."""
        return self.render(request, "error.html", {
            "code": exc.code, "message": f"Not recorded: {exc.message}", "kept": kept,
            "back": f"{PREFIX}/candidates/{quote(cid, safe='')}", "nav": "queue"},
            status=exc.status)

    async def resolve(self, request: Request) -> Response:
        session = self.require(request)
        form = await self.form(request, session, "ResolveConflict")
        cid = request.path_params["candidate_id"]
        keep = [str(k) for k in form.getlist("keep")]
        reason = str(form.get("reason") or "")
        try:
            done = await self.call(self.service.resolve_review_conflict, cid, keep, reason,
                                   ctx=self.ctx(session))
        except FaceledgerError as exc:
            # as a refused decision: in words, the reason kept to copy, no view event
            return self._refused(request, exc, cid, reason)
        outcome = ", ".join(f"candidate {k[:8]} {v}" for k, v in sorted(done["Statuses"].items()))
        return await self.candidate(request, f"Conflict resolved: {outcome}.", good=True)

    # -- ledger ------------------------------------------------------------------------

    async def ledger(self, request: Request) -> Response:
        session = self.require(request)
        q = request.query_params
        filters = {name: (q.get(name) or "").strip() or None
                   for name in ("operation", "collection", "principal", "purpose", "case",
                                "outcome")}
        before = q.get("before")
        hide_views = q.get("views") == "hide"
        error: str | None = None
        try:
            data = await self.call(
                self.service.ledger_events, filters, (q.get("from") or "").strip() or None,
                (q.get("to") or "").strip() or None,
                _before(before),
                hide_page_views=hide_views, ctx=self.ctx(session))
        except InvalidParameterException as exc:  # a bad filter: say so, keep the filters
            error = exc.message
            data = await self.call(self.service.ledger_events, {}, limit=1,
                                   ctx=self.ctx(session))
            data["Events"], data["NextBeforeSeq"] = [], None
        return self.render(request, "ledger.html", {
            "events": data, "filters": filters, "time_from": q.get("from", ""),
            "time_to": q.get("to", ""), "nav": "ledger", "error": error,
            "hide_views": hide_views,
            "query": {k: v for k, v in q.items() if k != "before"}},
            status=400 if error else 200)

    async def event(self, request: Request) -> Response:
        session = self.require(request)
        seq = request.path_params["seq"]
        if not 0 < seq <= MAX_SEQ - 1:  # the page also looks up seq + 1
            raise ResourceNotFoundException(f"The ledger has no event #{seq}.")
        data = await self.call(self.service.ledger_event, seq, ctx=self.ctx(session))
        pretty = safe_json(data["Body"], indent=2, sort_keys=True)
        body = data["Body"] if isinstance(data["Body"], dict) else {}
        return self.render(request, "event.html", {
            "e": data, "pretty": _linked(pretty, body, session), "nav": "ledger"})

    async def verify(self, request: Request) -> Response:
        session = self.require(request)
        result = await self.call(self.service.verify_ledger_as, ctx=self.ctx(session))
        return self.render(request, "verify.html", {"v": result, "nav": "ledger"})

    async def export(self, request: Request) -> Response:
        session = self.require(request)
        form = await self.form(request, session, "ExportCase")
        case = str(form.get("case") or "").strip()
        # everything that could fail on the case id comes before the export (which is logged)
        disposition = _attachment(f"case-{case}.zip")
        bundle = await self.call(self.service.export_case, case, ctx=self.ctx(session))
        # the same three files as `faceledger export`: bundle, standalone verifier, README
        data = await self.call(_zip_bundle, bundle)
        return Response(data, media_type="application/zip",
                        headers={"content-disposition": disposition})

    # -- reports and collections -------------------------------------------------------

    def _period(self, request: Request) -> tuple[str, str]:
        today = self.clock().date()
        q = request.query_params
        start = (q.get("from") or "").strip() or (today - timedelta(days=30)).isoformat()
        end = (q.get("to") or "").strip() or (today + timedelta(days=1)).isoformat()
        return start, end

    async def report(self, request: Request) -> Response:
        session = self.require(request)
        start, end = self._period(request)
        rep = await self.call(self.service.report_as, start, end, ctx=self.ctx(session))
        d = rep["deletions"]
        charts = {
            "per_day": day_chart(rep["per_day"]),
            "by_purpose": bar_chart(rep["searches"]["by_purpose"]),
            "by_collection": bar_chart(rep["searches"]["by_collection"]),
            "review": bar_chart(review_funnel(rep["identification"])),
            "refusals": bar_chart(rep["refusals"]["of_operations"]["by_rule"],
                                  color="#b5473a"),
            "view_refusals": bar_chart(rep["refusals"]["of_page_views"]["by_rule"],
                                       color="#b5473a"),
            "deletions": bar_chart({"faces deleted on request": d["faces_deleted"],
                                    "faces expired (retention)": d["faces_expired"],
                                    "collections deleted": d["collections_deleted"]}),
        }
        return self.render(request, "report.html", {
            "r": rep, "charts": charts, "from": start, "to": end, "nav": "report",
            "search_sentence": search_sentence(rep["searches"]),
            "headline": headline(rep["totals"])})

    async def report_download(self, request: Request) -> Response:
        session = self.require(request)
        fmt = request.path_params["fmt"]
        if fmt not in ("html", "json"):
            raise InvalidParameterException("Reports download as report.html or report.json.")
        start, end = self._period(request)
        rep = await self.call(self.service.report_as, start, end, ctx=self.ctx(session))
        name = f"transparency-{start}-{end}.{fmt}"
        disposition = {"content-disposition": _attachment(name)}
        if fmt == "json":
            return Response(safe_json(rep, indent=1),
                            media_type="application/json", headers=disposition)
        return HTMLResponse(render_html(rep), headers=disposition)

    async def collections(self, request: Request) -> Response:
        session = self.require(request)
        ctx = self.ctx(session)
        ids = await self.call(self.service.visible_collections, ctx=ctx)
        curve = await self.call(self.service.calibration_curve)
        rates = await self.call(self.service.published_error_rates)
        return self.render(request, "collections.html", {
            "ids": ids, "chart": calibration_chart(curve), "rates": rates,
            "nav": "collections"})

    async def collection(self, request: Request) -> Response:
        session = self.require(request)
        purpose_error: str | None = None
        typed = (request.query_params.get("purpose") or "").strip()
        try:  # the same check as the API's header and the CLI's --purpose, as a form error
            purpose = stated(typed, "Purpose") if typed else None
        except InvalidParameterException as exc:
            purpose, purpose_error = None, exc.message
        data = await self.call(self.service.collection_overview,
                               request.path_params["collection_id"],
                               listing=purpose_error is None,
                               ctx=self.ctx(session, purpose=purpose))
        # the collection's own model: its templates are scored with that model's table
        model = data["Description"]["FaceModelVersion"]
        curve = await self.call(self.service.calibration_curve, model_version=model)
        rates = await self.call(self.service.published_error_rates, model)
        return self.render(request, "collection.html", {
            "c": data, "chart": calibration_chart(curve), "rates": rates,
            "purpose": typed, "purpose_error": purpose_error, "nav": "collections"},
            status=400 if purpose_error else 200)

    async def rates(self, request: Request) -> Response:
        self.require(request)
        rates = await self.call(self.service.published_error_rates)
        return self.render(request, "rates.html", {"rates": rates, "nav": "rates"})


class _SignInNeeded(AccessDeniedException):
    """No live session: the page answers with the sign-in form."""

    def __init__(self) -> None:
        super().__init__("Sign in to continue (your session ended, expired, or its key was "
                         "revoked).")


def build_console(service: FaceService, keys: KeyStore, **options: Any) -> ASGIApp:
    """The console's ASGI app (all paths under /console)."""
    return Console(service, keys, **options).app()


def _zip_bundle(bundle: Mapping[str, Any]) -> bytes:
    """A case bundle as a zip of what `faceledger export` writes."""
    with tempfile.TemporaryDirectory(prefix="faceledger-export-") as tmp:
        paths = write_bundle(dict(bundle), Path(tmp))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in paths:
                zf.write(path, path.name)
    return buf.getvalue()


def _can(session: Session | None) -> dict[str, bool]:
    """What the signed-in key may do in the console: pages and buttons show only these."""
    roles = session.key.console_roles if session is not None else frozenset()
    admin = "admin" in roles
    return {"review": admin or "reviewer" in roles,
            "read_cases": admin or bool(roles & {"reviewer", "auditor"}),
            "audit": admin or "auditor" in roles, "export": admin}


_UUID = re.compile(r"&#34;([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})&#34;")


def _linked(pretty: str, body: Mapping[str, Any], session: Session) -> Markup:
    """The event body, escaped, with held candidates linked to their case file and face ids
    to the collection's page (where the signed-in role can open them)."""
    raw_result, raw_params = body.get("result"), body.get("params")
    result: Mapping[str, Any] = raw_result if isinstance(raw_result, dict) else {}
    params: Mapping[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    candidates = {str(c) for c in (result.get("held_for_review") or [])}
    for where in (result, params):
        if isinstance(where.get("candidate_id"), str):
            candidates.add(where["candidate_id"])
        for key in ("candidate_ids", "conflicts_with", "keep"):  # conflicts, resolutions
            candidates.update(str(c) for c in (where.get(key) or []) if isinstance(c, str))
    faces = {str(f) for f in (result.get("face_ids") or [])}
    coll = body.get("collection")
    can = _can(session)

    def link(m: re.Match[str]) -> str:
        value = m.group(1)
        if value in candidates and can["read_cases"]:
            return f'&#34;<a href="{PREFIX}/candidates/{value}">{value}</a>&#34;'
        if value in faces and isinstance(coll, str):
            return (f'&#34;<a href="{PREFIX}/collections/{escape(coll)}#face-{value}">'
                    f"{value}</a>&#34;")
        return m.group(0)

    return Markup(_UUID.sub(link, str(escape(pretty))))


def _visible(value: Any) -> Any:
    """Every value a template prints, with control, bidirectional and invisible characters shown
    as escapes (`text.visible`): a reason stored before input was checked reads as typed,
    never reordered. Markup stays markup (its text parts are neutralised the same way)."""
    if isinstance(value, Markup):
        return Markup(visible(str(value)))
    if isinstance(value, str):
        return visible(value)
    return value


def _num(v: Any) -> str:
    """A count or an estimate for people: 0 as 0, otherwise 3 significant digits."""
    if v is None:
        return "–"
    f = float(v)
    return "0" if f == 0 else f"{f:.3g}"


def _rate(v: Any) -> str:
    """A rate as a plain number (0 as 0, no exponent below 1e-6)."""
    if v is None:
        return "–"
    f = float(v)
    if f == 0:
        return "0"
    return f"{f:.2g}" if f >= 1e-4 else f"{f:.1e}"


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _safe(name: str) -> str:
    """`name` in ASCII letters, digits and -_. only (a header is latin-1: "Ω".isalnum())."""
    return "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "-_." else "_" for ch in name)


def _attachment(name: str) -> str:
    """Content-Disposition for a download named `name`: an ASCII fallback, and the exact name
    in RFC 5987's UTF-8 form (`filename*`), so any case id makes a valid header."""
    return f"attachment; filename=\"{_safe(name)}\"; filename*=UTF-8''{quote(name, safe='')}"


def _before(value: str | None) -> int | None:
    """The ledger page's `before` (an event number): ASCII digits within SQL's BIGINT range
    (larger numbers mean "from the newest"); InvalidParameterException otherwise."""
    text = (value or "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 40:
        raise InvalidParameterException("'before' must be a ledger event number.")
    seq = int(text)
    return None if seq > MAX_SEQ else seq


def _when(value: Any) -> str:
    """A Unix timestamp or datetime as UTC text."""
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "–" if value is None else str(value)


def _fmr(value: Any) -> str:
    """A false-match rate for people: 1 in N, and the number."""
    if value is None:
        return "–"
    v = float(value)
    if v <= 0:
        return "0"
    return f"{v:.2g} ({how_often(v)})"


__all__ = ["Console", "build_console"]
