"""image to image and captions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("caption", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("input_image_uri", sa.Text(), nullable=True))
        batch_op.alter_column("prompt", existing_type=sa.TEXT(), nullable=True)


def downgrade() -> None:
    # Caption-only jobs have no prompt of their own: keep their caption as the prompt.
    op.execute("UPDATE jobs SET prompt = coalesce(caption, '') WHERE prompt IS NULL")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("prompt", existing_type=sa.TEXT(), nullable=False)
        batch_op.drop_column("input_image_uri")
        batch_op.drop_column("caption")
