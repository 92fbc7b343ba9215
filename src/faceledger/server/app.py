"""The ASGI application: Rekognition's JSON protocol over HTTP, SigV4-authenticated.

One request: read the body (bounded in size, shared memory and time) -> verify the signature ->
resolve the operation from X-Amz-Target -> check the key's rate -> refuse a signature already
received, else remember it -> check the key's operation permission -> admit it (a worker or
queue slot, else ThrottlingException) -> in a worker thread (a bounded pool): parse and validate
the body against botocore's model, check collection permissions, call the FaceService method,
render JSON. A slot is taken only by a signed, whole request, so unauthenticated or trickling
connections never hold one.
Errors become responses in exactly one place, `_error`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..context import MAX_CONTEXT_CHARS, RequestContext, stated
from ..errors import (
    AccessDeniedException,
    FaceledgerError,
    InternalServerError,
    InvalidParameterException,
    ReplayedRequestException,
    UnknownOperationException,
    UnrecognizedClientException,
)
from ..service import FaceService
from ..settings import Settings
from ..text import install_log_escaping, logger, shown
from ..vision.pool import default_workers
from . import protocol, sigv4
from .extensions import extension_headers
from .keys import KeyInfo, KeyStore, KeyStoreError
from .limits import Admission, BodyBudget, BodyReader, BodyTiming, RateLimiter, body_too_large
from .replay import ReplayCache

log = logger("faceledger.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIHandler = Callable[[Scope, Receive, Send], Awaitable[None]]

PURPOSE_HEADER = "x-faceledger-purpose"
CASE_HEADER = "x-faceledger-case"
CONSENT_HEADER = "x-faceledger-consent"
CONTEXT_HEADERS = (PURPOSE_HEADER, CASE_HEADER, CONSENT_HEADER)
# how an HTTP caller states a purpose or consent (named by a policy's refusal)
PURPOSE_VIA = "the X-Faceledger-Purpose header (boto3: faceledger.sdk.state_context)"
CONSENT_VIA = "the X-Faceledger-Consent header (boto3: faceledger.sdk.state_context)"
REPEAT_ANSWER_DELAY = 1.0  # seconds: SigV4's time resolution (replay.py)
# what each header states, in the words `context.stated` refuses with
HEADER_FIELDS = {PURPOSE_HEADER: "Purpose", CASE_HEADER: "Case reference",
                 CONSENT_HEADER: "Consent reference"}
DEV_PRINCIPAL = "anonymous-dev"
DEV_BANNER = """
  ************************************************************************
  *  faceledger DEVELOPMENT MODE: NO AUTHENTICATION.                     *
  *  Every request is served, signed or not, as principal "anonymous-dev" *
  *  with every permission. Never expose this server to a network.       *
  ************************************************************************
"""


@dataclass(frozen=True)
class Caller:
    """Who a verified request came from: their key's record (None in development mode)."""

    principal: str
    key: KeyInfo | None
    signature: str | None = None  # the request's SigV4 signature (None in development mode)
    expires_at: float = 0.0  # Unix time when that signature leaves the clock-skew window


