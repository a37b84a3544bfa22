"""Assignment: which variant a unit gets, decided locally and never raising.

bucket = murmur3_32(f"{salt}:{unit_id}") mod 10,000 (unsigned, UTF-8). A unit is
in the candidate arm of its stratum when bucket < allocation. Because the salt is
fixed per flag, raising an allocation only ever adds units, and a rollback and a
resume keep every unit in the same arm.

Speed matters here (an app may call this on every request), so a flag is
compiled once per snapshot: strata become small closures and every possible
answer is built in advance. `evaluate` then hashes once, compares once and
returns a shared, immutable `Assignment`; it allocates nothing.

`Exposure` is one unit's assignment: what `RolloutClient.assign()` hands the
app, to pass back with outcomes. It is two references (the shared answer and
the unit), so binding the unit costs one small tuple and nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple

import mmh3

from rollout.core.flag import BUCKETS, DEFAULT_STRATUM, Condition, FlagState, Op, Phase

_hash = mmh3.hash
_MISSING = object()


class Reason(StrEnum):
    """Why an assignment came out as it did (OpenFeature's resolution reasons)."""

    SPLIT = "SPLIT"          # decided by the unit's bucket against the allocation
    STATIC = "STATIC"        # promoted: everyone gets the candidate
    DEFAULT = "DEFAULT"      # inactive flag: everyone gets the baseline
    DISABLED = "DISABLED"    # rolled back: everyone gets the baseline
    STALE = "STALE"          # the database is unreachable; answered from the last snapshot
    ERROR = "ERROR"          # see error_code; the answer is the baseline or the caller's default


class ErrorCode(StrEnum):
    """OpenFeature's error codes, for answers with reason ERROR."""

    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    PROVIDER_NOT_READY = "PROVIDER_NOT_READY"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    GENERAL = "GENERAL"


@dataclass(frozen=True, slots=True)
class Cell:
    """Where one arm's exposures and outcomes are counted: flag, rollout, stage, variant, stratum.

    Built once per compiled arm and shared by its answers. Counts of two
    cells with equal fields (from two snapshots) are merged when written.
    `rollout_id` is 0 when the flag has no rollout, as in the exposures table.
    """

    flag: str
    salt: str
    rollout_id: int
    stage: int
    variant: str
    stratum: str


@dataclass(frozen=True, slots=True, eq=False)
class Assignment:
    """The answer to "which variant does this unit get?".

    `variant` is always usable: on any fault it is the baseline (or the
    caller's default) and `reason`/`error_code` say what went wrong.

    Every possible answer of a compiled flag is built once and shared, so
    answers compare (and hash) by identity: that makes an `Exposure` (answer,
    unit) a dictionary key that hashes in C, on the SDK's hot path.
    """

    flag: str
    variant: str | None
    stratum: str | None
    in_shadow: bool
    reason: Reason
    flag_version: int
    is_candidate: bool = False
    value: Any = None
    error_code: ErrorCode | None = None
    # None on error answers: there is no served arm to credit.
    cell: Cell | None = field(default=None, compare=False, repr=False)

    @property
    def rollout_id(self) -> int | None:
        return self.cell.rollout_id or None if self.cell is not None else None

    @property
    def stage(self) -> int | None:
        return self.cell.stage if self.cell is not None else None


class Exposure(NamedTuple):
    """One unit's assignment, as `RolloutClient.assign()` returns it: read it like an `Assignment`.

    Pass it back to `record(exposure, metrics)` (or its token, see
    `RolloutClient.exposure_token`) so an outcome is credited to the
    variant, stratum and stage this unit was served, whatever the flag
    looks like by the time the outcome arrives.

    A named tuple rather than a frozen dataclass, for a measured reason: the
    SDK builds one per `assign()` call and uses it, as it is, as the key of
    its exposure counts; a tuple is built and hashed in C (about half the
    cost of the dataclass's slots, and no second key object).
    """

    assignment: Assignment
    unit_id: str | None  # None on error answers: nothing was served to credit

    flag = property(lambda self: self[0].flag)
    variant = property(lambda self: self[0].variant)
    stratum = property(lambda self: self[0].stratum)
    in_shadow = property(lambda self: self[0].in_shadow)
    reason = property(lambda self: self[0].reason)
    flag_version = property(lambda self: self[0].flag_version)
    is_candidate = property(lambda self: self[0].is_candidate)
    value = property(lambda self: self[0].value)
    error_code = property(lambda self: self[0].error_code)
    rollout_id = property(lambda self: self[0].rollout_id)
    stage = property(lambda self: self[0].stage)

    @property
    def cell(self) -> Cell | None:
        """The arm to credit, or None when this answer was an error (nothing was served to credit)."""
        return self[0].cell if self[1] is not None else None


_new_tuple = tuple.__new__


def bind(assignment: Assignment, unit_id: str | None) -> Exposure:
    """`Exposure(assignment, unit_id)`, minus the keyword handling of the generated constructor."""
    return _new_tuple(Exposure, (assignment, unit_id))


def bucket(salt: str, unit_id: str) -> int:
    """The unit's bucket in 0..9999 for a flag with this salt."""
    return (_hash(f"{salt}:{unit_id}") & 0xFFFFFFFF) % BUCKETS


def error_assignment(flag: str, code: ErrorCode, default: str | None = None) -> Assignment:
    return Assignment(flag, default, None, False, Reason.ERROR, 0, error_code=code)


# --- strata -------------------------------------------------------------------

def _scalar_key(v: Any) -> tuple[str, Any] | None:
    """Type-aware identity for rule values: True is not 1, 1 is 1.0, "1" is not 1."""
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, (int, float)):
        return ("n", float(v))
    if isinstance(v, str):
        return ("s", v)
    return None


