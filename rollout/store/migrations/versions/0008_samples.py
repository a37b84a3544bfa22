"""samples and their grades: inputs and answers kept for online judges and eval export

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 22:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rollout.store.types import BigId, UTCDateTime

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('samples',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('rollout_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.Integer(), nullable=False),
    sa.Column('variant', sa.String(length=100), nullable=False),
    sa.Column('stratum', sa.String(length=64), nullable=False),
    sa.Column('unit_hash', sa.BigInteger(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('pair_id', sa.BigInteger(), nullable=True),
    sa.Column('category', sa.String(length=100), nullable=True),
    sa.Column('input', sa.Text(), nullable=False),
    sa.Column('output', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_samples'))
    )
    op.create_index('ix_samples_flag_id_rollout_id', 'samples', ['flag_id', 'rollout_id'], unique=False)
    op.create_table('sample_scores',
    sa.Column('sample_id', sa.BigInteger(), nullable=False),
    sa.Column('judge', sa.String(length=64), nullable=False),
    sa.Column('score', sa.Float(precision=53), nullable=True),
    sa.Column('cost_usd', sa.Float(precision=53), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('scored_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_sample_scores_sample_id_samples'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sample_id', 'judge', name=op.f('pk_sample_scores'))
    )


def downgrade() -> None:
    op.drop_table('sample_scores')
    op.drop_index('ix_samples_flag_id_rollout_id', table_name='samples')
    op.drop_table('samples')
