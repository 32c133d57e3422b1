"""``prt eval``: evaluate a policy in simulation (success rate, videos, inference-steps sweeps)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from policy_runtime.cli.options import parse_size
from policy_runtime.cli.sim import DomainRand

if TYPE_CHECKING:
    from policy_runtime.evaluation.evaluate import EvalReport

EPILOG = (
    "Examples:\n\n"
    "  prt eval --task push_t --policy runs/dp --episodes 200 --workers 4\n\n"
    "  prt eval --task drawer --variant all --policy ckpt/ --episodes 90 --videos 3 "
    "--out eval/drawer\n\n"
    "  prt eval --task push_t --policy runs/dp --episodes 50 "
    "--sweep inference_steps=1,2,4,8,16,100\n\n"
    "  prt eval --task push_t --policy runs/dp --episodes 50 "
    "--sweep execution_horizon=4,8,12,15\n\n"
    "  prt eval --task pick_place --policy ckpt/ --episodes 1000 --ray-address auto "
    "--workers 16\n\n"
    "  prt eval --task push_t --policy bundles/dp --execution rtc --latency-ms 250\n\n"
    "  prt eval --task push_t --policy bundles/dp --executor-config config/executor_ur5e.yaml\n\n"
    "  prt eval --task push_t --policy bundles/dp --no-safety   # the engine alone, to compare\n\n"
    "  prt eval --task push_t --policy bundles/push_t_drifting --object-state marker"
    "   # the block's state from its marker"
)


def eval_policy(
    policy: Annotated[
        Path, typer.Option(help="Checkpoint directory, training run directory, or policy bundle.")
    ],
    task: Annotated[str, typer.Option(help="Task name: push_t, pick_place, drawer.")],
    variant: Annotated[
        str | None, typer.Option(help="Task variant; 'all' cycles the variants by seed.")
    ] = None,
    episodes: Annotated[int, typer.Option(min=1, help="Episodes (seeds) to run.")] = 50,
    start_seed: Annotated[
        int, typer.Option(help="Seed of the first episode (away from training seeds).")
    ] = 100_000,
    workers: Annotated[int, typer.Option(min=1, help="Parallel worker processes.")] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Run workers as Ray actors on this cluster ('local' starts one)."),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Directory for eval_log.json, videos and sweep results.")
    ] = Path("eval_out"),
    videos: Annotated[int, typer.Option(min=0, help="Record mp4s of the first N episodes.")] = 0,
    video_camera: Annotated[str, typer.Option(help="Camera the videos show.")] = "front",
    video_size: Annotated[str, typer.Option(help="Video frame size HxW (multiples of 16).")] = (
        "240x320"
    ),
    inference_steps: Annotated[
        int | None, typer.Option(min=1, help="Override the sampler's denoising steps.")
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(help="A BeT policy's sampling temperature, > 0 (lower: greedier)."),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(help="A bundle's backend: onnxruntime or openvino (default: automatic)."),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="A bundle's precision: fp32, bf16, fp16, int8 (default: the fastest it passed "
            "a check for)."
        ),
    ] = None,
    force_precision: Annotated[
        bool,
        typer.Option(help="Run a precision the bundle has no passed closed-loop check for."),
    ] = False,
    execution_horizon: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Actions executed per chunk before re-planning (default: the policy's "
            "n_action_steps).",
        ),
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option(
            help="Evaluate once per value on the same seeds: inference_steps=1,2,4,..., "
            "execution_horizon=2,4,8,... or (BeT) temperature=0.1,0.3,1"
        ),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="End episodes after this many steps.")
    ] = None,
    torch_threads: Annotated[
        int,
        typer.Option(
            min=1, help="torch threads per worker (the same count gives the same episodes)."
        ),
    ] = 1,
    domain_rand: DomainRand = "none",
    execution: Annotated[
        str,
        typer.Option(
            help="Chunk execution: replace (receding horizon), temporal_ensemble, aggregate, "
            "rtc (real-time chunking), or sync (no engine)."
        ),
    ] = "replace",
    latency_ms: Annotated[
        float, typer.Option(min=0, help="Simulated inference latency, observation to chunk.")
    ] = 0.0,
    safety: Annotated[
        bool,
        typer.Option(
            help="Run the deployed stack (supervisor, watchdog, IK, safety filter) at the "
            "controller rate, as on the robot; --no-safety feeds the engine's targets to the "
            "simulated controller directly."
        ),
    ] = True,
    executor_config: Annotated[
        Path | None,
        typer.Option(
            help="Executor config (YAML) with the limits, watchdog and controller rate to run "
            "(default: a UR5 CB3 at 125 Hz, config/executor_ur5.yaml)."
        ),
    ] = None,
    object_state: Annotated[
        str,
        typer.Option(
            help="Where a low-dim policy's object state comes from: sim (exact), or marker "
            "(estimated from the object's ArUco markers in the front and side cameras, as on a "
            "real cell; push_t)."
        ),
    ] = "sim",
    camera_calibration: Annotated[
        list[Path] | None,
        typer.Option(
            help="With --object-state marker: a tracking camera's calibration YAML (prt "
            "calibrate) to track with, in place of the simulated camera's true pose "
            "(repeat for each camera)."
        ),
    ] = None,
) -> None:
    """Evaluate a policy in simulation: success rate with a Wilson 95% interval, mean score."""
    from policy_runtime.evaluation.evaluate import EvalConfig, check_config, evaluate
    from policy_runtime.evaluation.sweep import check_plotting, parse_sweep, run_sweep
    from sim_bridge.randomization import parse_factors

    try:
        sweep_spec = parse_sweep(sweep) if sweep is not None else None
        fixed = {
            "inference_steps": inference_steps,
            "execution_horizon": execution_horizon,
            "temperature": temperature,
        }
        if sweep_spec is not None and fixed[sweep_spec.name] is not None:
            option = "--" + sweep_spec.name.replace("_", "-")
            raise ValueError(f"--sweep {sweep_spec.name}=... and {option} exclude each other")
        size = parse_size("--video-size", video_size)
        config = EvalConfig(
            policy=policy,
            task=task,
            variant=variant,
            episodes=episodes,
            start_seed=start_seed,
            workers=workers,
            ray_address=ray_address,
            out=out,
            videos=videos,
            video_camera=video_camera,
            video_size=size,
            inference_steps=inference_steps,
            temperature=temperature,
            backend=backend,
            precision=precision,
            force_precision=force_precision,
            domain_rand=parse_factors(domain_rand),
            max_steps=max_steps,
            torch_threads=torch_threads,
            execution=execution,  # type: ignore[arg-type]  # EvalConfig checks the name
            inference_latency_s=latency_ms / 1000.0,
            execution_horizon=execution_horizon,
            safety=safety,
            executor_config=executor_config,
            object_state=object_state,  # type: ignore[arg-type]  # EvalConfig checks the name
            camera_calibrations=tuple(camera_calibration or ()),
        )
        check_config(config)
        if sweep_spec is not None:
            check_plotting()
    except ValueError as exc:
        typer.echo(f"prt eval: {exc}", err=True)
        raise typer.Exit(1) from exc

    runs = len(sweep_spec.values) if sweep_spec else 1
    progress = Progress(
        TextColumn(f"[bold]{task}[/bold] {{task.fields[label]}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("success {task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    bar = progress.add_task("eval", total=episodes * runs, label="", rate="-")
    successes: dict[str, int] = {}

    def on_episode(label: str, success: bool, done: int) -> None:
        progress.start()  # only once the policy loaded and episodes arrive
        successes[label] = successes.get(label, 0) + success
        rate = successes[label] / done
        progress.update(bar, advance=1, label=label, rate=f"{rate:.0%} ({successes[label]}/{done})")

    start = time.perf_counter()
    try:
        if sweep_spec is None:
            report = evaluate(config, lambda r, done: on_episode("", r.success, done))
            progress.stop()
            _print_table(task, [("", report)], time.perf_counter() - start)
            Console().print(f"log: {report.log_path}")
            for path in report.video_paths:
                Console().print(f"video: {path}")
        else:
            name = sweep_spec.name
            result = run_sweep(
                config,
                sweep_spec,
                lambda value, r, done: on_episode(f"{name}={value}", r.success, done),
            )
            progress.stop()
            rows = [
                (f"{name}={v}", r) for v, r in zip(sweep_spec.values, result.reports, strict=True)
            ]
            _print_table(task, rows, time.perf_counter() - start)
            Console().print(f"sweep: {result.csv_path}, {result.json_path}, {result.plot_path}")
    except (ValueError, RuntimeError) as exc:
        progress.stop()
        typer.echo(f"prt eval: {exc}", err=True)
        raise typer.Exit(1) from exc


def _print_table(task: str, rows: list[tuple[str, EvalReport]], wall_s: float) -> None:
    sweep = any(label for label, _ in rows)
    table = Table(title=f"{task}: {rows[0][1].config.policy}")
    if sweep:
        table.add_column("setting")
    columns = ("success", "95% interval", "mean score", "interventions/ep", "episodes", "wall (s)")
    for column in columns:
        table.add_column(column, justify="right")
    for label, report in rows:
        low, high = report.interval
        summary = report.summary()
        cells = [
            f"{report.success_rate:.1%} ({report.successes}/{report.episodes})",
            f"[{low:.1%}, {high:.1%}]",
            f"{report.mean_score:.3f}",
            f"{summary['interventions_per_episode']:.1f}" if report.config.safety else "-",
            str(report.episodes),
            f"{report.wall_time_s:.1f}",
        ]
        table.add_row(*([label] if sweep else []), *cells)
    console = Console()
    console.print(table)
    if sweep:
        console.print(f"total wall time: {wall_s:.1f} s")
