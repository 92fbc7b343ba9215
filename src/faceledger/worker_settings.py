"""What a remote worker (a Ray actor, on any node of a cluster) is told: `WorkerSettings`.

Ray pickles what it sends to an actor and carries it over the cluster's network to a process
the command does not control. So a worker gets a small, explicit value, never the command's
whole `Settings`: the models, detector and inference knobs that decide which faces and
templates come out, the decoding limits, and which buckets exist. No key-encryption key, no
database URL (it may hold a password), no S3 or SNS keys, no server or console knobs: a field
added here is sent to every node, so it must be something any node may know. Objects of S3
buckets are then read with the node's own credentials (docs/deployment.md).

On the worker, `settings()` makes a `Settings` of these values and the defaults, without
reading the node's `FACELEDGER_*` environment: the worker analyses exactly as the command
would, whatever the node's own configuration says.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from .settings import DetectorName, Settings


@dataclass(frozen=True)
class WorkerSettings:
    """The part of `Settings` a remote worker needs to read, decode and analyse images."""

    # the face pipeline: detector, landmarks check, embedder (hence the model version)
    detector: DetectorName
    dlib_detector: DetectorName | None
    yunet_variant: str
    yunet_score_threshold: float
    detect_max_side: int
    min_face_px: int
    max_faces: int
    min_face_probability: float
    embedder: str
    extra_embedders: tuple[str, ...]
    embedder_tta: str
    inference_threads: int
    embed_batch: int  # faces per embedder run (the actor's batches are analysed together)
    model_cache_dir: Path
    # decoding limits (the service's own: an image refused here is refused as by IndexFaces)
    max_image_bytes: int
    max_s3_image_bytes: int
    max_image_pixels: int
    max_decoded_pixels: int
    decode_budget_pixels: int
    min_image_side: int
    # which buckets exist and where; never their keys
    local_buckets: tuple[tuple[str, Path], ...]
    s3_buckets: tuple[str, ...]
    s3_endpoint_url: str | None
    s3_region: str

    @classmethod
    def of(cls, settings: Settings) -> WorkerSettings:
        """The worker's part of `settings` (model files are cached where the command's are)."""
        values: dict[str, Any] = {f.name: getattr(settings, f.name)
                                  for f in dataclasses.fields(cls)}
        values.update(
            extra_embedders=tuple(settings.extra_embedders),
            model_cache_dir=settings.resolved_model_cache_dir(),
            local_buckets=tuple(sorted(settings.local_buckets.items())),
            s3_buckets=tuple(settings.s3_buckets),
        )
        return cls(**values)

    def settings(self) -> Settings:
        """A `Settings` of these values, every other field at its default (no secret, no
        database), the environment of the process it is made in left unread."""
        values = dataclasses.asdict(self)
        values["extra_embedders"] = list(self.extra_embedders)
        values["local_buckets"] = dict(self.local_buckets)
        values["s3_buckets"] = list(self.s3_buckets)
        return _Given(**values)


class _Given(Settings):
    """Settings from the values passed in only: no FACELEDGER_* variables, no .env file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)
