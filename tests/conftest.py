"""Shared fixtures: where the real face data lives, and images any machine can make."""

from __future__ import annotations

import io
import os
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


@pytest.fixture(scope="session")
def astronaut_jpeg() -> bytes:
    """scikit-image's public-domain portrait of Eileen Collins (one face), as JPEG bytes."""
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(np.asarray(data.astronaut())).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="session")
def service() -> Iterator[FaceService]:
    """One service (models loaded once) for the whole test session; nothing stored."""
    yield FaceService(Settings())
