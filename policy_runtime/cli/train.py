"""``prt train``: train a diffusion, drifting or BeT policy on a dataset store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from policy_runtime.data import DatasetFormatError

if TYPE_CHECKING:
    from policy_runtime.training.config import TrainConfig
    from policy_runtime.training.trainer import Evaluator


def train(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="key=value settings over the config (e.g. steps=5000 lr=3e-4)."),
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset store (.zarr).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (checkpoints, TensorBoard).")
    ] = None,
    policy: Annotated[str | None, typer.Option(help="diffusion, drifting or bet.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML training config.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue from a checkpoint or run directory.")
    ] = None,
) -> None:
    """Train a policy; checkpoints are safetensors + JSON (no pickle), resumable exactly."""
    from policy_runtime.training.config import load_config
    from policy_runtime.training.trainer import Trainer, TrainingError

    try:
        settings = load_config(config, overrides or [], data=data, out=out, policy=policy)
        trainer = Trainer(settings, resume=resume)
    except (ValueError, DatasetFormatError, TrainingError) as exc:
        typer.echo(f"prt train: {exc}", err=True)
        raise typer.Exit(1) from exc
    settings.out.mkdir(parents=True, exist_ok=True)
    evaluator = _evaluator(settings) if settings.eval_every and settings.eval_task else None
    progress = Progress(
        TextColumn(f"[bold]{settings.policy}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    bar = progress.add_task("train", total=settings.steps, completed=trainer.step, loss="-")

    def on_step(step: int, metrics: dict[str, float]) -> None:
        progress.update(bar, completed=step, loss=f"{metrics['loss']:.4f}")

    start = time.perf_counter()
    first = trainer.step
    try:
        with progress:
            result = trainer.train(on_step, evaluator)
    except TrainingError as exc:
        typer.echo(f"prt train: {exc}", err=True)
        raise typer.Exit(1) from exc
    rate = (result.steps - first) / (time.perf_counter() - start)
    last = result.checkpoints[-1] if result.checkpoints else None
    typer.echo(f"trained to step {result.steps} ({rate:.1f} steps/s); last checkpoint: {last}")


def _evaluator(settings: TrainConfig) -> Evaluator:
    """Evaluation in simulation of each checkpoint (the evaluation package does the work)."""

    def evaluate_checkpoint(directory: Path) -> dict[str, float]:
        from policy_runtime.evaluation.evaluate import EvalConfig, evaluate

        report = evaluate(
            EvalConfig(
                policy=directory,
                task=settings.eval_task or "",
                episodes=settings.eval_episodes,
                start_seed=settings.eval_start_seed,
                out=directory / "eval",
            )
        )
        return {"success": report.success_rate, "score": report.mean_score}

    return evaluate_checkpoint
