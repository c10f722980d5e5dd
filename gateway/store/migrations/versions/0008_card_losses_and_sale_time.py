"""card loss history and payments' sale time

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 10:00:00

Decision 0019. ``card_losses`` keeps every loss report of a card; ``payments.occurred_at`` is
the sale time, apart from ``created_at``, the time the gateway took the payment.

Backfill:
- ``occurred_at`` = ``created_at`` for every payment: online payments were taken when sold, and
  offline records were stored with their sale time as ``created_at`` until now;
- for a payment posted from an offline record, ``created_at`` becomes the time the record was
  stored (``offline_records.created_at``), which is when it was posted;
- each card that is lost now gets one open loss from the time its status changed (or, unknown,
  from the card's creation: holding a record for review is the safe side). Earlier reports that
  were cancelled before this release were not kept anywhere and cannot be recovered here; the
  e-card system still judges the records it receives by its own full history.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('card_losses',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('card_id', sa.String(length=40), nullable=False),
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('lost_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('found_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['card_id'], ['cards.id'], ),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('card_losses', schema=None) as batch_op:
        batch_op.create_index('ix_card_losses_card', ['card_id', 'lost_at'], unique=False)

    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=True))

    op.execute("UPDATE payments SET occurred_at = created_at")
    op.execute(
        "UPDATE payments SET created_at = ("
        " SELECT MIN(o.created_at) FROM offline_records o WHERE o.payment_id = payments.id)"
        " WHERE id IN (SELECT payment_id FROM offline_records WHERE payment_id IS NOT NULL)"
    )
    op.execute(
        "INSERT INTO card_losses (id, card_id, school_id, lost_at, found_at)"
        " SELECT 'cls_' || id, id, school_id, COALESCE(status_changed_at, created_at), NULL"
        " FROM cards WHERE status = 'lost'"
    )

    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.alter_column('occurred_at', existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.create_index('ix_payments_student_occurred', ['student_id', 'occurred_at'], unique=False)


def downgrade() -> None:
    # the old meaning: an offline payment's created_at was its sale time
    op.execute(
        "UPDATE payments SET created_at = occurred_at"
        " WHERE id IN (SELECT payment_id FROM offline_records WHERE payment_id IS NOT NULL)"
    )
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index('ix_payments_student_occurred')
        batch_op.drop_column('occurred_at')

    with op.batch_alter_table('card_losses', schema=None) as batch_op:
        batch_op.drop_index('ix_card_losses_card')

    op.drop_table('card_losses')
