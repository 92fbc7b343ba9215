"""`faceledger serve` and `faceledger keys create/list/revoke`."""

from __future__ import annotations

import logging
import threading
import webbrowser

import click

from ..db import make_engine
from ..permissions import private_data_dir
from ..server.app import DEV_BANNER
from ..server.keys import ROLES, KeyStore, KeyStoreError
from ..server.protocol import model_operations
from ..server.run import build_app, is_loopback
from ..server.run import serve as run_server
from ..service import FaceService
from ..settings import Settings
from ..vision.pool import default_workers
from .app import emit_json, main, reports_errors, request_context


def _settings(**overrides: object) -> Settings:
    base = Settings()
    given = {k: v for k, v in overrides.items() if v is not None}
    return base.model_copy(update=given) if given else base


@main.command()
@click.option("--host", default=None, help="Address to listen on [default: FACELEDGER_SERVER_HOST "
              "or 127.0.0.1].")
@click.option("--port", type=int, default=None, help="[default: FACELEDGER_SERVER_PORT or 8080]")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Inference worker processes [default: FACELEDGER_SERVER_WORKERS, "
                   "else one per core]; 1 runs inference in the server process.")
@click.option("--queue", type=click.IntRange(0, 10_000), default=None,
              help="Requests that may wait for a worker before ThrottlingException [default 32].")
@click.option("--dev", is_flag=True,
              help="Development mode: NO authentication, loopback only. Never in production.")
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--forwarded-allow-ips", default=None,
              help="Reverse proxies (IPs or networks, comma-separated) whose X-Forwarded-For "
                   "is believed [default: FACELEDGER_FORWARDED_ALLOW_IPS, else none].")
