"""The ledger: a tamper-evident record of every operation that touches biometric data, with the
collection policies, human review, retention, reports and case exports computed from it.

    events.py     the typed Event and its canonical JSON
    chain.py      appending to the hash chain (serialized), reading it, anchors
    verify.py     walking the chain and naming the first event that is not as written
    segment.py    checking an exported stretch of the chain without the database (stdlib only)
    audit.py      the hook every service operation runs inside (policy check + event)
    policy.py     per-collection rules
    review.py     the human review queue for identification-mode results
    retention.py  retention clocks and the FaceRemover protocol the sweep deletes through
    report.py     transparency reports (JSON + self-contained HTML with inline SVG)
    export.py     per-case disclosure bundles with their verifiable chain segment
"""

from .audit import AuditedOperation, audited
from .chain import Anchor, Ledger
from .events import ChainedEvent, Event
from .policy import CollectionPolicy
from .retention import FaceRemover
from .verify import Verification, verify

__all__ = [
    "Anchor",
    "AuditedOperation",
    "ChainedEvent",
    "CollectionPolicy",
    "Event",
    "FaceRemover",
    "Ledger",
    "Verification",
    "audited",
    "verify",
]
