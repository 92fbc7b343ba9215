"""The one settings value: every knob, read from `FACELEDGER_*` environment variables or passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DetectorName = Literal["hog", "cnn", "mtcnn"]


class Settings(BaseSettings):
    """faceledger's configuration; construct once at the edge and pass it down."""

    model_config = SettingsConfigDict(env_prefix="FACELEDGER_", frozen=True)

    data_dir: Path = Field(default=Path("./faceledger-data"))
    # SQL database for catalog and ledger; default: a SQLite file in data_dir.
    database_url: str | None = None
    detector: DetectorName = "hog"
    # Rekognition's limit for image bytes sent in the request.
    max_image_bytes: int = 5 * 1024 * 1024
    # Pixels beyond this are refused as a likely decompression bomb (Rekognition: ImageTooLarge).
    max_image_pixels: int = 50_000_000
    min_image_side: int = 80
    # Detection runs on an image whose long side is at most this; boxes are mapped back.
    detect_max_side: int = 1280
    # Smallest face (px in the original image) the detector must find; small images are upsampled.
    min_face_px: int = 40
    max_faces: int = 100
    # Processes used by batch work (evaluate, bench); 0 means one per core.
    workers: int = 0

    def resolved_database_url(self) -> str:
        """`database_url`, or the SQLite file in `data_dir`."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'faceledger.db').resolve()}"
