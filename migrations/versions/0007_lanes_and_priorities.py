"""lanes and priorities

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        table.add_column(
            sa.Column("lane", sa.String(length=16), nullable=False, server_default="interactive")
        )
        table.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    # What the scheduler reads at every claim: the runs waiting at one stage, and the runs the
    # stage started in the last minute (each owner's share).
    op.create_index("ix_stage_runs_stage_status", "stage_runs", ["stage", "status"])
    op.create_index("ix_stage_runs_stage_started_at", "stage_runs", ["stage", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_stage_runs_stage_started_at", table_name="stage_runs")
    op.drop_index("ix_stage_runs_stage_status", table_name="stage_runs")
    with op.batch_alter_table("jobs") as table:
        table.drop_column("priority")
        table.drop_column("lane")
