"""guardians' controls: student limits and face categories, school limit policies, meal periods

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 16:45:00

Issue 10 (COMPLIANCE rules 15-16). ``student_controls`` holds what a student's guardians set,
``school_limit_policies`` the school's defaults and ceilings, ``stores.meal_periods`` the meal
periods a per-meal-period limit counts in. All new and nullable: with nothing set, no limit
applies, so existing schools behave as before.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('student_controls',
    sa.Column('student_id', sa.String(length=40), nullable=False),
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('per_payment', sa.BigInteger(), nullable=True),
    sa.Column('per_meal_period', sa.BigInteger(), nullable=True),
    sa.Column('per_day', sa.BigInteger(), nullable=True),
    sa.Column('per_week', sa.BigInteger(), nullable=True),
    sa.Column('face_categories', sa.JSON(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.ForeignKeyConstraint(['student_id'], ['students.id'], ),
    sa.PrimaryKeyConstraint('student_id')
    )
    with op.batch_alter_table('student_controls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_student_controls_school_id'), ['school_id'], unique=False)

    op.create_table('school_limit_policies',
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('defaults', sa.JSON(), nullable=False),
    sa.Column('ceilings', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('school_id')
    )
    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.add_column(sa.Column('meal_periods', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.drop_column('meal_periods')
    op.drop_table('school_limit_policies')
    with op.batch_alter_table('student_controls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_student_controls_school_id'))
    op.drop_table('student_controls')
