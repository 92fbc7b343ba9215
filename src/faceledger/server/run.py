"""Putting the server together from settings, and running it with uvicorn (in the foreground
for `faceledger serve`, or in a thread on a free 127.0.0.1 port for tests and benchmarks)."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn

from ..console import build_console
from ..service import FaceService
from ..settings import Settings
from ..vision.pool import PipelinePool, default_workers
from .app import RekognitionApp
from .keys import KeyStore
from .storage import build_resolver
from ..text import logger

log = logger("faceledger.server")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(
    settings: Settings,
    *,
    dev_mode: bool = False,
    service: FaceService | None = None,
    warm_up: bool = True,
    console: bool = True,
) -> RekognitionApp:
    """The app for `settings`: a FaceService reading configured buckets, keys in its database.
    A service built here is the app's, closed when the server stops."""
    owns: list[Callable[[], None]] = []
    if service is None:
        workers = default_workers(settings.server_workers)
        # several workers: inference in that many processes (dlib holds the GIL: threads
        # would share one core); one: in this process, as the CLI and the Python API do
        pipeline = PipelinePool(settings, workers) if workers > 1 else None
        service = FaceService(settings, pipeline=pipeline, resolver=build_resolver(settings))
        owns.append(service.close)
        if pipeline is not None:
            owns.append(pipeline.close)
    # a missing or wrong KEK with sealed secrets: refused here, in one line. With no secret
    # sealed yet, a missing KEK is made now, as `keys create` would: a key issued while the
    # server runs (`docker compose exec ... keys create`) is then sealed under the KEK the
    # server holds, instead of being refused until a restart.
    try:
        keys = KeyStore.open(settings, service.engine, need_kek=not dev_mode,
                             create_kek=not dev_mode)
    except OSError as exc:  # a read-only config directory: serve as before, without one
        log.warning("no key-encryption key could be made (%s): keys issued while this server "
                    "runs will be refused until it restarts", exc)
        keys = KeyStore.open(settings, service.engine, need_kek=not dev_mode)
    if not dev_mode and not any(k.active for k in keys.list()):
        log.warning("no active API keys: every request will be refused; "
                    "create one with `faceledger keys create`")
    return RekognitionApp(service, keys, settings, dev_mode=dev_mode, warm_up=warm_up,
                          console=build_console(service, keys) if console else None,
                          owns=owns)


def uvicorn_config(app: RekognitionApp, host: str, port: int, **extra: object) -> uvicorn.Config:
    # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise (FORWARDED_ALLOW_IPS
    # too): any local client could then pick the address sign-in throttling charges. Only the
    # proxies the operator names are believed; by default none.
    proxies = app.settings.forwarded_allow_ips
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,  # the app logs each request with its principal and operation
        log_config=None,
        server_header=False,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or "",
        # ~16 MB bodies of 16 concurrent clients are fine; headers stay small
        h11_max_incomplete_event_size=64 * 1024,
        **extra,  # type: ignore[arg-type]
    )


def serve(app: RekognitionApp, host: str, port: int, **extra: object) -> None:
    """Run until interrupted (Ctrl-C / SIGTERM)."""
    if app.dev_mode and not is_loopback(host):
        raise ValueError(f"development mode serves anyone unauthenticated: refusing host {host}; "
                         "bind it to 127.0.0.1")
    try:
        uvicorn.Server(uvicorn_config(app, host, port, **extra)).run()
    finally:
        app.close()  # at the lifespan's shutdown already, unless it never started


@contextmanager
def running(app: RekognitionApp, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` from a thread on a free port of `host`; yields the endpoint URL."""
    if not is_loopback(host):
        raise ValueError("test servers listen on loopback only")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, host, port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"faceledger-server-{port}")
    thread.start()
    try:
        for _ in range(600):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        if not server.started:
            raise RuntimeError("the server did not start")
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
