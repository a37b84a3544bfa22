"""The plan a release manager writes (YAML), checked at the edge with pydantic.

A bad plan is rejected with every problem listed, before anything changes:
`load_plan` raises `InvalidPlanError` whose `problems` name each one with
where it is (`stages[1].percent.free: ...`).

    flag: ticket-summarizer
    baseline: current
    candidate: new-model
    strata:
      - {name: internal, match: {attribute: email_domain, in: [example.com]}}
    stages:
      - {name: shadow, kind: shadow, sample: 0.10, min_samples: 500, min_duration: 10m}
      - {name: canary, kind: ramp, percent: {internal: 100, default: 5}, min_samples: 1000}
      - {name: full, kind: full, approval: required}
    metrics:
      - {name: error, kind: binary, better: lower, margin: 0.005}
      - {name: latency_ms, kind: continuous, better: lower, margin: 10%, statistic: typical}
      - {name: cost_usd, kind: continuous, better: lower, margin: 5%, statistic: mean}
    completion: {tolerance: 1%, on_loss: hold}

A metric's `statistic` says what is judged: `mean` (the default) is the mean
per request, the bill for cost and tokens; `typical` (the same as `scale: log`)
is the geometric mean, the typical request, which one slow or dear request
cannot swamp, and which a rare 100x cost spike cannot move either. A cost-like
metric judged only as `typical` gets a warning (`PlanWarning`, see `plan_warnings`).
"""

from __future__ import annotations

import math
import re
import warnings
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError, WithJsonSchema

