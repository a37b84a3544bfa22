"""What a flag is, as the pure core sees it: frozen values, validated once.

A flag has two arms, the baseline (what users get today) and the candidate
(the new model, prompt or agent). Strata split its users into segments by
attribute rules; each stratum has its own allocation in basis points.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from rollout.errors import InvalidFlagError

from rollout.core.policy import BUCKETS  # noqa: F401 - re-exported: flags speak basis points

DEFAULT_STRATUM = "default"
"""Units that match no stratum rule fall here; it always exists and is last."""

KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
STRATUM_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


class Phase(StrEnum):
    """Where a flag stands; evaluation reads it together with the allocations."""

    INACTIVE = "inactive"        # everyone gets the baseline
    SHADOW = "shadow"            # baseline served; a sample also runs the candidate
    RAMPING = "ramping"          # candidate for units below their stratum's allocation
    PROMOTED = "promoted"        # candidate for everyone
    ROLLED_BACK = "rolled_back"  # baseline for everyone, after a rollback


class Op(StrEnum):
    EQUALS = "equals"
    IN = "in"
    NOT_IN = "not_in"
    EXISTS = "exists"


@dataclass(frozen=True, slots=True)
class Condition:
    """One attribute test. `value` is a scalar for equals, a tuple for in/not_in, a bool for exists.

    Missing attributes: equals and in do not match, not_in matches (the unit is
    indeed not in the list), exists matches when `value` is False.
    """

    attribute: str
    op: Op
    value: Any

    def __post_init__(self) -> None:
        if not isinstance(self.attribute, str) or not self.attribute:
            raise InvalidFlagError("a condition needs a non-empty attribute name")
        op = Op(self.op) if self.op in Op._value2member_map_ else None
        if op is None:
            raise InvalidFlagError(
                f"unknown operator {self.op!r} on {self.attribute!r}; use one of {[o.value for o in Op]}"
            )
        object.__setattr__(self, "op", op)
        if op in (Op.IN, Op.NOT_IN):
            if isinstance(self.value, (str, bytes)) or not isinstance(self.value, Sequence):
                raise InvalidFlagError(f"{op.value} on {self.attribute!r} needs a list of values")
            for v in self.value:
                _check_scalar(self.attribute, v)
            object.__setattr__(self, "value", tuple(self.value))
        elif op is Op.EXISTS:
            if not isinstance(self.value, bool):
                raise InvalidFlagError(f"exists on {self.attribute!r} needs true or false")
        else:
            _check_scalar(self.attribute, self.value)

    def to_json(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"attribute": self.attribute, self.op.value: value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Condition:
        """Read `{attribute: tier, equals: free}` (the plan's and the spec's form)."""
        if not isinstance(data, Mapping) or "attribute" not in data:
            raise InvalidFlagError(f"a condition needs an 'attribute' and one operator, got {data!r}")
        ops = [k for k in data if k != "attribute"]
        if len(ops) != 1:
            raise InvalidFlagError(
                f"a condition on {data.get('attribute')!r} needs exactly one operator "
                f"({', '.join(o.value for o in Op)}), got {ops}"
            )
        name = ops[0].replace("-", "_").replace(" ", "_")
        return cls(data["attribute"], name, data[ops[0]])


def _check_scalar(attribute: str, value: Any) -> None:
    if not isinstance(value, (str, int, float, bool)):
        raise InvalidFlagError(
            f"rule values on {attribute!r} must be strings, numbers or booleans, got {value!r}"
        )


def check_payload(variant: str, payload: Any) -> None:
    """A variant's payload is what OpenFeature serves as the flag's value, so it must be one of its types.

    Text, a number, a boolean, an object (a JSON object) or none. A JSON array
    is refused: OpenFeature's and OFREP's object values are objects, so an
    array would reach an app as a value no typed getter can return.
    """
    if payload is None or isinstance(payload, (str, int, float, bool)):
        return
    if isinstance(payload, Mapping):
        if not all(isinstance(k, str) for k in payload):
            raise InvalidFlagError(f"the payload of variant {variant!r} must have text keys")
        return
    kind = "a JSON array" if isinstance(payload, (list, tuple)) else type(payload).__name__
    raise InvalidFlagError(
        f"the payload of variant {variant!r} is {kind}; a payload is text, a number, a boolean or an object "
        f"(wrap a list in an object, e.g. {{\"items\": [...]}})"
    )


@dataclass(frozen=True, slots=True)
class Stratum:
    """A named segment; a unit belongs to it when every condition matches."""

    name: str
    conditions: tuple[Condition, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not STRATUM_PATTERN.match(self.name):
            raise InvalidFlagError(
                f"stratum name {self.name!r} must start with a letter or _ and hold letters, digits, _ or -"
            )
        if self.name == DEFAULT_STRATUM:
            raise InvalidFlagError("'default' is the stratum of units that match no rule; it takes no rules")
        if not self.conditions:
            raise InvalidFlagError(f"stratum {self.name!r} needs at least one condition")
        object.__setattr__(self, "conditions", tuple(self.conditions))

    def to_json(self) -> dict[str, Any]:
        match = [c.to_json() for c in self.conditions]
        return {"name": self.name, "match": match[0] if len(match) == 1 else match}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stratum:
        if not isinstance(data, Mapping) or "name" not in data or "match" not in data:
            raise InvalidFlagError(f"a stratum needs 'name' and 'match', got {data!r}")
        match = data["match"]
        items = [match] if isinstance(match, Mapping) else list(match or [])
        return cls(data["name"], tuple(Condition.from_json(c) for c in items))


@dataclass(frozen=True, slots=True)
class FlagState:
    """Everything evaluation needs about one flag, at one version."""

    key: str
    salt: str
    baseline: str
    candidate: str
    version: int = 1
    phase: Phase = Phase.INACTIVE
    strata: tuple[Stratum, ...] = ()
    allocations: Mapping[str, int] = field(default_factory=dict)
    shadow_bp: int = 0
    payloads: Mapping[str, Any] = field(default_factory=dict)
    rollout_id: int | None = None
    stage: int = 0
    namespace: str = "default"
    shadow_rate: float | None = None  # candidate calls per second per app process, from the shadow stage
    online_sample: float | None = None  # share of exposures kept for the rollout's online judges (plan online_evals)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.key, str) or not KEY_PATTERN.match(self.key):
            problems.append(f"flag key {self.key!r} must be 1-100 letters, digits, '.', '_' or '-'")
        for role, variant in (("baseline", self.baseline), ("candidate", self.candidate)):
            if not isinstance(variant, str) or not KEY_PATTERN.match(variant):
                problems.append(f"{role} variant {variant!r} must be 1-100 letters, digits, '.', '_' or '-'")
        if self.baseline == self.candidate:
            problems.append("baseline and candidate must be different variants")
        if self.phase not in Phase._value2member_map_:
            problems.append(f"unknown phase {self.phase!r}")
        names = [s.name for s in self.strata]
        if len(set(names)) != len(names):
            problems.append(f"stratum names must be unique, got {names}")
        known = set(names) | {DEFAULT_STRATUM}
        for name, bp in dict(self.allocations).items():
            if name not in known:
                problems.append(f"allocation for unknown stratum {name!r}")
            if not isinstance(bp, int) or isinstance(bp, bool) or not 0 <= bp <= BUCKETS:
                problems.append(f"allocation of {name!r} must be a whole number of basis points 0..10000, got {bp!r}")
        if not isinstance(self.shadow_bp, int) or not 0 <= self.shadow_bp <= BUCKETS:
            problems.append(f"shadow sample must be 0..10000 basis points, got {self.shadow_bp!r}")
        if problems:
            raise InvalidFlagError("; ".join(problems))
        object.__setattr__(self, "phase", Phase(self.phase))
        object.__setattr__(self, "strata", tuple(self.strata))
        object.__setattr__(self, "allocations", MappingProxyType(dict(self.allocations)))
        object.__setattr__(self, "payloads", MappingProxyType(dict(self.payloads)))

    @property
    def stratum_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.strata) + (DEFAULT_STRATUM,)

    def allocation(self, stratum: str) -> int:
        return self.allocations.get(stratum, 0)

    @property
    def variants(self) -> tuple[str, str]:
        return (self.baseline, self.candidate)


def percent_to_bp(percent: float) -> int:
    """12.5 % -> 1250 bp. Rejects what cannot be a share of users."""
    if isinstance(percent, bool) or not isinstance(percent, (int, float)):
        raise InvalidFlagError(f"percent must be a number, got {percent!r}")
    if not 0 <= percent <= 100:
        raise InvalidFlagError(f"percent must be between 0 and 100, got {percent}")
    bp = round(percent * 100)
    if abs(bp - percent * 100) > 1e-6:
        raise InvalidFlagError(f"percent {percent} is finer than 0.01 %")
    return bp
