"""outcome pairs for shadow runs, eval gate results

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 21:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rollout.store.types import UTCDateTime

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('outcomes') as batch:
        batch.add_column(sa.Column('pair_id', sa.BigInteger(), nullable=True))
    op.create_table('eval_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rollout_id', sa.Integer(), nullable=False),
    sa.Column('stage_index', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.String(length=200), nullable=False),
    sa.Column('category', sa.String(length=100), nullable=False),
    sa.Column('variant', sa.String(length=100), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('score', sa.Float(precision=53), nullable=True),
    sa.Column('latency_ms', sa.Float(precision=53), nullable=True),
    sa.Column('cost', sa.Float(precision=53), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], name=op.f('fk_eval_results_rollout_id_rollouts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_eval_results')),
    sa.UniqueConstraint('rollout_id', 'stage_index', 'case_id', 'variant', name=op.f('uq_eval_results_rollout_id_stage_index_case_id_variant'))
    )


def downgrade() -> None:
    op.drop_table('eval_results')
    with op.batch_alter_table('outcomes') as batch:
        batch.drop_column('pair_id')
