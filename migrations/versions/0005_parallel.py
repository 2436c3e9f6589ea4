"""Runs across several processes: ``runs.gpus`` and ``runs.parallel`` (issue 16).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 00:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("gpus", sa.Integer(), nullable=False, server_default="1"))
    op.add_column(
        "runs", sa.Column("parallel", sa.String(length=8), nullable=False, server_default="none")
    )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("parallel")
        batch.drop_column("gpus")
