"""Tiers and lifecycle: each file's storage class and legal hold, tenants' lifecycle rules, and the
durable log of lifecycle actions (one row per file, rule and kind).

Every existing file is in ``STANDARD`` and not held.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported: a revision must not change when application code does.
STORE_NAME_LENGTH = 63
STORAGE_CLASS_LENGTH = 32
MAX_NAME_CHARS = 255
KINDS = "'TRANSITION', 'EXPIRE', 'PURGE', 'RESTORE'"


def upgrade() -> None:
    with op.batch_alter_table("files") as files:
        files.add_column(
            sa.Column(
                "storage_class",
                sa.String(length=STORAGE_CLASS_LENGTH),
                nullable=False,
                server_default="STANDARD",
            )
        )
        files.add_column(sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "lifecycle_rules",
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("name_prefix", sa.String(length=MAX_NAME_CHARS), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("after_seconds", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("target_store", sa.String(length=STORE_NAME_LENGTH), nullable=True),
        sa.Column("target_storage_class", sa.String(length=STORAGE_CLASS_LENGTH), nullable=False),
        sa.Column("purge_after_seconds", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(f"action IN ({KINDS})", name=op.f("ck_lifecycle_rules_action")),
        sa.PrimaryKeyConstraint("tenant", "id", name=op.f("pk_lifecycle_rules")),
    )
    op.create_table(
        "lifecycle_actions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("rule_key", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("source_store", sa.String(length=STORE_NAME_LENGTH), nullable=False),
        sa.Column("source_storage_class", sa.String(length=STORAGE_CLASS_LENGTH), nullable=False),
        sa.Column("target_store", sa.String(length=STORE_NAME_LENGTH), nullable=False),
        sa.Column("target_storage_class", sa.String(length=STORAGE_CLASS_LENGTH), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"kind IN ({KINDS})", name=op.f("ck_lifecycle_actions_kind")),
        sa.CheckConstraint(
            "state IN ('CLAIMED', 'DONE', 'ANNOUNCED')", name=op.f("ck_lifecycle_actions_state")
        ),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name=op.f("fk_lifecycle_actions_file_id_files"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_actions")),
        sa.UniqueConstraint(
            "file_id", "rule_key", "kind", name=op.f("uq_lifecycle_actions_file_id_rule_key_kind")
        ),
    )
    op.create_index(
        "ix_lifecycle_actions_state_lease_until", "lifecycle_actions", ["state", "lease_until"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_lifecycle_actions_state_lease_until", table_name="lifecycle_actions")
    op.drop_table("lifecycle_actions")
    op.drop_table("lifecycle_rules")
    with op.batch_alter_table("files") as files:
        files.drop_column("legal_hold")
        files.drop_column("storage_class")