from rollout.core.flag import KEY_PATTERN, Stratum
from rollout.core.online_eval import OnlineEval
from rollout.core.plan import EvalSpec, Policy, RolloutPlan, ShadowBudget, Stage, StageKind
from rollout.errors import InvalidFlagError, InvalidPlanError
from rollout.core.stats import CompletionSpec, MetricSpec
from rollout.core.windows import RampWindow, parse_days

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
from rollout.core.policy import BUCKETS, METRIC_NAME as _METRIC_NAME  # noqa: E402 - one rule each, in the policy
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def parse_duration(value: Any) -> timedelta:
    """`30s`, `10m`, `24h`, `2d`, or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 10m, 24h or 2d")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration of zero or more")
    return timedelta(seconds=seconds)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def format_duration(delta: timedelta) -> str:
    """The inverse of `parse_duration`, so a plan document read back from JSON is the same plan."""
    seconds = delta.total_seconds()
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{int(seconds // _UNIT_SECONDS[unit])}{unit}"
    return f"{seconds:g}s"


def _margin_text(value: Any) -> Any:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


# A duration in the form is one text field ("10m"), not Prefect's ISO-8601 picker.
Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str),
                     WithJsonSchema({"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[smhd]\s*$",
                                     "examples": ["30s", "10m", "24h", "2d"]})]
Margin = Annotated[str, BeforeValidator(_margin_text)]


class StratumModel(_Model):
    """A group of users that gets its own allocation and its own verdict."""

    model_config = ConfigDict(title="Stratum")
    name: str = Field(title="Name", description="e.g. internal, free, eu", examples=["internal"])
    match: dict[str, Any] | list[dict[str, Any]] = Field(
        title="Who belongs", description="a rule on a user attribute, or a list of rules that all hold",
        examples=[{"attribute": "email_domain", "in": ["example.com"]}])


class EvalModel(_Model):
    model_config = ConfigDict(title="Eval gate")
    cases: str = Field(min_length=1, title="Case file", description="JSONL case file: id, input, expected or rubric, category")
    baseline: str = Field(title="Baseline callable", description="import path of the baseline callable, module:attribute")
    candidate: str = Field(title="Candidate callable", description="import path of the candidate callable, module:attribute")
    scorer: str = Field(title="Scorer", description="import path of scorer(case, output) -> bool or score in [0, 1]")
    margin: float = Field(default=0.05, ge=0, le=1, title="Margin", description="tolerated drop in pass rate")
    min_cases: int = Field(default=10, ge=1, title="Cases per category to gate")
    concurrency: int = Field(default=8, ge=1, le=256, title="Calls at once")
    rate_limit: float | None = Field(default=None, gt=0, title="Calls per second")
    timeout: float = Field(default=30.0, gt=0, title="Seconds per call")


class BudgetModel(_Model):
    model_config = ConfigDict(title="Shadow budget")
    per_hour: float | None = Field(default=None, gt=0, title="Spend per hour")
    total: float | None = Field(default=None, gt=0, title="Spend in total")
    cost_metric: str = Field(default="cost_usd", title="Cost metric")


class StageModel(_Model):
    """One step of the plan; stages run in order."""

    model_config = ConfigDict(title="Stage")
    name: str = Field(min_length=1, max_length=64, title="Name", examples=["canary"])
    kind: Literal["eval", "shadow", "ramp", "full"] = Field(
        title="Kind", description="eval: offline cases first; shadow: the candidate runs on a sample but nobody sees "
                                  "it; ramp: a share of each stratum is served the candidate; full: everyone (last)")
    percent: float | dict[str, float] | None = Field(
        default=None, title="Percent served the candidate (ramp)",
        description="one number for every stratum, or one per stratum (default = everyone else)",
        examples=[5, {"internal": 100, "default": 5}])
    sample: float | None = Field(default=None, gt=0, le=1, title="Shadow sample (shadow)",
                                 description="share of units that also run the candidate", examples=[0.1])
    min_samples: int = Field(default=0, ge=0, title="Minimum samples per arm", examples=[1000])
    min_duration: Duration = Field(default="0s", validate_default=True, title="Minimum duration")
    max_duration: Duration | None = Field(default=None, title="Maximum duration",
                                          description="then the plan's on_inconclusive applies")
    stall_after: Duration | None = Field(
        default=None, title="Hold without evidence after",
        description="a stage with no evidence at all for this long is held with the reason "
                    "(default: its maximum duration, or 1h)", examples=["1h"])
    approval: Literal["required", "none"] = Field(default="none", title="Approval",
                                                  description="required: a human approves before this stage starts")
    eval: EvalModel | None = Field(default=None, title="Eval gate (eval)")
    budget: BudgetModel | None = Field(default=None, title="Shadow budget (shadow)")
    rate_limit: float | None = Field(default=None, gt=0, title="Candidate calls per second (shadow)",
                                     description="per app process")


class MetricModel(_Model):
    """An outcome the judge compares between candidate and baseline."""

    model_config = ConfigDict(title="Metric")
    name: str = Field(title="Name", description="as the app records it", examples=["error", "latency_ms"])
    kind: Literal["binary", "continuous"] = Field(title="Kind", description="binary: 0/1 per outcome; continuous: a number")
    better: Literal["lower", "higher"] = Field(title="Better is", description="which direction is an improvement")
    margin: Margin = Field(title="Margin", description="harm tolerated: absolute (0.005) or relative (10%)",
                           examples=["0.005", "10%"])
    scale: Literal["linear", "log"] = Field(default="linear", title="Scale",
                                            description="log for skewed values like latency")
    statistic: Literal["mean", "typical"] | None = Field(
        default=None, title="Statistic",
        description="mean: per request, the bill (scale linear); typical: geometric mean (scale log)")
    bounds: tuple[float, float] | None = Field(default=None, title="Bounds", description="the range a value can take")
    quantile: float | None = Field(default=None, title="Quantile", description="judge a quantile, e.g. 0.95")
    source: str | None = Field(default=None, title="Source metric",
                               description="the recorded metric this one reads, e.g. a p95 of latency_ms")


class WindowModel(_Model):
    """Hours in which stages may advance; harm rolls back at any hour."""

    model_config = ConfigDict(title="Ramp window")
    days: str = Field(title="Days", description="mon-thu, mon,wed,fri or daily", examples=["mon-thu"])
    from_: str = Field(alias="from", pattern=r"^\d{1,2}:\d{2}$", title="From", description="local time, HH:MM",
                       examples=["09:00"])
    to: str = Field(pattern=r"^\d{1,2}:\d{2}$", title="To", description="local time, HH:MM; before From crosses midnight",
                    examples=["16:00"])
    tz: str = Field(default="UTC", title="Time zone", examples=["Europe/Berlin"])


class JudgeBudgetModel(_Model):
    model_config = ConfigDict(title="Judge budget")
    per_hour: float | None = Field(default=None, gt=0, title="Per hour", description="the judge's own cost per rolling hour")
    total: float | None = Field(default=None, gt=0, title="Total", description="the judge's own cost over the rollout")


class JudgeMetricModel(_Model):
    model_config = ConfigDict(title="Judge metric")
    kind: Literal["binary", "continuous"] = Field(default="continuous", title="Kind")
    better: Literal["lower", "higher"] = Field(default="higher", title="Better is")
    margin: float | str = Field(title="Margin", description="harm tolerated: absolute (0.03) or relative (5%)",
                                examples=["0.03"])
    bounds: tuple[float, float] | None = Field(default=(0.0, 1.0), title="Bounds")


class OnlineEvalModel(_Model):
    """A judge that grades a sample of live answers; its grades are judged like any metric."""

    model_config = ConfigDict(title="Online judge")
    name: str = Field(title="Name", description="the metric the judge's grades are recorded as",
                      examples=["faithfulness"])
    scorer: str = Field(title="Scorer", description="import path, module:attribute, of a scorer (input, output) -> "
                                                    "score in [0, 1] or an LlmJudge")
    sample: float = Field(gt=0, le=1, title="Sample", description="share of exposures, both arms alike, whose answers "
                                                                  "are graded")
    budget: JudgeBudgetModel | None = Field(default=None, title="Budget")
    metric: JudgeMetricModel = Field(title="Judged as")


class CompletionModel(_Model):
    model_config = ConfigDict(title="Completion")
    tolerance: float | str = Field(default=0.01, title="Tolerance",
                                   description="largest relative loss of outcomes per exposure, e.g. 1%")
    on_loss: Literal["hold", "rollback"] = Field(default="hold", title="On a proven loss")


class PlanWarning(UserWarning):
    """A plan that is valid but probably does not judge what its author means."""
_COST_LIKE = re.compile(r"cost|token|spend|price|usd|eur|dollar|bill", re.IGNORECASE)


def cost_like(metric: str) -> bool:
    """Whether a metric's name says it is a cost (money or tokens): plan warnings and cost attribution use it."""
    return _COST_LIKE.search(metric) is not None


