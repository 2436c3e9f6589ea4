"""Owners and sessions: admin keys, stored web sessions, idempotency keys unique per owner.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# 0001 declared ``UniqueConstraint("idempotency_key")`` unnamed: Postgres calls it this.
PG_OLD_UNIQUE = "experiments_idempotency_key_key"
NEW_UNIQUE = "uq_experiments_owner_key"


def _experiments(name: str, columns: list[str]) -> sa.Table:
    """The experiments table as 0001 created it, unique on ``columns`` (SQLite rebuilds it)."""
    return sa.Table(
        "experiments",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(*columns, name=name),
    )


def _set_unique(old: str, new: str, columns: list[str]) -> None:
    """Replace the unique constraint ``old`` of experiments by ``new`` on ``columns``."""
    if op.get_bind().dialect.name == "sqlite":  # unnamed constraints: rebuild the table
        with op.batch_alter_table(
            "experiments", recreate="always", copy_from=_experiments(new, columns)
        ) as batch_op:
            batch_op.alter_column("owner", existing_type=sa.String(length=128))
        return
    op.drop_constraint(old, "experiments", type_="unique")
    op.create_unique_constraint(new, "experiments", columns)


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_sessions_key_id"), ["key_id"], unique=False)
    _set_unique(PG_OLD_UNIQUE, NEW_UNIQUE, ["owner", "idempotency_key"])


def downgrade() -> None:
    # Fails if two owners used the same key since: that is the data this revision allows.
    _set_unique(NEW_UNIQUE, PG_OLD_UNIQUE, ["idempotency_key"])
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_sessions_key_id"))
    op.drop_table("web_sessions")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("is_admin")
