"""batching and latent caches

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
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
    op.create_table(
        "latent_cache",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("latent_uri", sa.Text(), nullable=False),
        sa.Column("source_job_id", sa.String(length=32), nullable=True),
        sa.Column("source_image", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("latent_cache", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_latent_cache_key"), ["key"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_latent_cache_last_used_at"), ["last_used_at"], unique=False
        )

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_key", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_batch_key"), ["batch_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_batch_key"))
        batch_op.drop_column("batch_key")

    with op.batch_alter_table("latent_cache", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_latent_cache_last_used_at"))
        batch_op.drop_index(batch_op.f("ix_latent_cache_key"))

    op.drop_table("latent_cache")
