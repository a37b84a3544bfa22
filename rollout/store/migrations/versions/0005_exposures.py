"""exposures (how often each unit was served each variant, per stage and stratum) and namespace secrets

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rollout.store.types import UTCDateTime

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('exposures',
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('rollout_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.Integer(), nullable=False),
    sa.Column('variant', sa.String(length=100), nullable=False),
    sa.Column('stratum', sa.String(length=64), nullable=False),
    sa.Column('unit_hash', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('first_at', UTCDateTime(), nullable=False),
    sa.Column('last_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('flag_id', 'rollout_id', 'stage', 'variant', 'stratum', 'unit_hash',
                            name=op.f('pk_exposures'))
    )
    op.create_table('namespace_secrets',
    sa.Column('namespace', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('retired_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('namespace', 'purpose', 'version', name=op.f('pk_namespace_secrets'))
    )


def downgrade() -> None:
    op.drop_table('namespace_secrets')
    op.drop_table('exposures')
