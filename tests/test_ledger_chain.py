"""The hash chain on a real SQLite file: tampering with the file directly (UPDATE, DELETE,
INSERT, reorder, truncate) must be caught, with the first bad event named every time."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from faceledger.cli import main
from faceledger.db import make_engine
from faceledger.ledger import Anchor, Event, Ledger, verify
from faceledger.settings import Settings

N = 12


def _link(seq: int, prev: str, body: str) -> str:
    """The documented link rule, written out independently of faceledger's code."""
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return hashlib.sha256(f"faceledger-v1\n{seq}\n{prev}\n{digest}".encode()).hexdigest()


def _fill(path: Path, n: int = N) -> Ledger:
    ledger = Ledger(make_engine(f"sqlite:///{path}"))
    for i in range(1, n + 1):
        ledger.record(Event(operation="SearchFacesByImage", principal=f"key{i % 3}",
                            collection="c1", purpose="investigation", case=f"case-{i % 2}",
                            images=(hashlib.sha256(bytes([i])).hexdigest(),),
                            result={"face_ids": [f"f{i}"], "similarities": [99.9 + i / 1000]}))
    return ledger


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "faceledger.db"
    _fill(path)
    return path


def _sql(path: Path, *statements: str, params: tuple[object, ...] = ()) -> None:
    con = sqlite3.connect(path)
    for s in statements:
        con.execute(s, params if "?" in s else ())
    con.commit()
    con.close()


def _row(path: Path, seq: int) -> tuple[str, str, str]:
    con = sqlite3.connect(path)
    row = con.execute("SELECT prev, hash, body FROM ledger_events WHERE seq = ?",
                      (seq,)).fetchone()
    con.close()
    assert row is not None
    return str(row[0]), str(row[1]), str(row[2])


def _verify(path: Path, *anchors: Anchor) -> tuple[int | None, str | None]:
    result = verify(Ledger(make_engine(f"sqlite:///{path}")), anchors)
    bad = result.first_bad
    return (None, None) if bad is None else (bad.seq, bad.kind)


def test_intact_chain_verifies_and_matches_the_documented_link_rule(db: Path) -> None:
    assert _verify(db) == (None, None)
    prev = "0" * 64
    for seq in range(1, N + 1):
        stored_prev, stored_hash, body = _row(db, seq)
        assert stored_prev == prev
        assert stored_hash == _link(seq, prev, body)
        prev = stored_hash
    parsed = json.loads(_row(db, 5)[2])
    assert parsed["case"] == "case-1" and parsed["result"]["face_ids"] == ["f5"]
    # Canonical: sorted keys and no whitespace, so re-serializing gives the same text.
    assert json.dumps(parsed, sort_keys=True, separators=(",", ":")) == _row(db, 5)[2]


def _edit_body(path: Path) -> None:
    _sql(path, "UPDATE ledger_events SET body = replace(body, '\"f5\"', '\"f99\"') WHERE seq = 5")


def _edit_column(path: Path) -> None:
    _sql(path, "UPDATE ledger_events SET principal = 'nobody' WHERE seq = 5")


def _edit_and_rehash(path: Path) -> None:
    prev, _, body = _row(path, 5)
    forged = body.replace('"f5"', '"f99"')
    _sql(path, "UPDATE ledger_events SET body = ?, hash = ? WHERE seq = 5",
         params=(forged, _link(5, prev, forged)))


def _delete(path: Path) -> None:
    _sql(path, "DELETE FROM ledger_events WHERE seq = 5")


def _delete_and_renumber(path: Path) -> None:
    _sql(path, "DELETE FROM ledger_events WHERE seq = 5")
    for seq in range(6, N + 1):
        _sql(path, f"UPDATE ledger_events SET seq = {seq - 1} WHERE seq = {seq}")
    _sql(path, f"UPDATE ledger_head SET seq = {N - 1}")


def _insert_perfect_forgery(path: Path) -> None:
    # A forger who knows the rule: shift #6.. up by one and chain a new #6 onto #5.
    for seq in range(N, 5, -1):
        _sql(path, f"UPDATE ledger_events SET seq = {seq + 1} WHERE seq = {seq}")
    _, prev, _ = _row(path, 5)
    body = _row(path, 5)[2].replace('"f5"', '"forged"')
    _sql(path, "INSERT INTO ledger_events (seq, prev, hash, body, time, operation, principal, "
               "collection, case_ref, purpose, outcome) SELECT 6, ?, ?, ?, time, operation, "
               "principal, collection, case_ref, purpose, outcome FROM ledger_events WHERE seq=5",
         params=(prev, _link(6, prev, body), body))
    _sql(path, f"UPDATE ledger_head SET seq = {N + 1}")


