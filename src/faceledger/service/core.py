"""What every group of operations shares: settings, the face pipeline, calibration, sources."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from ..calibration import CalibrationTable, find_calibration
from ..calibration import calibration_path as _calibration_path
from ..context import RequestContext
from ..db import make_engine
from ..errors import InvalidParameterException, ResourceNotReadyException
from ..imaging import AnalysedImage, DecodedImage, PixelBudget, decode_image
from ..ledger import AuditedOperation, Ledger, audited
from ..permissions import private_data_dir
from ..settings import Settings
from ..sources import ImageInput, NoObjectStorage, ObjectResolver, image_bytes
from ..vision import FacePipeline

# Defaults are strict and named by the false-match rate they stand for (see docs/accuracy.md).
# CompareFaces (1:1): one false match in 10,000 comparisons of different people.
DEFAULT_COMPARE_FMR = 1e-4


def calibration_path(settings: Settings, model_version: str) -> Path:
    """Where an operator-built calibration table for `model_version` is kept."""
    return _calibration_path(settings.data_dir, model_version)


class ServiceCore:
    """Shared state and helpers of the service mixins."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        pipeline: FacePipeline | None = None,
        resolver: ObjectResolver | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.pipeline = pipeline or FacePipeline(self.settings)
        self.resolver: ObjectResolver = resolver or NoObjectStorage()
        # shared by every request this service decodes an image for
        self.pixel_budget = PixelBudget(self.settings.decode_budget_pixels)

    @cached_property
    def engine(self) -> Engine:
        """The SQL engine shared by catalog and ledger (created on first use)."""
        private_data_dir(self.settings.data_dir)
        return make_engine(self.settings.resolved_database_url())

    @cached_property
    def ledger(self) -> Ledger:
        """The tamper-evident event chain, in the same database as the catalog."""
        return Ledger(self.engine)

    def audit(self, operation: str, ctx: RequestContext, *, collection: str | None = None,
              uses_model: bool = True) -> AbstractContextManager[AuditedOperation]:
        """The hook every operation runs inside: policy check on entry, event with the change.

            with self.audit("IndexFaces", ctx, collection=collection_id) as op:
                ...  # op.image(sha), op.threshold(...), write via op.conn, op.indexed(ids)

        Refusals (`op.refuse`, threshold floor, purpose/consent rules) roll back and are logged
        as refused; other errors roll back and log nothing; success appends the event in
        `op.conn`'s transaction and commits. See `faceledger.ledger.audit`.
        """
        return audited(self.ledger, operation, ctx, collection=collection,
                       model_version=self.pipeline.model_version if uses_model else None)

    @property
    def calibration(self) -> CalibrationTable:
        """The configured model's table (CompareFaces, redaction): see `calibration_for`."""
        return self.calibration_for(self.pipeline.model_version)

    def calibration_for(self, model_version: str) -> CalibrationTable:
        """The table of `model_version` (a collection's model): shipped in the package, or
        built by the operator into data_dir/calibration (`faceledger calibration build`).
        Without one, comparisons and searches are refused: a Similarity without a measured FMR
        behind it would mislead."""
        tables: dict[str, CalibrationTable] = self.__dict__.setdefault("_calibrations", {})
        found = tables.get(model_version)
        if found is not None:
            return found
        try:
            found = find_calibration(model_version, self.settings.data_dir)
        except LookupError:
            path = calibration_path(self.settings, model_version)
            raise ResourceNotReadyException(
                f"Face model {model_version} has no calibration table, so its distances cannot "
                f"be turned into a Similarity with a known false-match rate. Build one with "
                f"`faceledger calibration build` (it writes {path}) before comparing or "
                f"searching faces."
            ) from None
        tables[model_version] = found  # a table once found is kept (a missing one is not)
        return found

    def decode(self, image: ImageInput, field: str = "Image", *,
               ctx: RequestContext) -> DecodedImage:
        """Resolve and decode an `Image` parameter, refusing bad input with Rekognition codes
        (an S3Object only where the caller's grants reach)."""
        if image is None:
            raise InvalidParameterException(f"{field} is required.")
        if isinstance(image, DecodedImage):  # the Python API's arrays and PIL images
            return image
        from_storage = isinstance(image, Mapping) and image.get("S3Object") is not None
        return self.decode_bytes(image_bytes(image, self.resolver, ctx, field),
                                 from_storage=from_storage)

    def decode_bytes(self, data: bytes, *, from_storage: bool = False) -> DecodedImage:
        """Decode image bytes with this service's limits (Rekognition allows 5 MB of inline
        Bytes but 15 MB for an image read from S3)."""
        s = self.settings
        return decode_image(
            data,
            max_bytes=s.max_s3_image_bytes if from_storage else s.max_image_bytes,
            max_pixels=s.max_image_pixels,
            max_decoded_pixels=s.max_decoded_pixels,
            min_side=s.min_image_side,
            budget=self.pixel_budget,
            max_jpeg_scans=s.max_jpeg_scans,
        )

    def analyse_bytes(self, data: bytes, *, from_storage: bool = False) -> AnalysedImage:
        """Decode, then find and embed every face, as IndexFaces does (for bulk workers)."""
        img = self.decode_bytes(data, from_storage=from_storage)
        return self.analyse_decoded([img])[0]

    def analyse_decoded(self, images: Sequence[DecodedImage],
                        model_version: str | None = None) -> list[AnalysedImage]:
        """Find and embed every face of decoded images with model `model_version` (None: the
        configured one), the faces of all of them through the embedder together (bulk work:
        `FacePipeline.analyze_batch`)."""
        model = model_version or self.pipeline.model_version
        found = self.pipeline.analyze_batch([img.pixels for img in images], embed=True,
                                            model_version=model)
        return [AnalysedImage(img.sha256, img.width, img.height, faces, model)
                for img, faces in zip(images, found)]


def check_enum(value: Any, allowed: Sequence[str], field: str) -> str:
    """`value` if it is one of `allowed`, else InvalidParameterException."""
    if not isinstance(value, str) or value not in allowed:
        raise InvalidParameterException(f"{field} must be one of {', '.join(allowed)}.")
    return value


def check_number(value: Any, low: float, high: float, field: str) -> float:
    """A float within [low, high], else InvalidParameterException (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidParameterException(f"{field} must be a number.")
    if not (low <= float(value) <= high):
        raise InvalidParameterException(f"{field} must be between {low:g} and {high:g}.")
    return float(value)
