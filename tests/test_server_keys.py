"""API keys: issued once, sealed at rest under a key-encryption key kept outside the database,
permission patterns, revocation, and the `faceledger keys` commands."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from faceledger.cli import main
from faceledger.db import make_engine
from faceledger.errors import InvalidParameterException, ResourceNotFoundException
from faceledger.server.keys import KeyStore, KeyStoreError, api_keys, load_kek
from faceledger.server.protocol import model_operations
from faceledger.server.sigv4 import signing_key
from faceledger.settings import Settings


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", config_dir=tmp_path / "config")


@pytest.fixture()
def store(settings: Settings) -> KeyStore:
    settings.data_dir.mkdir(parents=True)
    return KeyStore.open(settings, make_engine(settings.resolved_database_url()), create_kek=True)


def test_issued_secret_signs_and_is_not_stored_in_clear(store: KeyStore, settings: Settings
                                                       ) -> None:
    issued = store.create("door", ["CompareFaces"], ["*"], known_operations=model_operations())
    key_id = issued.info.access_key_id
    assert key_id.startswith("FLK") and len(key_id) == 20
    assert len(issued.secret_access_key) == 40
    found = store.credentials(key_id, "20240517", "us-east-1", "rekognition")
    assert found is not None
    info, key = found
    assert key == signing_key(issued.secret_access_key, "20240517", "us-east-1", "rekognition")
    assert info.operations == ("CompareFaces",)
    store.engine.dispose()
    db = (settings.data_dir / "faceledger.db").read_bytes()
    assert issued.secret_access_key.encode() not in db
    assert key_id.encode() in db


def test_kek_file_is_private(store: KeyStore, settings: Settings) -> None:
    path = settings.config_dir / "key-encryption-key"
    assert not path.is_relative_to(settings.data_dir)  # a copy of the data has no key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_kek(settings, create=False) == base64.b64decode(path.read_text())
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        load_kek(settings, create=False)


def test_database_alone_cannot_open_secrets(store: KeyStore) -> None:
    issued = store.create("k", ["*"], ["*"])
    other = KeyStore(store.engine, secrets.token_bytes(32))
    with pytest.raises(KeyStoreError, match="sealed with key-encryption key"):
        other.credentials(issued.info.access_key_id, "20240517", "us-east-1", "rekognition")
    assert KeyStore(store.engine, None).credentials(
        issued.info.access_key_id, "20240517", "us-east-1", "rekognition") is None


def test_sealed_secret_cannot_move_to_another_key(store: KeyStore) -> None:
    a = store.create("a", ["*"], ["*"])
    b = store.create("b", ["*"], ["*"])
    with store.engine.begin() as conn:
        sealed_a = conn.execute(select(api_keys.c.sealed_secret).where(
            api_keys.c.access_key_id == a.info.access_key_id)).scalar_one()
        conn.execute(update(api_keys).where(api_keys.c.access_key_id == b.info.access_key_id)
                     .values(sealed_secret=sealed_a))
    with pytest.raises(KeyStoreError, match="fails its check"):
        store.credentials(b.info.access_key_id, "20240517", "us-east-1", "rekognition")


def test_kek_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kek = secrets.token_bytes(32)
    monkeypatch.setenv("FACELEDGER_KEY_ENCRYPTION_KEY", base64.b64encode(kek).decode())
    settings = Settings(data_dir=tmp_path / "data")
    assert load_kek(settings, create=True) == kek
    assert base64.b64encode(kek).decode() not in repr(settings)  # masked in logs and reprs
    assert not (tmp_path / "data" / "secrets").exists()
    monkeypatch.setenv("FACELEDGER_KEY_ENCRYPTION_KEY", "c2hvcnQ=")
    with pytest.raises(KeyStoreError, match="32-byte"):
        load_kek(Settings(data_dir=tmp_path / "data"), create=False)


def test_revocation(store: KeyStore) -> None:
    issued = store.create("k", ["*"], ["*"])
    revoked = store.revoke(issued.info.access_key_id)
    assert not revoked.active and revoked.revoked_at is not None
    assert store.credentials(issued.info.access_key_id, "20240517", "us-east-1",
                             "rekognition") is None
    assert store.revoke(issued.info.access_key_id).revoked_at == revoked.revoked_at
    with pytest.raises(ResourceNotFoundException):
        store.revoke("FLKNOSUCHKEY00000000")


def test_permission_patterns(store: KeyStore) -> None:
    info = store.create("k", ["Search*", "CompareFaces"], ["staff-*", "visitors"],
                        known_operations=model_operations()).info
    assert info.allows_operation("SearchFacesByImage") and info.allows_operation("CompareFaces")
    assert not info.allows_operation("IndexFaces")
    assert info.allows_collection("staff-paris") and info.allows_collection("visitors")
    assert not info.allows_collection("visitors-2") and not info.all_collections


@pytest.mark.parametrize(
    ("operations", "collections", "rate", "message"),
    [
        (["DetectEverything"], ["*"], None, "matches no Rekognition operation"),
        ([], ["*"], None, "at least one operation"),
        (["*"], ["a b"], None, "characters"),
        (["*"], ["*"], 0.0, "positive"),
    ],
)
def test_invalid_key_requests(store: KeyStore, operations: list[str], collections: list[str],
                              rate: float | None, message: str) -> None:
    with pytest.raises(InvalidParameterException, match=message):
        store.create("k", operations, collections, rate, known_operations=model_operations())


def test_keys_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"FACELEDGER_DATA_DIR": str(tmp_path / "data")}
    created = runner.invoke(main, ["keys", "create", "kiosk", "-o", "CompareFaces,DetectFaces",
                                   "-c", "*", "--rate", "5", "--admin", "--json"], env=env)
    assert created.exit_code == 0, created.output
    issued = json.loads(created.stdout)
    assert issued["Operations"] == ["CompareFaces", "DetectFaces"] and issued["Admin"] is True
    listed = runner.invoke(main, ["keys", "list", "--json"], env=env)
    assert listed.exit_code == 0
    (row,) = json.loads(listed.stdout)
    assert row["AccessKeyId"] == issued["AccessKeyId"] and row["Active"] is True
    assert row["RateLimit"] == 5
    assert issued["SecretAccessKey"] not in listed.output
    text = runner.invoke(main, ["keys", "list"], env=env).output
    assert "kiosk" in text and issued["SecretAccessKey"] not in text
    revoked = runner.invoke(main, ["keys", "revoke", issued["AccessKeyId"]], env=env)
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert json.loads(runner.invoke(main, ["keys", "list", "--json"], env=env).stdout
                      )[0]["Active"] is False
    missing = runner.invoke(main, ["keys", "revoke", "FLKNOSUCHKEY00000000"], env=env)
    assert missing.exit_code == 2 and "ResourceNotFoundException" in missing.output
    bad = runner.invoke(main, ["keys", "create", "x", "-o", "Nope", "-c", "*"], env=env)
    assert bad.exit_code == 2 and "InvalidParameterException" in bad.output
    human = runner.invoke(main, ["keys", "create", "y", "-o", "*", "-c", "*"], env=env)
    assert human.exit_code == 0 and "secret access key:" in human.output
    assert "shown only now" in human.output


def test_secret_directory_is_created_with_owner_only_access(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d",
                        key_encryption_key_file=tmp_path / "kek-dir" / "kek")
    kek = load_kek(settings, create=True)
    assert kek is not None and len(kek) == 32
    assert oct(stat.S_IMODE(os.stat(tmp_path / "kek-dir" / "kek").st_mode)) == oct(0o600)
    assert load_kek(settings, create=True) == kek  # an existing KEK is kept, never replaced


def test_key_store_on_postgresql(postgres_url: str) -> None:
    """The same store on a real PostgreSQL server (the shared-database deployment)."""
    engine = make_engine(postgres_url)
    try:
        store = KeyStore(engine, secrets.token_bytes(32))
        issued = store.create("pg", ["Detect*"], ["staff-*"], 2.5, admin=True,
                              known_operations=model_operations())
        found = store.credentials(issued.info.access_key_id, "20240517", "us-east-1",
                                  "rekognition")
        assert found is not None
        info, key = found
        assert key == signing_key(issued.secret_access_key, "20240517", "us-east-1",
                                  "rekognition")
        assert (info.rate_limit, info.admin, info.created_at.tzinfo is not None) == (2.5, True,
                                                                                   True)
        store.revoke(issued.info.access_key_id)
        assert [k.active for k in store.list()] == [False]
    finally:
        engine.dispose()
