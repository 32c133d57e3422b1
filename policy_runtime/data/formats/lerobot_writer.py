"""Write LeRobot v3.0 datasets from our episodes (the format and the key mapping are in
:mod:`policy_runtime.data.formats.lerobot`)."""

from __future__ import annotations

import io
import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_runtime.data.formats import lerobot_stats
from policy_runtime.data.formats.base import (
    EpisodeSource,
    SourceEpisode,
    as_source,
    staged_directory,
)
from policy_runtime.data.formats.lerobot_layout import (
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_DATA_FILE_SIZE_IN_MB,
    DEFAULT_FEATURES,
    DEFAULT_VIDEO_FILE_SIZE_IN_MB,
    EPISODE_ROWS_PER_WRITE,
    EPISODES_PATH,
    INFO_PATH,
    MB,
    SIDECAR_FORMAT,
    SIDECAR_PATH,
    SIDECAR_VERSION,
    STATS_PATH,
    TASK_INDEX_KEY,
    TASKS_PATH,
    VIDEO_PATH,
    FeaturePlan,
    KeyMapping,
    load_pillow,
    load_pyarrow,
    plan_features,
    provenance_tasks,
)
from policy_runtime.data.formats.mp4 import VideoCodec, concat_mp4, encode_mp4
from policy_runtime.data.layout import DatasetFormatError
from policy_runtime.data.reader import EpisodeDataset
from policy_runtime.data.schema import DatasetSchema

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq


def _lerobot_frame_times(length: int, fps: int) -> np.ndarray:
    """LeRobot's ``timestamp`` column: ``frame_index / fps``, as Python computes it."""
    return np.arange(length) / fps


def _stamps_survive(stamps: np.ndarray, fps: int) -> bool:
    """Whether LeRobot's float32 ``timestamp`` gives back ``stamps`` exactly."""
    rebuilt = _lerobot_frame_times(len(stamps), fps).astype(np.float32).astype(np.float64)
    return bool(np.array_equal(rebuilt, stamps))


def _hf_feature(ft: Mapping[str, Any]) -> dict[str, Any]:
    value = {"dtype": ft["dtype"], "_type": "Value"}
    if list(ft["shape"]) == [1]:
        return value
    return {"feature": value, "length": int(ft["shape"][0]), "_type": "List"}


