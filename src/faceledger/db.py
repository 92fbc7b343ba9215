"""The one SQL engine of a faceledger process: catalog and ledger share it, so an event can be
written in the same transaction as the change it describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from .permissions import private_dir, private_sqlite


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys, a busy timeout and full fsync."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        # a file, not :memory: - owner-only before SQLite creates it (its -wal and -shm
        # follow the database file's mode)
        path = Path(database) if database and database != ":memory:" and not database.startswith(
            "file:") else None
        if path is not None:
            private_dir(path.parent)
            private_sqlite(path)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged commit survives power loss, not only a process kill.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            if path is not None:
                private_sqlite(path)  # a -wal/-shm left by an older version, or another tool

        return engine
    return create_engine(url, pool_pre_ping=True)
