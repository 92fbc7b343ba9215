"""API keys: access key id + secret for SigV4, with per-key permissions, in the shared database.

Why the database: keys sit next to the catalog and ledger they guard (one backup, one place to
audit), and every server process sees a new or revoked key on its next request, without a
reload. Why encrypted, not hashed: SigV4 is an HMAC, so the server must be able to recompute
the client's signature from the secret; a one-way hash (bcrypt, argon2) cannot be used. So each
secret is sealed with AES-256-GCM under a key-encryption key (KEK) that lives *outside* the
database and outside the data directory (by default a 0600 file in the 0700 config directory,
$XDG_CONFIG_HOME/faceledger or /etc/faceledger for root; or a file the operator names; or the
FACELEDGER_KEY_ENCRYPTION_KEY variable, e.g. from a secrets manager). The access key id is bound in as associated data, so a sealed secret
cannot be moved to another row. A database dump, backup or replica alone reveals no secret; the
plaintext exists only in the CLI's one-time output and, per request, in the server's memory
while the signing key is derived. Secrets are 240 random bits, so they need no key stretching.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    LargeBinary,
    MetaData,
    RowMapping,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from ..context import RequestContext
from ..db import add_missing_columns, create_tables
from ..errors import InvalidParameterException, ResourceNotFoundException
from ..permissions import private_dir
from ..text import check_text, logger, shown
from ..settings import Settings
from .sigv4 import signing_key

log = logger("faceledger.server")

KEY_ID_PREFIX = "FLK"
# region/service of the secret check (console sign-in, CLI review): any fixed pair
SECRET_CHECK_SCOPE = ("console", "faceledger")
# Console roles: reviewers decide review candidates, auditors read the ledger and reports,
# admins change policies (an admin key has every role).
ROLES = ("reviewer", "auditor", "admin")
KEK_FILE_NAME = "key-encryption-key"
# Where earlier versions kept the KEK (inside the data directory); still read, with a warning.
LEGACY_KEK = Path("secrets") / KEK_FILE_NAME
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

metadata = MetaData()

api_keys = Table(
    "fl_api_keys",
    metadata,
    Column("access_key_id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    # nonce (12 bytes) + AES-256-GCM ciphertext and tag of the secret
    Column("sealed_secret", LargeBinary, nullable=False),
    # which KEK sealed it: a fingerprint, so a wrong KEK is reported rather than mistaken
    Column("kek_id", String(16), nullable=False),
    Column("operations", Text, nullable=False),  # JSON list of operation names or globs
    Column("collections", Text, nullable=False),  # JSON list of collection ids or globs
    Column("rate_limit", Float, nullable=True),  # requests per second, None: unlimited
    # admins may change collection policies (RequestContext.admin)
    Column("admin", Boolean, nullable=False, default=False),
    # console roles (JSON list of ROLES); NULL for keys made before roles existed: none
    Column("roles", Text, nullable=True),
    # SNS topics (ARNs or globs, JSON list) this key's video jobs may notify; NULL: none
    Column("sns_topics", Text, nullable=True),
    # S3 objects (`bucket/key` globs, JSON list) this key may read; NULL (keys made before
    # grants existed): none
    Column("s3_objects", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


class KeyStoreError(Exception):
    """The key store cannot work as configured (missing or unsafe KEK): an operator problem."""


@dataclass(frozen=True)
class KeyInfo:
    """A key's public record: never the secret."""

    access_key_id: str
    name: str
    operations: tuple[str, ...]
    collections: tuple[str, ...]
    rate_limit: float | None
    created_at: datetime
    revoked_at: datetime | None
    admin: bool = False
    roles: tuple[str, ...] = ()
    sns_topics: tuple[str, ...] = ()
    s3_objects: tuple[str, ...] = ()

    @property
    def console_roles(self) -> frozenset[str]:
        """The roles this key holds in the console (admin keys hold the admin role)."""
        return frozenset(self.roles) | ({"admin"} if self.admin else set())

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows_operation(self, operation: str) -> bool:
        """Whether this key may call `operation` (exact name or glob, e.g. `Detect*`, `*`)."""
        return any(fnmatchcase(operation, p) for p in self.operations)

    def allows_collection(self, collection_id: str) -> bool:
        """Whether this key may name `collection_id` in a request."""
        return any(fnmatchcase(collection_id, p) for p in self.collections)

    @property
    def all_collections(self) -> bool:
        return "*" in self.collections