def _arrow_schema(features: Mapping[str, Mapping[str, Any]]) -> pa.Schema:
    """The data files' schema, as ``datasets`` writes it for LeRobot's features (scalar
    columns for shape [1], fixed-size lists otherwise, the features in the metadata)."""
    pa, _, _ = load_pyarrow()
    fields, hf = [], {}
    for name, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if ft["dtype"] == "image":
            fields.append(
                pa.field(name, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
            )
            hf[name] = {"_type": "Image"}
            continue
        value_type = pa.from_numpy_dtype(np.dtype(ft["dtype"]))
        width = int(ft["shape"][0])
        fields.append(pa.field(name, value_type if width == 1 else pa.list_(value_type, width)))
        hf[name] = _hf_feature(ft)
    metadata = {"huggingface": json.dumps({"info": {"features": hf}})}
    return pa.schema(fields, metadata=metadata)


def _tasks_table(tasks: list[str]) -> pa.Table:
    """``meta/tasks.parquet`` as pandas writes LeRobot's tasks DataFrame (the strings are its
    index ``task``; pandas restores it from the schema's metadata)."""
    pa, _, _ = load_pyarrow()
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.3.3",
    }
    schema = pa.schema(
        [pa.field("task_index", pa.int64()), pa.field("task", pa.string())],
        metadata={"pandas": json.dumps(pandas_meta)},
    )
    return pa.table(
        {"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks)},
        schema=schema,
    )


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    """LeRobot's ``update_chunk_file_indices``."""
    return (chunk + 1, 0) if file == chunks_size - 1 else (chunk, file + 1)


def _encode_png(frame: np.ndarray) -> bytes:
    """A frame as LeRobot's image writer stores an ``image`` feature (PNG, level 6)."""
    buffer = io.BytesIO()
    load_pillow("image feature").fromarray(frame).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


class _DataFiles:
    """``data/`` parquet files with LeRobot's rule for starting a new one (the current file's
    size plus the new episode at the file's average bytes per frame reaching the limit)."""

    def __init__(self, root: Path, schema: pa.Schema, chunks_size: int, limit_mb: float) -> None:
        self.root, self.schema = root, schema
        self.chunks_size, self.limit_mb = chunks_size, limit_mb
        self.chunk = self.file = 0
        self.file_start = 0
        self.started = False
        self._writer: pq.ParquetWriter | None = None

    @property
    def path(self) -> Path:
        return self.root / DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)

    def write(self, table: pa.Table, first_frame: int) -> dict[str, int]:
        _, pq, _ = load_pyarrow()
        n = table.num_rows
        if self.started:
            size_mb = self.path.stat().st_size / MB
            in_file = first_frame - self.file_start
            per_frame = size_mb / in_file if in_file > 0 else 0
            if size_mb + per_frame * n >= self.limit_mb:
                self.close()
                self.chunk, self.file = _next_file(self.chunk, self.file, self.chunks_size)
                self.file_start = first_frame
        self.started = True
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(
                self.path, self.schema, compression="snappy", use_dictionary=True
            )
        self._writer.write_table(table)
        return {
            "data/chunk_index": self.chunk,
            "data/file_index": self.file,
            "dataset_from_index": first_frame,
            "dataset_to_index": first_frame + n,
        }

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _VideoFiles:
    """One camera's ``videos/<feature>/`` files: each episode encoded alone, then joined
    into the current file until it would reach the size limit (LeRobot's rule)."""

    def __init__(
        self,
        root: Path,
        feature: str,
        fps: int,
        codec: VideoCodec,
        chunks_size: int,
        limit_mb: float,
        scratch: Path,
    ) -> None:
        self.root, self.feature, self.fps, self.codec = root, feature, fps, codec
        self.chunks_size, self.limit_mb, self.scratch = chunks_size, limit_mb, scratch
        self.chunk = self.file = 0
        self.pending: list[Path] = []
        self.pending_mb = 0.0
        self.duration_s = 0.0

    def add(self, episode_index: int, frames: np.ndarray) -> dict[str, Any]:
        part = self.scratch / f"{self.feature}_{episode_index:06d}.mp4"
        encode_mp4(part, frames, self.fps, self.codec)
        size_mb = part.stat().st_size / MB
        duration = len(frames) / self.fps
        if self.pending and self.pending_mb + size_mb >= self.limit_mb:
            self.flush()
            self.chunk, self.file = _next_file(self.chunk, self.file, self.chunks_size)
            self.duration_s = 0.0
        start = self.duration_s
        self.duration_s = start + duration
        self.pending.append(part)
        self.pending_mb += size_mb
        prefix = f"videos/{self.feature}/"
        return {
            "episode_index": episode_index,
            prefix + "chunk_index": self.chunk,
            prefix + "file_index": self.file,
            prefix + "from_timestamp": start,
            prefix + "to_timestamp": self.duration_s,
        }

    def flush(self) -> None:
        if not self.pending:
            return
        out = self.root / VIDEO_PATH.format(
            video_key=self.feature, chunk_index=self.chunk, file_index=self.file
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        if len(self.pending) == 1:
            shutil.move(self.pending[0], out)
        else:
            concat_mp4(self.pending, out)
            for part in self.pending:
                part.unlink()
        self.pending, self.pending_mb = [], 0.0


class _EpisodeRows:
    """``meta/episodes/`` parquet files, written ten rows at a time as LeRobot does; a new
    file once the current one reaches ``data_files_size_in_mb``."""

    def __init__(self, root: Path, chunks_size: int, limit_mb: float) -> None:
        self.root, self.chunks_size, self.limit_mb = root, chunks_size, limit_mb
        self.chunk = self.file = 0
        self.rows: list[dict[str, Any]] = []
        self.schema: pa.Schema | None = None
        self._writer: pq.ParquetWriter | None = None

    @property
    def path(self) -> Path:
        return self.root / EPISODES_PATH.format(chunk_index=self.chunk, file_index=self.file)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= EPISODE_ROWS_PER_WRITE:
            self.flush()

    def flush(self) -> None:
        pa, pq, _ = load_pyarrow()
        if not self.rows:
            return
        for row in self.rows:
            row["meta/episodes/chunk_index"] = self.chunk
            row["meta/episodes/file_index"] = self.file
        if self.schema is None:
            table = pa.Table.from_pylist(self.rows)
            self.schema = table.schema
        else:
            table = pa.Table.from_pylist(self.rows, schema=self.schema)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(
                self.path, self.schema, compression="snappy", use_dictionary=True
            )
        self._writer.write_table(table)
        self.rows = []
        if self.path.stat().st_size / MB >= self.limit_mb:
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file, self.chunks_size)

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@dataclass(frozen=True)
class LeRobotWriteReport:
    path: Path
    episodes: int
    frames: int
    fps: int
    codec: str
    features: dict[str, dict[str, Any]]
    mappings: list[KeyMapping]


