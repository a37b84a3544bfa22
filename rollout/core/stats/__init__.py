"""The judge: anytime-valid comparison of a candidate against its baseline.

Pure (stdlib, numpy, scipy). Evidence in, Verdict out; data never raises,
programmer misuse (bad spec, bad alpha) raises ValueError.

    verdict = judge(evidence, [MetricSpec("error", kind="binary", margin=0.005)], alpha=0.05)
    verdict.decision   # Decision.CONTINUE / PASS / HOLD / ROLLBACK

Shadow pairs (the same request through both arms) go to `judge_paired`, which
returns the same Verdict; an eval gate's case results go to `eval_gate`.
"""

from rollout.core.stats._evidence import BASIS_POINTS, ArmKey, CellKey, ClusterKey, CompletionKey, Evidence, UnitKey
from rollout.core.stats._judge import exceedance_thresholds, judge
from rollout.core.stats._paired import (
    EvalGateResult,
    EvalGateRow,
    GateVerdict,
    PairedEvidence,
    PairKey,
    PairStats,
    discordant_variance,
    eval_gate,
    judge_paired,
    paired_pooled_comparison,
    tango_score,
)
from rollout.core.stats._pooling import binary_variance, clustered_comparison, pooled_comparison
from rollout.core.stats._sequence import anytime_p_value, boundary, log_evalue, srm_log_evalue
from rollout.core.stats._spec import CompletionSpec, MetricSpec
from rollout.core.stats._sufficient import (
    BINS_PER_LN,
    ArmStats,
    LogHistogram,
    UnitSums,
    bin_lower_edge,
    histogram_bin,
    merge,
)
from rollout.core.stats._verdict import Code, Decision, HealthCheck, MetricResult, MetricVerdict, Verdict

__all__ = [
    "exceedance_thresholds",
    "clustered_comparison",
    "UnitSums",
    "CompletionSpec",
    "CompletionKey",
    "ClusterKey",
    "BASIS_POINTS",
    "BINS_PER_LN",
    "ArmKey",
    "ArmStats",
    "CellKey",
    "Code",
    "Decision",
    "EvalGateResult",
    "EvalGateRow",
    "Evidence",
    "GateVerdict",
    "HealthCheck",
    "LogHistogram",
    "MetricResult",
    "MetricSpec",
    "MetricVerdict",
    "PairKey",
    "PairStats",
    "PairedEvidence",
    "UnitKey",
    "Verdict",
    "anytime_p_value",
    "bin_lower_edge",
    "binary_variance",
    "boundary",
    "discordant_variance",
    "eval_gate",
    "histogram_bin",
    "judge",
    "judge_paired",
    "log_evalue",
    "merge",
    "paired_pooled_comparison",
    "pooled_comparison",
    "srm_log_evalue",
    "tango_score",
]
