"""files.name: at most 255 characters, the contract's limit (File.name), in the schema too.

The column was VARCHAR(1024) and the store accepted 1,024 characters while every service refused more
than 255 at the edge. Now the column is VARCHAR(255), which binds PostgreSQL, and a CHECK on
``length(name)`` binds SQLite as well (it ignores a VARCHAR's length); both count characters, as the
services do. A longer name could only have come in around the edge: it is cut to its first 255
characters rather than stopping the upgrade, so the file stays listed and readable.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported: a revision must not change when application code does.
MAX_NAME_CHARS = 255


def upgrade() -> None:
    op.execute(
        sa.text(
            f"UPDATE files SET name = substr(name, 1, {MAX_NAME_CHARS}) WHERE length(name) > {MAX_NAME_CHARS}"
        )
    )
    # Batch mode: SQLite changes a column and adds a CHECK constraint only by rebuilding the table.
    with op.batch_alter_table("files") as files:
        files.alter_column(
            "name",
            existing_type=sa.String(length=1024),
            type_=sa.String(length=MAX_NAME_CHARS),
            existing_nullable=False,
        )
        files.create_check_constraint(op.f("ck_files_name_length"), f"length(name) <= {MAX_NAME_CHARS}")


def downgrade() -> None:
    with op.batch_alter_table("files") as files:
        files.drop_constraint(op.f("ck_files_name_length"), type_="check")
        files.alter_column(
            "name",
            existing_type=sa.String(length=MAX_NAME_CHARS),
            type_=sa.String(length=1024),
            existing_nullable=False,
        )
