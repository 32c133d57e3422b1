"""Other dataset formats, read and written as our episodes; a module per format.

- ``ours``: our zarr stores (:mod:`policy_runtime.data`), also Diffusion Policy replay buffers;
- ``dp``: Diffusion Policy's own replay buffers (no schema): :mod:`.diffusion_policy`;
- ``lerobot``: LeRobot datasets (v3.0 read and write, v2.1/v2.0 read): :mod:`.lerobot`.

Every format reads into an :class:`EpisodeSource` (our schema and episodes, one at a time);
:func:`convert` writes one into another format, all or nothing. pyarrow (LeRobot's parquet)
is imported only when a LeRobot dataset is read or written: the deploy path never needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from policy_runtime.data.formats.base import (
    EpisodeSource,
    SourceEpisode,
    StoreSource,
    as_source,
    staged_directory,
    write_store,
)
from policy_runtime.data.formats.diffusion_policy import ReplayBufferSource, read_replay_buffer
from policy_runtime.data.formats.lerobot import (
    LeRobotSource,
    LeRobotWriteReport,
    read_lerobot,
    write_lerobot,
)
from policy_runtime.data.layout import DatasetFormatError
from policy_runtime.data.reader import EpisodeDataset

SourceFormat = Literal["ours", "dp", "lerobot"]
TargetFormat = Literal["ours", "lerobot"]
SOURCE_FORMATS: tuple[str, ...] = get_args(SourceFormat)
TARGET_FORMATS: tuple[str, ...] = get_args(TargetFormat)


def detect_format(path: str | Path) -> SourceFormat:
    """``lerobot`` for a directory with ``meta/info.json``; for a zarr store, ``ours`` when
    it has our schema, else ``dp``."""
    path = Path(path)
    if not path.exists():
        raise DatasetFormatError(f"{path}: no such dataset")
    if path.is_dir() and (path / "meta" / "info.json").is_file():
        return "lerobot"
    try:
        dataset = EpisodeDataset.open(path)
    except DatasetFormatError as exc:
        raise DatasetFormatError(
            f"{path}: neither a LeRobot dataset (no meta/info.json) nor a zarr replay buffer "
            f"({exc})"
        ) from None
    return "ours" if dataset.schema is not None else "dp"


def target_format(path: str | Path) -> TargetFormat:
    """The format a destination path asks for: ``ours`` for ``*.zarr``, else ``lerobot``."""
    name = Path(path).name
    if name.endswith(".zip"):
        raise DatasetFormatError(f"{path}: zip stores are read-only; write a .zarr directory")
    return "ours" if name.endswith(".zarr") else "lerobot"


def open_source(
    path: str | Path,
    fmt: str | None = None,
    fps: float | None = None,
    task: str | None = None,
) -> EpisodeSource:
    """Read ``path`` (format detected unless ``fmt``) as an :class:`EpisodeSource`. ``fps``
    is needed for a Diffusion Policy replay buffer (it does not store its rate)."""
    fmt = fmt or detect_format(path)
    if fmt == "lerobot":
        return read_lerobot(path)
    if fmt == "ours":
        return StoreSource.open(path)
    if fmt == "dp":
        if fps is None:
            raise DatasetFormatError(
                f"{path}: a Diffusion Policy replay buffer does not store its rate: give fps "
                "(--fps)"
            )
        return read_replay_buffer(path, fps, task or "")
    raise DatasetFormatError(f"format {fmt!r} is not one of {list(SOURCE_FORMATS)}")


@dataclass(frozen=True)
class ConvertReport:
    source: Path
    destination: Path
    source_format: str
    target_format: str
    episodes: int
    steps: int
    detail: str = ""


def convert(
    source: str | Path,
    destination: str | Path,
    *,
    source_format: str | None = None,
    target: str | None = None,
    fps: float | None = None,
    task: str | None = None,
    vcodec: str = "libsvtav1",
) -> ConvertReport:
    """Convert the dataset at ``source`` into ``destination`` (which must not exist).

    Formats are detected from ``source``'s contents and ``destination``'s name (``*.zarr``:
    ours, else LeRobot) unless given. Nothing appears at ``destination`` unless every
    episode was written. ``fps``: a replay buffer's rate (else it must agree with the
    dataset's); ``task``: the task text (LeRobot's per-frame task; a replay buffer's task)."""
    source, destination = Path(source), Path(destination)
    target = target or target_format(destination)
    if target not in TARGET_FORMATS:
        raise DatasetFormatError(f"target format {target!r} is not one of {list(TARGET_FORMATS)}")
    reader = open_source(source, source_format, fps, task)
    if fps is not None and reader.format != "dp" and abs(reader.schema.control_hz - fps) > 1e-9:
        raise DatasetFormatError(
            f"{source}: its rate is {reader.schema.control_hz:g} Hz, not the --fps {fps:g} given"
        )
    if target == "lerobot":
        report: LeRobotWriteReport = write_lerobot(reader, destination, task=task, vcodec=vcodec)
        videos = [k for k, ft in report.features.items() if ft["dtype"] == "video"]
        detail = f"LeRobot v3.0, {report.fps} fps" + (
            f", {len(videos)} video feature(s) ({report.codec})" if videos else ""
        )
    else:
        write_store(reader, destination)
        detail = "policy_runtime zarr store (a Diffusion Policy replay buffer with our schema)"
    return ConvertReport(
        source=source,
        destination=destination,
        source_format=reader.format,
        target_format=target,
        episodes=reader.n_episodes,
        steps=reader.n_steps,
        detail=detail,
    )


__all__ = [
    "SOURCE_FORMATS",
    "TARGET_FORMATS",
    "ConvertReport",
    "EpisodeSource",
    "LeRobotSource",
    "ReplayBufferSource",
    "SourceEpisode",
    "StoreSource",
    "as_source",
    "convert",
    "detect_format",
    "open_source",
    "read_lerobot",
    "read_replay_buffer",
    "staged_directory",
    "target_format",
    "write_lerobot",
    "write_store",
]
