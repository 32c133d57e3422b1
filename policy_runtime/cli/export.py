"""``prt export``: a training checkpoint -> a verified ONNX policy bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

EPILOG = (
    "Examples:\n\n"
    "  prt export --checkpoint runs/dp --out bundles/dp\n\n"
    "  prt export --checkpoint runs/dp --out bundles/dp10 --fuse-steps 10 --fuse-steps 16\n\n"
    "  prt export --checkpoint runs/drift/checkpoints/step_00020000 --out bundles/drift --fp16"
)


def export(
    checkpoint: Annotated[
        Path, typer.Option(help="Checkpoint directory, or a training run (its best, else latest).")
    ],
    out: Annotated[Path, typer.Option(help="Bundle directory to write (replaced if a bundle).")],
    fuse_steps: Annotated[
        list[int] | None,
        typer.Option(
            help="Also write a graph that runs the whole K-step DDIM loop (repeatable; diffusion)."
        ),
    ] = None,
    fused_only: Annotated[
        bool, typer.Option(help="Leave out the encoder + step graphs (fixed-step deployment).")
    ] = False,
    fp16: Annotated[
        bool, typer.Option(help="Half-precision graphs (float32 inputs and outputs).")
    ] = False,
    opset: Annotated[int, typer.Option(min=18, help="ONNX opset.")] = 18,
) -> None:
    """Export a checkpoint to a verified ONNX policy bundle.

    Writes manifest.json (normalisation, horizons, control rate, sampler, provenance, sha256 of
    every file) and the graphs, after checking torch against onnxruntime on random observations
    with the same noise: beyond the tolerance (1e-4 in fp32) nothing is written and the exit
    status is 1.
    """
    from policy_runtime.export.bundle import ExportError, ExportOptions, export_bundle

    options = ExportOptions(
        fuse_steps=tuple(fuse_steps or ()), fp16=fp16, opset=opset, fused_only=fused_only
    )
    console = Console()
    try:
        with console.status(f"exporting {checkpoint} (tracing graphs, checking parity)"):
            manifest = export_bundle(checkpoint, out, options)
    except (ExportError, ValueError) as exc:
        typer.echo(f"prt export: {exc}", err=True)
        raise typer.Exit(1) from None
    table = Table("file", "role", "precision", title=f"{out}: {manifest.kind} policy bundle")
    for graph in manifest.graphs:
        role = f"{graph.role} ({graph.fused_steps} DDIM steps)" if graph.fused_steps else graph.role
        table.add_row(graph.file, role, graph.precision)
    console.print(table)
    parity = Table("compared", "max |torch - onnxruntime|", "tolerance", title="parity")
    for check in manifest.parity:
        bound = "(recorded)" if check.tolerance is None else f"{check.tolerance:g}"
        parity.add_row(check.compared, f"{check.max_abs_error:.2e}", bound)
    console.print(parity)
