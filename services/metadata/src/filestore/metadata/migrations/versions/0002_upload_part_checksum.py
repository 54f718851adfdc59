"""uploads.part_checksum: the checksum every part of a multipart upload carries (storage is told when
the multipart upload is created, and S3 then requires it on every part and at completion).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite adds a CHECK constraint only by rebuilding the table.
    with op.batch_alter_table("uploads") as uploads:
        uploads.add_column(
            sa.Column("part_checksum", sa.String(length=16), server_default="NONE", nullable=False)
        )
        uploads.create_check_constraint(
            op.f("ck_uploads_part_checksum"), "part_checksum IN ('NONE', 'CRC32', 'SHA256')"
        )


def downgrade() -> None:
    with op.batch_alter_table("uploads") as uploads:
        uploads.drop_constraint(op.f("ck_uploads_part_checksum"), type_="check")
        uploads.drop_column("part_checksum")