def plan_warnings(plan: RolloutPlan) -> list[str]:
    """What a valid plan probably gets wrong: a cost-like metric judged only on the log scale (the typical request)."""
    out = []
    linear = {m.metric for m in plan.metrics if m.scale == "linear" and m.quantile is None}
    for m in plan.metrics:
        if m.scale == "log" and m.quantile is None and cost_like(m.metric) and m.metric not in linear:
            out.append(f"metrics.{m.name}: a cost-like metric judged only as the typical request (scale: log);"
                       " a bill that rises through rare expensive calls passes. Add `statistic: mean` to judge the bill.")
    return out


class PlanModel(_Model):
    """The plan as a form: what to roll out, through which stages, judged on which metrics."""

    model_config = ConfigDict(title="Plan (form)")
    flag: str = Field(title="Flag", description="the feature flag the app reads", examples=["ticket-summarizer"])
    baseline: str = Field(title="Baseline variant", description="what users get today", examples=["current"])
    candidate: str = Field(title="Candidate variant", description="what is being rolled out", examples=["new-model"])
    description: str = Field(default="", title="Description")
    strata: list[StratumModel] = Field(default=[], title="Strata")
    stages: list[StageModel] = Field(min_length=1, title="Stages")
    metrics: list[MetricModel] = Field(min_length=1, title="Metrics")
    windows: list[WindowModel] = Field(default=[], title="Ramp windows",
                                       description="stages advance only inside one; none: at any time")
    check_interval: Duration = Field(default="30s", validate_default=True, title="Check every")
    alpha: float = Field(default=0.05, gt=0, le=0.5, title="Alpha", description="the judge's error rate")
    on_inconclusive: Literal["hold", "rollback"] = Field(default="hold", title="When a stage reaches max_duration")
    on_approval_timeout: Literal["hold", "rollback"] = Field(default="hold", title="When nobody answers in time")
    approval_timeout: Duration = Field(default="24h", validate_default=True, title="Approval timeout")
    on_abort: Literal["rollback", "hold"] = Field(default="rollback", title="When the run is cancelled or crashes")
    online_evals: list[OnlineEvalModel] = Field(default=[], title="Online judges",
                                                description="grade a sample of live answers in every stage")
    # A retried or re-run Prefect run whose rollout has ended starts nothing unless this says "allowed".
    restart: Literal["refused", "allowed"] = Field(default="refused", title="Restart after the rollout ended")
    completion: CompletionModel | None = Field(default=None, title="Completion",
                                               description="exposures that produced no outcome: a proven loss holds "
                                                           "(default: tolerance 1 %, hold)")


