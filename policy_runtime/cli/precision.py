"""``prt calibrate-precision``: accept a low precision for a bundle by its closed-loop success."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EPILOG = (
    "Examples:\n\n"
    "  prt calibrate-precision bundles/push_t_drifting --task push_t --precision bf16 "
    "--episodes 200 --workers 2\n\n"
    "  prt eval --policy bundles/push_t_drifting --task push_t   (runs at bf16 once accepted)"
)


def calibrate_precision(
    bundle: Annotated[Path, typer.Argument(help="Policy bundle directory.")],
    task: Annotated[str, typer.Option(help="The policy's task in simulation.")],
    precision: Annotated[str, typer.Option(help="The precision to check: bf16 or fp16.")],
    backend: Annotated[str, typer.Option(help="The backend that runs it.")] = "openvino",
    episodes: Annotated[int, typer.Option(min=1, help="Episodes per precision.")] = 200,
    start_seed: Annotated[int, typer.Option(help="Seed of the first episode.")] = 100_000,
    workers: Annotated[int, typer.Option(min=1, help="Parallel worker processes.")] = 1,
    tolerance_points: Annotated[
        float, typer.Option(min=0, help="Largest accepted drop in success (percentage points).")
    ] = 2.0,
    out: Annotated[
        Path | None, typer.Option(help="Directory for the two evaluations' logs.")
    ] = None,
) -> None:
    """Run the bundle's task at fp32 and at PRECISION over the same seeds; record the verdict in
    its manifest (the runtime then picks the precision by default where the hardware has it)."""
    from policy_runtime.evaluation.precision_check import PrecisionCheckConfig, check_precision
    from policy_runtime.inference.backends import PrecisionError
    from policy_runtime.inference.manifest import BundleError

    config = PrecisionCheckConfig(
        bundle=bundle,
        task=task,
        precision=precision,
        backend=backend,
        episodes=episodes,
        start_seed=start_seed,
        workers=workers,
        tolerance_points=tolerance_points,
        out=out,
    )
    try:
        check = check_precision(config)
    except (BundleError, PrecisionError, ValueError) as exc:
        typer.echo(f"prt calibrate-precision: {exc}", err=True)
        raise typer.Exit(1) from exc
    verdict = "ACCEPTED" if check.accepted else "REJECTED"
    typer.echo(
        f"{verdict}: {check.precision} on {check.backend}: success "
        f"{check.success_rate:.1%} vs fp32 {check.fp32_success_rate:.1%} over {check.episodes} "
        f"episodes from seed {check.start_seed} (tolerance {check.tolerance_points} points); "
        f"open-loop |difference| max {check.open_loop_max_abs_error:.4f}, mean "
        f"{check.open_loop_mean_abs_error:.5f} (normalised); recorded in {bundle}/manifest.json"
    )
    if not check.accepted:
        raise typer.Exit(3)
