"""outcome idempotency keys: (source, seq, metric) unique, so a replayed batch stores nothing twice

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot add a constraint in place; it rebuilds the table.
    with op.batch_alter_table('outcomes') as batch:
        batch.add_column(sa.Column('source', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('seq', sa.BigInteger(), nullable=True))
        batch.create_unique_constraint(op.f('uq_outcomes_source_seq_metric'), ['source', 'seq', 'metric'])


def downgrade() -> None:
    with op.batch_alter_table('outcomes') as batch:
        batch.drop_constraint(op.f('uq_outcomes_source_seq_metric'), type_='unique')
        batch.drop_column('seq')
        batch.drop_column('source')
