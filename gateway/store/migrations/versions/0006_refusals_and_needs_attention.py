"""refusals of the gateway's requests, and the needs-attention queue

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 01:10:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ('payments', 'refunds'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('refusal', sa.String(length=80), nullable=True))
            batch_op.add_column(sa.Column('refused_since', sa.DateTime(timezone=True), nullable=True))
            # existing rows: nothing refused, nothing waiting for an operator
            batch_op.add_column(
                sa.Column('needs_attention', sa.Boolean(), nullable=False, server_default=sa.false())
            )


def downgrade() -> None:
    for table in ('refunds', 'payments'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('needs_attention')
            batch_op.drop_column('refused_since')
            batch_op.drop_column('refusal')
