"""``prt data``: inspect dataset stores and convert rosbag2 recordings into them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from policy_runtime.data import DatasetFormatError, EpisodeDataset

data_app = typer.Typer(
    help="Inspect episode datasets (ours or Diffusion Policy's replay-buffer zarr); convert "
    "rosbag2 recordings into them.",
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


@data_app.command(
    "from-bag",
    epilog="Examples:\n\n"
    "  prt data from-bag session.mcap --config config/record_sim_push_t.yaml --out demos.zarr "
    "--split-topic /record/active\n\n"
    "  prt data from-bag rosbag2_2025_06_01 --config record.yaml --out demos.zarr "
    "--split-gap 2 --resume",
)
def from_bag(
    bag: Annotated[
        Path, typer.Argument(help="A rosbag2 (directory with metadata.yaml, .mcap or .db3).")
    ],
    config: Annotated[Path, typer.Option(help="The recording config (its topics and grid).")],
    out: Annotated[Path, typer.Option(help="The dataset store (.zarr directory) to write.")],
    split_topic: Annotated[
        str | None,
        typer.Option(help="A std_msgs/Bool topic: True starts an episode, False stops it."),
    ] = None,
    split_gap: Annotated[
        float | None,
        typer.Option(help="Seconds of silence on every stream that end an episode.", min=0.0),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Append to an existing store (its schema must match).")
    ] = False,
) -> None:
    """Convert a rosbag2 (MCAP or sqlite3) into dataset episodes; no ROS install needed.

    The episodes the live recorder would have recorded from the same messages (header stamps,
    the config's grid). Without a split option the whole bag is one episode; a split topic's
    times are the bag's log times, so record on the publishers' clock."""
    from policy_runtime.recording.bag import convert_bag
    from policy_runtime.recording.config import RecordingConfig

    def warn(text: str) -> None:
        typer.echo(f"prt data from-bag: {text}", err=True)

    try:
        recording = RecordingConfig.load(config)
        reports = convert_bag(bag, recording, out, split_topic, split_gap, resume, warn)
    except (ValueError, OSError) as exc:
        typer.echo(f"prt data from-bag: {exc}", err=True)
        raise typer.Exit(1) from None
    for report in reports:
        gaps = report.gaps()
        typer.echo(
            f"episode {report.index}: {report.length} rows, {report.duration_s:.1f} s, "
            f"max gap {report.max_gap_s * 1e3:.0f} ms"
            + (" FLAGGED (gap over the limit)" if report.flagged else "")
            + (f", gaps {gaps}" if gaps else "")
        )
    typer.echo(f"{len(reports)} episode(s) from {bag} into {out}")
