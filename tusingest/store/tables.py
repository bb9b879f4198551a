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
