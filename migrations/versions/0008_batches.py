"""batches

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "owner_key_id",
            sa.Integer(),
            sa.ForeignKey("api_keys.id", name="fk_batches_owner_key_id"),
            nullable=True,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("owner_key_id", "name", name="uq_batches_owner_name"),
    )
    op.create_index("ix_batches_owner_key_id", "batches", ["owner_key_id"])
    with op.batch_alter_table("jobs") as table:
        table.add_column(sa.Column("batch_id", sa.String(length=32), nullable=True))
        table.add_column(sa.Column("batch_row", sa.Integer(), nullable=True))
        table.add_column(sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false()))
        table.create_foreign_key("fk_jobs_batch_id", "batches", ["batch_id"], ["id"])
        table.create_unique_constraint("uq_jobs_batch_row", ["batch_id", "batch_row"])
        table.create_index("ix_jobs_batch_id", ["batch_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        table.drop_index("ix_jobs_batch_id")
        table.drop_constraint("uq_jobs_batch_row", type_="unique")
        table.drop_constraint("fk_jobs_batch_id", type_="foreignkey")
        table.drop_column("held")
        table.drop_column("batch_row")
        table.drop_column("batch_id")
    op.drop_index("ix_batches_owner_key_id", table_name="batches")
    op.drop_table("batches")
