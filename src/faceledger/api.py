"""The public Python API: `FaceLedger` runs the service in this process.

    from faceledger import FaceLedger
    fl = FaceLedger()
    fl.detect_faces("group.jpg")["FaceDetails"]
    fl.compare_faces("id-card.jpg", "selfie.jpg")["FaceMatches"]

Images are bytes, or paths to the caller's own files (the HTTP server never accepts paths).
Responses are Rekognition's shapes, as dicts.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

from .context import LOCAL, RequestContext
from .service import FaceService
from .settings import Settings
from .shapes import Shape
from .sources import ImageInput

ImageArg = ImageInput | str | PathLike[str]


def _image(image: ImageArg) -> ImageInput:
    if isinstance(image, (str, PathLike)):
        return Path(image).read_bytes()
    return image


class FaceLedger:
    """faceledger in-process: every operation of the service, with files accepted as paths."""

    def __init__(self, settings: Settings | None = None, *, service: FaceService | None = None,
                 context: RequestContext = LOCAL) -> None:
        self.service = service or FaceService(settings or Settings())
        self.context = context

    def detect_faces(self, image: ImageArg, attributes: list[str] | None = None) -> Shape:
        """DetectFaces."""
        return self.service.detect_faces(_image(image), attributes, ctx=self.context)

    def compare_faces(self, source: ImageArg, target: ImageArg,
                      similarity_threshold: float | None = None,
                      quality_filter: str | None = None) -> Shape:
        """CompareFaces."""
        return self.service.compare_faces(_image(source), _image(target), similarity_threshold,
                                          quality_filter, ctx=self.context)

    def with_context(self, **fields: Any) -> FaceLedger:
        """A client whose operations carry this purpose/case/principal."""
        ctx = RequestContext(**{**self.context.__dict__, **fields})
        return FaceLedger(service=self.service, context=ctx)