def _resolve_fps(schema: DatasetSchema, fps: int | None) -> int:
    hz = schema.control_hz
    if fps is None:
        if not math.isclose(hz, round(hz), abs_tol=1e-9):
            raise DatasetFormatError(
                f"control_hz {hz:g} is not an integer: LeRobot stores an integer fps"
            )
        return round(hz)
    if not math.isclose(fps, hz, abs_tol=1e-9):
        raise DatasetFormatError(
            f"fps {fps} differs from the dataset's control_hz {hz:g}: LeRobot's timestamps "
            "would not be the data's"
        )
    return int(fps)


def _episode_columns(
    episode: SourceEpisode,
    plan: FeaturePlan,
    index: int,
    first_frame: int,
    task_index: np.ndarray,
    fps: int,
) -> dict[str, np.ndarray]:
    """An episode's rows per LeRobot feature: ``(T,)`` for shape [1], ``(T, D)`` otherwise,
    ``(T, H, W, 3)`` for videos."""
    n = episode.length
    arrays = episode.arrays
    columns: dict[str, np.ndarray] = {}
    for mapping in plan.mappings:
        if mapping.start is not None or mapping.feature in DEFAULT_FEATURES:
            continue
        ft = plan.features[mapping.feature]
        value = arrays[mapping.key]
        if ft["dtype"] in ("video", "image"):
            columns[mapping.feature] = value
        else:
            columns[mapping.feature] = value.reshape(n, -1)
    for feature, keys in plan.parts.items():
        columns[feature] = np.concatenate([arrays[k].reshape(n, -1) for k in keys], axis=1)
    columns["timestamp"] = _lerobot_frame_times(n, fps)
    columns["frame_index"] = np.arange(n, dtype=np.int64)
    columns["episode_index"] = np.full(n, index, dtype=np.int64)
    columns["index"] = np.arange(first_frame, first_frame + n, dtype=np.int64)
    columns["task_index"] = task_index
    ordered = {}
    for name, ft in plan.features.items():
        column = columns[name]
        if ft["dtype"] not in ("video", "image") and list(ft["shape"]) == [1]:
            column = column.reshape(n)
        ordered[name] = column
    return ordered


