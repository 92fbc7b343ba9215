"""The README as a new user reads it (issue 26.10): its boto3 example, with the key its own
`keys create` line issues, run unmodified but for the key against a real server; its links lead
somewhere; its first command is the one the install test and `.ci/run` rely on."""

from __future__ import annotations

import contextlib
import io
import json
import re
import secrets
import shlex
import shutil
from pathlib import Path

import pytest

from faceledger.server import RekognitionApp, running
from faceledger.server.keys import KeyStore
from faceledger.service import FaceService
from faceledger.settings import Settings

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _block(heading: str, language: str) -> str:
    """The first ```language block after `heading`."""
    after = README[README.index(heading):]
    found = re.search(rf"```{language}\n(.*?)```", after, re.S)
    assert found, f"no {language} block after {heading!r}"
    return found.group(1)


def test_the_readme_starts_with_install_and_test_commands() -> None:
    first = _block("# faceledger", "bash").splitlines()
    assert first[0].startswith('pip install -c requirements/lock.txt -e ".[test]" && faceledger demo')
    assert first[1].startswith("python -m pytest")
    assert re.search(r"^python3? -m pytest$", (REPO / ".ci" / "run").read_text(), re.M)


def test_every_relative_link_in_the_readme_and_docs_exists() -> None:
    """The README is mostly links into docs/ now: each must lead to a file."""
    pages = [REPO / "README.md", REPO / "SECURITY.md", *sorted((REPO / "docs").glob("*.md"))]
    readme_links = re.findall(r"\]\(([^)#\s]+)", README)
    assert len(readme_links) >= 10
    missing = [(page.name, link) for page in pages
               for link in re.findall(r"\]\(([^)#\s]+)", page.read_text())
               if not link.startswith(("http:", "https:", "mailto:"))
               and not (page.parent / link).exists()]
    assert missing == []


def test_the_boto3_example_runs_as_written_with_the_key_it_issues(
        tmp_path: Path, faces_dir: Path, service: FaceService,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's `keys create` line gives the permissions; its Python block runs with only
    the endpoint and the key's id and secret filled in, on two photos of one person."""
    commands = _block("## From boto3", "bash")
    create = shlex.split(next(line for line in commands.splitlines() if "keys create" in line),
                         comments=True)
    assert create[:3] == ["faceledger", "keys", "create"]
    name, operations, collections = create[3], create[create.index("-o") + 1].split(","), \
        create[create.index("-c") + 1].split(",")
    port = re.search(r"serve --port (\d+)", commands)
    assert port

    settings = Settings(data_dir=tmp_path / "data")
    svc = FaceService(settings, pipeline=service.pipeline)
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    key = keys.create(name, operations, collections)
    app = RekognitionApp(svc, keys, settings)
    person = faces_dir / "lfw" / "Brooke_Shields"  # two photos at Similarity 99.998
    shutil.copy(person / "Brooke_Shields_0001.jpg", tmp_path / "alice.jpg")
    shutil.copy(person / "Brooke_Shields_0002.jpg", tmp_path / "probe.jpg")
    monkeypatch.chdir(tmp_path)

    code = _block("## From boto3", "python")
    assert len(code.splitlines()) <= 14  # a short example
    for placeholder in (f"http://127.0.0.1:{port.group(1)}", '"FLK..."', '"..."'):
        assert placeholder in code
    with running(app) as url:
        filled = (code.replace(f"http://127.0.0.1:{port.group(1)}", url)
                  .replace('"FLK..."', repr(key.info.access_key_id))
                  .replace('"..."', repr(key.secret_access_key)))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(filled, "README.md", "exec"), {})
    app.close()
    # the match by name, one face searched, and the expected false matches that SDKs drop
    matches, searched, expected = out.getvalue().strip().rsplit(" ", 2)
    assert (matches, searched) == ("['alice']", "1")
    assert 0 < float(expected) <= 0.01
    # the ledger holds what state_context sent
    bodies = [json.loads(e.body) for e in svc.ledger.scan() if e.body]
    searches = [b for b in bodies if b.get("operation") == "SearchFacesByImage"]
    assert [(b["purpose"], b["case"], b["principal"]) for b in searches] == [
        ("door access", "INC-17", key.info.access_key_id)]
    svc.close()