@dataclass(frozen=True)
class IssuedKey:
    """A new key: the secret appears here once and is never shown again."""

    info: KeyInfo
    secret_access_key: str


def same_name(name: str) -> str:
    """A display name as people read it: case and runs of spaces do not make another name."""
    return " ".join(name.split()).casefold()


def context_for(key: KeyInfo, **extra: Any) -> RequestContext:
    """The request context of a signed-in key (console, CLI review): its id as principal,
    its console roles and the collections it may name."""
    return RequestContext(
        principal=key.access_key_id, admin=key.admin, roles=key.console_roles,
        collections=("*",) if key.all_collections else tuple(key.collections), **extra)


def kek_fingerprint(kek: bytes) -> str:
    return hashlib.sha256(b"faceledger-kek-id:" + kek).hexdigest()[:16]


def default_kek_path(settings: Settings) -> Path:
    """The KEK file: the one settings name, else the one in the config directory - or, if only
    that exists, the legacy one inside the data directory."""
    if settings.key_encryption_key_file is not None:
        return settings.key_encryption_key_file
    path = settings.config_dir / KEK_FILE_NAME
    legacy = settings.data_dir / LEGACY_KEK
    if not path.exists() and legacy.exists():
        log.warning("the key-encryption key is inside the data directory (%s), so copies of "
                    "the data carry the key to its secrets: move it with `faceledger keys "
                    "rotate-kek` (see SECURITY.md)", legacy)
        return legacy
    return path


def load_kek(settings: Settings, *, create: bool) -> bytes | None:
    """The key-encryption key from settings or its file; with `create`, make the file if absent.

    A KEK file readable by group or others is refused: it must be as private as the secrets.
    """
    if settings.key_encryption_key is not None:
        return _decode_kek(settings.key_encryption_key.get_secret_value(),
                           "FACELEDGER_KEY_ENCRYPTION_KEY")
    path = default_kek_path(settings)
    if path.exists():
        return read_kek_file(path)
    if not create:
        return None
    kek = secrets.token_bytes(32)
    write_kek_file(path, kek)
    return kek


def read_kek_file(path: Path) -> bytes:
    """The KEK in `path`, refused unless the file is private (0600 or stricter)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyStoreError(
            f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
        )
    return _decode_kek(path.read_text().strip(), str(path))


def write_kek_file(path: Path, kek: bytes) -> None:
    """A new KEK file (mode 0600, its directory 0700 if created), flushed to disk; never
    overwrites one."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(kek).decode() + "\n")
        f.flush()
        os.fsync(f.fileno())


def kek_location(settings: Settings) -> str:
    """Where this configuration reads its KEK from, for messages."""
    if settings.key_encryption_key is not None:
        return "FACELEDGER_KEY_ENCRYPTION_KEY"
    return str(settings.key_encryption_key_file or settings.config_dir / KEK_FILE_NAME)


def _unopenable(settings: Settings, kek: bytes | None, sealed: dict[str, int]) -> str:
    """One line: why this KEK cannot serve the sealed secrets, and what to do."""
    total = sum(sealed.values())
    under = ", ".join(sorted(sealed))
    where = kek_location(settings)
    pending = None if settings.key_encryption_key is not None else Path(f"{where}.next")
    if pending is not None and pending.exists():
        hint = (f"a key rotation was interrupted ({pending} exists): run `faceledger keys "
                "rotate-kek` to finish it")
    else:
        hint = "restore the key-encryption key that sealed them (see SECURITY.md, backups)"
    if kek is None:
        return (f"the key-encryption key is missing ({where}) but {total} API secret(s) are "
                f"sealed under KEK {under}; {hint}. Refusing to start with a new key")
    return (f"the key-encryption key {where} (KEK {kek_fingerprint(kek)}) opens none of the "
            f"{total} sealed API secret(s) (KEK {under}); {hint}")


