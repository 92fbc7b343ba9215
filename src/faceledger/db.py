"""The one SQL engine of a faceledger process: catalog and ledger share it, so an event can be
written in the same transaction as the change it describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

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


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """`metadata.create_all`, tolerating another process creating the same tables at the same
    moment (several servers starting together on one empty database)."""
    try:
        metadata.create_all(engine, checkfirst=True)
    except (OperationalError, ProgrammingError, IntegrityError):
        metadata.create_all(engine, checkfirst=True)  # they exist now: nothing left to create


def add_missing_columns(engine: Engine, metadata: MetaData) -> list[str]:
    """Add to existing tables the nullable columns `metadata` declares but the database lacks.

    `create_all` makes missing tables, never missing columns: a database made by an older
    faceledger would otherwise fail on the first query naming a new column. Only nullable
    columns are added (old rows get NULL, which every reader of such a column accepts).
    Returns "table.column" for each column added.
    """
    added: list[str] = []
    existing = set(inspect(engine).get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue
        have = {c["name"] for c in inspect(engine).get_columns(table.name)}
        for column in table.columns:
            if column.name in have or not column.nullable:
                continue
            ddl = (f"ALTER TABLE {table.name} ADD COLUMN {column.name} "
                   f"{column.type.compile(dialect=engine.dialect)}")
            try:
                with engine.begin() as conn:
                    conn.execute(text(ddl))
            except (OperationalError, ProgrammingError):
                # another process added it first; anything else shows on the re-check
                if column.name not in {c["name"] for c in inspect(engine).get_columns(
                        table.name)}:
                    raise
                continue
            added.append(f"{table.name}.{column.name}")
    return added