def _insert_copy_at_end(path: Path) -> None:
    _sql(path, f"INSERT INTO ledger_events SELECT {N + 1}, prev, hash, body, time, operation, "
               "principal, collection, case_ref, purpose, outcome FROM ledger_events "
               "WHERE seq = 3")


def _insert_before_start(path: Path) -> None:
    _sql(path, "INSERT INTO ledger_events SELECT 0, prev, hash, body, time, operation, "
               "principal, collection, case_ref, purpose, outcome FROM ledger_events "
               "WHERE seq = 4")


def _swap_seq(path: Path) -> None:
    _sql(path, "UPDATE ledger_events SET seq = -1 WHERE seq = 5",
         "UPDATE ledger_events SET seq = 5 WHERE seq = 6",
         "UPDATE ledger_events SET seq = 6 WHERE seq = -1")


def _swap_contents(path: Path) -> None:
    a, b = _row(path, 7), _row(path, 8)
    _sql(path, "UPDATE ledger_events SET prev = ?, hash = ?, body = ? WHERE seq = 7", params=b)
    _sql(path, "UPDATE ledger_events SET prev = ?, hash = ?, body = ? WHERE seq = 8", params=a)


def _truncate_naively(path: Path) -> None:
    _sql(path, f"DELETE FROM ledger_events WHERE seq > {N - 3}")


