"""nonce fallbacks: until when nonces go to the database as well as Redis

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('nonce_fallbacks',
    sa.Column('prefix', sa.String(length=200), nullable=False),
    sa.Column('until', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('prefix')
    )


def downgrade() -> None:
    op.drop_table('nonce_fallbacks')
