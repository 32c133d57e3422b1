"""Accept a low precision for a bundle only by what it does: closed-loop success in simulation.

A bf16, fp16 or int8 graph changes every action a little (a DP-sized U-Net: ~0.01 in normalised
units), so the export's 1e-4 parity bound would refuse it and says nothing about whether the
task still succeeds. :func:`check_precision` runs the bundle's task over the same seeds at fp32
and at the precision on the same backend, through the same deployed stack as ``prt eval``,
records the open-loop difference on random observations with the same noise, and accepts the
precision when success fell by at most ``tolerance_points``. The verdict goes into the bundle's
``manifest.json`` (``precision_checks``), which the runtime reads: a precision without a passed
check runs only when forced (:mod:`policy_runtime.inference.backends`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policy_runtime.evaluation.evaluate import EvalConfig, evaluate
from policy_runtime.inference import RuntimeOptions, load_policy
from policy_runtime.inference.backends import cpu_info
from policy_runtime.inference.manifest import (
    BundleFiles,
    PrecisionCheck,
    read_manifest,
    require_directory,
    rewrite_manifest,
)
from policy_runtime.inference.runtime import OnnxPolicy
from policy_runtime.inference.specs import random_observations

#: Random observations the open-loop difference is measured on.
OPEN_LOOP_BATCH = 64


@dataclass(frozen=True)
class PrecisionCheckConfig:
    bundle: Path
    task: str
    precision: str
    backend: str = "openvino"
    episodes: int = 200
    start_seed: int = 100_000
    workers: int = 1
    tolerance_points: float = 2.0
    #: Where the two evaluations' logs go (None: not kept).
    out: Path | None = None


def open_loop_error(reference: OnnxPolicy, candidate: OnnxPolicy, seed: int = 0) -> np.ndarray:
    """|candidate - reference| actions (normalised units), on :data:`OPEN_LOOP_BATCH` random
    observations spanning each key's normalised range [-1, 1], with the same noise."""
    obs = random_observations(reference.specs.obs, OPEN_LOOP_BATCH, np.random.default_rng(seed))
    scale, _ = reference.specs.action.normalization.arrays()
    ours = candidate.predict(obs, np.random.default_rng(seed + 1)).actions
    theirs = reference.predict(obs, np.random.default_rng(seed + 1)).actions
    return np.abs((ours - theirs) * scale)


def record_check(bundle: Path, check: PrecisionCheck) -> None:
    """Write ``check`` into the bundle's manifest (replacing one for the same backend and
    precision), atomically: the graphs and their hashes are untouched."""
    manifest = read_manifest(BundleFiles(bundle))
    kept = [
        c
        for c in manifest.precision_checks
        if (c.backend, c.precision) != (check.backend, check.precision)
    ]
    rewrite_manifest(bundle, manifest.model_copy(update={"precision_checks": [*kept, check]}))


def within_tolerance(fp32_rate: float, rate: float, tolerance_points: float) -> bool:
    """Whether success fell by at most ``tolerance_points`` percentage points (rounded: 86% -
    84% is 2.0000000000000018 points in floating point, and 2 is within 2)."""
    return round(100.0 * (fp32_rate - rate), 9) <= tolerance_points


def check_precision(config: PrecisionCheckConfig) -> PrecisionCheck:
    """Evaluate fp32 and ``config.precision`` on the same seeds, record and return the check."""
    if config.precision == "fp32":
        raise ValueError(
            "precision: fp32 is the reference, always accepted; check bf16, fp16 or int8"
        )
    if config.backend not in ("onnxruntime", "openvino"):
        raise ValueError(
            f"backend: {config.backend!r}; a check is for one backend: onnxruntime or openvino"
        )
    require_directory(config.bundle)  # before the episodes, not after
    base = RuntimeOptions(intra_op_threads=1, inter_op_threads=1, backend=config.backend)
    reference = load_policy(config.bundle, options=dataclasses.replace(base, precision="fp32"))
    candidate = load_policy(
        config.bundle,
        options=dataclasses.replace(base, precision=config.precision, force_precision=True),
    )
    error = open_loop_error(reference, candidate)
    rates = {}
    for precision in ("fp32", config.precision):
        summary = evaluate(
            EvalConfig(
                policy=config.bundle,
                task=config.task,
                episodes=config.episodes,
                start_seed=config.start_seed,
                workers=config.workers,
                backend=config.backend,
                precision=precision,
                force_precision=precision != "fp32",
                out=None if config.out is None else config.out / precision,
            )
        ).summary()
        rates[precision] = float(summary["success_rate"])
    check = PrecisionCheck.model_validate(
        {
            "backend": candidate.backend,
            "precision": candidate.precision,
            "accepted": within_tolerance(
                rates["fp32"], rates[config.precision], config.tolerance_points
            ),
            "task": config.task,
            "episodes": config.episodes,
            "start_seed": config.start_seed,
            "success_rate": rates[config.precision],
            "fp32_success_rate": rates["fp32"],
            "tolerance_points": config.tolerance_points,
            "open_loop_max_abs_error": float(error.max()),
            "open_loop_mean_abs_error": float(error.mean()),
            "device": cpu_info().model,
        }
    )
    record_check(config.bundle, check)
    return check
