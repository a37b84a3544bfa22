"""shadow output keys: (pair_id, variant) unique, so a shadow-output batch retried after a lost reply stores once

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 02:35:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Replays stored before this revision: keep the first copy of each arm's output of a pair.
    op.execute("DELETE FROM shadow_outputs WHERE id NOT IN "
               "(SELECT min(id) FROM shadow_outputs GROUP BY pair_id, variant)")
    op.drop_index('ix_shadow_outputs_pair_id', table_name='shadow_outputs')
    op.create_index('ux_shadow_outputs_pair_variant', 'shadow_outputs', ['pair_id', 'variant'], unique=True)


def downgrade() -> None:
    op.drop_index('ux_shadow_outputs_pair_variant', table_name='shadow_outputs')
    op.create_index('ix_shadow_outputs_pair_id', 'shadow_outputs', ['pair_id'])
