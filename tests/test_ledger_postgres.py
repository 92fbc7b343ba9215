"""The chain on a real PostgreSQL server (conftest's `postgres_url`, a fresh database on the
session's server): concurrent appenders serialize on the head row, rollbacks leave no event,
and tampering is caught as on SQLite."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

import pytest

from faceledger.db import make_engine
from faceledger.ledger import Event, Ledger, verify


def _append_many(url: str, worker: int, count: int) -> None:
    engine = make_engine(url)
    ledger = Ledger(engine)
    for i in range(count):
        ledger.record(Event(operation="SearchFaces", principal=f"w{worker}", result={"i": i}))
    engine.dispose()


@pytest.fixture
def ledger(postgres_url: str) -> Iterator[Ledger]:
    engine = make_engine(postgres_url)
    yield Ledger(engine)
    engine.dispose()


def test_concurrent_appenders_cannot_fork_the_chain_on_postgresql(postgres_url: str,
                                                                  ledger: Ledger) -> None:
    procs = [multiprocessing.get_context("spawn").Process(target=_append_many,
                                                          args=(postgres_url, w, 40))
             for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    result = verify(ledger)
    assert result.ok, result.problems
    assert result.checked == 160 and ledger.head().seq == 160
    assert {e.event.principal for e in ledger.scan()} == {"w0", "w1", "w2", "w3"}


def test_rollback_and_tampering_on_postgresql(ledger: Ledger) -> None:
    for i in range(5):
        ledger.record(Event(operation="DetectFaces", principal=f"p{i}"))
    with pytest.raises(RuntimeError), ledger.engine.begin() as conn:
        ledger.append(conn, Event(operation="IndexFaces", principal="x", collection="c"))
        raise RuntimeError("forced failure after the event was appended")
    assert ledger.head().seq == 5 and verify(ledger).ok
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE ledger_events SET body = replace(body, 'p2', 'p9') "
                             "WHERE seq = 3")
    bad = verify(ledger).first_bad
    assert bad is not None and (bad.seq, bad.kind) == (3, "edited")
