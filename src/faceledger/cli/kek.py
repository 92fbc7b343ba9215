"""`faceledger keys rotate-kek`: a new key-encryption key, every API secret re-sealed under it.

The order makes an interrupted rotation safe to run again:
  1. the new KEK is written beside the current one as `<file>.next` (0600, fsynced), or the
     `.next` a previous, interrupted run left is reused;
  2. every secret is re-sealed in one database transaction, with its ledger event;
  3. the current file is renamed `<file>.retired-<fingerprint>` and `.next` takes its place.
A crash before 2 commits changes nothing; after it, running the command again finishes step 3
(rows already under the new KEK are skipped) - also from between the two renames of step 3,
where only `.next` and `.retired-*` are left (the retired file is found by the fingerprint the
database names). `serve` and `keys create` refuse to start in such a state (one line naming
the command), instead of serving with no usable key or making a third KEK. The retired KEK still opens database backups
taken before the rotation: keep it with them and destroy it when they expire (SECURITY.md).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import click

from ..permissions import fsync_path
from ..server.keys import (
    KeyStore,
    KeyStoreError,
    default_kek_path,
    kek_fingerprint,
    load_kek,
    read_kek_file,
    write_kek_file,
)
from ..service import FaceService
from ..settings import Settings
from .app import reports_errors, request_context
from .server import keys


@keys.command("rotate-kek")
@click.option("--to-file", "to_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="Write the new KEK here (required when the current one comes from "
                   "FACELEDGER_KEY_ENCRYPTION_KEY; default: replace the current KEK file).")
@reports_errors
def rotate_kek(to_file: Path | None) -> None:
    """Re-seal every API secret under a new key-encryption key; retire the old one."""
    settings = Settings()
    service = FaceService(settings)  # for its database and audit hook: no model is loaded
    try:
        _rotate(settings, service, to_file)
    except (KeyStoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def _rotate(settings: Settings, service: FaceService, to_file: Path | None) -> None:
    from_env = settings.key_encryption_key is not None
    current_path = None if from_env else default_kek_path(settings)
    if from_env and to_file is None:
        raise KeyStoreError("the KEK comes from FACELEDGER_KEY_ENCRYPTION_KEY: name a file for "
                            "the new one with --to-file")
    target = to_file or current_path
    assert target is not None
    pending = Path(f"{target}.next")
    sealed = KeyStore(service.engine, None).sealed_kek_ids()
    old = load_kek(settings, create=False)
    new = read_kek_file(pending) if pending.exists() else None
    if old is None:
        # Interrupted between its two renames: the current file is already retired and `.next`
        # not yet in its place. The secrets are under `.next` (the re-seal committed before the
        # renames) - or, if something else happened, under a retired KEK kept beside it.
        if new is None:
            where = current_path or target
            raise KeyStoreError(f"there is no key-encryption key at {where} to rotate" + (
                f", yet {sum(sealed.values())} API secret(s) are sealed under KEK "
                f"{', '.join(sorted(sealed))}: restore it" if sealed else ""))
        old = _retired_kek(current_path or target, set(sealed) - {kek_fingerprint(new)}) or new
    if new is not None:
        click.echo(f"resuming an interrupted rotation with {pending}", err=True)
    else:
        new = secrets.token_bytes(32)
        write_kek_file(pending, new)
    store = KeyStore(service.engine, old)
    with service.audit("RotateKeyEncryptionKey", request_context(), uses_model=False) as op:
        count = store.reseal(new, conn=op.conn)
        op.record(old_kek_id=kek_fingerprint(old), new_kek_id=kek_fingerprint(new),
                  resealed=count)
    retired = None
    if current_path is not None and current_path.exists() and target == current_path \
            and read_kek_file(current_path) != new:
        retired = Path(f"{current_path}.retired-{kek_fingerprint(old)}")
        os.replace(current_path, retired)
    os.replace(pending, target)
    fsync_path(target.parent)
    click.echo(f"re-sealed {count} API key(s) under KEK {kek_fingerprint(new)} ({target})")
    if retired is not None:
        click.echo(f"the old KEK is now {retired}: it opens backups taken before this "
                   "rotation; keep it with them, destroy it when they expire")
    if from_env or (current_path is not None and target != current_path):
        click.echo(f"point the server at the new KEK: FACELEDGER_KEY_ENCRYPTION_KEY_FILE={target}"
                   " (and drop the old setting)")


def _retired_kek(current: Path, needed: set[str]) -> bytes | None:
    """The retired KEK (`<current>.retired-<fingerprint>`) that sealed the secrets not yet under
    the new KEK, if any are left; KeyStoreError if they need one that is not there."""
    if not needed:
        return None
    if len(needed) > 1:
        raise KeyStoreError(f"API secrets are sealed under several KEKs ({', '.join(sorted(needed))});"
                            " restore the current one and run again")
    (fingerprint,) = needed
    path = Path(f"{current}.retired-{fingerprint}")
    if not path.exists():
        raise KeyStoreError(f"API secrets are sealed under KEK {fingerprint}, and {path} is not "
                            "there: restore that key file and run again")
    kek = read_kek_file(path)
    if kek_fingerprint(kek) != fingerprint:
        raise KeyStoreError(f"{path} does not hold KEK {fingerprint}")
    return kek
