"""outbox: the resource an event is about and that resource's version

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 16:40:00

Issue 9. ``resource_id`` is written with the event (the payment, refund, consent, ... it is
about); ``resource_version`` is given by the relay with the sequence: 1 for the first event of
a resource, one more for each later one, so a receiver can order one resource's events by it.
Events relayed before this revision keep both NULL (their body says ``"version": null``).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resource_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('resource_version', sa.Integer(), nullable=True))
        batch_op.create_index('ix_outbox_resource', ['resource_id', 'resource_version'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_resource')
        batch_op.drop_column('resource_version')
        batch_op.drop_column('resource_id')
