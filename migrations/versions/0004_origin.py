"""Origin of experiments and studies: where they were started (api, cli, demo, benchmark).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("experiments", "search_studies")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table,
            sa.Column("origin", sa.String(length=16), nullable=False, server_default="api"),
        )
    # the demo recorded its experiments with owner "demo" before origins existed
    op.execute("UPDATE experiments SET origin = 'demo' WHERE owner = 'demo'")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("origin")
