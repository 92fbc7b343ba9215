"""The service layer: one method per operation, the only place where vision, calibration,
storage and the ledger meet. Adapters (HTTP, CLI, console, Python API) call these methods.

Each group of operations lives in its own module as a mixin over `ServiceCore`, so that the
operations share one pipeline, one calibration and one store per process.
"""

from .collections import CollectionOperations
from .core import ServiceCore
from .governance import GovernanceOperations
from .images import ImageOperations
from .oversight import OversightOperations
from .redaction import RedactionOperations
from .reenrolment import ReenrolmentOperations
from .tagging import TaggingOperations
from .users import UserOperations
from .video import VideoOperations


class FaceService(VideoOperations, RedactionOperations, ImageOperations, OversightOperations,
                  UserOperations, ReenrolmentOperations, TaggingOperations, CollectionOperations,
                  GovernanceOperations, ServiceCore):
    """Every faceledger operation, Rekognition request and response shapes."""


__all__ = ["FaceService"]
