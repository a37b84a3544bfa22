"""The imperative shell's database side: models, migrations and the only code that speaks SQL.

Functions take a Session and never commit; the caller owns the transaction.
"""

from rollout.store.db import database_url, make_engine, session_factory, transaction
from rollout.store.flags import (
    AuditRecord,
    audit_log,
    create_flag,
    fingerprint,
    flag_to_json,
    get_flag,
    list_flags,
    promote,
    rollback,
    set_allocation,
    set_allocations,
    set_shadow,
)

__all__ = [
    "AuditRecord",
    "audit_log",
    "create_flag",
    "database_url",
    "fingerprint",
    "flag_to_json",
    "get_flag",
    "list_flags",
    "make_engine",
    "promote",
    "rollback",
    "session_factory",
    "set_allocation",
    "set_allocations",
    "set_shadow",
    "transaction",
]
