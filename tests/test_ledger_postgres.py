"""The chain on a real PostgreSQL server (conftest's `postgres_url`, a fresh database on the
session's server): concurrent appenders serialize on the head row, rollbacks leave no event,
tampering is caught as on SQLite, and reviewers of one probe face serialize on its search."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from faceledger.context import RequestContext
from faceledger.db import make_engine
from faceledger.ledger import Event, Ledger, review, verify
from faceledger.service import FaceService
from faceledger.settings import Settings


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


def test_two_candidates_of_one_probe_confirmed_at_once_still_conflict(
        postgres_url: str, tmp_path: Path) -> None:
    """On READ COMMITTED, a reviewer confirming candidate B while another's confirmation of A
    is uncommitted must wait for it (and then see it), not both becoming CONFIRMED."""
    svc = FaceService(Settings(data_dir=tmp_path, database_url=postgres_url))
    try:
        admin = RequestContext(principal="admin", admin=True)
        svc.put_collection_policy("wanted", {"IdentificationMode": True, "ReviewersRequired": 1},
                                  ctx=admin)
        with svc.audit("SearchFacesByImage", RequestContext(principal="officer"),
                       collection="wanted") as op:
            op.image("c0" * 32)
            held = op.release({"FaceMatches": [
                {"Similarity": 99.99, "Face": {"FaceId": "f-a", "ExternalImageId": "Tang"}},
                {"Similarity": 99.98, "Face": {"FaceId": "f-b", "ExternalImageId": "Angelo"}}]})
        a, b = (c["CandidateId"] for c in held["ReviewCandidates"])
        evidence = review.Evidence("c0" * 32, "e1" * 32)
        recorded = ("c0" * 32, "e1" * 32)
        now = datetime.now(UTC)
        first = svc.engine.connect()
        tx = first.begin()
        assert review.decide(first, a, "r1", "CONFIRM", "same", now, evidence=evidence,
                             recorded=recorded)["Status"] == "CONFIRMED"  # not committed yet
        with svc.engine.connect() as second:
            with second.begin():
                second.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
                with pytest.raises(OperationalError):  # waits for the first: the probe's lock
                    review.decide(second, b, "r2", "CONFIRM", "same", now, evidence=evidence,
                                  recorded=recorded)
        tx.commit()
        first.close()
        with svc.engine.begin() as conn:
            after = review.decide(conn, b, "r2", "CONFIRM", "same", now, evidence=evidence,
                                  recorded=recorded)
        assert after["Status"] == "CONFLICT" and after["ConflictsWith"] == [a]
    finally:
        svc.engine.dispose()