class PlanText(_Model):
    """For people who paste: the plan's YAML (or JSON) in one field."""

    model_config = ConfigDict(title="Plan (YAML text)")
    yaml: str = Field(min_length=1, title="Plan YAML", description="the whole plan, as in plan.yaml",
                      examples=["flag: ticket-summarizer\nbaseline: current\n..."])


class PlanName(_Model):
    """A plan registered with `rollout plan register FILE`."""

    model_config = ConfigDict(title="Plan (registered name)")
    name: str = Field(min_length=1, max_length=100, title="Plan name", description="see `rollout plan list`",
                      examples=["ticket-summarizer"])
    version: int | None = Field(default=None, ge=1, title="Version", description="empty: the latest")


PlanSource = PlanModel | PlanText | PlanName
"""What the Prefect deployment's `plan` parameter takes: the form, pasted YAML, or a registered name."""


def load_plan(source: str | Path | dict[str, Any] | PlanModel) -> RolloutPlan:
    """A validated plan from YAML text, a YAML file, a dict or the form. Raises InvalidPlanError listing every problem."""
    if isinstance(source, PlanModel):
        return to_domain(source)
    data = _read(source)
    try:
        model = PlanModel.model_validate(data)
    except ValidationError as exc:
        raise InvalidPlanError(_describe(e, data) for e in exc.errors()) from None
    plan = to_domain(model)
    for warning in plan_warnings(plan):
        warnings.warn(warning, PlanWarning, stacklevel=2)
    return plan


def plan_document(source: str | Path | dict[str, Any] | PlanModel) -> dict[str, Any]:
    """The plan as plain JSON (what the rollouts table and the Prefect parameter form hold), validated."""
    load_plan(source)
    if isinstance(source, PlanModel):
        return source.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return _read(source)


def canonical_document(source: str | Path | dict[str, Any] | PlanModel) -> dict[str, Any]:
    """The plan document in the one shape the deployment's parameter schema describes (durations "10m", margins
    as text), so the Prefect server's schema check accepts every plan `load_plan` accepts."""
    document = plan_document(source)
    return PlanModel.model_validate(document).model_dump(mode="json", by_alias=True, exclude_defaults=True)


def _read(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml", ".json"))):
        try:
            source = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidPlanError([f"cannot read the plan file: {exc.strerror}: {exc.filename}"]) from None
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise InvalidPlanError([f"not valid YAML: {' '.join(str(exc).split())}"]) from None
    if not isinstance(data, dict):
        raise InvalidPlanError(["a plan is a mapping with flag, baseline, candidate, stages and metrics"])
    return data


def _describe(error: Any, data: Any) -> str:
    """`metrics.error.kind: ...`: a listed item is named by its name, not its index, where it has one."""
    parts: list[str] = []
    node = data
    for p in error["loc"]:
        item = node[p] if isinstance(p, int) and isinstance(node, list) and p < len(node) else (
            node.get(p) if isinstance(node, dict) and isinstance(p, str) else None)
        named = isinstance(p, int) and isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]
        if named:
            parts.append(f".{item['name']}")
        else:
            parts.append(f"[{p}]" if isinstance(p, int) else f".{p}")
        node = item
    where = "".join(parts).lstrip(".")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{where or 'plan'}: {message}"


