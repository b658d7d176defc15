"""served models (the model registry)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "served_models",
        sa.Column("hostname", sa.String(length=200), primary_key=True),
        sa.Column("model", sa.String(length=200), primary_key=True),
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column("pipeline", sa.String(length=100), nullable=False),
        sa.Column("native_width", sa.Integer(), nullable=True),
        sa.Column("native_height", sa.Integer(), nullable=True),
        sa.Column("samplers", sa.JSON(), nullable=False),
        sa.Column("adapters", sa.JSON(), nullable=False),
        sa.Column("refused", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("served_models")