def _decode_kek(text: str, where: str) -> bytes:
    try:
        kek = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        kek = b""
    if len(kek) != 32:
        raise KeyStoreError(f"{where} must hold a base64-encoded 32-byte key")
    return kek


def _new_key_id() -> str:
    return KEY_ID_PREFIX + "".join(secrets.choice(_BASE32) for _ in range(17))


def _aad(access_key_id: str) -> bytes:
    return b"faceledger-api-key:" + access_key_id.encode()


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; they were written as UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def check_object_grants(values: Iterable[str]) -> tuple[str, ...]:
    """Validate S3 grants: `bucket/key-glob` (`photos/staff/*`, `photos/*`) or `*` for every
    object; a bare bucket name would match no object, so it is refused with the fix."""
    out = tuple(sorted({v.strip() for v in values if v.strip()}))
    for v in out:
        if len(v) > 1100 or not v.isprintable():
            raise InvalidParameterException(f"S3 grant '{shown(v)}' is not a bucket/key glob")
        if v != "*" and ("/" not in v or not v.partition("/")[0]):
            raise InvalidParameterException(
                f"S3 grant '{shown(v)}' names no object: write 'BUCKET/PREFIX*' "
                "(e.g. 'photos/staff/*', or 'photos/*' for the whole bucket)")
    return out


def check_patterns(values: Iterable[str], known: Sequence[str] | None,
                   what: str) -> tuple[str, ...]:
    """Validate permission patterns; with `known`, each must match at least one known name."""
    out = tuple(v.strip() for v in values if v.strip())
    if not out:
        raise InvalidParameterException(f"give at least one {what} (or '*' for all)")
    for v in out:
        if len(v) > 255 or not all(c.isalnum() or c in "_.-:*?[]" for c in v):
            raise InvalidParameterException(
                f"{what} '{shown(v)}' has characters a name cannot have")
        if known is not None and not any(fnmatchcase(k, v) for k in known):
            raise InvalidParameterException(
                f"{what} '{shown(v)}' matches no Rekognition operation")
    return out


