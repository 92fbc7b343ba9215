"""The review console: server-rendered pages at /console, an adapter over the service.

Every page calls a FaceService method with the signed-in key's context (principal, roles,
collections); the service checks roles, enforces the review rules and logs views of biometric
data. This module only parses forms, renders templates and keeps sessions. See docs/console.md.
"""

from __future__ import annotations

import hmac
import io
import json
import secrets
import tempfile
import uuid
import zipfile
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
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

from ..context import RequestContext
from ..errors import AccessDeniedException, FaceledgerError, InvalidParameterException
from ..ledger.export import write_bundle
from ..ledger.report import bar_chart, day_chart, render_html
from ..server.keys import KeyStore
from ..service import FaceService
from .charts import calibration_chart
from .sessions import Session, SessionStore
from ..text import logger

log = logger("faceledger.console")

PREFIX = "/console"
SESSION_COOKIE = "fl_console"
SIGNIN_COOKIE = "fl_console_signin"  # CSRF token of the sign-in form (double submit)
SESSION_HOURS = 8
MAX_FORM_BYTES = 64 * 1024

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


class Console:
    """The console's routes over one FaceService and its key store."""

    def __init__(self, service: FaceService, keys: KeyStore, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 session_hours: float = SESSION_HOURS) -> None:
        self.service = service
        self.keys = keys
        self.clock = clock
        self.sessions = SessionStore(service.engine, keys, timedelta(hours=session_hours))
        env = Environment(loader=PackageLoader("faceledger.console", "templates"),
                          autoescape=select_autoescape(default=True, default_for_string=True))
        env.filters["fmr"] = _fmr
        env.filters["pct"] = lambda v: "–" if v is None else f"{float(v):.4g}%"
        env.filters["when"] = _when
        env.filters["num"] = lambda v: "–" if v is None else f"{float(v):.3g}"
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
            Route("/ledger", self.page(self.ledger)),
            Route("/ledger/verify", self.page(self.verify)),
            Route("/ledger/export", self.page(self.export), methods=["POST"]),
            Route("/ledger/{seq:int}", self.page(self.event)),
            Route("/report", self.page(self.report)),
            Route("/report.{fmt:str}", self.page(self.report_download)),
            Route("/collections", self.page(self.collections)),
            Route("/collections/{collection_id}", self.page(self.collection)),
            Mount("/static", StaticFiles(packages=[("faceledger.console", "static")]),
                  name="static"),
        ]
        return NoStore(Starlette(routes=[Mount(PREFIX, routes=routes)]))

    def page(self, handler: Handler) -> Handler:
        """Run a handler; faceledger errors become an error page with their code, anything
        else a generic one (the log keeps the traceback): never a traceback to the browser."""

        @wraps(handler)
        async def run(request: Request) -> Response:
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
        full = {"session": session, "prefix": PREFIX, **context}
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
        key = session.key
        return RequestContext(
            principal=key.access_key_id, request_id=str(uuid.uuid4()), admin=key.admin,
            roles=key.console_roles,
            collections=("*",) if key.all_collections else tuple(key.collections), **extra)

    async def form(self, request: Request, session: Session | None) -> FormData:
        """The posted form, refused unless it carries this session's CSRF token."""
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_FORM_BYTES:
            raise InvalidParameterException("The form is too large.")
        form = await request.form(max_files=0, max_fields=50)
        expected = session.csrf if session is not None else request.cookies.get(SIGNIN_COOKIE)
        given = form.get("csrf")
        if not expected or not isinstance(given, str) or not _same(given, expected):
            raise AccessDeniedException(
                "The form's CSRF token is missing or wrong: reload the page and try again.")
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
        target = "queue" if roles & {"reviewer", "admin"} else "ledger"
        return RedirectResponse(f"{PREFIX}/{target}", 303)

    async def signin_form(self, request: Request, error: str | None = None,
                          status: int = 200) -> Response:
        token = secrets.token_urlsafe(32)
        response = self.render(request, "signin.html", {"csrf": token, "error": error},
                               status=status)
        self._cookie(request, response, SIGNIN_COOKIE, token, 600)
        return response

    async def signin(self, request: Request) -> Response:
        form = await self.form(request, None)
        key_id = str(form.get("access_key_id") or "").strip()
        secret = str(form.get("secret") or "")
        now = self.clock()
        key = await self.call(self.sessions.check_secret, key_id, secret, now) if (
            key_id and secret and len(key_id) <= 64 and len(secret) <= 256) else None
        if key is None:
            log.info("console sign-in refused for %r", key_id[:64])
            return await self.signin_form(request, "Unknown or revoked key, or wrong secret.",
                                          401)
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
        await self.form(request, session)
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
        data = await self.call(self.service.review_queue, ctx=self.ctx(session))
        return self.render(request, "queue.html", {"queue": data, "nav": "queue"})

    async def candidate(self, request: Request, message: str | None = None,
                        status: int = 200) -> Response:
        session = self.require(request)
        cid = request.path_params["candidate_id"]
        data = await self.call(self.service.review_case_file, cid, ctx=self.ctx(session))
        cand = data["Candidate"]
        reviewed = any(r["Reviewer"] == session.key.access_key_id for r in cand["Reviews"])
        return self.render(request, "candidate.html", {
            "file": data, "c": cand, "nav": "queue", "message": message,
            "own_search": cand["RequestedBy"] == session.key.access_key_id,
            "reviewed": reviewed,
            "probe_json": json.dumps(cand.get("ProbeFace") or {}),
            "enrolled_json": json.dumps({
                k: (data["EnrolledFace"] or {}).get(k) for k in ("BoundingBox", "Landmarks")}),
        }, status=status)

    async def decide(self, request: Request) -> Response:
        session = self.require(request)
        form = await self.form(request, session)
        cid = request.path_params["candidate_id"]
        decision = str(form.get("decision") or "")
        reason = str(form.get("reason") or "")
        try:
            decided = await self.call(self.service.review_candidate, cid, decision, reason,
                                      ctx=self.ctx(session))
        except FaceledgerError as exc:
            # the service's refusal, shown on the candidate's page with its code
            return await self.candidate(request, f"{exc.code}: {exc.message}", exc.status)
        note = (f"Recorded: {decision}. The candidate is now {decided['Status']} "
                f"({decided['Confirmations']} of {decided['ReviewersRequired']} confirmations).")
        return await self.candidate(request, note)

    # -- ledger ------------------------------------------------------------------------

    async def ledger(self, request: Request) -> Response:
        session = self.require(request)
        q = request.query_params
        filters = {name: (q.get(name) or "").strip() or None
                   for name in ("operation", "collection", "principal", "purpose", "case",
                                "outcome")}
        before = q.get("before")
        data = await self.call(
            self.service.ledger_events, filters, (q.get("from") or "").strip() or None,
            (q.get("to") or "").strip() or None,
            int(before) if before and before.isdigit() else None, ctx=self.ctx(session))
        return self.render(request, "ledger.html", {
            "events": data, "filters": filters, "time_from": q.get("from", ""),
            "time_to": q.get("to", ""), "nav": "ledger",
            "query": {k: v for k, v in q.items() if k != "before"}})

    async def event(self, request: Request) -> Response:
        session = self.require(request)
        data = await self.call(self.service.ledger_event, request.path_params["seq"],
                               ctx=self.ctx(session))
        pretty = json.dumps(data["Body"], indent=2, ensure_ascii=False, sort_keys=True)
        return self.render(request, "event.html", {"e": data, "pretty": pretty, "nav": "ledger"})

    async def verify(self, request: Request) -> Response:
        session = self.require(request)
        result = await self.call(self.service.verify_ledger_as, ctx=self.ctx(session))
        return self.render(request, "verify.html", {"v": result, "nav": "ledger"})

    async def export(self, request: Request) -> Response:
        session = self.require(request)
        form = await self.form(request, session)
        case = str(form.get("case") or "").strip()
        bundle = await self.call(self.service.export_case, case, ctx=self.ctx(session))
        # the same three files as `faceledger export`: bundle, standalone verifier, README
        data = await self.call(_zip_bundle, bundle)
        return Response(data, media_type="application/zip", headers={
            "content-disposition": f'attachment; filename="case-{_safe(case)}.zip"'})

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
            "review": bar_chart({"candidates returned":
                                 rep["identification"]["candidates_returned"],
                                 "confirmed": rep["identification"]["confirmed"],
                                 "rejected": rep["identification"]["rejected"]}),
            "refusals": bar_chart(rep["refusals"]["by_rule"], color="#b5473a"),
            "deletions": bar_chart({"faces deleted on request": d["faces_deleted"],
                                    "faces expired (retention)": d["faces_expired"],
                                    "collections deleted": d["collections_deleted"]}),
        }
        return self.render(request, "report.html", {"r": rep, "charts": charts, "from": start,
                                                    "to": end, "nav": "report"})

    async def report_download(self, request: Request) -> Response:
        session = self.require(request)
        fmt = request.path_params["fmt"]
        if fmt not in ("html", "json"):
            raise InvalidParameterException("Reports download as report.html or report.json.")
        start, end = self._period(request)
        rep = await self.call(self.service.report_as, start, end, ctx=self.ctx(session))
        name = f"transparency-{start}-{end}.{fmt}"
        disposition = {"content-disposition": f'attachment; filename="{_safe(name)}"'}
        if fmt == "json":
            return Response(json.dumps(rep, indent=1, ensure_ascii=False),
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
        purpose = (request.query_params.get("purpose") or "").strip()[:255] or None
        data = await self.call(self.service.collection_overview,
                               request.path_params["collection_id"],
                               ctx=self.ctx(session, purpose=purpose))
        curve = await self.call(self.service.calibration_curve)
        rates = await self.call(self.service.published_error_rates)
        return self.render(request, "collection.html", {
            "c": data, "chart": calibration_chart(curve), "rates": rates,
            "purpose": purpose or "", "nav": "collections"})


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


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


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
    return f"{v:.2g} (1 in {1 / v:,.0f})"


__all__ = ["Console", "build_console"]
