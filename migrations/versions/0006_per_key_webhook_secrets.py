"""per-key webhook secrets

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.add_column(sa.Column("webhook_secret", sa.String(length=64), nullable=True))
        table.add_column(sa.Column("previous_webhook_secret", sa.String(length=64), nullable=True))
        table.add_column(
            sa.Column("webhook_secret_rotated_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.drop_column("webhook_secret_rotated_at")
        table.drop_column("previous_webhook_secret")
        table.drop_column("webhook_secret")