class RekognitionApp:
    """ASGI app serving every FaceService operation that Rekognition's model names."""

    def __init__(
        self,
        service: FaceService,
        keys: KeyStore | None,
        settings: Settings | None = None,
        *,
        dev_mode: bool = False,
        warm_up: bool = True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        console: ASGIHandler | None = None,
        owns: Sequence[Callable[[], None]] = (),
    ) -> None:
        if keys is None and not dev_mode:
            raise ValueError("a key store is required unless dev_mode is on")
        self.service = service
        self.keys = keys
        self.settings = settings or service.settings
        self.dev_mode = dev_mode
        self.warm_up = warm_up
        self.clock = clock
        s = self.settings
        # Limits live in this one process even with several inference processes (PipelinePool):
        # every request passes through this event loop, so no state has to be shared.
        workers = default_workers(s.server_workers)
        self.admission = Admission(workers, s.server_queue)
        self.body_budget = BodyBudget(s.server_body_budget_bytes or
                                      s.max_request_bytes * (workers + s.server_queue))
        self.body_timing = BodyTiming(s.server_body_grace_seconds, s.server_body_min_rate,
                                      s.server_body_timeout_seconds)
        self.replays = ReplayCache(service.engine) if s.replay_protection and not dev_mode \
            else None
        self.rates = RateLimiter()
        self.pool = ThreadPoolExecutor(max_workers=request_threads(workers),
                                       thread_name_prefix="faceledger-worker")
        self.max_skew = timedelta(seconds=s.clock_skew_seconds)
        self.operations = frozenset(protocol.implemented_operations(service))
        # the review console (faceledger.console), served under /console on the same port
        self.console = console
        # what the server built for itself and closes when it stops (see `close`)
        self._owned = list(owns)
        # one request, one log line: no value a caller sends can break or forge one
        install_log_escaping(log.name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            path = str(scope.get("path", ""))
            if self.console is not None and (path == "/console" or path.startswith("/console/")):
                await self.console(scope, receive, send)
            else:
                await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.announce()
                try:
                    if self.warm_up:
                        await asyncio.get_running_loop().run_in_executor(
                            self.pool, self.service.pipeline.warm_up
                        )
                    # video jobs a stopped server left IN_PROGRESS resume (or end FAILED)
                    self.service.start_video_jobs()
                except Exception as exc:
                    log.error("models could not be loaded", exc_info=exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                log.info("faceledger server stopped")
                await send({"type": "lifespan.shutdown.complete"})
                return

    def announce(self) -> None:
        """Log what this server serves; shout if it is in development mode."""
        if self.dev_mode:
            for line in DEV_BANNER.strip("\n").splitlines():  # log lines never hold a break
                log.warning(line)
        log.info("serving %d operations: %s", len(self.operations),
                 ", ".join(sorted(self.operations)))

    def close(self) -> None:
        """Stop the request threads, then close what the server owns (its service's index, its
        inference processes). Called at the lifespan's shutdown: uvicorn then re-raises the
        SIGTERM that stopped it, which ends the process before any `finally` of the caller's,
        so a pool closed only there left its 5 queue semaphores to the resource tracker."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        owned, self._owned = self._owned, []
        for close in owned:
            close()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
                   for k, v in scope.get("headers", [])]
        operation = "-"
        principal = "-"
        entered = handed_off = False
        extra: list[tuple[bytes, bytes]] = []  # X-Faceledger-* members as headers
        reader = BodyReader(self.settings.max_request_bytes, self.body_budget, self.body_timing,
                            body_too_large(self.settings.max_request_bytes))
        try:
            if scope.get("method") != "POST" or scope.get("path") != "/":
                raise UnknownOperationException(
                    "faceledger speaks Rekognition's JSON protocol: POST / with X-Amz-Target."
                )
            # Read before admission: the budget bounds body memory, the timing drops trickles.
            body = await reader.read(next((v for k, v in headers if k == "content-length"),
                                          None), receive)
            request = sigv4.HttpRequest(
                method=scope["method"],
                raw_path=(scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
                query=scope.get("query_string", b"").decode("latin-1"),
                headers=headers,
                body=body,
            )
            # off the loop: hashing a 14 MB body and the key lookup would stall other requests
            caller = await asyncio.to_thread(self._authenticate, request)
            principal = caller.principal
            operation = protocol.operation_from_target(request.header("x-amz-target"))
            if operation not in self.operations:
                raise UnknownOperationException(
                    f"Operation {operation} is not implemented by this faceledger server."
                )
            if caller.key is not None and caller.key.rate_limit is not None:
                self.rates.take(caller.key.access_key_id, caller.key.rate_limit,
                                time.monotonic())
            if self.replays is not None and caller.signature is not None:
                # every signed request once, before anything may come of it: served, refused
                # or failed alike (replay.py). Over the key's rate it never got here: its
                # signature costs no database write, and it did nothing.
                try:
                    await asyncio.to_thread(self.replays.first_use, caller.signature,
                                            caller.expires_at)
                except ReplayedRequestException:
                    # Answered a second after it came, so the retry an SDK then makes is
                    # signed in a later second (a new signature) whatever the two clocks say:
                    # the first copy was signed before it arrived. Its body is let go first:
                    # copies of one captured 16 MB request hold no body memory as they wait.
                    del body, request
                    reader.release()
                    await asyncio.sleep(REPEAT_ANSWER_DELAY)
                    raise
            if caller.key is not None:
                self._authorize_operation(caller.key, operation)
            protocol.check_content_type(request.header("content-type"))
            # a worker or queue slot, only now that the request is whole and signed
            self.admission.enter()
            entered = True
            ctx = RequestContext(
                principal=principal,
                purpose=_context_header(request, PURPOSE_HEADER),
                case=_context_header(request, CASE_HEADER),
                consent=_context_header(request, CONSENT_HEADER),
                request_id=request_id,
                # development mode grants every permission; otherwise the key says
                admin=caller.key.admin if caller.key is not None else self.dev_mode,
                collections=caller.key.collections if caller.key is not None else ("*",),
                sns_topics=caller.key.sns_topics if caller.key is not None else ("*",),
                s3_objects=caller.key.s3_objects if caller.key is not None else ("*",),
                purpose_via=PURPOSE_VIA, consent_via=CONSENT_VIA,
            )
            future = asyncio.get_running_loop().run_in_executor(
                self.pool, self._invoke, operation, body, ctx, caller
            )
            # Leave when the work is really done, even if this coroutine is cancelled.
            future.add_done_callback(lambda _: self.admission.leave())
            handed_off = True
            payload, extra = await future
            status, error_code = 200, None
        except Exception as exc:  # noqa: BLE001 - the one place errors become responses
            status, error_code, payload = self._error(exc, request_id)
        finally:
            if entered and not handed_off:
                self.admission.leave()
        try:
            # a body left unread (refused, too slow) cannot be followed by another request on
            # this connection: close it, or a trickle would keep it open for ever
            await self._respond(send, status, payload, request_id, error_code,
                                close=not reader.complete, extra=extra)
        finally:
            reader.release()
        log.info("%s %s %s %d %.1fms", request_id, principal, operation, status,
                 (time.perf_counter() - started) * 1000)

    def _authenticate(self, request: sigv4.HttpRequest) -> Caller:
        if self.dev_mode:
            return Caller(DEV_PRINCIPAL, None)
        assert self.keys is not None
        found: dict[str, KeyInfo] = {}
        keys = self.keys

        def signing_key_for(key_id: str, date: str, region: str, service: str) -> bytes | None:
            try:
                creds = keys.credentials(key_id, date, region, service)
            except KeyStoreError as exc:
                log.error("API key %s cannot be used: %s", shown(key_id), exc)
                return None
            if creds is None:
                log.info("unknown or revoked API key %s", shown(key_id))
                return None
            found["key"] = creds[0]
            return creds[1]

        auth = sigv4.verify(
            request,
            signing_key_for=signing_key_for,
            region=self.settings.region,
            service=protocol.SERVICE,
            now=self.clock(),
            max_skew=self.max_skew,
            must_sign=("x-amz-target", *CONTEXT_HEADERS),
        )
        key = found.get("key")
        if key is None:  # pragma: no cover - verify() succeeds only with a signing key
            raise UnrecognizedClientException(sigv4.UNKNOWN_KEY)
        signed_at = sigv4.request_time(request)[1]
        return Caller(auth.access_key_id, key, auth.signature,
                      (signed_at + self.max_skew).timestamp())

    @staticmethod
    def _authorize_operation(key: KeyInfo, operation: str) -> None:
        if not key.allows_operation(operation):
            # the key's own permissions, to its holder: what it may do and how to get more
            raise AccessDeniedException(
                f"Key {key.access_key_id} is not allowed to call {operation}; it may call "
                f"{', '.join(key.operations) or 'nothing'}. A key for {operation} is issued with "
                f"`faceledger keys create NAME -o '{operation},...' -c COLLECTIONS`."
            )

    def _invoke(self, operation: str, body: bytes, ctx: RequestContext, caller: Caller
                ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """Runs in a worker thread: validate, authorize collections, call, render (the body and
        the X-Faceledger-* headers of members SDKs drop)."""
        parsed = protocol.parse_input(operation, body)
        key = caller.key
        if key is not None:
            for collection_id in parsed.collection_ids:
                if not key.allows_collection(collection_id):
                    raise AccessDeniedException(
                        f"Key {key.access_key_id} is not allowed to use collection "
                        f"{shown(collection_id)}."
                    )
        method = getattr(self.service, protocol.snake_case(operation))
        kwargs = protocol.call_arguments(operation, method, parsed.members)
        # listings show only what ctx.collections names (the service filters, tokens included)
        result = method(**kwargs, ctx=ctx)
        # SDKs drop members their model lacks: those are repeated as X-Faceledger-* headers
        return protocol.render_output(result), extension_headers(operation, result)

    @staticmethod
    def _error(exc: Exception, request_id: str) -> tuple[int, str, bytes]:
        """The one mapping from an exception to (HTTP status, error code, Rekognition body).

        FaceledgerErrors carry their code and status; anything else is a bug of ours: a
        generic InternalServerError goes out, the traceback only to the log.
        """
        if isinstance(exc, FaceledgerError):
            log.info("%s %s: %s", request_id, exc.code, exc.message, exc_info=exc.status >= 500)
            err: FaceledgerError = exc
        else:
            log.error("%s internal error", request_id, exc_info=exc)
            err = InternalServerError(
                f"An internal error occurred (request {request_id}); the server log has details."
            )
        return err.status, err.code, protocol.render_output(err.to_wire())

    async def _respond(self, send: Send, status: int, payload: bytes, request_id: str,
                       error_code: str | None, *, close: bool = False,
                       extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = [
            (b"content-type", protocol.CONTENT_TYPE.encode()),
            (b"content-length", str(len(payload)).encode()),
            (b"x-amzn-requestid", request_id.encode()),
        ]
        if error_code is not None:
            headers.append((b"x-amzn-errortype", error_code.encode()))
        if self.dev_mode:
            headers.append((b"x-faceledger-dev-mode", b"unauthenticated"))
        if close:
            headers.append((b"connection", b"close"))
        headers += extra or []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def request_threads(workers: int) -> int:
    """Request threads for `workers` inference workers: with worker processes, one more per
    worker so that a request's decoding and database work overlaps another's inference."""
    return workers if workers == 1 else 2 * workers


def _context_header(request: sigv4.HttpRequest, name: str) -> str | None:
    value = request.header(name)
    if value is None:
        return None
    try:
        return stated(value, HEADER_FIELDS[name])
    except InvalidParameterException as exc:
        # the same check as the CLI's and the console's, naming the header
        raise InvalidParameterException(
            f"{exc.message} (HTTP header {name}: 1 to {MAX_CONTEXT_CHARS} characters)") from exc