def _compile_condition(c: Condition) -> Callable[[Mapping[str, Any]], bool]:
    attr = c.attribute
    if c.op is Op.EXISTS:
        want = c.value
        return lambda attrs: (attrs.get(attr) is not None) is want

    values = c.value if c.op in (Op.IN, Op.NOT_IN) else (c.value,)
    # Most rule values are strings; keep a plain set for them so the common
    # case is one type check and one hash lookup.
    strings = frozenset(v for v in values if type(v) is str)
    others = frozenset(_scalar_key(v) for v in values if type(v) is not str)

    if others:
        def contains(v: Any) -> bool:
            if type(v) is str:
                return v in strings
            return _scalar_key(v) in others
    else:
        def contains(v: Any) -> bool:
            return type(v) is str and v in strings

    if c.op is Op.NOT_IN:
        return lambda attrs: (v := attrs.get(attr, _MISSING)) is _MISSING or v is None or not contains(v)
    return lambda attrs: (v := attrs.get(attr, _MISSING)) is not _MISSING and contains(v)


def _compile_stratum(conditions: tuple[Condition, ...]) -> Callable[[Mapping[str, Any]], bool]:
    tests = tuple(_compile_condition(c) for c in conditions)
    if len(tests) == 1:
        return tests[0]
    return lambda attrs: all(t(attrs) for t in tests)


# --- the compiled flag ----------------------------------------------------------

class CompiledFlag:
    """One flag ready to evaluate. Built once per snapshot; immutable after."""

    __slots__ = ("state", "key", "version", "_prefix", "_matchers", "_default_arm", "_empty_arm", "stale")

    def __init__(self, state: FlagState, *, stale: bool = False) -> None:
        self.state = state
        self.key = state.key
        self.version = state.version
        self.stale = stale
        self._prefix = f"{state.salt}:"
        self._matchers = tuple(
            (_compile_stratum(s.conditions), self._arm(s.name)) for s in state.strata
        )
        self._default_arm = self._arm(DEFAULT_STRATUM)
        # A unit with no attributes can still match a rule (not_in, exists: false);
        # decide its arm once here instead of on every call.
        self._empty_arm = next((arm for matches, arm in self._matchers if matches({})), self._default_arm)

    def _arm(self, stratum: str) -> tuple[int, Assignment, Assignment]:
        """(threshold, answer when bucket < threshold, answer otherwise) for one stratum."""
        s = self.state
        stale = Reason.STALE if self.stale else None

        cells: dict[str, Cell] = {}

        def answer(variant: str, in_shadow: bool, reason: Reason) -> Assignment:
            cell = cells.setdefault(variant, Cell(s.key, s.salt, s.rollout_id or 0, s.stage, variant, stratum))
            return Assignment(
                flag=s.key, variant=variant, stratum=stratum, in_shadow=in_shadow,
                reason=stale or reason, flag_version=s.version,
                is_candidate=variant == s.candidate, value=s.payloads.get(variant), cell=cell,
            )

        base = answer(s.baseline, False, Reason.SPLIT)
        if s.phase is Phase.RAMPING:
            return (s.allocation(stratum), answer(s.candidate, False, Reason.SPLIT), base)
        if s.phase is Phase.SHADOW:
            return (s.shadow_bp, answer(s.baseline, True, Reason.SPLIT), base)
        if s.phase is Phase.PROMOTED:
            return (BUCKETS, answer(s.candidate, False, Reason.STATIC), base)
        reason = Reason.DISABLED if s.phase is Phase.ROLLED_BACK else Reason.DEFAULT
        return (0, base, answer(s.baseline, False, reason))

    def as_stale(self) -> CompiledFlag:
        return CompiledFlag(self.state, stale=True)

    def stratum_of(self, attributes: Mapping[str, Any] | None) -> str:
        arm = self._empty_arm
        if attributes:
            arm = next((a for matches, a in self._matchers if matches(attributes)), self._default_arm)
        return arm[1].stratum  # type: ignore[return-value]

    def evaluate(self, unit_id: str, attributes: Mapping[str, Any] | None = None) -> Assignment:
        """Never raises; a fault answers the baseline with reason ERROR."""
        try:
            if attributes:
                arm = self._default_arm
                for matches, stratum_arm in self._matchers:
                    if matches(attributes):
                        arm = stratum_arm
                        break
            else:
                arm = self._empty_arm
            threshold, below, above = arm
            if type(unit_id) is not str or not unit_id:
                unit_id = self._unit_text(unit_id)
                if unit_id is None:
                    # An empty or missing unit would put every anonymous caller in
                    # one bucket, so they all get the baseline, flagged as an error.
                    return replace(above, reason=Reason.ERROR, error_code=ErrorCode.TARGETING_KEY_MISSING, cell=None)
            if threshold <= 0:
                return above
            if threshold >= BUCKETS:
                return below
            if (_hash(self._prefix + unit_id) & 0xFFFFFFFF) % BUCKETS < threshold:
                return below
            return above
        except Exception:  # noqa: BLE001 - evaluation must never raise into the app
            return replace(self._default_arm[2], reason=Reason.ERROR, error_code=ErrorCode.INVALID_CONTEXT,
                           cell=None)

    @staticmethod
    def _unit_text(unit_id: Any) -> str | None:
        # Whole numbers are common unit ids; they hash as their decimal text, so 42 and "42" agree.
        if isinstance(unit_id, int) and not isinstance(unit_id, bool):
            return str(unit_id)
        if isinstance(unit_id, str) and unit_id:
            return unit_id
        return None
