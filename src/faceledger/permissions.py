"""Files and directories that hold biometric data or secrets: owner-only, whatever the umask.

Templates, the ledger and sealed API secrets live in the data directory; under the common
umask 022 everything created there would be world-readable. Directories we create are made
0700 and database files 0600 explicitly (mkdir and open modes are filtered by the umask; chmod
is not), so another local user can read nothing even if the operator never thought of it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
# SQLite's companions of a database file (write-ahead log, shared memory, rollback journal).
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Create `path` (and missing parents) if needed; what this call creates is 0700. With
    `tighten`, an existing `path` open to group or others is made owner-only too (only for
    directories faceledger owns: never an operator's /srv or /tmp)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for p in missing:
        os.chmod(p, DIR_MODE)
    if tighten:
        _tighten(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty with mode 0600 if it does not exist; make an existing one 0600."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _tighten(path, FILE_MODE)
    else:
        os.close(fd)
        os.chmod(path, FILE_MODE)
    return path


def private_sqlite(database: Path) -> None:
    """A SQLite database file and whichever of its companions exist: 0600."""
    private_file(database)
    for suffix in SQLITE_COMPANIONS:
        companion = Path(str(database) + suffix)
        if companion.exists():
            _tighten(companion, FILE_MODE)


def _tighten(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077:
        os.chmod(path, current & ~0o077 & 0o777 | (mode & 0o700))


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's entries') writes to disk: a rename is durable only
    once its directory is synced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