def _margin(raw: float | str, name: str, problems: list[str]) -> tuple[float, bool]:
    """0.005 -> absolute; "10%" -> relative 0.10."""
    if isinstance(raw, str):
        text = raw.strip()
        if text.endswith("%"):
            try:
                return float(text[:-1]) / 100, True
            except ValueError:
                pass
        else:
            try:
                return float(text), False
            except ValueError:
                pass
        problems.append(f"metrics.{name}.margin: {raw!r} is neither a number nor a percentage like 10%")
        return 0.0, False
    return float(raw), False


def to_domain(model: PlanModel) -> RolloutPlan:
    """Cross-field checks (all of them, every problem listed), then the core's frozen plan."""
    problems: list[str] = []
    if not KEY_PATTERN.match(model.flag):
        problems.append(f"flag: {model.flag!r} must be 1-100 letters, digits, '.', '_' or '-'")
    for role in ("baseline", "candidate"):
        if not KEY_PATTERN.match(getattr(model, role)):
            problems.append(f"{role}: {getattr(model, role)!r} must be 1-100 letters, digits, '.', '_' or '-'")
    if model.baseline == model.candidate:
        problems.append("candidate: must differ from the baseline")

    strata: list[Stratum] = []
    for s in model.strata:
        try:
            strata.append(Stratum.from_json(s.model_dump()))
        except InvalidFlagError as exc:
            problems.append(f"strata.{s.name}: {exc}")
    names = [s.name for s in model.strata]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"strata: {dup!r} is listed more than once")
    known = list(dict.fromkeys([*(n for n in names if n != "default"), "default"]))

    stages: list[Stage] = []
    last: dict[str, int] = {n: 0 for n in known}
    stage_names = [s.name for s in model.stages]
    for dup in sorted({n for n in stage_names if stage_names.count(n) > 1}):
        problems.append(f"stages: {dup!r} is listed more than once")
    seen_live = False
    seen_shadow = False
    for i, st in enumerate(model.stages):
        where = f"stages.{st.name}"
        allocations: dict[str, int] = {}
        shadow_bp = 0
        _check_stage_options(st, where, problems)
        if st.kind == "eval" and (seen_live or seen_shadow):
            problems.append(f"{where}: an eval stage must come before every shadow, ramp and full stage")
        seen_shadow = seen_shadow or st.kind == "shadow"
        if st.kind == "ramp":
            if st.percent is None:
                problems.append(f"{where}.percent: a ramp stage needs a percent (one number, or one per stratum)")
            else:
                allocations = _allocations(st.percent, known, where, problems)
        elif st.percent is not None:
            problems.append(f"{where}.percent: only ramp stages take a percent")
        if st.kind == "shadow":
            if st.sample is None:
                problems.append(f"{where}.sample: a shadow stage needs a sample share, e.g. 0.10")
            else:
                shadow_bp = round(st.sample * BUCKETS)
            if seen_live:
                problems.append(f"{where}: a shadow stage must come before every ramp and full stage")
        elif st.sample is not None:
            problems.append(f"{where}.sample: only shadow stages take a sample share")
        if st.kind == "full":
            allocations = {n: BUCKETS for n in known}
            if i != len(model.stages) - 1:
                problems.append(f"{where}: the full stage must be the last stage")
        if st.kind in ("ramp", "full"):
            seen_live = True
            # One number for all means "at least this much": strata already
            # higher stay where they are. A stratum a per-stratum mapping leaves
            # out keeps its allocation too. Only an explicit lower figure is an error.
            if not isinstance(st.percent, dict):
                allocations = {n: max(bp, last[n]) for n, bp in allocations.items()}
            for n in known:
                bp = allocations.get(n, last[n])
                if bp < last[n]:
                    problems.append(
                        f"{where}.percent.{n}: {bp / 100:g} % is below the {last[n] / 100:g} % of an earlier stage; "
                        "allocations only ever rise within a rollout"
                    )
                last[n] = max(last[n], bp)
            allocations = {n: allocations.get(n, last[n]) for n in known}
        if st.max_duration is not None and st.max_duration < st.min_duration:
            problems.append(f"{where}.max_duration: shorter than min_duration")
        if st.stall_after is not None and st.stall_after <= timedelta(0):
            problems.append(f"{where}.stall_after: must be longer than zero")
        stages.append(Stage(
            name=st.name, kind=StageKind(st.kind), allocations=allocations, shadow_bp=shadow_bp,
            min_samples=st.min_samples, min_duration=st.min_duration, max_duration=st.max_duration,
            approval=st.approval == "required",
            eval=EvalSpec(**st.eval.model_dump()) if st.eval is not None else None,
            budget=ShadowBudget(**st.budget.model_dump()) if st.budget is not None else None,
            rate_limit=st.rate_limit, stall_after=st.stall_after,
        ))

    metrics: list[MetricSpec] = []
    # An online judge's grades are an ordinary metric: judged, and rolled back on, like the others.
    judged = [*model.metrics, *(MetricModel(name=j.name, kind=j.metric.kind, better=j.metric.better,
                                            margin=j.metric.margin, bounds=j.metric.bounds)
                                for j in model.online_evals)]
    metric_names = [m.name for m in judged]
    for dup in sorted({n for n in metric_names if metric_names.count(n) > 1}):
        problems.append(f"metrics: {dup!r} is listed more than once")
    for m in judged:
        if not _METRIC_NAME.match(m.name):
            problems.append(f"metrics.{m.name}: the name must be an identifier (letters, digits, _)")
            continue
        margin, relative = _margin(m.margin, m.name, problems)
        if not math.isfinite(margin) or margin < 0:
            problems.append(f"metrics.{m.name}.margin: must be zero or more")
            continue
        scale = {"mean": "linear", "typical": "log", None: None}[m.statistic]
        given = m.scale if "scale" in m.model_fields_set else None  # the form's default is no choice
        if scale is not None and given is not None and scale != given:
            problems.append(f"metrics.{m.name}: statistic {m.statistic} contradicts scale {m.scale}")
            continue
        try:
            metrics.append(MetricSpec(name=m.name, kind=m.kind, better=m.better, margin=margin, relative=relative,
                                      scale=scale or m.scale, bounds=m.bounds, quantile=m.quantile,
                                      source=m.source))
        except ValueError as exc:
            problems.append(f"metrics.{m.name}: {str(exc).removeprefix(f'metric {m.name!r}: ')}")
    online_evals = []
    for j in model.online_evals:
        if not re.match(r"^[\w.]+:[\w.]+$", j.scorer):
            problems.append(f"online_evals.{j.name}.scorer: {j.scorer!r} must be an import path, module:attribute")
        budget = j.budget or JudgeBudgetModel()
        online_evals.append(OnlineEval(name=j.name, scorer=j.scorer, sample=j.sample, per_hour=budget.per_hour,
                                       total=budget.total))
    if model.check_interval <= timedelta(0):
        problems.append("check_interval: must be longer than zero")
    completion_model = model.completion or CompletionModel()
    tolerance, _ = _margin(completion_model.tolerance, "completion", problems)
    try:
        completion = CompletionSpec(tolerance=tolerance, on_loss=completion_model.on_loss)
    except ValueError as exc:
        problems.append(f"completion.tolerance: {exc}")
        completion = CompletionSpec()
    windows = _windows(model.windows, problems)

    if problems:
        raise InvalidPlanError(problems)
    return RolloutPlan(
        flag=model.flag, baseline=model.baseline, candidate=model.candidate, strata=tuple(strata),
        stages=tuple(stages), metrics=tuple(metrics), check_interval=model.check_interval, alpha=model.alpha,
        on_inconclusive=Policy(model.on_inconclusive), on_approval_timeout=Policy(model.on_approval_timeout),
        approval_timeout=model.approval_timeout, on_abort=Policy(model.on_abort), online_evals=tuple(online_evals),
        restart_allowed=model.restart == "allowed", completion=completion, windows=windows,
    )


