"""``prt quantize`` (int8 twins of a bundle's graphs) and ``prt calibrate-precision`` (accept a
low precision for a bundle by its closed-loop success)."""

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
QUANTIZE_EPILOG = (
    "Examples:\n\n"
    "  prt quantize my_bundle --dataset data/push_t_200.zarr\n\n"
    "  prt calibrate-precision my_bundle --task push_t --precision int8 --workers 2"
)


def quantize(
    bundle: Annotated[Path, typer.Argument(help="Policy bundle directory (changed in place).")],
    dataset: Annotated[
        Path, typer.Option(help="The policy's training dataset: calibration observations.")
    ],
    observations: Annotated[
        int, typer.Option(min=2, help="Observation histories to calibrate on.")
    ] = 128,
    held_out: Annotated[
        int, typer.Option(min=1, help="Further histories that judge the result, not calibrate it.")
    ] = 16,
    max_error: Annotated[
        float,
        typer.Option(
            min=0, help="Largest mean |int8 - float| output over mean |float| output, held out."
        ),
    ] = 0.01,
    seed: Annotated[int, typer.Option(help="Seed of the observations' choice and the noise.")] = 0,
) -> None:
    """Add int8 twins of the bundle's graphs: ranges calibrated on what the float graphs see while
    the policy predicts chunks for OBSERVATIONS of the dataset's observation histories; then the
    layers that move the output most return to float until the error on HELD_OUT other
    histories is at most MAX_ERROR. The runtime runs them only at --precision int8, and by
    default only once prt calibrate-precision has accepted them in closed loop."""
    from policy_runtime.export.quantize import dataset_observations, quantize_bundle
    from policy_runtime.inference.manifest import BundleError, BundleFiles, read_manifest

    try:
        manifest = read_manifest(BundleFiles(bundle))
        keys = [k.key for k in manifest.obs.keys]
        count = observations + held_out
        obs, source = dataset_observations(dataset, keys, manifest.obs.n_obs_steps, count, seed)
        report = quantize_bundle(bundle, obs, source, held_out, max_error, seed)
    except (BundleError, ValueError, OSError) as exc:
        typer.echo(f"prt quantize: {exc}", err=True)
        raise typer.Exit(1) from exc
    for graph in report.manifest.graphs:
        twin = graph.int8
        if twin is not None:
            size = (bundle / twin.file).stat().st_size / 1e6
            typer.echo(
                f"{graph.file} -> {twin.file} ({size:.1f} MB): {twin.int8_layers} of "
                f"{twin.layers} layers in int8, held-out error {twin.held_out_error:.4f} "
                f"({twin.held_out_samples} calls; calibrated on {twin.samples})"
            )
    typer.echo(
        f"next: prt calibrate-precision {bundle} --task TASK --precision int8 (until then int8 "
        "runs only when forced)"
    )


def calibrate_precision(
    bundle: Annotated[Path, typer.Argument(help="Policy bundle directory.")],
    task: Annotated[str, typer.Option(help="The policy's task in simulation.")],
    precision: Annotated[str, typer.Option(help="The precision to check: bf16, fp16 or int8.")],
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
