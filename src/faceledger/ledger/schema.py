"""The ledger's SQL tables. They live in the catalog's database so that an event is written in
the same transaction as the change it describes.

    ledger_events      the hash chain: one row per event (seq, prev, hash, body + query columns)
    ledger_head        one row: seq and hash of the last event; appenders lock it first
    ledger_anchors     chain heads that were exported for an outside party to hold
    ledger_policies    per-collection rules (JSON), changed only by admins, every change an event
    ledger_candidates  identification-mode search results awaiting human review
    ledger_reviews     each reviewer's decision on a candidate (one per reviewer)
    ledger_retention   when each indexed face's retention period started (index or renewal)
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

HASH = String(64)
TIME = String(32)  # format_time(): sortable text, identical on SQLite and PostgreSQL
NAME = String(255)

events = Table(
    "ledger_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("prev", HASH, nullable=False),
    Column("hash", HASH, nullable=False),
    Column("body", Text, nullable=False),
    # Copies of body fields for queries; `verify` checks they still equal the hashed body.
    Column("time", TIME, nullable=False),
    Column("operation", String(64), nullable=False),
    Column("principal", NAME, nullable=False),
    Column("collection", NAME),
    Column("case_ref", NAME),
    Column("purpose", NAME),
    Column("outcome", String(16), nullable=False),
    Index("ix_ledger_events_hash", "hash"),
    Index("ix_ledger_events_time", "time"),
    Index("ix_ledger_events_case", "case_ref"),
)

head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", HASH, nullable=False),
)

anchors = Table(
    "ledger_anchors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", HASH, nullable=False),
    Column("time", TIME, nullable=False),
    Column("principal", NAME, nullable=False),
)

policies = Table(
    "ledger_policies",
    metadata,
    Column("collection", NAME, primary_key=True),
    Column("body", Text, nullable=False),
    Column("updated_at", TIME, nullable=False),
    Column("updated_by", NAME, nullable=False),
)

candidates = Table(
    "ledger_candidates",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("request_id", NAME),
    Column("operation", String(64), nullable=False),
    Column("collection", NAME, nullable=False),
    Column("face_id", NAME),
    Column("user_id", NAME),
    Column("external_image_id", NAME),
    Column("similarity", Float, nullable=False),
    Column("false_match_rate", Float),
    Column("probe_sha256", HASH),
    # the probe's face box and landmarks as JSON (ratios of the probe image), for the console
    Column("probe_face", Text),
    Column("requested_by", NAME, nullable=False),
    Column("purpose", NAME),
    Column("case_ref", NAME),
    Column("required", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", TIME, nullable=False),
    Column("decided_at", TIME),
    # how a CONFLICT was resolved (JSON: By, Reason, Kept, Time); the ResolveConflict event
    # is the record, this the copy the queue reads
    Column("resolution", Text),
    Index("ix_ledger_candidates_status", "status", "collection"),
    Index("ix_ledger_candidates_request", "request_id"),
)

reviews = Table(
    "ledger_reviews",
    metadata,
    Column("candidate_id", String(36), ForeignKey("ledger_candidates.id"), primary_key=True),
    Column("reviewer", NAME, primary_key=True),
    Column("decision", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("time", TIME, nullable=False),
    # the SHA-256 of the two photos the reviewer's browser verified (CONFIRM, INCONCLUSIVE)
    Column("probe_sha256", HASH),
    Column("enrolled_sha256", HASH),
    # "independent" (blind) or "verification" (saw the earlier conclusions, by policy)
    Column("stage", String(16)),
)

retention = Table(
    "ledger_retention",
    metadata,
    Column("collection", NAME, primary_key=True),
    Column("face_id", NAME, primary_key=True),
    Column("since", TIME, nullable=False),
    Index("ix_ledger_retention_since", "collection", "since"),
)
