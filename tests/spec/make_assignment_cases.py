"""Writes assignment.json, the language-neutral golden cases every evaluator must pass.

Run it only when the cases themselves change: `python tests/spec/make_assignment_cases.py`.
The expected stratum of each case is written here by hand; the bucket comes
from the independent reference hash in murmur3.py, never from rollout's code;
the variant follows from the rules in the file's description.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

try:
    from tests.spec.murmur3 import reference_bucket
except ImportError:  # run as a script from this folder
    from murmur3 import reference_bucket  # type: ignore[no-redef]

FLAGS: dict[str, dict[str, Any]] = {
    "summarizer": {
        "salt": "s-7f3a", "baseline": "current", "candidate": "new-model", "phase": "ramping", "version": 7,
        "strata": [
            {"name": "internal", "match": {"attribute": "email_domain", "in": ["example.com", "example.org"]}},
            {"name": "free", "match": {"attribute": "tier", "equals": "free"}},
            {"name": "beta", "match": {"attribute": "beta_opt_in", "exists": True}},
        ],
        "allocations": {"internal": 10000, "free": 500, "beta": 2500, "default": 0},
        "shadow_bp": 0,
    },
    "edges": {
        "salt": "edge-salt", "baseline": "a", "candidate": "b", "phase": "ramping", "version": 3,
        "strata": [
            {"name": "zero", "match": {"attribute": "plan", "equals": "zero"}},
            {"name": "one_bp", "match": {"attribute": "plan", "equals": "one"}},
            {"name": "all", "match": {"attribute": "plan", "equals": "all"}},
        ],
        "allocations": {"zero": 0, "one_bp": 1, "all": 10000, "default": 5000},
        "shadow_bp": 0,
    },
    "typed": {
        "salt": "typed", "baseline": "off", "candidate": "on", "phase": "ramping", "version": 1,
        "strata": [
            {"name": "eu_free", "match": [{"attribute": "tier", "equals": "free"},
                                          {"attribute": "region", "in": ["eu", "uk"]}]},
            {"name": "age3", "match": {"attribute": "age_group", "equals": 3}},
            {"name": "vip", "match": {"attribute": "vip", "equals": True}},
            {"name": "not_us", "match": {"attribute": "country", "not_in": ["us", "ca"]}},
        ],
        "allocations": {"eu_free": 10000, "age3": 10000, "vip": 10000, "not_us": 10000, "default": 0},
        "shadow_bp": 0,
    },
    "shadowed": {
        "salt": "shadow-1", "baseline": "current", "candidate": "new-model", "phase": "shadow", "version": 2,
        "strata": [{"name": "free", "match": {"attribute": "tier", "equals": "free"}}],
        "allocations": {"free": 0, "default": 0},
        "shadow_bp": 1000,
    },
    "inactive": {
        "salt": "i", "baseline": "current", "candidate": "new-model", "phase": "inactive", "version": 1,
        "strata": [], "allocations": {"default": 0}, "shadow_bp": 0,
    },
    "rolled-back": {
        "salt": "rb", "baseline": "current", "candidate": "new-model", "phase": "rolled_back", "version": 9,
        "strata": [], "allocations": {"default": 0}, "shadow_bp": 0,
    },
    "promoted": {
        "salt": "p", "baseline": "current", "candidate": "new-model", "phase": "promoted", "version": 12,
        "strata": [{"name": "free", "match": {"attribute": "tier", "equals": "free"}}],
        "allocations": {"free": 10000, "default": 10000}, "shadow_bp": 0,
    },
}

# (name, flag, unit_id, attributes, expected stratum) — the stratum is the hand-written part.
CASES: list[tuple[str, str, Any, Any, str | None]] = [
    ("internal by first rule", "summarizer", "user-1", {"email_domain": "example.com"}, "internal"),
    ("internal, second listed domain", "summarizer", "user-2", {"email_domain": "example.org"}, "internal"),
    ("internal wins over free (first match)", "summarizer", "user-3", {"email_domain": "example.com", "tier": "free"}, "internal"),
    ("internal wins over beta", "summarizer", "user-4", {"email_domain": "example.org", "beta_opt_in": True}, "internal"),
    ("free wins over beta", "summarizer", "user-5", {"tier": "free", "beta_opt_in": False}, "free"),
    ("domain match is case-sensitive", "summarizer", "user-6", {"email_domain": "Example.com"}, "default"),
    ("paid tier falls to default", "summarizer", "user-7", {"tier": "pro"}, "default"),
    ("no attributes at all", "summarizer", "user-8", None, "default"),
    ("empty attributes", "summarizer", "user-9", {}, "default"),
    ("exists matches any value", "summarizer", "user-10", {"beta_opt_in": "no"}, "beta"),
    ("exists does not match null", "summarizer", "user-11", {"beta_opt_in": None}, "default"),
    ("equals does not match null", "summarizer", "user-12", {"tier": None}, "default"),
    ("unrelated attributes ignored", "summarizer", "user-13", {"country": "fr", "plan": "x"}, "default"),
    *[(f"free tier, 5 % split, unit {i}", "summarizer", f"free-{i}", {"tier": "free"}, "free") for i in range(8)],
    *[(f"beta, 25 % split, unit {i}", "summarizer", f"beta-{i}", {"beta_opt_in": True}, "beta") for i in range(6)],
    ("unicode unit id (Japanese)", "summarizer", "ユーザー-42", {"beta_opt_in": True}, "beta"),
    ("unicode unit id (accents)", "summarizer", "émilie.dupont", {"beta_opt_in": True}, "beta"),
    ("unicode unit id (emoji)", "summarizer", "😀-7", {"beta_opt_in": True}, "beta"),
    ("unit id with colon and spaces", "summarizer", "org:1 user:2", {"beta_opt_in": True}, "beta"),
    ("very long unit id", "summarizer", "u" * 300, {"beta_opt_in": True}, "beta"),
    ("integer unit id hashes as its decimal text", "summarizer", 42, {"beta_opt_in": True}, "beta"),
    ("same id as text", "summarizer", "42", {"beta_opt_in": True}, "beta"),
    ("empty unit id gets baseline with an error", "summarizer", "", {"beta_opt_in": True}, "beta"),
    ("null unit id gets baseline with an error", "summarizer", None, {"tier": "free"}, "free"),
    ("allocation 0 bp", "edges", "u-1", {"plan": "zero"}, "zero"),
    ("allocation 0 bp, another unit", "edges", "u-2", {"plan": "zero"}, "zero"),
    ("allocation 10000 bp", "edges", "u-3", {"plan": "all"}, "all"),
    ("allocation 10000 bp, another unit", "edges", "u-4", {"plan": "all"}, "all"),
    ("1 bp: the unit in bucket 0 is in", "edges", "@bucket0", {"plan": "one"}, "one_bp"),
    ("1 bp: the unit in bucket 1 is out", "edges", "@bucket1", {"plan": "one"}, "one_bp"),
    ("1 bp: an ordinary unit is out", "edges", "u-5", {"plan": "one"}, "one_bp"),
    *[(f"default 50 %, unit {i}", "edges", f"half-{i}", {"plan": "other"}, "default") for i in range(6)],
    ("all conditions must match (both)", "typed", "t-1", {"tier": "free", "region": "eu"}, "eu_free"),
    ("all conditions must match (one missing)", "typed", "t-2", {"tier": "free", "country": "us"}, "default"),
    ("number equals number", "typed", "t-3", {"age_group": 3, "country": "us"}, "age3"),
    ("3.0 equals 3", "typed", "t-4", {"age_group": 3.0, "country": "us"}, "age3"),
    ("text '3' is not the number 3", "typed", "t-5", {"age_group": "3", "country": "us"}, "default"),
    ("true equals true", "typed", "t-6", {"vip": True, "country": "us"}, "vip"),
    ("1 is not true", "typed", "t-7", {"vip": 1, "country": "us"}, "default"),
    ("'true' is not true", "typed", "t-8", {"vip": "true", "country": "us"}, "default"),
    ("not_in matches a value outside the list", "typed", "t-9", {"country": "fr"}, "not_us"),
    ("not_in does not match a listed value", "typed", "t-10", {"country": "ca"}, "default"),
    ("not_in matches a missing attribute", "typed", "t-11", {}, "not_us"),
    ("not_in matches null", "typed", "t-12", {"country": None}, "not_us"),
    *[(f"shadow 10 %, unit {i}", "shadowed", f"sh-{i}", {"tier": "free"}, "free") for i in range(8)],
    ("shadow: the unit in bucket 0 is sampled", "shadowed", "@bucket0", None, "default"),
    ("shadow: the unit in bucket 999 is sampled", "shadowed", "@bucket999", None, "default"),
    ("shadow: the unit in bucket 1000 is not", "shadowed", "@bucket1000", None, "default"),
    ("inactive flag serves the baseline", "inactive", "user-1", {"tier": "free"}, "default"),
    ("rolled back flag serves the baseline", "rolled-back", "user-1", None, "default"),
    ("promoted flag serves the candidate", "promoted", "user-1", {"tier": "free"}, "free"),
    ("promoted flag, default stratum", "promoted", "user-2", None, "default"),
]


def _unit_in_bucket(salt: str, target: int) -> str:
    i = 0
    while reference_bucket(salt, f"unit-{i}") != target:
        i += 1
    return f"unit-{i}"


def expected(flag: dict[str, Any], unit: Any, stratum: str) -> dict[str, Any]:
    baseline, candidate = flag["baseline"], flag["candidate"]
    base = {"variant": baseline, "stratum": stratum, "in_shadow": False, "error_code": None}
    if unit is None or unit == "":
        return {**base, "reason": "ERROR", "error_code": "TARGETING_KEY_MISSING"}
    b = reference_bucket(flag["salt"], str(unit))
    phase = flag["phase"]
    if phase == "inactive":
        return {**base, "reason": "DEFAULT", "bucket": b}
    if phase == "rolled_back":
        return {**base, "reason": "DISABLED", "bucket": b}
    if phase == "promoted":
        return {**base, "variant": candidate, "reason": "STATIC", "bucket": b}
    if phase == "shadow":
        return {**base, "in_shadow": b < flag["shadow_bp"], "reason": "SPLIT", "bucket": b}
    in_candidate = b < flag["allocations"].get(stratum, 0)
    return {**base, "variant": candidate if in_candidate else baseline, "reason": "SPLIT", "bucket": b}


def build() -> dict[str, Any]:
    cases = []
    for name, flag_key, unit, attributes, stratum in CASES:
        flag = FLAGS[flag_key]
        if isinstance(unit, str) and unit.startswith("@bucket"):
            unit = _unit_in_bucket(flag["salt"], int(unit.removeprefix("@bucket")))
        cases.append({"name": name, "flag": flag_key, "unit_id": unit, "attributes": attributes,
                      "expected": expected(flag, unit, stratum)})
    cases += [
        {"name": "unknown flag", "flag": "no-such-flag", "unit_id": "user-1", "attributes": None,
         "expected": {"variant": None, "stratum": None, "in_shadow": False, "reason": "ERROR",
                      "error_code": "FLAG_NOT_FOUND"}},
        {"name": "unknown flag with the caller's default", "flag": "no-such-flag", "unit_id": "user-1",
         "attributes": None, "default": "fallback",
         "expected": {"variant": "fallback", "stratum": None, "in_shadow": False, "reason": "ERROR",
                      "error_code": "FLAG_NOT_FOUND"}},
    ]
    return {
        "description": (
            "Golden assignment cases. bucket = murmur3_32(utf8(salt + ':' + unit_id)) mod 10000, unsigned; "
            "integer unit ids hash as their decimal text; an empty or null unit id gets the baseline with "
            "reason ERROR and error_code TARGETING_KEY_MISSING. Strata: first match wins, every condition "
            "of a stratum must match, unmatched units are 'default'. Conditions: equals / in compare strings "
            "exactly and numbers by value, and true is not 1; a missing or null attribute matches not_in and "
            "never equals / in; exists matches a present, non-null attribute. Phases: ramping -> candidate "
            "when bucket < allocation of the stratum (SPLIT); shadow -> baseline, in_shadow when bucket < "
            "shadow_bp (SPLIT); promoted -> candidate (STATIC); inactive -> baseline (DEFAULT); rolled_back "
            "-> baseline (DISABLED). Unknown flag -> the caller's default (or null), reason ERROR, "
            "error_code FLAG_NOT_FOUND. 'bucket' is given for evaluators that expose it."
        ),
        "flags": FLAGS,
        "cases": cases,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("assignment.json")
    out.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out} ({len(build()['cases'])} cases)")
