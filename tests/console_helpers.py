"""What the console's browser tests share: a service of their own with keys, Debian's Chromium
through Playwright (never downloaded), signing in, and where screenshots go.

A test module imports `browser` from here (pytest then finds the fixture in that module) and
builds its own `world` with `keyed_service`, `screenshot_dir` and `World`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from faceledger.context import RequestContext
from faceledger.server.keys import IssuedKey, KeyStore
from faceledger.service import FaceService
from faceledger.settings import Settings

CHROMIUM = os.environ.get("FACELEDGER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@dataclass
class World:
    """The server, its service, keys, the photos a reviewer holds and the candidates held."""

    url: str
    service: FaceService
    keys: dict[str, IssuedKey]
    files: dict[str, Path]
    candidates: dict[str, str]  # the test's name for it -> candidate id
    shots: Path


def keyed_service(tmp_path_factory: pytest.TempPathFactory, service: FaceService, name: str,
                  roles: Mapping[str, tuple[str, ...]]
                  ) -> tuple[Settings, FaceService, dict[str, IssuedKey]]:
    """A service on a data folder of its own (the session's models, loaded once) and one key
    per name with these console roles, on every operation and collection."""
    settings = Settings(data_dir=tmp_path_factory.mktemp(name))
    svc = FaceService(settings, pipeline=service.pipeline)
    store = KeyStore.open(settings, svc.engine, create_kek=True)
    return settings, svc, {who: store.create(who, ["*"], ["*"], roles=r)
                           for who, r in roles.items()}


def screenshot_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
                   name: str) -> Path:
    """FACELEDGER_SCREENSHOTS or a pytest temp folder, printed at the start of the run."""
    shots = Path(os.environ.get("FACELEDGER_SCREENSHOTS") or tmp_path_factory.mktemp(name))
    shots.mkdir(parents=True, exist_ok=True)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n{name}: {shots}")
    return shots


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM} for the console's browser tests "
                    "(apt-get install -y chromium; FACELEDGER_CHROMIUM points elsewhere)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def sign_in(page: Any, world: World, who: str) -> None:
    key = world.keys[who]
    page.goto(f"{world.url}/console/")
    page.get_by_label("Access key id").fill(key.info.access_key_id)
    page.get_by_label("Secret access key").fill(key.secret_access_key)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()


def no_horizontal_scroll(page: Any) -> bool:
    return bool(page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1"))


def key_ctx(world: World, who: str, **extra: Any) -> RequestContext:
    """The context a signed-in key's console requests carry (all collections)."""
    info = world.keys[who].info
    return RequestContext(principal=info.access_key_id, roles=info.console_roles,
                          admin=info.admin, **extra)
