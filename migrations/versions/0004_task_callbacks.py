"""task callbacks: completion callbacks of task APIs (Kie.ai callBackUrl), keyed by their URL token

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_callbacks",
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=200), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_task_callbacks")),
    )
    with op.batch_alter_table("task_callbacks", schema=None) as batch_op:
        batch_op.create_index("ix_task_callbacks_provider_remote", ["provider", "remote_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("task_callbacks", schema=None) as batch_op:
        batch_op.drop_index("ix_task_callbacks_provider_remote")
    op.drop_table("task_callbacks")
