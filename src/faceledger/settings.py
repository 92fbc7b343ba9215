"""The one settings value: every knob, read from `FACELEDGER_*` environment variables or passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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

    # --- HTTP server (`faceledger serve`, faceledger.server) ---
    server_host: str = "127.0.0.1"
    server_port: int = 8080
    # The region clients sign for (SigV4 credential scope); any other region is refused.
    region: str = "us-east-1"
    # Inference worker processes (0: one per core; 1: inference in the server process itself),
    # and authenticated requests allowed to wait for one; beyond that the server answers
    # ThrottlingException at once instead of queueing without bound.
    server_workers: int = 0
    server_queue: int = 32
    # Largest request body: CompareFaces with two 5 MB images, base64-encoded, plus JSON.
    max_request_bytes: int = 16 * 1024 * 1024
    # How far a request's signing time may be from the server clock (AWS: 5 minutes).
    clock_skew_seconds: int = 300
    # Key-encryption key for stored API secrets: base64 of 32 bytes, or a file holding it
    # (default data_dir/secrets/key-encryption-key, created with mode 0600). Keep it out of
    # database backups: the database alone must not reveal any secret.
    key_encryption_key: SecretStr | None = None
    key_encryption_key_file: Path | None = None

    # --- images from object storage (Image.S3Object); only configured buckets are readable ---
    # Bucket name -> local directory, e.g. FACELEDGER_LOCAL_BUCKETS='{"photos": "/srv/photos"}'.
    local_buckets: dict[str, Path] = Field(default_factory=dict)
    # Buckets read through an S3-compatible endpoint (boto3), e.g. MinIO or AWS S3.
    s3_buckets: list[str] = Field(default_factory=list)
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    # Rekognition's limit for images read from S3.
    max_s3_image_bytes: int = 15 * 1024 * 1024

    # --- collections: the vector index (faceledger.store) ---
    # "embedded": in-process, follows the catalog (any database); "pgvector": PostgreSQL +
    # pgvector in the catalog's own database (needs database_url=postgresql+psycopg://...).
    vector_index: Literal["embedded", "pgvector"] = "embedded"
    # The embedded index searches exactly below this many faces per collection, HNSW above.
    index_exact_below: int = 20_000
    # The embedded index snapshots a collection's HNSW graph after this many changes.
    index_snapshot_changes: int = 50_000
    # HNSW search breadth (recall against latency): 512 keeps recall@10 >= 0.99 at 1M faces
    # (bench/search.py: 0.991, p99 3.3 ms; 256 gave 0.974).
    index_ef_search: int = 512
    # Default search threshold: expected false matches per search at most this (store/thresholds).
    search_expected_false_matches: float = 0.01

    def resolved_database_url(self) -> str:
        """`database_url`, or the SQLite file in `data_dir`."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'faceledger.db').resolve()}"
