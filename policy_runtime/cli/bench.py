"""``prt bench``: benchmarks that print figures (inference latency per chunk)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

bench_app = typer.Typer(
    help="Benchmarks that print figures: inference latency per action chunk.",
    no_args_is_help=True,
)

EPILOG = (
    "Examples:\n\n"
    "  prt bench inference                       DP-sized U-Net: torch eager vs runtime\n\n"
    "  prt bench inference --bundle bundles/dp   an exported bundle on this machine\n\n"
    "  prt bench inference --providers cuda --steps 10 --steps 16"
)


@bench_app.command("inference", epilog=EPILOG)
def inference(
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="Time this bundle (only onnxruntime + numpy needed); default: a "
            "DP-sized U-Net with random weights, against torch eager."
        ),
    ] = None,
    steps: Annotated[list[int] | None, typer.Option(help="DDIM step counts (repeatable).")] = None,
    repeats: Annotated[int, typer.Option(min=3, help="Chunks timed per row.")] = 20,
    providers: Annotated[
        list[str] | None,
        typer.Option(help="onnxruntime providers (cpu, cuda, tensorrt); default: best available."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Threads for onnxruntime and torch (default: all).")
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Keep the DP-sized bundles here and reuse them (export takes minutes)."),
    ] = None,
    image: Annotated[
        bool,
        typer.Option(help="Also time DP's image policy (two 84x84 ResNet-18 cameras + U-Net)."),
    ] = False,
) -> None:
    """Per-chunk latency p50/p99: torch eager, the bundle runtime, bare onnxruntime, fused graph."""
    from policy_runtime.benchmarks.inference import STEPS, run
    from policy_runtime.inference.manifest import BundleError

    if bundle is None:
        try:
            import torch  # noqa: F401
        except ImportError:
            typer.echo(
                "prt bench inference: without --bundle it exports a DP-sized policy, which "
                "needs torch: pip install 'policy_runtime[train]', or pass --bundle",
                err=True,
            )
            raise typer.Exit(1) from None
    try:
        run(
            Console(),
            bundle=bundle,
            steps=tuple(steps or STEPS),
            repeats=repeats,
            providers=providers,
            threads=threads,
            workdir=workdir,
            image=image,
        )
    except (BundleError, ValueError) as exc:
        typer.echo(f"prt bench inference: {exc}", err=True)
        raise typer.Exit(1) from None
