"""``prt data``: inspect datasets (ours, Diffusion Policy's, LeRobot's), convert between them,
and convert rosbag2 recordings into ours."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from policy_runtime.data import DatasetFormatError, EpisodeDataset

data_app = typer.Typer(
    help="Inspect episode datasets (ours, Diffusion Policy's replay-buffer zarr, LeRobot's); "
    "convert between them; convert rosbag2 recordings into ours.",
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
    epilog="Examples:\n\n  prt data info demos.zarr\n\n  prt data info pusht_cchi_v7_replay.zarr"
    "\n\n  prt data info ~/.cache/huggingface/lerobot/lerobot/pusht",
)
def info(
    store: Annotated[
        Path, typer.Argument(help="A .zarr directory or .zarr.zip, or a LeRobot dataset directory")
    ],
) -> None:
    """Print episodes, keys, shapes, dtypes, sizes and compression ratio of a dataset."""
    from policy_runtime.data.formats import detect_format

    try:
        if detect_format(store) == "lerobot":
            _lerobot_info(store)
            return
        ds = EpisodeDataset.open(store)
        rows = ds.info()
    except (DatasetFormatError, ValueError) as exc:
        typer.echo(f"prt data info: {exc}", err=True)
        raise typer.Exit(1) from exc
    console = Console()
    lengths = ds.episode_lengths
    console.print(f"[bold]{store}[/bold]  layout: {ds.layout}")
    if ds.schema is None:
        console.print(
            "no schema (a Diffusion Policy replay buffer): prt data convert reads it with --fps"
        )
    if ds.schema is not None:
        s = ds.schema
        console.print(
            f"task: {s.task or '-'}  robot: {s.robot or '-'}  control_hz: {s.control_hz:g}"
            f"  action offset: {s.action_offset_steps} step(s)  source: {s.source or '-'}"
        )
    console.print(f"episodes: {ds.n_episodes}  steps: {ds.n_steps}  {_length_text(lengths)}")
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


def _length_text(lengths: np.ndarray) -> str:
    if not len(lengths):
        return "no episodes"
    return f"length min/median/max {lengths.min()}/{int(np.median(lengths))}/{lengths.max()}"


def _lerobot_info(path: Path) -> None:
    from policy_runtime.data.formats import read_lerobot

    source = read_lerobot(path)
    console = Console()
    lengths = source.episode_lengths
    console.print(
        f"[bold]{path}[/bold]  layout: lerobot {source.version}  fps: {source.fps:g}  "
        f"robot: {source.info.get('robot_type') or '-'}"
    )
    tasks = "; ".join(f"{i}: {t!r}" for i, t in enumerate(source.tasks[:5]))
    more = f" (+{len(source.tasks) - 5} more)" if len(source.tasks) > 5 else ""
    console.print(f"tasks: {len(source.tasks)}  {tasks}{more}")
    console.print(
        f"episodes: {source.n_episodes}  frames: {source.n_steps}  {_length_text(lengths)}"
    )
    console.print(
        "our schema: "
        + (
            "from meta/policy_runtime.json (written by prt: converts back exactly)"
            if source.sidecar is not None
            else "derived from the LeRobot features"
        )
    )
    keys_of: dict[str, list[str]] = {}
    for mapping in source.mappings:
        part = "" if mapping.start is None else f"[{mapping.start}:{mapping.stop}]"
        keys_of.setdefault(mapping.feature, []).append(mapping.key + part)
    table = Table("feature", "dtype", "shape", "our key", "names / video")
    for name, ft in source.features.items():
        video = ft.get("info") or {}
        detail = (
            f"{video.get('video.codec', '?')} {video.get('video.pix_fmt', '')}"
            if ft.get("dtype") == "video"
            else ", ".join(str(n) for n in (ft.get("names") or [])[:4])
            + (" ..." if len(ft.get("names") or []) > 4 else "")
        )
        table.add_row(
            name,
            str(ft.get("dtype")),
            str(list(ft.get("shape", []))),
            ", ".join(keys_of.get(name, [])) or "-",
            detail,
        )
    console.print(table)
    files = Table("files", "count", "size")
    for label, pattern in (("data", "data/**/*.parquet"), ("videos", "videos/**/*.mp4")):
        found = [f for f in path.glob(pattern) if f.is_file()]
        if found:
            files.add_row(label, str(len(found)), _size(sum(f.stat().st_size for f in found)))
    console.print(files)


CONVERT_EPILOG = (
    "Examples:\n\n"
    "  prt data convert demos.zarr demos_lerobot\n\n"
    "  prt data convert ~/.cache/huggingface/lerobot/lerobot/pusht pusht.zarr\n\n"
    "  prt data convert pusht_cchi_v7_replay.zarr pusht.zarr --fps 10 --task push_t\n\n"
    "  prt data convert demos.zarr out --to lerobot --vcodec h264 --task 'push the T block'\n\n"
    "Formats: ours (our zarr stores), dp (a Diffusion Policy replay buffer: no schema, give "
    "--fps), lerobot (LeRobot v3.0 written; v3.0, v2.1, v2.0 read). The source's format is "
    "read from its contents; the destination's from its name (*.zarr: ours, else lerobot) "
    "unless --to. The destination must not exist; nothing is left there if the conversion "
    "fails."
)


@data_app.command("convert", epilog=CONVERT_EPILOG)
def convert_command(
    src: Annotated[Path, typer.Argument(help="The dataset to read.")],
    dst: Annotated[Path, typer.Argument(help="Where to write (must not exist).")],
    from_: Annotated[
        str | None,
        typer.Option("--from", help="Source format: ours, dp or lerobot (default: detected)."),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(help="Target format: ours or lerobot (default: *.zarr is ours)."),
    ] = None,
    fps: Annotated[
        float | None,
        typer.Option(help="A replay buffer's rate in Hz; else checked against the dataset's."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="Task text (LeRobot's per-frame task; a replay buffer's task)."),
    ] = None,
    vcodec: Annotated[
        str, typer.Option(help="LeRobot video codec: libsvtav1 (LeRobot's default) or h264.")
    ] = "libsvtav1",
) -> None:
    """Convert a dataset between our zarr stores, Diffusion Policy replay buffers and LeRobot."""
    from policy_runtime.data.formats import convert

    try:
        report = convert(
            src, dst, source_format=from_, target=to, fps=fps, task=task, vcodec=vcodec
        )
    except (ValueError, OSError) as exc:
        typer.echo(f"prt data convert: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{report.episodes} episode(s), {report.steps} step(s): {src} ({report.source_format}) "
        f"-> {dst} ({report.detail})"
    )


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
