"""What faceledger hands a Ray cluster, without a cluster: the worker's part of the settings
(no secret in it, the node's environment ignored), work made of module-level functions only,
and an address where no cluster listens refused at once. The real cluster's side (a stranger's
driver, what travels to actors) is in tests/test_ray_cluster.py."""

from __future__ import annotations

import dataclasses
import pickle
import socket
from pathlib import Path

import pytest
from pydantic import SecretStr

from faceledger.bulk import analysis_work
from faceledger.cluster import ClusterError, Work, check_authenticated, check_token_file
from faceledger.settings import Settings
from faceledger.worker_settings import WorkerSettings

SECRETS = {
    "key_encryption_key": "a2V5LWVuY3J5cHRpb24ta2V5LW9mLTMyLWJ5dGVzLi4=",
    "database_url": "postgresql+psycopg://faceledger:pg-Pa55word@db.internal/faceledger",
    "s3_access_key_id": "AKIAEXAMPLEKEYID0001",
    "s3_secret_access_key": "s3-secret-wJalrXUtnFEMI/K7MDENG",
    "sns_access_key_id": "AKIAEXAMPLESNS00002",
    "sns_secret_access_key": "sns-secret-bPxRfiCYEXAMPLEKEY",
}


def _with_secrets(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path, detector="hog", detect_max_side=960, embedder_tta="flip",
        embedder="dlib", local_buckets={"photos": tmp_path}, s3_buckets=["evidence"],
        s3_endpoint_url="http://127.0.0.1:9000",
        **{k: SecretStr(v) if k.endswith(("secret_access_key", "encryption_key")) else v
           for k, v in SECRETS.items()})


def test_the_worker_settings_hold_the_pipeline_and_no_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _with_secrets(tmp_path).model_copy(update={"embed_batch": 5})
    work = analysis_work(settings)  # what `collection index --ray` hands the cluster
    assert isinstance(work.config, WorkerSettings)
    shipped = pickle.dumps(work)
    for name, value in SECRETS.items():
        assert value.encode() not in shipped, name
    names = {f.name for f in dataclasses.fields(WorkerSettings)}
    assert not names & {"key_encryption_key", "key_encryption_key_file", "config_dir",
                        "database_url", "data_dir", "s3_access_key_id", "s3_secret_access_key",
                        "sns_access_key_id", "sns_secret_access_key"}

    # on a node whose environment says otherwise, the worker analyses as the command would,
    # and knows no database, key or credential
    monkeypatch.setenv("FACELEDGER_DETECTOR", "mtcnn")
    monkeypatch.setenv("FACELEDGER_DATABASE_URL", "postgresql://node:other@elsewhere/x")
    monkeypatch.setenv("FACELEDGER_S3_SECRET_ACCESS_KEY", "the-node's-own")
    there = pickle.loads(shipped).config.settings()
    assert (there.detector, there.detect_max_side, there.embedder, there.embedder_tta) == (
        "hog", 960, "dlib", "flip")
    assert there.embed_batch == 5  # the command's batching, not the node's
    assert there.local_buckets == {"photos": tmp_path} and there.s3_buckets == ["evidence"]
    assert there.resolved_model_cache_dir() == settings.resolved_model_cache_dir()
    assert there.database_url is None and there.key_encryption_key is None
    assert there.s3_secret_access_key is None and there.s3_access_key_id is None
    assert there.sns_secret_access_key is None


def _closure_setup() -> Work[int, int]:
    k = 3
    return Work(lambda c: c + k, 1, lambda state, batch: batch)


def test_work_is_made_of_functions_sent_by_name() -> None:
    """A lambda or closure would be pickled whole, with whatever it holds (a Settings, say)."""
    with pytest.raises(ValueError, match="module-level functions"):
        _closure_setup()
    seen = Settings()

    def holds_settings(state: int, batch: list[int]) -> list[int]:
        return [seen.max_faces for _ in batch]

    with pytest.raises(ValueError, match="module-level functions"):
        Work(int, 1, holds_settings)


def test_an_address_where_no_cluster_listens_is_refused_at_once() -> None:
    pytest.importorskip("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free again once closed: nothing listens there
    with pytest.raises(ClusterError, match="No Ray cluster at"):
        check_authenticated(f"127.0.0.1:{port}")


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    """`ray get-auth-token --generate` writes ~/.ray/auth_token 0644 under umask 022; whoever
    reads the token drives the cluster."""
    token = tmp_path / "auth_token"
    token.write_text("0123456789abcdef")
    token.chmod(0o644)
    with pytest.raises(ClusterError, match="chmod 600"):
        check_token_file({"RAY_AUTH_TOKEN_PATH": str(token)})
    token.chmod(0o600)
    check_token_file({"RAY_AUTH_TOKEN_PATH": str(token)})
    token.chmod(0o640)
    check_token_file({"RAY_AUTH_TOKEN": "given-in-the-environment",
                      "RAY_AUTH_TOKEN_PATH": str(token)})  # Ray reads the variable first