CASES: dict[str, tuple[Callable[[Path], None], int, str]] = {
    "edited body": (_edit_body, 5, "edited"),
    "edited query column": (_edit_column, 5, "edited"),
    "edited and re-hashed": (_edit_and_rehash, 5, "rewritten"),
    "deleted": (_delete, 5, "deleted"),
    "deleted and renumbered": (_delete_and_renumber, 5, "deleted"),
    "inserted (perfect forgery, renumbered)": (_insert_perfect_forgery, 6, "inserted"),
    "inserted copy at the end": (_insert_copy_at_end, N + 1, "reordered"),
    "inserted before the start": (_insert_before_start, 0, "inserted"),
    "reordered (seq swapped)": (_swap_seq, 5, "deleted"),
    "reordered (contents swapped)": (_swap_contents, 7, "deleted"),
    "tail deleted, head row left": (_truncate_naively, N - 2, "truncated"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tampering_is_caught_and_the_first_bad_event_named(db: Path, case: str) -> None:
    tamper, first_bad, kind = CASES[case]
    tamper(db)
    assert _verify(db) == (first_bad, kind)


def test_cli_verify_names_the_first_bad_event(db: Path) -> None:
    runner = CliRunner()
    env = {"FACELEDGER_DATA_DIR": str(db.parent)}
    ok = runner.invoke(main, ["ledger", "verify"], env=env)
    assert ok.exit_code == 0, ok.output
    assert f"OK: {N} events intact" in ok.output
    _edit_column(db)
    bad = runner.invoke(main, ["ledger", "verify"], env=env)
    assert bad.exit_code == 1
    assert "first bad event #5 (edited)" in bad.output and "principal" in bad.output
    as_json = json.loads(runner.invoke(main, ["ledger", "verify", "--json"], env=env).output)
    assert as_json["ok"] is False and as_json["first_bad"]["seq"] == 5


def test_tail_truncation_is_only_visible_against_an_anchor(db: Path) -> None:
    ledger = Ledger(make_engine(f"sqlite:///{db}"))
    held = ledger.anchor("auditor")
    assert held.seq == N and _verify(db, held) == (None, None)
    # A careful truncation also rewinds the head row and the stored anchors: the chain that is
    # left is consistent in itself, and only the anchor held outside the database shows it.
    prev_hash = _row(db, N - 3)[1]
    _sql(db, f"DELETE FROM ledger_events WHERE seq > {N - 3}", "DELETE FROM ledger_anchors",
         f"UPDATE ledger_head SET seq = {N - 3}, hash = '{prev_hash}'")
    assert _verify(db) == (None, None)
    assert _verify(db, held) == (N - 2, "truncated")
    runner = CliRunner()
    out = runner.invoke(main, ["ledger", "verify", "--anchor", held.token()],
                        env={"FACELEDGER_DATA_DIR": str(db.parent)})
    assert out.exit_code == 1 and f"first bad event #{N - 2} (truncated)" in out.output


def test_a_rewritten_chain_contradicts_the_anchor(db: Path) -> None:
    ledger = Ledger(make_engine(f"sqlite:///{db}"))
    early = ledger.anchor("auditor")
    _fill(db, 3)  # three more events
    late = ledger.anchor("auditor")
    # Rewrite everything from #8 on with valid links: consistent in itself, not with the anchor.
    prev = _row(db, 7)[1]
    for seq in range(8, N + 4):
        body = _row(db, seq)[2].replace('"investigation"', '"routine"')
        h = _link(seq, prev, body)
        _sql(db, "UPDATE ledger_events SET prev = ?, hash = ?, body = ?, purpose = 'routine' "
                 "WHERE seq = ?", params=(prev, h, body, seq))
        prev = h
    _sql(db, "DELETE FROM ledger_anchors", f"UPDATE ledger_head SET hash = '{prev}'")
    assert _verify(db) == (None, None)
    seq, kind = _verify(db, early, late)
    assert (seq, kind) == (N, "rewritten")  # the first anchor the rewrite contradicts


def test_anchor_tokens_round_trip_and_bad_ones_are_refused() -> None:
    a = Anchor(7, "ab" * 32)
    assert Anchor.parse(a.token()) == a
    assert Anchor.parse(f"7:{'ab' * 32}") == a
    from faceledger.errors import InvalidParameterException

    for bad in ("", "faceledger-anchor:x:y", "7:abc", f"-1:{'ab' * 32}", "{not json"):
        with pytest.raises(InvalidParameterException):
            Anchor.parse(bad)


def test_cli_anchor_appends_to_a_file_and_verify_reads_it(tmp_path: Path) -> None:
    _fill(tmp_path / "faceledger.db", 4)
    env = {"FACELEDGER_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    anchors = tmp_path / "anchors.txt"
    first = runner.invoke(main, ["ledger", "anchor", "--append-to", str(anchors)], env=env)
    assert first.exit_code == 0 and first.output.startswith("faceledger-anchor:4:")
    out = runner.invoke(main, ["ledger", "verify", "--anchors-file", str(anchors)], env=env)
    assert out.exit_code == 0 and "anchors matched: #4" in out.output
    bad = runner.invoke(main, ["ledger", "verify", "--anchor", "nonsense"], env=env)
    assert bad.exit_code == 2 and "InvalidParameterException" in bad.output


def _append_many(url: str, worker: int, count: int) -> None:
    ledger = Ledger(make_engine(url))
    for i in range(count):
        ledger.record(Event(operation="CompareFaces", principal=f"w{worker}",
                            result={"i": i}))


def test_concurrent_appenders_cannot_fork_the_chain_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'faceledger.db'}"
    Ledger(make_engine(url))  # create the tables once, as a service would
    procs = [multiprocessing.get_context("spawn").Process(target=_append_many, args=(url, w, 40))
             for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ledger = Ledger(make_engine(url))
    result = verify(ledger)
    assert result.ok, result.problems
    assert result.checked == 160 and ledger.head().seq == 160


def test_events_roll_back_with_their_transaction(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'faceledger.db'}")
    ledger = Ledger(engine)
    ledger.record(Event(operation="DetectFaces", principal="a"))
    with pytest.raises(RuntimeError), engine.begin() as conn:
        ledger.append(conn, Event(operation="IndexFaces", principal="a", collection="c"))
        raise RuntimeError("the change failed after its event was written")
    assert ledger.head().seq == 1 and ledger.count() == 1
    ledger.record(Event(operation="DetectFaces", principal="b"))
    assert verify(ledger).ok and ledger.head().seq == 2


def test_service_settings_point_the_ledger_at_the_data_dir(tmp_path: Path) -> None:
    from faceledger.service import FaceService

    service = FaceService(Settings(data_dir=tmp_path))
    service.ledger.record(Event(operation="DetectFaces", principal="x"))
    assert (tmp_path / "faceledger.db").is_file()
    assert service.verify_ledger()["checked"] == 1
