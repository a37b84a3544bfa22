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
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rollout.core.flag import KEY_PATTERN, Stratum
from rollout.core.online_eval import OnlineEval
from rollout.core.plan import EvalSpec, Policy, RolloutPlan, ShadowBudget, Stage, StageKind
from rollout.errors import InvalidFlagError, InvalidPlanError
from rollout.core.stats import CompletionSpec, MetricSpec

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
    model_config = ConfigDict(extra="forbid", frozen=True)


class StratumModel(_Model):
    name: str
    match: dict[str, Any] | list[dict[str, Any]]


class EvalModel(_Model):
    cases: str = Field(min_length=1, description="JSONL case file: id, input, expected or rubric, category")
    baseline: str = Field(description="import path of the baseline callable, module:attribute")
    candidate: str = Field(description="import path of the candidate callable, module:attribute")
    scorer: str = Field(description="import path of scorer(case, output) -> bool or score in [0, 1]")
    margin: float = Field(default=0.05, ge=0, le=1, description="tolerated drop in pass rate")
    min_cases: int = Field(default=10, ge=1)
    concurrency: int = Field(default=8, ge=1, le=256)
    rate_limit: float | None = Field(default=None, gt=0)
    timeout: float = Field(default=30.0, gt=0)


class BudgetModel(_Model):
    per_hour: float | None = Field(default=None, gt=0)
    total: float | None = Field(default=None, gt=0)
    cost_metric: str = "cost_usd"


