"""The `faceledger` command line: thin adapters over `faceledger.service`.

Each group of commands lives in its own module and registers itself on `main`.
"""

from . import images  # noqa: F401  (registers detect, compare, demo)
from . import server  # noqa: F401  (registers serve, keys)
from . import kek  # noqa: F401  (registers keys rotate-kek)
from . import ledger  # noqa: F401  (registers ledger, policy, retention, report, export)
from . import review  # noqa: F401  (registers review)
from . import evaluation  # noqa: F401  (registers calibration, evaluate)
from . import collections  # noqa: F401  (registers collection, user)
from . import redaction  # noqa: F401  (registers redact)
from .app import main

__all__ = ["main"]
