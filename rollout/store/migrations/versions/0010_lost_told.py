"""rollouts.lost_told_for: the expired lease whose loss was told, so `rollout.lost` goes out once per episode

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 01:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rollout.store.types import UTCDateTime

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('rollouts', sa.Column('lost_told_for', UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('rollouts') as batch:
        batch.drop_column('lost_told_for')
