"""``prt data``: inspect dataset stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from policy_runtime.data import DatasetFormatError, EpisodeDataset

data_app = typer.Typer(
    help="Inspect episode datasets (ours or Diffusion Policy's replay-buffer zarr).",
    no_args_is_help=True,
)


def _size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{int(n_bytes)} B"
        n_bytes /= 1024
    raise AssertionError("unreachable")


@data_app.command(
    "info",
    epilog="Examples:\n\n  prt data info demos.zarr\n\n  prt data info pusht_cchi_v7_replay.zarr",
)
def info(store: Annotated[Path, typer.Argument(help="A .zarr directory or .zarr.zip")]) -> None:
    """Print episodes, keys, shapes, dtypes, sizes and compression ratio of a dataset."""
    try:
        ds = EpisodeDataset.open(store)
        rows = ds.info()
    except (DatasetFormatError, ValueError) as exc:
        typer.echo(f"prt data info: {exc}", err=True)
        raise typer.Exit(1) from exc
    console = Console()
    lengths = ds.episode_lengths
    console.print(f"[bold]{store}[/bold]  layout: {ds.layout}")
    if ds.schema is not None:
        s = ds.schema
        console.print(
            f"task: {s.task or '-'}  robot: {s.robot or '-'}  control_hz: {s.control_hz:g}"
            f"  action offset: {s.action_offset_steps} step(s)  source: {s.source or '-'}"
        )
    length_text = (
        f"length min/median/max {lengths.min()}/{int(np.median(lengths))}/{lengths.max()}"
        if len(lengths)
        else "no episodes"
    )
    console.print(f"episodes: {ds.n_episodes}  steps: {ds.n_steps}  {length_text}")
    table = Table("key", "shape", "dtype", "chunks", "compressor", "size", "stored", "ratio")
    for row in rows:
        table.add_row(
            row.key,
            str(row.shape),
            row.dtype,
            str(row.chunks),
            row.compressor,
            _size(row.nbytes),
            _size(row.nbytes_stored),
            f"{row.compression_ratio:.2f}x",
        )
    total, stored = sum(r.nbytes for r in rows), sum(r.nbytes_stored for r in rows)
    table.add_row(
        "total",
        "",
        "",
        "",
        "",
        _size(total),
        _size(stored),
        f"{total / stored:.2f}x" if stored else "-",
    )
    console.print(table)
