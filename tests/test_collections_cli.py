"""`faceledger collection ...` and `faceledger user ...` on real photos and a real data dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from faceledger.cli import main
from faceledger.settings import Settings
from faceledger.vision import FacePipeline


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FACELEDGER_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def _run(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(main, list(args))

    return _run


def test_collection_commands(run, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    blix = sorted((faces_dir / "lfw" / "Hans_Blix").glob("*.jpg"))
    r = run("collection", "create", "cli")
    assert r.exit_code == 0 and "created cli" in r.output
    r = run("collection", "create", "cli")
    assert r.exit_code == 2 and "ResourceAlreadyExistsException" in r.output
    r = run("collection", "index", "cli", *map(str, blix[:3]), "--quality-filter", "NONE", "-v",
            "--max-faces", "1")
    assert r.exit_code == 0 and r.output.count(": indexed ") == 3
    r = run("collection", "faces", "cli")
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 3
    assert "Hans_Blix_0002" in r.output
    r = run("collection", "list")
    # bound to the configured model
    assert r.output.strip() == f"cli\t{FacePipeline(Settings()).model_version}"
    # at 99.9: model 2.0 misses about one genuine pair in three at the 99.99 default (LFW FNMR
    # 0.32), and this photo of Blix scores 99.77 against his enrolled ones
    r = run("collection", "search", "cli", str(blix[4]), "--threshold", "99.9")
    assert r.exit_code == 0, r.output
    assert r.output.count("MATCH") >= 1 and "false matches expected" in r.output
    face_id = run("collection", "faces", "cli").output.split()[0]
    r = run("user", "create", "cli", "blix")
    assert r.exit_code == 0
    r = run("user", "associate", "cli", "blix", face_id)
    assert r.exit_code == 0 and face_id in r.output
    assert "blix\tACTIVE" in run("user", "list", "cli").output
    r = run("collection", "delete-faces", "cli", face_id)
    assert "ASSOCIATED_TO_AN_EXISTING_USER" in r.output
    r = run("collection", "describe", "nope")
    assert r.exit_code == 2 and "ResourceNotFoundException" in r.output
    r = run("collection", "delete", "cli", "--yes")
    assert r.exit_code == 0 and run("collection", "list").output == ""
