"""The review console: server-rendered pages for reviewers, auditors and admins at /console."""

from .app import Console, build_console

__all__ = ["Console", "build_console"]
