"""The `faceledger` command line: thin adapters over `faceledger.service`.

Each group of commands lives in its own module and registers itself on `main`.
"""

from . import images  # noqa: F401  (registers detect, compare, demo)
from .app import main

__all__ = ["main"]