class KeyStore:
    """Issue, list, revoke and look up API keys in the `fl_api_keys` table."""

    def __init__(self, engine: Engine, kek: bytes | None) -> None:
        self.engine = engine
        self._kek = kek
        create_tables(engine, metadata)
        add_missing_columns(engine, metadata)  # roles, on databases made before it

    @classmethod
    def open(cls, settings: Settings, engine: Engine, *, create_kek: bool = False,
             need_kek: bool = True) -> KeyStore:
        """The store with its KEK (with `create_kek`, a new one if there is none and no secret
        is sealed yet). With `need_kek` (serving, issuing keys), a store whose sealed secrets
        this KEK cannot open is refused in one line (KeyStoreError): a missing KEK is never
        silently replaced by a new one, and a server never starts refusing every key."""
        store = cls(engine, None)
        kek = load_kek(settings, create=False)
        sealed = store.sealed_kek_ids() if (need_kek or create_kek) else {}
        if kek is None and not sealed and create_kek:
            kek = load_kek(settings, create=True)
        elif sealed and (kek is None or kek_fingerprint(kek) not in sealed):
            raise KeyStoreError(_unopenable(settings, kek, sealed))
        store._kek = kek
        return store

    def sealed_kek_ids(self) -> dict[str, int]:
        """How many secrets each KEK (by fingerprint) has sealed."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys.c.kek_id)).scalars().all()
        counts: dict[str, int] = {}
        for kek_id in rows:
            counts[str(kek_id)] = counts.get(str(kek_id), 0) + 1
        return counts

    def create(
        self,
        name: str,
        operations: Iterable[str],
        collections: Iterable[str],
        rate_limit: float | None = None,
        *,
        admin: bool = False,
        roles: Iterable[str] = (),
        known_operations: Sequence[str] | None = None,
        conn: Connection | None = None,
        sns_topics: Iterable[str] = (),
        s3_objects: Iterable[str] = (),
    ) -> IssuedKey:
        """A new key with these permissions; the returned secret is shown once. With `conn`,
        inside that open transaction (the ledger logs the change in it)."""
        if self._kek is None:
            raise KeyStoreError("no key-encryption key: open the store with create_kek=True")
        # a name people read in the console and the ledger: no control, bidi or invisible
        # characters (two names that look alike must not be two names)
        name = check_text(name, "The key name", max_chars=128)
        ops = check_patterns(operations, known_operations, "operation")
        cols = check_patterns(collections, None, "collection")
        topics = tuple(sorted({t.strip() for t in sns_topics if t.strip()}))
        if topics:
            check_patterns(topics, None, "SNS topic")
        grants = check_object_grants(s3_objects)
        role_list = tuple(sorted({r.strip() for r in roles if r.strip()}))
        unknown = [r for r in role_list if r not in ROLES]
        if unknown:
            raise InvalidParameterException(
                f"unknown role {unknown[0]!r}: roles are {', '.join(ROLES)}")
        admin = admin or "admin" in role_list  # the admin role is the admin flag
        deciding = admin or "reviewer" in role_list
        if rate_limit is not None and not rate_limit > 0:
            raise InvalidParameterException("rate limit must be a positive number of requests/s")
        key_id = _new_key_id()
        secret = secrets.token_urlsafe(30)  # 40 characters, like an AWS secret access key
        nonce = secrets.token_bytes(12)
        sealed = nonce + AESGCM(self._kek).encrypt(nonce, secret.encode(), _aad(key_id))
        now = datetime.now(UTC)
        with self._writing(conn) as c:
            if deciding:
                self._refuse_reviewer_name_in_use(c, name)
            c.execute(
                insert(api_keys).values(
                    access_key_id=key_id, name=name, sealed_secret=sealed,
                    kek_id=kek_fingerprint(self._kek), operations=json.dumps(ops),
                    collections=json.dumps(cols), rate_limit=rate_limit, admin=admin,
                    roles=json.dumps(role_list), sns_topics=json.dumps(topics),
                    s3_objects=json.dumps(grants), created_at=now,
                )
            )
        info = KeyInfo(key_id, name, ops, cols, rate_limit, now, None, admin, role_list, topics,
                       grants)
        return IssuedKey(info, secret)

    def _refuse_reviewer_name_in_use(self, conn: Connection, name: str) -> None:
        """Reviewers are people, shown by name: a name another active key that may decide
        (reviewer or admin) already has is refused, so "two reviewers" are two names."""
        wanted = same_name(name)
        rows = conn.execute(select(api_keys).where(api_keys.c.revoked_at.is_(None))
                            ).mappings().all()
        for row in rows:
            other = self._info(row)
            if (other.admin or "reviewer" in other.roles) and same_name(other.name) == wanted:
                raise InvalidParameterException(
                    f"the name '{shown(name)}' is in use by active reviewer key "
                    f"{other.access_key_id}: reviewers are told apart by name, so give each "
                    "person their own (revoke the old key first to reissue one)")

    def verify_secret(self, access_key_id: str, secret: str, now: datetime) -> KeyInfo | None:
        """The key's record if `secret` is its secret and the key is active, else None: today's
        SigV4 signing key derived from `secret` against the one derived from the sealed secret
        (constant time), so the secret itself is never compared or kept."""
        date = now.strftime("%Y%m%d")
        try:
            creds = self.credentials(access_key_id, date, *SECRET_CHECK_SCOPE)
        except KeyStoreError:
            return None
        if creds is None:
            return None
        info, expected = creds
        given = signing_key(secret, date, *SECRET_CHECK_SCOPE)
        return info if hmac.compare_digest(expected, given) else None

    def list(self) -> list[KeyInfo]:
        """Every key, oldest first, revoked ones included."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).mappings().all()
        return [self._info(r) for r in rows]

    def get(self, access_key_id: str) -> KeyInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys).where(api_keys.c.access_key_id == access_key_id)
            ).mappings().first()
        return None if row is None else self._info(row)

    def revoke(self, access_key_id: str, *, conn: Connection | None = None) -> KeyInfo:
        """Revoke a key: every later request signed with it is refused. With `conn`, inside
        that open transaction (the ledger logs the change in it)."""
        with self._writing(conn) as c:
            done = c.execute(
                update(api_keys)
                .where(api_keys.c.access_key_id == access_key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            row = c.execute(
                select(api_keys).where(api_keys.c.access_key_id == access_key_id)
            ).mappings().first()
        if row is None:
            raise ResourceNotFoundException(f"no API key {access_key_id}")
        info = self._info(row)
        if done.rowcount == 0 and info.revoked_at is None:  # pragma: no cover - a race only
            raise ResourceNotFoundException(f"API key {access_key_id} could not be revoked")
        return info

    def reseal(self, new_kek: bytes, *, conn: Connection | None = None) -> int:
        """Re-seal every secret sealed under this store's KEK with `new_kek` (in `conn`'s
        transaction if given); rows already under `new_kek` are left alone, so an interrupted
        rotation can simply be run again. Returns how many rows were re-sealed."""
        if self._kek is None:
            raise KeyStoreError("no key-encryption key to rotate from")
        old_id, new_id = kek_fingerprint(self._kek), kek_fingerprint(new_kek)
        done = 0
        with self._writing(conn) as c:
            rows = c.execute(select(api_keys)).mappings().all()
            foreign = [r["access_key_id"] for r in rows if r["kek_id"] not in (old_id, new_id)]
            if foreign:
                raise KeyStoreError(
                    f"{len(foreign)} key(s) are sealed with neither the current nor the new "
                    f"key-encryption key (e.g. {foreign[0]}); nothing was changed")
            for r in rows:
                if r["kek_id"] == new_id:
                    continue
                key_id = r["access_key_id"]
                sealed = bytes(r["sealed_secret"])
                try:
                    secret = AESGCM(self._kek).decrypt(sealed[:12], sealed[12:], _aad(key_id))
                except InvalidTag as exc:
                    raise KeyStoreError(
                        f"API key {key_id}: sealed secret fails its check") from exc
                nonce = secrets.token_bytes(12)
                c.execute(update(api_keys).where(api_keys.c.access_key_id == key_id).values(
                    sealed_secret=nonce + AESGCM(new_kek).encrypt(nonce, secret, _aad(key_id)),
                    kek_id=new_id))
                done += 1
        return done

    @contextmanager
    def _writing(self, conn: Connection | None) -> Iterator[Connection]:
        """The caller's open transaction, or one of our own that commits at the end."""
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as own:
            yield own

    def credentials(
        self, access_key_id: str, date: str, region: str, service: str
    ) -> tuple[KeyInfo, bytes] | None:
        """An active key's record and SigV4 signing key for that scope, or None.

        None covers unknown, revoked and unreadable (other KEK) keys alike: a caller learns
        nothing about which; the server log says.
        """
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys).where(api_keys.c.access_key_id == access_key_id)
            ).mappings().first()
        if row is None or row["revoked_at"] is not None or self._kek is None:
            return None
        if row["kek_id"] != kek_fingerprint(self._kek):
            raise KeyStoreError(
                f"API key {access_key_id} was sealed with key-encryption key {row['kek_id']}, "
                f"but this server has {kek_fingerprint(self._kek)}"
            )
        sealed = bytes(row["sealed_secret"])
        try:
            secret = AESGCM(self._kek).decrypt(sealed[:12], sealed[12:], _aad(access_key_id))
        except InvalidTag as exc:
            raise KeyStoreError(f"API key {access_key_id}: sealed secret fails its check") from exc
        return self._info(row), signing_key(secret.decode(), date, region, service)

    @staticmethod
    def _info(r: RowMapping) -> KeyInfo:
        return KeyInfo(
            access_key_id=r["access_key_id"],
            name=r["name"],
            operations=tuple(json.loads(r["operations"])),
            collections=tuple(json.loads(r["collections"])),
            rate_limit=r["rate_limit"],
            created_at=_as_utc(r["created_at"]) or datetime.now(UTC),
            revoked_at=_as_utc(r["revoked_at"]),
            admin=bool(r["admin"]),
            roles=tuple(json.loads(r["roles"])) if r.get("roles") else (),
            sns_topics=tuple(json.loads(r["sns_topics"])) if r.get("sns_topics") else (),
            s3_objects=tuple(json.loads(r["s3_objects"])) if r.get("s3_objects") else (),
        )
