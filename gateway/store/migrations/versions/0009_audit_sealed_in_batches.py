"""audit entries appended unsealed, chained by the sealer

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:00:00

Decision 0021. ``audit_log.seq``, ``prev_hash`` and ``hash`` become nullable: an entry is
inserted with them NULL and the sealer fills them in. ``audit_log.mac`` authenticates an
entry's content from the moment it is written; ``audit_heads.mac`` authenticates the head.
``ix_audit_log_unsealed`` (partial, ``seq IS NULL``) is what the sealer reads.

Existing entries and heads are left exactly as they are: their ``mac`` stays NULL, which
verify accepts for entries sealed before this revision (their chain hash still covers them),
and the sealer signs a chain's head the next time it seals an entry of that chain.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.alter_column('seq', existing_type=sa.BigInteger(), nullable=True)
        batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=True)
        batch_op.alter_column('hash', existing_type=sa.String(length=64), nullable=True)
        batch_op.add_column(sa.Column('mac', sa.String(length=64), nullable=True))
        batch_op.create_index(
            'ix_audit_log_unsealed',
            ['chain', 'id'],
            unique=False,
            sqlite_where=sa.text('seq IS NULL'),
            postgresql_where=sa.text('seq IS NULL'),
        )

    with op.batch_alter_table('audit_heads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mac', sa.String(length=64), nullable=True))


def downgrade() -> None:
    # The old schema cannot hold an unsealed entry, and sealing needs the master key, which
    # migrations do not have: let a gateway of this revision seal them first.
    unsealed = op.get_bind().execute(sa.text('SELECT COUNT(*) FROM audit_log WHERE seq IS NULL')).scalar()
    if unsealed:
        raise RuntimeError(
            f'{unsealed} audit entries are not sealed yet; run the gateway until they are, then downgrade'
        )
    with op.batch_alter_table('audit_heads', schema=None) as batch_op:
        batch_op.drop_column('mac')

    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(
            'ix_audit_log_unsealed', sqlite_where=sa.text('seq IS NULL'), postgresql_where=sa.text('seq IS NULL')
        )
        batch_op.drop_column('mac')
        batch_op.alter_column('hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('seq', existing_type=sa.BigInteger(), nullable=False)
