"""Evaluation in simulation: the policy loop, success rates with Wilson intervals, sweeps.

Importing this package imports no torch (only loading a torch checkpoint does)::

    from policy_runtime.evaluation.evaluate import EvalConfig, evaluate

    report = evaluate(EvalConfig(policy=Path("runs/dp"), task="push_t", episodes=50, out=out))
    report.success_rate, report.interval, report.mean_score

(The function ``evaluate`` is not re-exported here: ``policy_runtime.evaluation.evaluate`` is its
module, so patching and ``import ... as`` find the module, not a function of the same name.)
"""

from __future__ import annotations

from policy_runtime.evaluation.evaluate import (
    LOADERS,
    EpisodeRecord,
    EvalConfig,
    EvalReport,
    RuntimePolicyFn,
    load_runtime,
)
from policy_runtime.evaluation.rollout import PolicyEpisodeResult, PolicyFn, run_policy_episode
from policy_runtime.evaluation.stats import wilson_interval
from policy_runtime.evaluation.sweep import Sweep, SweepReport, parse_sweep, run_sweep

__all__ = [
    "LOADERS",
    "EpisodeRecord",
    "EvalConfig",
    "EvalReport",
    "PolicyEpisodeResult",
    "PolicyFn",
    "RuntimePolicyFn",
    "Sweep",
    "SweepReport",
    "load_runtime",
    "parse_sweep",
    "run_policy_episode",
    "run_sweep",
    "wilson_interval",
]
