"""Benchmarks: benchmarks and benchmark_cells tables; runs gain benchmark, warmup and eval columns.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 20:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "benchmarks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("workload", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False, server_default="api"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "benchmark_cells",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("benchmark_id", sa.Integer(), nullable=False),
        sa.Column("arm", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("recipe_id", sa.Integer(), nullable=False),
        sa.Column("horizon", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("optuna_study_name", sa.String(length=200), nullable=False),
        sa.Column("axes", sa.JSON(), nullable=False),
        sa.Column("trials", sa.JSON(), nullable=False),
        sa.Column("best", sa.JSON(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["benchmark_id"], ["benchmarks.id"]),
        sa.ForeignKeyConstraint(["recipe_id"], ["recipes.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("benchmark_id", "arm", "horizon"),
        sa.UniqueConstraint("optuna_study_name"),
    )
    with op.batch_alter_table("benchmark_cells", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_benchmark_cells_benchmark_id"), ["benchmark_id"], unique=False
        )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("benchmark_cell_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("bench_phase", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("bench_trial", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("warmup_frac", sa.Float(), nullable=True))
        # rows written before this revision used protocol 1 (first windows of the val split)
        batch_op.add_column(
            sa.Column("eval_protocol", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.create_index(
            batch_op.f("ix_runs_benchmark_cell_id"), ["benchmark_cell_id"], unique=False
        )
        batch_op.create_foreign_key(
            "fk_runs_benchmark_cell_id", "benchmark_cells", ["benchmark_cell_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint("fk_runs_benchmark_cell_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_runs_benchmark_cell_id"))
        batch_op.drop_column("eval_protocol")
        batch_op.drop_column("warmup_frac")
        batch_op.drop_column("bench_trial")
        batch_op.drop_column("bench_phase")
        batch_op.drop_column("benchmark_cell_id")
    with op.batch_alter_table("benchmark_cells", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_benchmark_cells_benchmark_id"))
    op.drop_table("benchmark_cells")
    op.drop_table("benchmarks")
