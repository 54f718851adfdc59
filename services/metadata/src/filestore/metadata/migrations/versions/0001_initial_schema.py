"""Initial schema: files, blobs, uploads, grants, derivatives, processing results, quotas,
idempotency keys.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("storage_key", sa.String(length=1024), nullable=False),
        sa.Column("ref_count", sa.Integer(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("ref_count >= 0", name=op.f("ck_blobs_ref_count_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blobs")),
        sa.UniqueConstraint("tenant", "sha256", name=op.f("uq_blobs_tenant_sha256")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=255), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("request_hash", sa.String(length=128), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "method", "request_id", name=op.f("pk_idempotency_keys")),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"], unique=False)

    op.create_table(
        "quotas",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("limit_bytes", sa.BigInteger(), nullable=False),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("reserved_bytes", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("limit_bytes >= 0", name=op.f("ck_quotas_limit_non_negative")),
        sa.CheckConstraint("reserved_bytes >= 0", name=op.f("ck_quotas_reserved_non_negative")),
        sa.CheckConstraint("used_bytes >= 0", name=op.f("ck_quotas_used_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quotas")),
        sa.UniqueConstraint("tenant", "owner", name=op.f("uq_quotas_tenant_owner")),
    )
    op.create_table(
        "files",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("declared_content_type", sa.String(length=255), nullable=False),
        sa.Column("sniffed_content_type", sa.String(length=255), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("verified_sha256", sa.String(length=64), nullable=True),
        sa.Column("storage_key", sa.String(length=1024), nullable=False),
        sa.Column("blob_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("extracted_text", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('PENDING', 'UPLOADED', 'PROCESSING', 'READY', 'QUARANTINED', 'FAILED', 'DELETED')",
            name=op.f("ck_files_status"),
        ),
        sa.CheckConstraint("visibility IN ('PRIVATE', 'PUBLIC')", name=op.f("ck_files_visibility")),
        sa.CheckConstraint("size >= 0", name=op.f("ck_files_size_non_negative")),
        sa.ForeignKeyConstraint(
            ["blob_id"], ["blobs.id"], name=op.f("fk_files_blob_id_blobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
    )
    op.create_index(op.f("ix_files_blob_id"), "files", ["blob_id"], unique=False)
    op.create_index("ix_files_tenant_created_at_id", "files", ["tenant", "created_at", "id"], unique=False)
    op.create_index(
        "ix_files_tenant_owner_created_at_id", "files", ["tenant", "owner", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_files_tenant_status_created_at_id",
        "files",
        ["tenant", "status", "created_at", "id"],
        unique=False,
    )

    op.create_table(
        "derivatives",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name=op.f("fk_derivatives_file_id_files"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_derivatives")),
        sa.UniqueConstraint("file_id", "kind", name=op.f("uq_derivatives_file_id_kind")),
    )
    op.create_table(
        "grants",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("principal", sa.String(length=255), nullable=False),
        sa.Column("permission", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("permission IN ('READ', 'WRITE')", name=op.f("ck_grants_permission")),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name=op.f("fk_grants_file_id_files"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
    )
    op.create_index("ix_grants_file_id_principal", "grants", ["file_id", "principal"], unique=False)

    op.create_table(
        "processing_results",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('PENDING', 'PASSED', 'FAILED', 'SKIPPED', 'ERROR')",
            name=op.f("ck_processing_results_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name=op.f("fk_processing_results_file_id_files"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processing_results")),
        sa.UniqueConstraint("file_id", "step", name=op.f("uq_processing_results_file_id_step")),
    )
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("storage_upload_id", sa.String(length=1024), nullable=True),
        sa.Column("part_size", sa.BigInteger(), nullable=False),
        sa.Column("part_count", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reserved_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reaper_lock_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('SINGLE', 'MULTIPART', 'POST_POLICY', 'DEDUP')", name=op.f("ck_uploads_kind")
        ),
        sa.CheckConstraint(
            "state IN ('OPEN', 'COMPLETED', 'ABORTED', 'EXPIRED')", name=op.f("ck_uploads_state")
        ),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name=op.f("fk_uploads_file_id_files"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
    )
    op.create_index("ix_uploads_file_id", "uploads", ["file_id"], unique=False)
    op.create_index("ix_uploads_state_expires_at", "uploads", ["state", "expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_uploads_state_expires_at", table_name="uploads")
    op.drop_index("ix_uploads_file_id", table_name="uploads")

    op.drop_table("uploads")
    op.drop_table("processing_results")
    op.drop_index("ix_grants_file_id_principal", table_name="grants")

    op.drop_table("grants")
    op.drop_table("derivatives")
    op.drop_index("ix_files_tenant_status_created_at_id", table_name="files")
    op.drop_index("ix_files_tenant_owner_created_at_id", table_name="files")
    op.drop_index("ix_files_tenant_created_at_id", table_name="files")
    op.drop_index(op.f("ix_files_blob_id"), table_name="files")

    op.drop_table("files")
    op.drop_table("quotas")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")

    op.drop_table("idempotency_keys")
    op.drop_table("blobs")
