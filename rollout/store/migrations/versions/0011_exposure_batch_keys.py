"""exposure batch keys: the highest batch stored per writer, so a retried exposure batch counts once

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 01:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rollout.store.types import UTCDateTime

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('exposure_sources',
    sa.Column('source', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('stored_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('source', name=op.f('pk_exposure_sources'))
    )


def downgrade() -> None:
    op.drop_table('exposure_sources')
