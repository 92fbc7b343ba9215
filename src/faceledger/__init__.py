"""faceledger: self-hosted face recognition with calibrated similarity and an audit ledger."""

from .api import FaceLedger
from .context import RequestContext
from .errors import FaceledgerError
from .settings import Settings

__version__ = "0.1.0"
__all__ = ["FaceLedger", "FaceledgerError", "RequestContext", "Settings", "__version__"]
