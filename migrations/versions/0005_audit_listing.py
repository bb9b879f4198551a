"""audit events carry the caller's address and the outcome; uploads keep the client's address;
indexes for listing files and reading the audit trail

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("client_address", sa.String(45), nullable=True))
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("address", sa.String(45), nullable=True))
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=True))
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_actor", "audit_events", ["actor"])
    op.create_index("ix_files_created_at", "files", ["created_at", "file_id"])
    op.create_index("ix_files_owner_created_at", "files", ["owner", "created_at", "file_id"])


def downgrade() -> None:
    op.drop_index("ix_files_owner_created_at", table_name="files")
    op.drop_index("ix_files_created_at", table_name="files")
    op.drop_index("ix_audit_events_actor", table_name="audit_events")
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("outcome")
        batch.drop_column("address")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("client_address")
