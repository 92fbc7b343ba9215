"""The one settings value: every knob, read from `FACELEDGER_*` environment variables or passed in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DetectorName = Literal["yunet", "hog", "cnn", "mtcnn"]


def default_config_dir() -> Path:
    """$XDG_CONFIG_HOME/faceledger, else /etc/faceledger for root, else ~/.config/faceledger:
    outside the data directory, so a copy of the data never carries the key that opens it."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg:
        return Path(xdg) / "faceledger"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/etc/faceledger")
    return Path.home() / ".config" / "faceledger"


class Settings(BaseSettings):
    """faceledger's configuration; construct once at the edge and pass it down."""

    model_config = SettingsConfigDict(env_prefix="FACELEDGER_", frozen=True)

    data_dir: Path = Field(default=Path("./faceledger-data"))
    # SQL database for catalog and ledger; default: a SQLite file in data_dir.
    database_url: str | None = None
    # YuNet (default: boxes and five landmarks, faces from ~10 px), dlib's HOG or MMOD, MTCNN.
    detector: DetectorName = "yunet"
    # The detector whose boxes dlib's models (1.x) embed, whatever `detector` is: dlib's 5-point
    # aligner places its points from the box, and 1.x collections and the 1.0 table were made
    # from HOG's. YuNet's boxes move a 1.0 template by 0.08 (median; p99 0.26, against 0.27 at
    # FMR 1e-4) on LFW (docs/models.md). None: the configured detector for every model.
    dlib_detector: DetectorName | None = "hog"
    # YuNet's size ("n": 76 k parameters, best on small faces; "s": 55 k) and the score a
    # face must reach (docs/accuracy.md, "Detector").
    yunet_variant: Literal["n", "s"] = "n"
    yunet_score_threshold: float = Field(default=0.6, gt=0.0, lt=1.0)
    # Rekognition's limit for image bytes sent in the request.
    max_image_bytes: int = 5 * 1024 * 1024
    # Pixels beyond this are refused as a likely decompression bomb (Rekognition: ImageTooLarge).
    max_image_pixels: int = 50_000_000
    # Pixels decoded for one image: larger JPEGs decode at 1/2, 1/4 or 1/8 scale, larger PNGs
    # are refused (ImageTooLarge). A decoded pixel costs about 13 bytes at the peak of decoding
    # (bench/decode_memory.py: 322 MB for a 24-megapixel JPEG).
    max_decoded_pixels: int = 25_000_000
    # Pixels being decoded at once across all requests; beyond it a decode waits (then
    # ThrottlingException), so concurrent large images cannot add up.
    decode_budget_pixels: int = 50_000_000
    # Scans of a progressive JPEG, beyond which it is refused before decoding
    # (InvalidImageFormat): each scan is a pass over the whole image (imaging.MAX_JPEG_SCANS
    # says why 32; encoders write 1 to 16). Also applies to MJPEG video frames.
    max_jpeg_scans: int = Field(default=32, ge=1)
    min_image_side: int = 80
    # Detection runs on an image whose long side is at most this; boxes are mapped back.
    detect_max_side: int = 1280
    # Smallest face (px in the original image) the detector must find; small images are upsampled.
    min_face_px: int = 40
    max_faces: int = 100
    # Every detection, from any detector, must reach this face probability from MTCNN's output
    # network (ONet), which runs on every box for the landmarks anyway; 0 turns the check off.
    # Chosen by measurement: docs/accuracy.md, "Fewer false faces".
    min_face_probability: float = Field(default=0.5, ge=0.0, le=1.0)
    # Processes used by batch work (evaluate, bench); 0 means one per core.
    workers: int = 0
    # The face embedder: "reid-0095" (Intel's face-reidentification-retail-0095 on OpenVINO,
    # model version 2.0, the default), "reid-0095+sface" (reid-0095 fused with OpenCV Zoo's
    # SFace, model 3.0), "dlib" (dlib's ResNet on ONNX Runtime, model 1.0),
    # "dlib-native" (the same model through dlib's own runtime, the reference; same templates,
    # ~10x slower), or "onnx:PATH" (an operator-supplied ONNX model with a model card beside it, see
    # vision/operator_model.py; its model version, "100.<n>", comes from the weights' SHA-256).
    # New collections are bound to this model; CompareFaces uses it.
    embedder: str = "reid-0095"
    # Operator models (onnx:PATH) this server also runs, for collections bound to them. Built-in
    # models (1.0, 1.1, 1.2, 2.0, 3.0) need no entry: a collection's model loads on its first use.
    extra_embedders: list[str] = Field(default_factory=list)
    # Test-time augmentation for the dlib embedder: "none", "flip" (average with the mirrored
    # chip) or "jitter" (mirror + fixed small shifts/scales/rotations). Any other than "none"
    # is a different template, hence a different model version ("1.1" flip, "1.2" jitter).
    embedder_tta: Literal["none", "flip", "jitter"] = "none"
    # Faces per embedder run in bulk work (bulk index, re-enrolment, evaluation, Ray actors):
    # the faces of several images go through the network together (vision/batching.py).
    # Chosen by measurement of CPU per face at 1, 8 and 32 (bench/pipeline.py --batch).
    embed_batch: int = Field(default=8, ge=1, le=256)
    # ONNX Runtime intra-op threads per model (one session per model per process). 1 measured
    # best on a 2-core machine with one worker process per core (bench/onnx_threads.py).
    inference_threads: int = 1
    # Where ONNX graphs built from dlib's model files are cached (default: data_dir/models).
    model_cache_dir: Path | None = None

    # --- HTTP server (`faceledger serve`, faceledger.server) ---
    server_host: str = "127.0.0.1"
    server_port: int = 8080
    # The regions clients may sign for (SigV4 credential scope): "*" (any, the default) or a
    # comma-separated list; a request signed for another is refused. The secret is what
    # authenticates: the region only scopes the signing key derived from it (SECURITY.md).
    region: str = "*"
    # Inference worker processes (0: one per core; 1: inference in the server process itself),
    # and authenticated requests allowed to wait for one; beyond that the server answers
    # ThrottlingException at once instead of queueing without bound.
    server_workers: int = 0
    server_queue: int = 32
    # Largest request body: CompareFaces with two 5 MB images, base64-encoded, plus JSON.
    max_request_bytes: int = 16 * 1024 * 1024
    # How far a request's signing time may be from the server clock (AWS: 5 minutes).
    clock_skew_seconds: int = 300
    # A request body (API and console) must arrive at `server_body_min_rate` bytes/s on average
    # once `server_body_grace_seconds` have passed, and whole within
    # `server_body_timeout_seconds`; a slower one is cut off (RequestTimeoutException, 408).
    # Bodies are read before a request takes a worker/queue slot, so trickling connections hold
    # no slot; together, unfinished bodies hold at most `server_body_budget_bytes` (default:
    # max_request_bytes x (workers + queue)), beyond which a body is refused (Throttling).
    server_body_grace_seconds: float = Field(default=10.0, gt=0)
    server_body_min_rate: float = Field(default=4096.0, ge=0)
    server_body_timeout_seconds: float = Field(default=120.0, gt=0)
    server_body_budget_bytes: int | None = None
    # A signed request is refused if its signature was received before (whatever the operation
    # and whatever became of the first copy): a captured request cannot be replayed within the
    # clock-skew window. Signatures are kept in the database (shared by every server on it)
    # until their signing time leaves the window.
    replay_protection: bool = True
    # Addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed
    # (comma-separated IPs or networks, uvicorn's forwarded_allow_ips; "*" any). None: the
    # headers are ignored and the client is the TCP peer, so no caller can pick the address
    # that console sign-in throttling charges.
    forwarded_allow_ips: str | None = None
    # The console: requests served at once (others get 503 at once), and failed sign-ins per
    # client address (a burst of `console_signin_burst`, then this many per minute).
    console_max_requests: int = Field(default=16, ge=1)
    console_signin_failures_per_minute: float = Field(default=5.0, gt=0)
    console_signin_burst: int = Field(default=10, ge=1)
    # Key-encryption key for stored API secrets: base64 of 32 bytes, or a file holding it
    # (default config_dir/key-encryption-key, created with mode 0600). It lives outside the
    # data directory and its backups: the database alone must not reveal any secret.
    key_encryption_key: SecretStr | None = None
    key_encryption_key_file: Path | None = None
    # Where faceledger keeps configuration that must not travel with the data (the KEK).
    config_dir: Path = Field(default_factory=default_config_dir)

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

    # --- stored video (StartFaceDetection / StartFaceSearch, redaction; faceledger.video) ---
    # Frames analysed per second of video. 2/s: a face on screen for half a second is seen,
    # persons link across 0.5 s steps, and a job costs about real time at 720p with HOG
    # (bench/video.py); redaction interpolates boxes between samples and samples denser.
    video_sample_rate: float = 2.0
    # Frames analysed per second when redacting (a face missed is a face disclosed).
    redact_sample_rate: float = 5.0
    # Rekognition's limits for stored video: 10 GB and 6 hours (VideoTooLargeException).
    max_video_bytes: int = 10 * 1024**3
    max_video_seconds: float = 6 * 3600
    # Video jobs IN_PROGRESS at once for one key (Rekognition's default quota per account: 20),
    # and for the whole server (every server sharing the database); beyond: LimitExceeded.
    video_max_jobs: int = 20
    video_max_jobs_total: int = 100
    # Jobs analysed at the same time (each takes one core while it runs).
    video_workers: int = 1
    # A job whose server stopped sending heartbeats this long is resumed by another (or the
    # restarted) server; after `video_max_attempts` starts it ends FAILED with the reason.
    video_job_stale_seconds: float = 30.0
    video_max_attempts: int = 3
    # Bounds of one run of a job, whatever its file claims (issue 24: timestamps that jumped to
    # 9e15 ms kept a job IN_PROGRESS for ever). Frames decoded: at most this rate over the
    # video's probed duration (+1 s), 240/s being slow-motion phone video; frames past the
    # duration are not read at all. Wall time: twice Rekognition's longest video (6 h), which
    # this 2-core machine analysed at 0.7-2.8x real time (docs/video.md). Beyond either the job
    # ends FAILED with the reason, and is not started again.
    video_max_frame_rate: float = Field(default=240.0, gt=0)
    video_max_job_seconds: float = Field(default=12 * 3600, gt=0)
    # NotificationChannel: an SNS-compatible endpoint (AWS SNS, moto, LocalStack); without
    # one, a request naming a channel is refused.
    sns_endpoint_url: str | None = None
    sns_region: str = "us-east-1"
    sns_access_key_id: str | None = None
    sns_secret_access_key: SecretStr | None = None

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
    # pgvector stores templates as 16-bit floats (halfvec): half the table and index, and no
    # decision changes (bench/float16.py: 0-1 of 12.5M LFW pairs per threshold; searches
    # re-score candidates from the catalog's float32 templates anyway). An existing database
    # is converted on start, in one transaction, either way.
    pgvector_halfvec: bool = True
    # pgvector HNSW links per node (m), for indexes built from now on (new collections, a
    # precision conversion). 16 measured recall@10 0.998 / 0.957 / 0.932 at 100k / 1M / 2M
    # faces at ef_search 512 (bench/search.py, docs/deployment.md); pgvector caps ef_search at
    # 1,000, so past ~1M faces per collection more links, not more breadth, is the lever.
    pgvector_hnsw_m: int = Field(default=16, ge=4, le=100)
    # Default search threshold: expected false matches per search at most this (store/thresholds).
    search_expected_false_matches: float = 0.01

    @field_validator("embedder")
    @classmethod
    def _known_embedder(cls, value: str) -> str:
        if value in ("reid-0095", "reid-0095+sface", "dlib", "dlib-native") or (
                value.startswith("onnx:") and len(value) > 5):
            return value
        raise ValueError("embedder must be reid-0095, reid-0095+sface, dlib, dlib-native or onnx:PATH")

    @field_validator("extra_embedders")
    @classmethod
    def _operator_models(cls, value: list[str]) -> list[str]:
        if all(v.startswith("onnx:") and len(v) > 5 for v in value):
            return value
        raise ValueError("extra_embedders lists operator models only: onnx:PATH")

    def resolved_model_cache_dir(self) -> Path:
        """`model_cache_dir`, or `data_dir/models`."""
        return self.model_cache_dir or self.data_dir / "models"

    def resolved_database_url(self) -> str:
        """`database_url`, or the SQLite file in `data_dir`."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'faceledger.db').resolve()}"
