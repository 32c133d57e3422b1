"""BeT beside diffusion and drifting on ``push_t`` low-dim, on the same expert demos, in one run:
each policy's success over ``--episodes`` episodes from seed 100000 through the deployed
execution stack (``prt eval``'s default), its inference latency per chunk and per executed action
through the runtime (its exported bundle on onnxruntime, numpy sampler), and the
reproducibility table of the BeT study's kind: success against the number of bins, with and
without the offset head, and against the history length, each variant trained at
``--table-steps`` and evaluated over ``--table-episodes`` episodes from seed 100000.

    python -m bench.bet [--workdir bench_runs] [--steps 20000] [--episodes 200]
        [--table-steps 20000] [--table-episodes 50] [--policies bet,drifting,diffusion]
        [--train-only NAME]

Runs land in ``--workdir`` beside ``bench.policies``'s (the same demos; its ``run_diffusion``
and ``run_drifting`` are the other two policies, trained here at that bench's budgets when
missing: ~6 h and ~4 h on a 2-core CPU, resumable). Without ``run_drifting`` the shipped
``bundles/push_t_drifting`` stands in for it: it is that run, exported. Trained runs and
evaluations are reused when present (``bench.policies.evaluated``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim_bridge.gl import configure_headless_rendering

configure_headless_rendering()

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.policies import demos, evaluated, per_episode, train  # noqa: E402
from policy_runtime.benchmarks.inference import bench_bundle  # noqa: E402
from policy_runtime.evaluation.evaluate import EvalConfig  # noqa: E402
from policy_runtime.export.bundle import ExportOptions, export_bundle  # noqa: E402
from policy_runtime.inference import load_policy  # noqa: E402
from policy_runtime.inference.manifest import MANIFEST_FILE  # noqa: E402
from policy_runtime.inference.providers import RuntimeOptions  # noqa: E402
from policy_runtime.training.checkpoint import CONFIG_FILE, resolve  # noqa: E402

SHIPPED_DRIFTING = Path(__file__).resolve().parents[1] / "bundles" / "push_t_drifting"
#: BeT as Diffusion Policy's BeT baseline runs it (To 3, one action executed per step, 24 bins,
#: minGPT 4 x 4 x 72, focal gamma 2, offset loss x1000, AdamW lr 1e-4, betas (0.9, 0.95),
#: weight decay 0.1, gradients clipped at 1), with this repository's cosine schedule and EMA.
#: The newest step also predicts the action after its own (horizon To + 1), executed only if the
#: next chunk is late: a one-action chunk runs out before the next 10 Hz period's first
#: controller tick in every other period at 125 Hz (12.5 ticks per period), and the stack holds.
BET = [
    "horizon=4",
    "n_obs_steps=3",
    "n_action_steps=1",
    "lr=1e-4",
    "betas=[0.9,0.95]",
    "weight_decay=0.1",
    "grad_clip_norm=1.0",
    "warmup_steps=500",
]
BET_BATCH = 256
#: The study's table: (row label, overrides over BET). The reference row is BET itself.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "k8": ("k = 8", ["model.bet_bins=8"]),
    "k24": ("k = 24, offsets, history 3 (reference)", []),
    "k64": ("k = 64", ["model.bet_bins=64"]),
    "no_offsets": ("k = 24, no offset head", ["model.bet_offsets=false"]),
    "history1": ("history 1", ["horizon=2", "n_obs_steps=1"]),
    "history10": ("history 10", ["horizon=11", "n_obs_steps=10"]),
    # Not in the study: the bins over the motion from the measured pose, not the workspace.
    "relative": ("k = 24, actions relative to ee_pose", ["model.bet_relative_to=ee_pose"]),
}
#: bench.policies's budgets for the other two (steps, batch).
OTHERS = {"diffusion": (84_000, 128), "drifting": (22_000, 32)}


@dataclass
class Candidate:
    name: str
    #: A run directory (trained here) or a bundle.
    policy: Path
    #: Actions executed per chunk (the policy's n_action_steps).
    executed: int
    #: DDIM steps (diffusion), else None.
    inference_steps: int | None = None


def bet_run(workdir: Path, data: Path, name: str, steps: int, extra: list[str]) -> Path:
    out = workdir / f"run_bet_{name}_{steps}"
    train(data, out, "bet", steps, BET_BATCH, [*BET, *extra])
    return out


def bundle_of(policy: Path, workdir: Path, name: str) -> Path:
    """The policy's bundle: itself, or its checkpoint exported once (re-exported when the
    checkpoint is newer)."""
    if (policy / MANIFEST_FILE).is_file():
        return policy
    checkpoint = resolve(policy)
    bundle = workdir / f"bundle_{name}"
    manifest = bundle / MANIFEST_FILE
    if (
        not manifest.is_file()
        or manifest.stat().st_mtime < (checkpoint / CONFIG_FILE).stat().st_mtime
    ):
        export_bundle(checkpoint, bundle, ExportOptions())
    return bundle


def success(
    policy: Path, episodes: int, workers: int, out: Path, inference_steps: int | None = None
) -> dict[str, Any]:
    """``prt eval`` through the deployed stack over ``episodes`` from seed 100000."""
    return evaluated(
        EvalConfig(
            policy=policy if (policy / MANIFEST_FILE).is_file() else resolve(policy),
            task="push_t",
            episodes=episodes,
            workers=workers,
            inference_steps=inference_steps,
            out=out,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demos", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20_000, help="BeT optimiser steps")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--table-steps", type=int, default=20_000)
    parser.add_argument("--table-episodes", type=int, default=50)
    parser.add_argument("--policies", default="bet,drifting,diffusion")
    parser.add_argument("--train-only", choices=("bet", "table", *OTHERS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("bench_runs"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    console = Console()
    data = demos(args.workdir, args.demos)
    wanted = args.policies.split(",")

    candidates: list[Candidate] = []
    if "bet" in wanted and args.train_only in (None, "bet"):
        candidates.append(Candidate("bet", bet_run(args.workdir, data, "k24", args.steps, []), 1))
    for kind, (steps, batch) in OTHERS.items():
        if kind not in wanted or args.train_only not in (None, kind):
            continue
        run = args.workdir / f"run_{kind}"
        if kind == "drifting" and not run.is_dir() and args.train_only is None:
            candidates.append(Candidate(kind, SHIPPED_DRIFTING, 8))
            continue
        train(data, run, kind, steps, batch)
        candidates.append(Candidate(kind, run, 8, 10 if kind == "diffusion" else None))
    table_runs = {}
    if args.train_only in (None, "table"):
        for name, (_, extra) in VARIANTS.items():
            table_runs[name] = bet_run(args.workdir, data, name, args.table_steps, extra)
    if args.train_only:
        return

    results = Table(
        "policy",
        "success [95% Wilson]",
        "mean coverage",
        "holds / episode (most frequent)",
        "latency per chunk p50 / p99 (ms)",
        "actions per chunk",
        "latency per action (ms)",
        title=f"push_t low-dim, {args.demos} expert demos, {args.episodes} episodes from seed "
        f"100000, deployed stack (BeT {args.steps} steps x {BET_BATCH}; diffusion DDIM 10)",
    )
    options = RuntimeOptions(providers=("cpu",), intra_op_threads=2)
    for c in candidates:
        out = args.workdir / f"eval_{c.name}"
        summary = success(c.policy, args.episodes, args.workers, out, c.inference_steps)
        bundle = bundle_of(c.policy, args.workdir, c.name)
        (row,) = bench_bundle(bundle, [10], options, repeats=60)
        rate, (low, high) = summary["success_rate"], summary["success_interval_95"]
        precisions = {g.precision for g in load_policy(bundle).manifest.graphs}
        results.add_row(
            f"{c.name} ({'/'.join(sorted(precisions))} bundle)",
            f"{rate:.1%} [{low:.1%}, {high:.1%}]",
            f"{summary['mean_score']:.3f}",
            per_episode(summary["holds"], args.episodes),
            f"{row.runtime.p50_ms:.2f} / {row.runtime.p99_ms:.2f}",
            str(c.executed),
            f"{row.runtime.p50_ms / c.executed:.2f}",
        )
    console.print(results)

    table = Table(
        "variant",
        "success [95% Wilson]",
        "mean coverage",
        title=f"BeT reproducibility: {args.table_steps} steps x {BET_BATCH} each, "
        f"{args.table_episodes} episodes from seed 100000",
    )
    for name, run in table_runs.items():
        summary = success(run, args.table_episodes, args.workers, args.workdir / f"eval_{name}")
        rate, (low, high) = summary["success_rate"], summary["success_interval_95"]
        table.add_row(
            VARIANTS[name][0], f"{rate:.1%} [{low:.1%}, {high:.1%}]", f"{summary['mean_score']:.3f}"
        )
    console.print(table)


if __name__ == "__main__":
    main()
