"""Database schema (SQLAlchemy Core); alembic migrations mirror it."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()


uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False, index=True),
    sa.Column("length", sa.BigInteger, nullable=True),
    sa.Column("upload_offset", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("metadata_raw", sa.Text, nullable=True),
    sa.Column("concat", sa.Text, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("file_id", sa.String(64), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("md5", sa.String(32), nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("error_detail", sa.Text, nullable=True),
    sa.Column("client_address", sa.String(45), nullable=True),
    sa.Index("ix_uploads_status_expires_at", "status", "expires_at"),
)

# Cross-node leases (PostgreSQL locker); a row per held upload.
upload_locks = sa.Table(
    "upload_locks",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

# Durable jobs (`OperationKind`): claimed by one node at a time, retried with backoff; `result`
# holds the operation's state as JSON (versioned; what a retry must reuse, the outcome).
operations = sa.Table(
    "operations",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("step", sa.String(32), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("result", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_operations_status_next_attempt_at", "status", "next_attempt_at"),
    sa.Index("ix_operations_subject", "subject"),
)

# The catalog: one row per stored file.
files = sa.Table(
    "files",
    metadata,
    sa.Column("file_id", sa.String(36), primary_key=True),
    sa.Column("upload_id", sa.String(32), nullable=False, unique=True),
    sa.Column("element_id", sa.String(64), nullable=False),
    sa.Column("storage_filename", sa.Text, nullable=False),
    sa.Column("storage_path", sa.Text, nullable=False),
    sa.Column("original_filename", sa.Text, nullable=False),
    sa.Column("content_type", sa.String(255), nullable=False),
    sa.Column("declared_type", sa.String(255), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("stored_size", sa.BigInteger, nullable=False),
    sa.Column("codec", sa.String(16), nullable=True),
    sa.Column("md5", sa.String(32), nullable=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("stored_sha256", sa.String(64), nullable=False),
    sa.Column("retention_policy", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_files_created_at", "created_at", "file_id"),
    sa.Index("ix_files_owner_created_at", "owner", "created_at", "file_id"),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("address", sa.String(45), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Index("ix_audit_events_subject", "subject"),
    sa.Index("ix_audit_events_at", "at"),
    sa.Index("ix_audit_events_actor", "actor"),
)