def _episode_table(columns: Mapping[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    pa, _, _ = load_pyarrow()
    arrays = []
    for arrow_field in schema:
        column = columns[arrow_field.name]
        if pa.types.is_struct(arrow_field.type):  # an image feature: PNG bytes per frame
            cells = [
                {"bytes": _encode_png(frame), "path": f"frame-{i:06d}.png"}
                for i, frame in enumerate(column)
            ]
            arrays.append(pa.array(cells, type=arrow_field.type))
        elif pa.types.is_fixed_size_list(arrow_field.type):
            value_type = arrow_field.type.value_type
            flat = np.asarray(column, dtype=value_type.to_pandas_dtype()).reshape(-1)
            values = pa.array(flat, type=value_type)
            arrays.append(pa.FixedSizeListArray.from_arrays(values, arrow_field.type.list_size))
        else:
            column = np.asarray(column, dtype=arrow_field.type.to_pandas_dtype())
            arrays.append(pa.array(column, type=arrow_field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _episode_stats(
    columns: Mapping[str, np.ndarray], features: Mapping[str, Mapping[str, Any]]
) -> dict[str, lerobot_stats.Stats]:
    stats = {}
    for name, column in columns.items():
        if features[name]["dtype"] in ("video", "image"):
            stats[name] = lerobot_stats.image_stats(column)
        else:
            stats[name] = lerobot_stats.vector_stats(column)
    return stats


def write_lerobot(
    source: EpisodeSource | EpisodeDataset | str | Path,
    path: str | Path,
    *,
    fps: int | None = None,
    task: str | None = None,
    vcodec: str = "libsvtav1",
    chunks_size: int = DEFAULT_CHUNK_SIZE,
    data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB,
    video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB,
) -> LeRobotWriteReport:
    """Write ``source`` (one of our stores, or any :class:`EpisodeSource`) as a LeRobot v3.0
    dataset at ``path``, which must not exist; all or nothing (built beside it, renamed).

    ``fps`` defaults to the schema's ``control_hz`` (which must then be an integer) and must
    agree with it when given; ``task`` is every frame's task text (default ``schema.task``;
    data read from a multi-task LeRobot dataset keeps its own tasks); ``vcodec`` is
    ``libsvtav1`` (LeRobot's default) or ``h264``."""
    _, pq, _ = load_pyarrow()
    source = as_source(source)
    schema = source.schema
    fps = _resolve_fps(schema, fps)
    codec = VideoCodec.named(vcodec)
    keep_stamps = not all(_stamps_survive(s, fps) for s in source.timestamps())
    plan = plan_features(schema, source_timestamps=keep_stamps)
    tasks = (
        provenance_tasks(schema)
        if any(m.key == TASK_INDEX_KEY for m in plan.mappings)
        else [schema.task if task is None else task]
    )
    for name in plan.video_features:
        height, width, _ = plan.features[name]["shape"]
        plan.features[name]["info"] = codec.lerobot_info(height, width, fps)
    arrow_schema = _arrow_schema(plan.features)
    path = Path(path)
    total = 0
    with staged_directory(path) as root:
        scratch = root / ".encoding"
        scratch.mkdir(parents=True)
        data = _DataFiles(root, arrow_schema, chunks_size, data_files_size_in_mb)
        videos = {
            name: _VideoFiles(root, name, fps, codec, chunks_size, video_files_size_in_mb, scratch)
            for name in plan.video_features
        }
        rows = _EpisodeRows(root, chunks_size, data_files_size_in_mb)
        stats: dict[str, lerobot_stats.Stats] | None = None
        episode_values: dict[str, list[Any]] = {key: [] for key in schema.episode_keys}
        n_episodes = 0
        try:
            for index, episode in enumerate(source.episodes()):
                n = episode.length
                if TASK_INDEX_KEY in episode.arrays and len(tasks) > 1:
                    task_index = episode.arrays[TASK_INDEX_KEY].reshape(n).astype(np.int64)
                    if task_index.min() < 0 or task_index.max() >= len(tasks):
                        raise DatasetFormatError(
                            f"episode {index}: key {TASK_INDEX_KEY!r} has a value outside "
                            f"the {len(tasks)} task(s) of the provenance"
                        )
                else:
                    task_index = np.zeros(n, dtype=np.int64)
                columns = _episode_columns(episode, plan, index, total, task_index, fps)
                episode_stats = _episode_stats(columns, plan.features)
                row: dict[str, Any] = {
                    "episode_index": index,
                    "tasks": [tasks[i] for i in dict.fromkeys(task_index.tolist())],
                    "length": n,
                }
                table_columns = {k: v for k, v in columns.items() if k not in videos}
                row.update(data.write(_episode_table(table_columns, arrow_schema), total))
                for name, files in videos.items():
                    row.update(files.add(index, columns[name]))
                row.update(
                    {
                        f"stats/{name}/{stat}": np.asarray(value).tolist()
                        for name, feature_stats in episode_stats.items()
                        for stat, value in feature_stats.items()
                    }
                )
                rows.add(row)
                for key, values in episode_values.items():
                    values.append(np.asarray(episode.info[key]).tolist())
                stats = (
                    episode_stats
                    if stats is None
                    else lerobot_stats.aggregate_stats([stats, episode_stats])
                )
                total += n
                n_episodes += 1
        finally:
            data.close()
        for files in videos.values():
            files.flush()
        rows.close()
        shutil.rmtree(scratch)
        pq.write_table(_tasks_table(tasks), root / TASKS_PATH)
        info = {
            "codebase_version": CODEBASE_VERSION,
            "fps": fps,
            "features": plan.features,
            "total_episodes": n_episodes,
            "total_frames": total,
            "total_tasks": len(tasks),
            "chunks_size": chunks_size,
            "data_files_size_in_mb": data_files_size_in_mb,
            "video_files_size_in_mb": video_files_size_in_mb,
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if videos else None,
            "robot_type": schema.robot or None,
            "splits": {"train": f"0:{n_episodes}"} if n_episodes else {},
        }
        _write_json(root / INFO_PATH, info)
        if stats is not None:
            ordered = {name: stats[name] for name in plan.features if name in stats}
            _write_json(root / STATS_PATH, lerobot_stats.to_json(ordered))
        _write_json(root / SIDECAR_PATH, _sidecar(schema, plan, n_episodes, total, episode_values))
    return LeRobotWriteReport(
        path, n_episodes, total, fps, codec.name, plan.features, plan.mappings
    )


def _sidecar(
    schema: DatasetSchema,
    plan: FeaturePlan,
    n_episodes: int,
    n_frames: int,
    episode_values: dict[str, list[Any]],
) -> dict[str, Any]:
    return {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "about": "policy_runtime's schema and key mapping for this dataset; LeRobot ignores it",
        "total_episodes": n_episodes,
        "total_frames": n_frames,
        "schema": schema.to_attrs(),
        "keys": [{k: v for k, v in asdict(m).items() if v is not None} for m in plan.mappings],
        "episode_info": episode_values,
    }


def _write_json(path: Path, data: Any) -> None:
    """As LeRobot's ``write_json``: indent 4, UTF-8, non-ASCII kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=4, ensure_ascii=False)