class StageModel(_Model):
    name: str = Field(min_length=1, max_length=64)
    kind: Literal["eval", "shadow", "ramp", "full"]
    percent: float | dict[str, float] | None = None
    sample: float | None = Field(default=None, gt=0, le=1, description="shadow: share of units that also run the candidate")
    min_samples: int = Field(default=0, ge=0)
    min_duration: timedelta = timedelta(0)
    max_duration: timedelta | None = None
    approval: Literal["required", "none"] = "none"
    eval: EvalModel | None = None
    budget: BudgetModel | None = None
    rate_limit: float | None = Field(default=None, gt=0, description="shadow: candidate calls per second per app process")

    @field_validator("min_duration", "max_duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)


class MetricModel(_Model):
    name: str
    kind: Literal["binary", "continuous"]
    better: Literal["lower", "higher"]
    margin: float | str
    scale: Literal["linear", "log"] | None = None
    statistic: Literal["mean", "typical"] | None = Field(
        default=None, description="mean: per request, the bill (scale linear); typical: geometric mean (scale log)")
    bounds: tuple[float, float] | None = None
    quantile: float | None = None
    source: str | None = Field(default=None, description="the recorded metric this one reads, e.g. a p95 of latency_ms")


class JudgeBudgetModel(_Model):
    per_hour: float | None = Field(default=None, gt=0, description="the judge's own cost per rolling hour")
    total: float | None = Field(default=None, gt=0, description="the judge's own cost over the rollout")


class JudgeMetricModel(_Model):
    kind: Literal["binary", "continuous"] = "continuous"
    better: Literal["lower", "higher"] = "higher"
    margin: float | str
    bounds: tuple[float, float] | None = (0.0, 1.0)


class OnlineEvalModel(_Model):
    name: str = Field(description="the metric the judge's grades are recorded as")
    scorer: str = Field(description="import path, module:attribute, of a scorer (input, output) -> score in [0, 1] "
                                    "or an LlmJudge")
    sample: float = Field(gt=0, le=1, description="share of exposures, both arms alike, whose answers are graded")
    budget: JudgeBudgetModel | None = None
    metric: JudgeMetricModel
class CompletionModel(_Model):
    tolerance: float | str = Field(default=0.01, description="largest relative loss of outcomes per exposure, e.g. 1%")
    on_loss: Literal["hold", "rollback"] = "hold"
class PlanWarning(UserWarning):
    """A plan that is valid but probably does not judge what its author means."""
_COST_LIKE = re.compile(r"cost|token|spend|price|usd|eur|dollar|bill", re.IGNORECASE)
def plan_warnings(plan: RolloutPlan) -> list[str]:
    """What a valid plan probably gets wrong: a cost-like metric judged only on the log scale (the typical request)."""
    out = []
    linear = {m.metric for m in plan.metrics if m.scale == "linear" and m.quantile is None}
    for m in plan.metrics:
        if m.scale == "log" and m.quantile is None and _COST_LIKE.search(m.metric) and m.metric not in linear:
            out.append(f"metrics.{m.name}: a cost-like metric judged only as the typical request (scale: log);"
                       " a bill that rises through rare expensive calls passes. Add `statistic: mean` to judge the bill.")
    return out


class PlanModel(_Model):
    flag: str
    baseline: str
    candidate: str
    description: str = ""
    strata: list[StratumModel] = []
    stages: list[StageModel] = Field(min_length=1)
    metrics: list[MetricModel] = Field(min_length=1)
    online_evals: list[OnlineEvalModel] = []
    check_interval: timedelta = timedelta(seconds=30)
    alpha: float = Field(default=0.05, gt=0, le=0.5)
    on_inconclusive: Literal["hold", "rollback"] = "hold"
    on_approval_timeout: Literal["hold", "rollback"] = "hold"
    approval_timeout: timedelta = timedelta(hours=24)
    on_abort: Literal["rollback", "hold"] = "rollback"
    # A retried or re-run Prefect run whose rollout has ended starts nothing unless this says "allowed".
    restart: Literal["refused", "allowed"] = "refused"
    completion: CompletionModel = CompletionModel()

    @field_validator("check_interval", "approval_timeout", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return parse_duration(v)


def load_plan(source: str | Path | dict[str, Any]) -> RolloutPlan:
    """A validated plan from YAML text, a YAML file, or a dict. Raises InvalidPlanError listing every problem."""
    data = _read(source)
    try:
        model = PlanModel.model_validate(data)
    except ValidationError as exc:
        raise InvalidPlanError(_describe(e) for e in exc.errors()) from None
    plan = to_domain(model)
    for warning in plan_warnings(plan):
        warnings.warn(warning, PlanWarning, stacklevel=2)
    return plan


def plan_document(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The plan as plain JSON (what the rollouts table and the Prefect parameter form hold), validated."""
    load_plan(source)
    return _read(source)


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


def _describe(error: Any) -> str:
    where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in error["loc"]).replace(".[", "[")
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
    for i, s in enumerate(model.strata):
        try:
            strata.append(Stratum.from_json(s.model_dump()))
        except InvalidFlagError as exc:
            problems.append(f"strata[{i}]: {exc}")
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
        where = f"stages[{i}] ({st.name})"
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
        stages.append(Stage(
            name=st.name, kind=StageKind(st.kind), allocations=allocations, shadow_bp=shadow_bp,
            min_samples=st.min_samples, min_duration=st.min_duration, max_duration=st.max_duration,
            approval=st.approval == "required",
            eval=EvalSpec(**st.eval.model_dump()) if st.eval is not None else None,
            budget=ShadowBudget(**st.budget.model_dump()) if st.budget is not None else None,
            rate_limit=st.rate_limit,
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
        if scale is not None and m.scale is not None and scale != m.scale:
            problems.append(f"metrics.{m.name}: statistic {m.statistic} contradicts scale {m.scale}")
            continue
        try:
            metrics.append(MetricSpec(name=m.name, kind=m.kind, better=m.better, margin=margin, relative=relative,
                                      scale=scale or m.scale or "linear", bounds=m.bounds, quantile=m.quantile,
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
    tolerance, _ = _margin(model.completion.tolerance, "completion", problems)
    try:
        completion = CompletionSpec(tolerance=tolerance, on_loss=model.completion.on_loss)
    except ValueError as exc:
        problems.append(f"completion.tolerance: {exc}")
        completion = CompletionSpec()

    if problems:
        raise InvalidPlanError(problems)
    return RolloutPlan(
        flag=model.flag, baseline=model.baseline, candidate=model.candidate, strata=tuple(strata),
        stages=tuple(stages), metrics=tuple(metrics), check_interval=model.check_interval, alpha=model.alpha,
        on_inconclusive=Policy(model.on_inconclusive), on_approval_timeout=Policy(model.on_approval_timeout),
        approval_timeout=model.approval_timeout, on_abort=Policy(model.on_abort), online_evals=tuple(online_evals),
        restart_allowed=model.restart == "allowed", completion=completion,
    )


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
