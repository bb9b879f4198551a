"""uploads: tus upload sessions

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
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
    )
    op.create_index("ix_uploads_owner", "uploads", ["owner"])
    op.create_index("ix_uploads_status_expires_at", "uploads", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_uploads_status_expires_at", table_name="uploads")
    op.drop_index("ix_uploads_owner", table_name="uploads")
    op.drop_table("uploads")
