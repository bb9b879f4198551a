"""files.md5 may be empty: UPLOAD_DIGESTS=sha256 computes no MD5

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.alter_column("md5", existing_type=sa.String(32), nullable=True)


def downgrade() -> None:
    # Files stored without an MD5 get an empty one: the column may not hold NULL any more.
    op.execute("UPDATE files SET md5 = '' WHERE md5 IS NULL")
    with op.batch_alter_table("files") as batch:
        batch.alter_column("md5", existing_type=sa.String(32), nullable=False)
