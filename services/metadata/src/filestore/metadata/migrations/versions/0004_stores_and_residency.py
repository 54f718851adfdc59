"""Stores and residency: the store of each file and blob, tenants' residency policies, replicas.

Every existing row is in the store ``FILESTORE_S3_*`` configure, named ``default`` (the server
default). Blobs become unique per (tenant, store, sha256): dedup never crosses stores.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported: a revision must not change when application code does.
STORE_NAME_LENGTH = 63
DEFAULT_STORE = "default"


def _store_column() -> sa.Column[str]:
    return sa.Column(
        "store", sa.String(length=STORE_NAME_LENGTH), nullable=False, server_default=DEFAULT_STORE
    )


def upgrade() -> None:
    with op.batch_alter_table("files") as files:
        files.add_column(_store_column())
    # Batch mode: SQLite swaps a unique constraint only by rebuilding the table.
    with op.batch_alter_table("blobs") as blobs:
        blobs.add_column(_store_column())
        blobs.drop_constraint(op.f("uq_blobs_tenant_sha256"), type_="unique")
        blobs.create_unique_constraint(op.f("uq_blobs_tenant_store_sha256"), ["tenant", "store", "sha256"])
    op.create_table(
        "tenant_policies",
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("allowed_stores", sa.JSON(), nullable=False),
        sa.Column("replicate", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", name=op.f("pk_tenant_policies")),
    )
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("store", sa.String(length=STORE_NAME_LENGTH), nullable=False),
        sa.Column("storage_key", sa.String(length=1024), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('PENDING', 'READY', 'MISSING')", name=op.f("ck_replicas_state")),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name=op.f("fk_replicas_file_id_files"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replicas")),
        sa.UniqueConstraint("file_id", "store", name=op.f("uq_replicas_file_id_store")),
    )


def downgrade() -> None:
    op.drop_table("replicas")
    op.drop_table("tenant_policies")
    with op.batch_alter_table("blobs") as blobs:
        blobs.drop_constraint(op.f("uq_blobs_tenant_store_sha256"), type_="unique")
        blobs.create_unique_constraint(op.f("uq_blobs_tenant_sha256"), ["tenant", "sha256"])
        blobs.drop_column("store")
    with op.batch_alter_table("files") as files:
        files.drop_column("store")