def _windows(models: list[WindowModel], problems: list[str]) -> tuple[RampWindow, ...]:
    out = []
    for i, w in enumerate(models):
        where = f"windows[{i}]"
        try:
            days = parse_days(w.days)
        except ValueError as exc:
            problems.append(f"{where}.days: {exc}")
            continue
        try:
            start, end = (time.fromisoformat(t.zfill(5)) for t in (w.from_, w.to))
        except ValueError:
            problems.append(f"{where}: from and to are times of day like 09:00 and 16:00")
            continue
        try:
            out.append(RampWindow(days=days, start=start, end=end, tz=w.tz))
        except ValueError as exc:
            problems.append(f"{where}.tz: {exc}")
    return tuple(out)


def _allocations(percent: float | dict[str, float], known: list[str], where: str, problems: list[str]) -> dict[str, int]:
    if not isinstance(percent, dict):
        # One number for every stratum: one problem, not one per stratum.
        single = _allocations({"all": percent}, ["all"], where, [])
        if not single:
            _allocations({"": percent}, [""], where, problems)
            return {}
        return {n: single["all"] for n in known}
    items = percent
    out: dict[str, int] = {}
    for name, value in items.items():
        field = f"{where}.percent" + (f".{name}" if name else "")
        if name not in known:
            problems.append(f"{field}: no such stratum (the plan has {', '.join(known)})")
            continue
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 100):
            problems.append(f"{field}: {value!r} is not a percentage between 0 and 100")
            continue
        bp = round(value * 100)
        if abs(bp - value * 100) > 1e-6:
            problems.append(f"{field}: {value} is finer than 0.01 %")
            continue
        out[name] = bp
    return out


