"""flags, rollouts, audit log and outcomes

Revision ID: 0001
Revises:
Create Date: 2026-11-28 20:26:27.522438
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from rollout.store.types import UTCDateTime

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('namespace', sa.String(length=64), nullable=False),
    sa.Column('flag_key', sa.String(length=100), nullable=True),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=48), nullable=False),
    sa.Column('before', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('after', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index('ix_audit_log_flag_key_created_at', 'audit_log', ['namespace', 'flag_key', 'created_at'], unique=False)
    op.create_table('flags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('namespace', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('salt', sa.String(length=64), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('baseline', sa.String(length=100), nullable=False),
    sa.Column('candidate', sa.String(length=100), nullable=False),
    sa.Column('shadow_bp', sa.Integer(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flags')),
    sa.UniqueConstraint('namespace', 'key', name=op.f('uq_flags_namespace_key'))
    )
    op.create_table('allocations',
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('stratum', sa.String(length=64), nullable=False),
    sa.Column('basis_points', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['flag_id'], ['flags.id'], name=op.f('fk_allocations_flag_id_flags'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('flag_id', 'stratum', name=op.f('pk_allocations'))
    )
    op.create_table('outcomes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('rollout_id', sa.Integer(), nullable=True),
    sa.Column('stage', sa.Integer(), nullable=False),
    sa.Column('variant', sa.String(length=100), nullable=False),
    sa.Column('stratum', sa.String(length=64), nullable=False),
    sa.Column('unit_hash', sa.BigInteger(), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Float(precision=53), nullable=False),
    sa.Column('recorded_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outcomes'))
    )
    op.create_index('ix_outcomes_flag_id_rollout_id_metric', 'outcomes', ['flag_id', 'rollout_id', 'metric'], unique=False)
    op.create_table('rollouts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('active_flag_id', sa.Integer(), nullable=True),
    sa.Column('plan', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('stage_index', sa.Integer(), nullable=False),
    sa.Column('flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('started_by', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_expires_at', UTCDateTime(), nullable=True),
    sa.Column('started_at', UTCDateTime(), nullable=False),
    sa.Column('stage_started_at', UTCDateTime(), nullable=True),
    sa.Column('waiting_for', sa.Integer(), nullable=True),
    sa.Column('waiting_since', UTCDateTime(), nullable=True),
    sa.Column('namespace', sa.String(length=64), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.Column('ended_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['flag_id'], ['flags.id'], name=op.f('fk_rollouts_flag_id_flags'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rollouts')),
    sa.UniqueConstraint('active_flag_id', name=op.f('uq_rollouts_active_flag_id'))
    )
    op.create_index(op.f('ix_rollouts_flag_id'), 'rollouts', ['flag_id'], unique=False)
    op.create_table('strata',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('rules', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['flag_id'], ['flags.id'], name=op.f('fk_strata_flag_id_flags'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_strata')),
    sa.UniqueConstraint('flag_id', 'name', name=op.f('uq_strata_flag_id_name')),
    sa.UniqueConstraint('flag_id', 'position', name=op.f('uq_strata_flag_id_position'))
    )
    op.create_table('variants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.ForeignKeyConstraint(['flag_id'], ['flags.id'], name=op.f('fk_variants_flag_id_flags'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_variants')),
    sa.UniqueConstraint('flag_id', 'key', name=op.f('uq_variants_flag_id_key'))
    )
    op.create_table('approvals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rollout_id', sa.Integer(), nullable=False),
    sa.Column('stage_index', sa.Integer(), nullable=False),
    sa.Column('approved', sa.Boolean(), nullable=False),
    sa.Column('approver', sa.String(length=200), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], name=op.f('fk_approvals_rollout_id_rollouts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_approvals'))
    )
    op.create_index(op.f('ix_approvals_rollout_id'), 'approvals', ['rollout_id'], unique=False)
    op.create_table('decisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rollout_id', sa.Integer(), nullable=False),
    sa.Column('sequence', sa.Integer(), nullable=False),
    sa.Column('stage_index', sa.Integer(), nullable=False),
    sa.Column('verdict', sa.String(length=24), nullable=False),
    sa.Column('action', sa.String(length=48), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['rollout_id'], ['rollouts.id'], name=op.f('fk_decisions_rollout_id_rollouts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_decisions')),
    sa.UniqueConstraint('rollout_id', 'sequence', name=op.f('uq_decisions_rollout_id_sequence'))
    )

    _make_audit_log_append_only()

def downgrade() -> None:
    _drop_audit_log_guards()
    op.drop_table('decisions')
    op.drop_index(op.f('ix_approvals_rollout_id'), table_name='approvals')
    op.drop_table('approvals')
    op.drop_table('variants')
    op.drop_table('strata')
    op.drop_index(op.f('ix_rollouts_flag_id'), table_name='rollouts')
    op.drop_table('rollouts')
    op.drop_index('ix_outcomes_flag_id_rollout_id_metric', table_name='outcomes')
    op.drop_table('outcomes')
    op.drop_table('allocations')
    op.drop_table('flags')
    op.drop_index('ix_audit_log_flag_key_created_at', table_name='audit_log')
    op.drop_table('audit_log')


# The audit log is the record of who changed what; the database itself refuses
# to rewrite or erase it, whatever code (ours or an operator's) asks.
_GUARDED = ("UPDATE", "DELETE")


def _make_audit_log_append_only() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
            END $$
            """
        )
        for verb in _GUARDED:
            op.execute(
                f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
            )
    else:
        for verb in _GUARDED:
            op.execute(
                f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, 'audit_log is append-only ({verb} refused)'); END"
            )


def _drop_audit_log_guards() -> None:
    for verb in _GUARDED:
        op.execute(f"DROP TRIGGER IF EXISTS audit_log_no_{verb.lower()}" +
                   (" ON audit_log" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
