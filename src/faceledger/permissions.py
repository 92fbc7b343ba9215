"""Files and directories that hold biometric data or secrets: owner-only, whatever the umask.

Templates, the ledger, sealed API secrets, cached models and spooled videos live in the data
directory; under the common umask 022 everything created there would be world-readable. So would
what faceledger writes elsewhere that holds such data: the evaluation embedding cache
(templates), case export bundles, bulk run reports. Every creator goes through this module: `private_data_dir` / `data_subdir` for the data directory and
its folders (0700, tightened if an older version or another tool left them open), `open_private`
for files (0600), `private_sqlite` for the database. mkdir and open modes are filtered by the
umask; chmod is not, so another local user can read nothing even if the operator never thought
of it - whichever entry point (`keys create`, `serve`, the Python API) runs first.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .text import logger

log = logger("faceledger.permissions")

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


def private_data_dir(data_dir: Path) -> Path:
    """The data directory, created 0700 - or, with everything under it, made owner-only if an
    earlier version or a plain `mkdir` left any of it open (0755 folders, 0644 videos)."""
    existed = data_dir.is_dir()
    if existed and stat.S_IMODE(data_dir.stat().st_mode) & 0o077:
        log.warning("the data directory %s was open to other users; made it owner-only (0700)",
                    data_dir)
    private_dir(data_dir, tighten=True)
    if existed:
        for root, dirs, files in os.walk(data_dir):
            for name in dirs:
                _tighten_quietly(Path(root, name), DIR_MODE)
            for name in files:
                _tighten_quietly(Path(root, name), FILE_MODE)
    return data_dir


def _tighten_quietly(path: Path, mode: int) -> None:
    try:
        if not path.is_symlink():
            _tighten(path, mode)
    except OSError:  # gone meanwhile (a finished job's spool file), or not ours
        pass


def data_subdir(data_dir: Path, name: str) -> Path:
    """`data_dir/name` (and the data directory itself): both owner-only, created if needed."""
    private_data_dir(data_dir)
    return private_dir(data_dir / name, tighten=True)


def open_private(path: Path, *, append: bool = False) -> BinaryIO:
    """Open `path` for binary writing, created (or truncated; with `append`, appended to) with
    mode 0600 whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC),
                 FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode through O_CREAT
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab" if append else "wb")


def write_private(path: Path, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to `path`, mode 0600."""
    with open_private(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


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