def _check_stage_options(st: StageModel, where: str, problems: list[str]) -> None:
    """Options that belong to one kind of stage only, and an eval stage's import paths."""
    if st.kind == "eval":
        if st.eval is None:
            problems.append(f"{where}.eval: an eval stage needs cases, baseline, candidate and scorer")
        else:
            for field in ("baseline", "candidate", "scorer"):
                if not _IMPORT_PATH.match(getattr(st.eval, field)):
                    problems.append(f"{where}.eval.{field}: {getattr(st.eval, field)!r} is not an import path "
                                    "like package.module:function")
    elif st.eval is not None:
        problems.append(f"{where}.eval: only eval stages run a case file")
    if st.kind != "shadow":
        if st.budget is not None:
            problems.append(f"{where}.budget: only shadow stages have a budget")
        if st.rate_limit is not None:
            problems.append(f"{where}.rate_limit: only shadow stages limit candidate calls")
    elif st.budget is not None and not _METRIC_NAME.match(st.budget.cost_metric):
        problems.append(f"{where}.budget.cost_metric: must be a metric name")


def resolve_plan(source: Any, engine: Any = None, *, namespace: str = "default") -> tuple[RolloutPlan, dict[str, Any]]:
    """The plan and its JSON document from any of the deployment parameter's three shapes.

    `source` is the form (a plan mapping or PlanModel), pasted text ({"yaml": ...} or PlanText), or a
    registered name ({"name": ..., "version": ...} or PlanName, looked up in `engine`'s database).
    Raises InvalidPlanError (every problem, by name) or PlanNotFoundError.
    """
    if isinstance(source, BaseModel) and not isinstance(source, PlanModel):
        source = source.model_dump(by_alias=True)
    if isinstance(source, dict) and set(source) == {"yaml"}:
        source = source["yaml"]
        if not isinstance(source, str) or not source.strip():
            raise InvalidPlanError(["yaml: paste the plan's YAML text"])
    elif isinstance(source, dict) and "name" in source and "flag" not in source:
        try:
            by_name = PlanName.model_validate(source)
        except ValidationError as exc:
            raise InvalidPlanError(_describe(e, source) for e in exc.errors()) from None
        from rollout.store import plans as plan_store
        from rollout.store.db import transaction

        with transaction(engine) as s:
            source = plan_store.get_plan(s, by_name.name, by_name.version, namespace=namespace).document
    elif (isinstance(source, str) and "\n" not in source and not source.lstrip().startswith("{")
          and not source.endswith((".yaml", ".yml", ".json"))):
        raise InvalidPlanError([f"{source!r} is neither a plan's YAML text nor a plan file"])
    document = plan_document(source)
    return load_plan(document), document