@reports_errors
def serve(host: str | None, port: int | None, workers: int | None, queue: int | None, dev: bool,
          ssl_certfile: str | None, ssl_keyfile: str | None,
          forwarded_allow_ips: str | None) -> None:
    """Serve Amazon Rekognition's API (boto3: endpoint_url=http://HOST:PORT), SigV4-signed."""
    settings = _settings(server_host=host, server_port=port, server_workers=workers,
                         server_queue=queue, forwarded_allow_ips=forwarded_allow_ips)
    if dev and not is_loopback(settings.server_host):
        raise click.UsageError(
            f"--dev serves anyone without authentication; it only binds to loopback, "
            f"not {settings.server_host}"
        )
    # one line per request (principal, operation, status, time) and the startup banner
    logging.getLogger("faceledger").setLevel(
        min(logging.getLogger("faceledger").getEffectiveLevel(), logging.INFO)
    )
    if dev:
        click.secho(DEV_BANNER, fg="red", bold=True, err=True)
    try:
        app = build_app(settings, dev_mode=dev)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    except KeyStoreError as exc:  # an unsafe or unreadable KEK: one line, like `keys create`
        raise click.ClickException(str(exc)) from exc
    scheme = "https" if ssl_certfile else "http"
    regions = "any region" if settings.region.strip() == "*" else f"region {settings.region}"
    click.echo(f"faceledger: Rekognition API at {scheme}://{settings.server_host}:"
               f"{settings.server_port} ({regions}); "
               f"{len(app.operations)} operations; {default_workers(settings.server_workers)} "
               "inference worker(s)", err=True)
    click.echo(f"faceledger: review console at {scheme}://{settings.server_host}:"
               f"{settings.server_port}/console/", err=True)
    extra: dict[str, object] = {}
    if ssl_certfile:
        extra = {"ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile}
    run_server(app, settings.server_host, settings.server_port, **extra)


@main.command("console")
@click.option("--port", type=int, default=None, help="[default: FACELEDGER_SERVER_PORT or 8080]")
@click.option("--no-browser", is_flag=True, help="Only print the address; do not open a browser.")
@reports_errors
def console(port: int | None, no_browser: bool) -> None:
    """Serve the review console for the local data directory on 127.0.0.1 and open it.

    Sign in with an access key that has a console role (`faceledger keys create ... --role
    reviewer`). The Rekognition API is served on the same port.
    """
    settings = _settings(server_host="127.0.0.1", server_port=port)
    logging.getLogger("faceledger").setLevel(
        min(logging.getLogger("faceledger").getEffectiveLevel(), logging.INFO)
    )
    app = build_app(settings)
    url = f"http://127.0.0.1:{settings.server_port}/console/"
    click.echo(f"faceledger: review console for {settings.data_dir} at {url}", err=True)
    if not any(k.active and k.console_roles for k in _store(service=app.service).list()):
        click.echo("no active key has a console role: create one with "
                   "`faceledger keys create NAME -o '*' -c '*' --role reviewer`", err=True)
    if not no_browser:
        threading.Timer(1.5, webbrowser.open, [url]).start()
    run_server(app, settings.server_host, settings.server_port)


@main.group()
def keys() -> None:
    """API keys for the HTTP server (access key id + secret, SigV4)."""


def _store(create_kek: bool = False, service: FaceService | None = None,
           need_kek: bool = False) -> KeyStore:
    settings = Settings() if service is None else service.settings
    private_data_dir(settings.data_dir)  # owner-only, even when `keys create` runs first
    engine = make_engine(settings.resolved_database_url()) if service is None else service.engine
    try:
        return KeyStore.open(settings, engine, create_kek=create_kek, need_kek=need_kek)
    except KeyStoreError as exc:
        raise click.ClickException(str(exc)) from exc


def _split(values: tuple[str, ...]) -> list[str]:
    return [part for v in values for part in v.split(",")]


@keys.command("create")
@click.argument("name")
@click.option("--operations", "-o", multiple=True, required=True,
              help="Operations this key may call: names or globs, comma-separated "
                   "(e.g. 'CompareFaces,Search*' or '*').")
@click.option("--collections", "-c", multiple=True, required=True,
              help="Collections this key may name: ids or globs (e.g. 'staff-*' or '*').")
@click.option("--rate", type=float, default=None,
              help="Requests per second allowed (ProvisionedThroughputExceededException beyond).")
@click.option("--admin", is_flag=True, help="May change collection policies.")
@click.option("--role", "roles", multiple=True, type=click.Choice(ROLES),
              help="Console role (repeatable): reviewer decides review candidates, auditor "
                   "reads the ledger and reports, admin changes policies.")
@click.option("--sns-topic", "sns_topics", multiple=True,
              help="SNS topic ARN (or glob) this key's video jobs may notify (repeatable); "
                   "NotificationChannel naming any other is refused.")
@click.option("--s3", "s3_objects", multiple=True,
              help="S3 objects this key may read as Image/Video.S3Object: 'BUCKET/PREFIX*' "
                   "globs (repeatable, e.g. 'photos/staff/*'); without it, none.")
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def keys_create(name: str, operations: tuple[str, ...], collections: tuple[str, ...],
                rate: float | None, admin: bool, roles: tuple[str, ...],
                sns_topics: tuple[str, ...], s3_objects: tuple[str, ...], as_json: bool) -> None:
    """Issue a key named NAME; its secret is printed once and cannot be shown again."""
    service = FaceService(Settings())  # for its audit hook: no model is loaded
    store = _store(create_kek=True, service=service, need_kek=True)
    # logged in the ledger in the same transaction as the key (never the secret)
    with service.audit("CreateAccessKey", request_context(), uses_model=False) as op:
        issued = store.create(
            name, _split(operations), _split(collections), rate, admin=admin,
            roles=roles, known_operations=model_operations(), conn=op.conn,
            sns_topics=_split(sns_topics), s3_objects=s3_objects,
        )
        info = issued.info
        op.record(access_key_id=info.access_key_id, name=info.name,
                  operations=list(info.operations), collections=list(info.collections),
                  rate_limit=info.rate_limit, admin=info.admin)
        if info.roles:
            op.record(roles=list(info.roles))
        if info.sns_topics:
            op.record(sns_topics=list(info.sns_topics))
        if info.s3_objects:
            op.record(s3_objects=list(info.s3_objects))
    if as_json:
        emit_json({"AccessKeyId": info.access_key_id, "SecretAccessKey": issued.secret_access_key,
                   "Name": info.name, "Operations": list(info.operations),
                   "Collections": list(info.collections), "RateLimit": info.rate_limit,
                   "Admin": info.admin, "Roles": list(info.roles),
                   "SnsTopics": list(info.sns_topics), "S3Objects": list(info.s3_objects)})
        return
    click.echo(f"access key id:     {info.access_key_id}")
    click.echo(f"secret access key: {issued.secret_access_key}")
    click.echo("The secret is shown only now: store it (e.g. `aws configure`); "
               "it cannot be recovered, only revoked and replaced.", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def keys_list(as_json: bool) -> None:
    """Every key with its permissions and state (never a secret)."""
    rows = _store().list()
    if as_json:
        emit_json([{"AccessKeyId": k.access_key_id, "Name": k.name, "Active": k.active,
                    "Operations": list(k.operations), "Collections": list(k.collections),
                    "RateLimit": k.rate_limit, "Admin": k.admin, "Roles": list(k.roles),
                    "SnsTopics": list(k.sns_topics), "S3Objects": list(k.s3_objects),
                    "CreatedAt": k.created_at.isoformat(),
                    "RevokedAt": k.revoked_at.isoformat() if k.revoked_at else None}
                   for k in rows])
        return
    if not rows:
        click.echo("no API keys; create one with `faceledger keys create`")
    for k in rows:
        state = "active" if k.active else f"revoked {k.revoked_at:%Y-%m-%d %H:%M}"
        rate = "" if k.rate_limit is None else f"  rate {k.rate_limit:g}/s"
        rate += "  admin" if k.admin else ""
        rate += f"  roles {','.join(k.roles)}" if k.roles else ""
        rate += f"  s3 {','.join(k.s3_objects)}" if k.s3_objects else ""
        click.echo(f"{k.access_key_id}  {k.name:<20} {state:<24} "
                   f"operations {','.join(k.operations)}  collections "
                   f"{','.join(k.collections)}{rate}")


@keys.command("revoke")
@click.argument("access_key_id")
@reports_errors
def keys_revoke(access_key_id: str) -> None:
    """Revoke a key: requests signed with it are refused from now on."""
    service = FaceService(Settings())  # for its audit hook: no model is loaded
    store = _store(service=service)
    with service.audit("RevokeAccessKey", request_context(), uses_model=False) as op:
        info = store.revoke(access_key_id.strip(), conn=op.conn)
        op.record(access_key_id=info.access_key_id, name=info.name)
    click.echo(f"revoked {info.access_key_id} ({info.name})")
