"""feedback comments: a user's comment on what they were served, kept where opted in

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 01:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rollout.store.types import BigId, UTCDateTime

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('feedback_comments',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('rollout_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.Integer(), nullable=False),
    sa.Column('variant', sa.String(length=100), nullable=False),
    sa.Column('stratum', sa.String(length=64), nullable=False),
    sa.Column('unit_hash', sa.BigInteger(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('source', sa.BigInteger(), nullable=True),
    sa.Column('seq', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feedback_comments')),
    sa.UniqueConstraint('source', 'seq', name=op.f('uq_feedback_comments_source_seq'))
    )
    op.create_index('ix_feedback_comments_flag_id_rollout_id', 'feedback_comments', ['flag_id', 'rollout_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_feedback_comments_flag_id_rollout_id', table_name='feedback_comments')
    op.drop_table('feedback_comments')
