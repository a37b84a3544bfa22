"""The golden assignment cases (assignment.json) and helpers every evaluator's runner shares."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from rollout.core import FlagState, Stratum
from rollout.store import flags as store

SPEC = json.loads(Path(__file__).with_name("assignment.json").read_text(encoding="utf-8"))
CASES = SPEC["cases"]
CASE_IDS = [c["name"] for c in CASES]


def flag_state(key: str, spec: dict[str, Any] | None = None) -> FlagState:
    spec = spec or SPEC["flags"][key]
    return FlagState(
        key=key, salt=spec["salt"], baseline=spec["baseline"], candidate=spec["candidate"],
        version=spec["version"], phase=spec["phase"],
        strata=tuple(Stratum.from_json(s) for s in spec["strata"]),
        allocations=spec["allocations"], shadow_bp=spec["shadow_bp"],
    )


def install_spec_flags(session: Session, *, namespace: str = "default") -> None:
    """Put every flag of the spec into a database, through the store's own API."""
    for key, spec in SPEC["flags"].items():
        state = flag_state(key, spec)
        store.create_flag(session, key, variants=[state.baseline, state.candidate], actor="spec",
                          strata=state.strata, namespace=namespace, salt=state.salt)
        changes: dict[str, Callable[[], Any]] = {
            "ramping": lambda: store.set_allocations(session, key, dict(state.allocations), actor="spec",
                                                     namespace=namespace),
            "shadow": lambda: store.set_shadow(session, key, state.shadow_bp, actor="spec", namespace=namespace),
            "promoted": lambda: store.promote(session, key, actor="spec", namespace=namespace),
            "rolled_back": lambda: store.rollback(session, key, actor="spec", reason="spec", namespace=namespace),
            "inactive": lambda: None,
        }
        changes[spec["phase"]]()


def observed(result: Any) -> dict[str, Any]:
    """The fields every evaluator must agree on, as plain JSON values."""
    def plain(v: Any) -> Any:
        return getattr(v, "value", v)

    return {
        "variant": result.variant,
        "stratum": result.stratum,
        "in_shadow": result.in_shadow,
        "reason": plain(result.reason),
        "error_code": plain(result.error_code),
    }


def expected_fields(case: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in case["expected"].items() if k != "bucket"}
