"""shadow outputs: the arms' outputs of shadow pairs, when the plan owner opts in

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rollout.store.types import BigId, UTCDateTime

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('shadow_outputs',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('pair_id', sa.BigInteger(), nullable=False),
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('variant', sa.String(length=100), nullable=False),
    sa.Column('output', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shadow_outputs'))
    )
    op.create_index('ix_shadow_outputs_pair_id', 'shadow_outputs', ['pair_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_shadow_outputs_pair_id', table_name='shadow_outputs')
    op.drop_table('shadow_outputs')
