"""LeRobot datasets as our episodes: read LeRobotDataset v3.0 (and v2.1/v2.0), write v3.0.

Implements the on-disk format of huggingface/lerobot at commit
7427f31801f944f5ec9ce53cda02862ce7d1638b (lerobot 0.6.2, ``CODEBASE_VERSION = "v3.0"``), from
its sources, not from a guess (names and key mapping: :mod:`.lerobot_layout`, writing:
:mod:`.lerobot_writer`, statistics: :mod:`.lerobot_stats`, mp4: :mod:`.mp4`):
``src/lerobot/datasets/`` ``utils.py`` (paths, defaults,
``DatasetInfo``), ``io_utils.py`` (json, tasks and episodes files), ``feature_utils.py``
(features to parquet types), ``dataset_metadata.py`` and ``dataset_writer.py`` (file-size
rules, episode metadata), ``dataset_reader.py`` (how rows and video frames are found),
``compute_stats.py`` (ported in :mod:`.lerobot_stats`), ``video_utils.py`` and
``src/lerobot/configs/video.py`` (encoder defaults, video info), ``src/lerobot/utils/
constants.py`` (default features), ``docs/source/lerobot-dataset-v3.mdx``; the v2.1 layout
from ``src/lerobot/scripts/convert_dataset_v21_to_v30.py``. LeRobot itself is not needed.

Layout (v3.0), everything under the dataset root:

- ``meta/info.json``: ``codebase_version``, ``fps`` (an integer), ``features`` (name ->
  ``{"dtype", "shape", "names"}``, videos with an ``info`` block), ``total_episodes``,
  ``total_frames``, ``total_tasks``, ``chunks_size`` (1000 files per chunk folder),
  ``data_files_size_in_mb`` (100), ``video_files_size_in_mb`` (200), ``data_path``,
  ``video_path``, ``robot_type``, ``splits``;
- ``data/chunk-XXX/file-XXX.parquet``: one row per frame, the episodes concatenated; a column
  per non-video feature (``shape [1]`` as a scalar column, ``[D]`` as a fixed-size list) plus
  ``timestamp`` (float32, ``frame_index / fps``), ``frame_index``, ``episode_index``,
  ``index`` (global frame), ``task_index`` (int64); a new file starts when the current one
  would reach ``data_files_size_in_mb``, a new chunk folder every ``chunks_size`` files;
- ``videos/<feature>/chunk-XXX/file-XXX.mp4``: a camera's episodes one after another (AV1 by
  SVT-AV1, yuv420p, GOP 2, CRF 30: LeRobot's defaults; H.264 on request); an episode's frames
  are at ``from_timestamp + timestamp`` in its file; a new file at ``video_files_size_in_mb``;
- ``meta/episodes/chunk-XXX/file-XXX.parquet``: one row per episode: ``episode_index``,
  ``tasks`` (list of strings), ``length``, ``data/chunk_index``, ``data/file_index``,
  ``dataset_from_index``, ``dataset_to_index``, per camera ``videos/<feature>/chunk_index``,
  ``.../file_index``, ``.../from_timestamp``, ``.../to_timestamp``, the episode's stats as
  ``stats/<feature>/<stat>``, ``meta/episodes/chunk_index``, ``meta/episodes/file_index``;
- ``meta/tasks.parquet``: ``task_index`` with the task strings as the (pandas) index ``task``;
- ``meta/stats.json``: per feature ``min``, ``max``, ``mean``, ``std``, ``count``, ``q01``,
  ``q10``, ``q50``, ``q90``, ``q99`` (images per channel in [0, 1], shaped (3, 1, 1)).

v2.1 and v2.0 (read only): one parquet and one mp4 per episode
(``data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet``, videos likewise, each
starting at time 0), ``meta/episodes.jsonl`` and ``meta/tasks.jsonl``; the two differ only in
their stats files, which reading does not need. Other versions are refused by name.

Key mapping, ours -> LeRobot (written to ``meta/policy_runtime.json``, a file LeRobot never
reads, with our whole schema and per-episode values, so LeRobot -> ours restores our keys,
dtypes, shapes, units, episode values and stamps exactly):

- ``action`` -> ``action`` (float32, names ``action.0`` ...);
- low-dim float32 observation keys (not named ``action*``), in schema order -> concatenated,
  flattened, into ``observation.state``; its ``names`` say which element is which
  (``qpos.0`` ... ``qpos.5``, ``gripper``);
- images (``(H, W, 3)`` uint8) ``<camera>_rgb`` -> ``observation.images.<camera>``, a video;
- every other key (``action_*`` alternatives, ints, bools, float64) -> ``policy_runtime.<key>``
  (flattened, own dtype): LeRobot's policies use ``observation.*`` and ``action`` only;
- our ``timestamp`` (float64 stamps) -> ``policy_runtime.timestamp`` when LeRobot's own
  ``timestamp`` (``frame_index / fps`` in float32) cannot reproduce it exactly;
- ``schema.task`` (or the ``task`` given) -> every frame's task.

LeRobot -> ours without that file (a dataset LeRobot wrote): ``action`` -> ``action``;
``observation.state`` -> ``state``, ``observation.environment_state`` ->
``environment_state``, other ``observation.<x>`` -> ``<x>``; ``observation.images.<camera>``
(video or PNG ``image``) -> ``<camera>_rgb``; other numeric features -> the name with dots as
underscores; ``timestamp`` (episode-relative) -> ``timestamp``; several tasks -> a per-frame
``task_index`` key, the strings in ``provenance["lerobot"]["tasks"]``. The LeRobot feature
names, element names and which cameras were PNG frames are kept in the schema's provenance,
so writing it back gives the same features (PNG cameras as PNG again, losslessly). String and
language features are skipped; depth videos are refused.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_runtime.data.formats.base import EpisodeSource, SourceEpisode
from policy_runtime.data.formats.lerobot_layout import (
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_FEATURES,
    EPISODES_DIR,
    EXTRA_PREFIX,
    IMPLEMENTED_COMMIT,
    INFO_PATH,
    LEGACY_EPISODES_PATH,
    LEGACY_TASKS_PATH,
    LEGACY_VERSIONS,
    OBS_IMAGES,
    OBS_PREFIX,
    SIDECAR_FORMAT,
    SIDECAR_PATH,
    SIDECAR_VERSION,
    SOURCE_TIMESTAMP,
    TASK_INDEX_KEY,
    TASKS_PATH,
    TOLERANCE_S,
    VIDEO_PATH,
    KeyMapping,
    camera_name,
    load_pillow,
    load_pyarrow,
    plan_features,
)
from policy_runtime.data.formats.lerobot_writer import LeRobotWriteReport, write_lerobot
from policy_runtime.data.formats.mp4 import Mp4Reader
from policy_runtime.data.layout import DatasetFormatError
from policy_runtime.data.schema import (
    _ALLOWED_DTYPES,
    ACTION_KEY,
    TIMESTAMP_KEY,
    DatasetSchema,
    FieldSpec,
)

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


@dataclass
class EpisodeRef:
    """Where one LeRobot episode's rows and frames are."""

    index: int
    length: int
    tasks: list[str]
    data_file: Path
    #: video feature -> (its mp4, the episode's first frame time in it)
    videos: dict[str, tuple[Path, float]]


def _load_json(path: Path, what: str) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: {what} is missing") from None
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(f"{path}: cannot read {what} ({exc})") from exc


def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DatasetFormatError(f"{path}: missing (a LeRobot v2 dataset lists it)")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except ValueError as exc:
        raise DatasetFormatError(f"{path}: not JSON lines ({exc})") from exc


def _is_image_feature(ft: Mapping[str, Any]) -> bool:
    return ft.get("dtype") in ("video", "image")


def _is_depth(ft: Mapping[str, Any]) -> bool:
    info = ft.get("info") or {}
    video_info = ft.get("video_info") or {}
    return bool(
        info.get("is_depth_map")
        or info.get("video.is_depth_map")
        or video_info.get("video.is_depth_map")
    )


def _image_shape(name: str, ft: Mapping[str, Any]) -> tuple[int, int, int]:
    shape = [int(d) for d in ft.get("shape", [])]
    names = ft.get("names") or []
    if len(shape) != 3:
        raise DatasetFormatError(f"feature {name!r}: image shape {shape} is not 3-D")
    if names and str(names[0]).startswith("channel"):  # (C, H, W), as some v2 datasets
        shape = [shape[1], shape[2], shape[0]]
    if shape[2] != 3:
        raise DatasetFormatError(
            f"feature {name!r}: {shape[2]} channel(s); only RGB (3) images are supported"
        )
    return shape[0], shape[1], shape[2]


def _our_image_key(feature: str) -> str:
    for prefix in (OBS_IMAGES, OBS_PREFIX):
        if feature.startswith(prefix):
            feature = feature.removeprefix(prefix)
            break
    key = feature.replace(".", "_")
    return key if key.endswith("_rgb") else key + "_rgb"


def _our_key(feature: str) -> str:
    for prefix in (EXTRA_PREFIX, OBS_PREFIX):
        if feature.startswith(prefix):
            return feature.removeprefix(prefix).replace(".", "_")
    return feature.replace(".", "_")


class LeRobotSource(EpisodeSource):
    """A LeRobot dataset read as ours (see the module docs); episodes stream, one in memory."""

    format = "lerobot"

    def __init__(self, path: str | Path) -> None:
        self.path = self.root = Path(path)
        if not self.root.is_dir():
            raise DatasetFormatError(f"{self.root}: no such LeRobot dataset directory")
        if not (self.root / INFO_PATH).is_file():
            raise DatasetFormatError(f"{self.root}: not a LeRobot dataset ({INFO_PATH} is missing)")
        self.info: dict[str, Any] = _load_json(self.root / INFO_PATH, "LeRobot's info")
        for name in ("codebase_version", "fps", "features"):
            if name not in self.info:
                raise DatasetFormatError(f"{self.root / INFO_PATH}: has no {name!r}")
        self.version = str(self.info["codebase_version"])
        if self.version != CODEBASE_VERSION and self.version not in LEGACY_VERSIONS:
            raise DatasetFormatError(
                f"{self.root}: LeRobot codebase_version {self.version!r} is not supported "
                f"(reads {', '.join((CODEBASE_VERSION, *LEGACY_VERSIONS))}; writes "
                f"{CODEBASE_VERSION})"
            )
        self.fps = float(self.info["fps"])
        if not self.fps > 0:
            raise DatasetFormatError(f"{self.root / INFO_PATH}: fps {self.fps} is not positive")
        self.features: dict[str, dict[str, Any]] = dict(self.info["features"])
        if ACTION_KEY not in self.features:
            raise DatasetFormatError(
                f"{self.root / INFO_PATH}: has no {ACTION_KEY!r} feature (has "
                f"{sorted(self.features)})"
            )
        for name in ("episode_index", "timestamp"):
            if name not in self.features:
                raise DatasetFormatError(f"{self.root / INFO_PATH}: has no {name!r} feature")
        if self.version == CODEBASE_VERSION:
            self.tasks = self._read_tasks()
            self.refs = self._read_episodes()
        else:
            self.tasks = self._read_legacy_tasks()
            self.refs = self._read_legacy_episodes()
        self.episode_lengths = np.array([ref.length for ref in self.refs], dtype=np.int64)
        self.sidecar = self._read_sidecar()
        if self.sidecar is not None:
            self.schema, self.mappings, self._episode_info = self._from_sidecar(self.sidecar)
        else:
            self.schema, self.mappings = self._native_schema()
            self._episode_info = {}

    # -- metadata --

    def _read_tasks(self) -> list[str]:
        _, pq, _ = load_pyarrow()
        path = self.root / TASKS_PATH
        if not path.is_file():
            raise DatasetFormatError(f"{path}: missing (LeRobot v3.0 keeps its tasks there)")
        table = pq.read_table(path)
        column = "task"
        if column not in table.column_names:
            pandas_meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
            index = [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)]
            if not index:
                raise DatasetFormatError(f"{path}: has no 'task' column or index")
            column = index[0]
        if "task_index" not in table.column_names:
            raise DatasetFormatError(f"{path}: has no 'task_index' column")
        pairs = zip(
            table.column("task_index").to_pylist(), table.column(column).to_pylist(), strict=True
        )
        return self._task_list({int(i): str(t) for i, t in pairs}, path)

    def _read_legacy_tasks(self) -> list[str]:
        path = self.root / LEGACY_TASKS_PATH
        lines = _load_jsonl(path)
        try:
            by_index = {int(line["task_index"]): str(line["task"]) for line in lines}
        except KeyError as exc:
            raise DatasetFormatError(f"{path}: a line has no {exc.args[0]!r}") from None
        return self._task_list(by_index, path)

    @staticmethod
    def _task_list(by_index: dict[int, str], path: Path) -> list[str]:
        if sorted(by_index) != list(range(len(by_index))):
            raise DatasetFormatError(f"{path}: task indices {sorted(by_index)} are not 0..n-1")
        return [by_index[i] for i in range(len(by_index))]

    def _read_episodes(self) -> list[EpisodeRef]:
        _, pq, _ = load_pyarrow()
        folder = self.root / EPISODES_DIR
        files = sorted(folder.glob("*/*.parquet"))
        if not files:
            raise DatasetFormatError(
                f"{folder}: no episode metadata (meta/episodes/chunk-XXX/file-XXX.parquet)"
            )
        data_path = str(self.info.get("data_path") or DATA_PATH)
        video_path = str(self.info.get("video_path") or VIDEO_PATH)
        videos = [name for name, ft in self.features.items() if ft.get("dtype") == "video"]
        needed = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index"]
        for name in videos:
            needed += [f"videos/{name}/{c}" for c in ("chunk_index", "file_index")]
            needed.append(f"videos/{name}/from_timestamp")
        refs = []
        for file in files:
            names = pq.read_schema(file).names
            missing = [c for c in needed if c not in names]
            if missing:
                raise DatasetFormatError(f"{file}: missing column(s) {missing}")
            for row in pq.read_table(file, columns=needed).to_pylist():
                data_file = self.root / data_path.format(
                    chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
                )
                refs.append(
                    EpisodeRef(
                        index=int(row["episode_index"]),
                        length=int(row["length"]),
                        tasks=list(row["tasks"] or []),
                        data_file=data_file,
                        videos={
                            name: (
                                self.root
                                / video_path.format(
                                    video_key=name,
                                    chunk_index=row[f"videos/{name}/chunk_index"],
                                    file_index=row[f"videos/{name}/file_index"],
                                ),
                                float(row[f"videos/{name}/from_timestamp"]),
                            )
                            for name in videos
                        },
                    )
                )
        return self._checked(refs, folder)

    def _read_legacy_episodes(self) -> list[EpisodeRef]:
        chunks_size = int(self.info.get("chunks_size", DEFAULT_CHUNK_SIZE))
        data_path = self.info.get("data_path")
        if not data_path:
            raise DatasetFormatError(f"{self.root / INFO_PATH}: has no 'data_path'")
        video_path = self.info.get("video_path")
        videos = [name for name, ft in self.features.items() if ft.get("dtype") == "video"]
        if videos and not video_path:
            raise DatasetFormatError(f"{self.root / INFO_PATH}: has videos but no 'video_path'")
        path = self.root / LEGACY_EPISODES_PATH
        refs = []
        for line in _load_jsonl(path):
            try:
                index, length = int(line["episode_index"]), int(line["length"])
            except KeyError as exc:
                raise DatasetFormatError(f"{path}: a line has no {exc.args[0]!r}") from None
            chunk = index // chunks_size
            refs.append(
                EpisodeRef(
                    index=index,
                    length=length,
                    tasks=list(line.get("tasks") or []),
                    data_file=self.root
                    / str(data_path).format(episode_chunk=chunk, episode_index=index),
                    videos={
                        name: (
                            self.root
                            / str(video_path).format(
                                episode_chunk=chunk, video_key=name, episode_index=index
                            ),
                            0.0,
                        )
                        for name in videos
                    },
                )
            )
        return self._checked(refs, path)

    def _checked(self, refs: list[EpisodeRef], where: Path) -> list[EpisodeRef]:
        refs.sort(key=lambda ref: ref.index)
        indices = [ref.index for ref in refs]
        if indices != list(range(len(refs))):
            raise DatasetFormatError(f"{where}: episode indices are not 0..{len(refs) - 1}")
        total = self.info.get("total_episodes")
        if total is not None and int(total) != len(refs):
            raise DatasetFormatError(
                f"{self.root / INFO_PATH}: total_episodes {total}, but {where} lists "
                f"{len(refs)} episode(s)"
            )
        return refs

    def _read_sidecar(self) -> dict[str, Any] | None:
        path = self.root / SIDECAR_PATH
        if not path.is_file():
            return None
        sidecar = _load_json(path, "policy_runtime's metadata")
        if sidecar.get("format") != SIDECAR_FORMAT or sidecar.get("version") != SIDECAR_VERSION:
            raise DatasetFormatError(
                f"{path}: format {sidecar.get('format')!r} version {sidecar.get('version')!r} "
                f"is not {SIDECAR_FORMAT!r} version {SIDECAR_VERSION}"
            )
        if (sidecar.get("total_episodes"), sidecar.get("total_frames")) != (
            self.n_episodes,
            self.n_steps,
        ):
            log.warning(
                "%s: describes %s episode(s) / %s frame(s), the dataset has %d / %d (changed by "
                "another tool?): reading it as a plain LeRobot dataset",
                path,
                sidecar.get("total_episodes"),
                sidecar.get("total_frames"),
                self.n_episodes,
                self.n_steps,
            )
            return None
        return dict(sidecar)

    def _from_sidecar(
        self, sidecar: dict[str, Any]
    ) -> tuple[DatasetSchema, list[KeyMapping], dict[str, np.ndarray]]:
        path = self.root / SIDECAR_PATH
        try:
            schema = DatasetSchema.from_attrs(sidecar["schema"])
            mappings = [KeyMapping(**m) for m in sidecar["keys"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetFormatError(f"{path}: invalid ({exc})") from exc
        mapped = {m.key for m in mappings}
        missing_keys = sorted(set(schema.keys) - mapped)
        if missing_keys:
            raise DatasetFormatError(f"{path}: key(s) {missing_keys} have no LeRobot feature")
        for m in mappings:
            if m.feature not in self.features:
                raise DatasetFormatError(
                    f"{path}: key {m.key!r} maps to feature {m.feature!r}, which "
                    f"{INFO_PATH} does not declare"
                )
        values = {}
        for key, spec in schema.episode_keys.items():
            column = np.asarray(sidecar.get("episode_info", {}).get(key, []), dtype=spec.dtype)
            if column.shape != (self.n_episodes, *spec.shape):
                raise DatasetFormatError(
                    f"{path}: episode value {key!r} has shape {column.shape}, expected "
                    f"{(self.n_episodes, *spec.shape)}"
                )
            values[key] = column
        return schema, mappings, values

    def _native_schema(self) -> tuple[DatasetSchema, list[KeyMapping]]:
        keys: dict[str, FieldSpec] = {}
        mappings: list[KeyMapping] = []
        origin: dict[str, str] = {}
        names: dict[str, Any] = {}
        skipped: list[str] = []
        structural = set(DEFAULT_FEATURES) - {TIMESTAMP_KEY}
        for name, ft in self.features.items():
            dtype = str(ft.get("dtype"))
            if name in structural:
                continue
            if name in (TIMESTAMP_KEY, SOURCE_TIMESTAMP):
                continue
            if dtype in ("string", "language"):
                skipped.append(name)
                continue
            if _is_image_feature(ft):
                if _is_depth(ft):
                    raise DatasetFormatError(
                        f"{self.root}: feature {name!r} is a depth map; depth videos are not "
                        "supported"
                    )
                key = _our_image_key(name)
                spec = FieldSpec(
                    shape=_image_shape(name, ft), dtype="uint8", frame=camera_name(key)
                )
            else:
                if dtype not in _ALLOWED_DTYPES:
                    raise DatasetFormatError(
                        f"{self.root}: feature {name!r} has dtype {dtype!r}; supported: "
                        f"{sorted(_ALLOWED_DTYPES)}"
                    )
                shape = tuple(int(d) for d in ft.get("shape", [1]))
                key = ACTION_KEY if name == ACTION_KEY else _our_key(name)
                if key == ACTION_KEY:
                    if len(shape) != 1:
                        raise DatasetFormatError(
                            f"{self.root}: feature 'action' has shape {list(shape)}, not [D]"
                        )
                    dtype = "float32"  # our schema's action dtype (LeRobot's is float32 too)
                spec = FieldSpec(shape=shape, dtype=dtype)
                names[name] = ft.get("names")
            if key in keys or key in (TIMESTAMP_KEY, TASK_INDEX_KEY):
                raise DatasetFormatError(
                    f"{self.root}: features {origin.get(key, key)!r} and {name!r} both map to "
                    f"our key {key!r}"
                )
            keys[key], origin[key] = spec, name
            mappings.append(KeyMapping(key, name))
        stamp_feature = SOURCE_TIMESTAMP if SOURCE_TIMESTAMP in self.features else TIMESTAMP_KEY
        keys[TIMESTAMP_KEY] = FieldSpec(shape=(), dtype="float64", unit="s")
        mappings.append(KeyMapping(TIMESTAMP_KEY, stamp_feature))
        origin[TIMESTAMP_KEY] = stamp_feature
        if len(self.tasks) > 1:
            keys[TASK_INDEX_KEY] = FieldSpec(
                shape=(), dtype="int64", description="index into provenance.lerobot.tasks"
            )
            mappings.append(KeyMapping(TASK_INDEX_KEY, "task_index"))
        if skipped:
            log.warning("%s: skipping string feature(s) %s", self.root, skipped)
        try:
            schema = DatasetSchema(
                keys=keys,
                control_hz=self.fps,
                action_offset_steps=0,
                robot=str(self.info.get("robot_type") or ""),
                task=self.tasks[0] if len(self.tasks) == 1 else "",
                source=f"LeRobot dataset {self.root.name} ({self.version})",
                provenance={
                    "lerobot": {
                        "codebase_version": self.version,
                        "tasks": self.tasks,
                        "features": origin,
                        "names": names,
                        "image_features": [
                            n for n, ft in self.features.items() if ft.get("dtype") == "image"
                        ],
                        "skipped_features": skipped,
                    }
                },
            )
        except ValueError as exc:
            raise DatasetFormatError(f"{self.root}: {exc}") from exc
        return schema, mappings

    # -- episodes --

    def timestamps(self) -> Iterator[np.ndarray]:
        mapping = next(m for m in self.mappings if m.key == TIMESTAMP_KEY)
        cache: dict[Path, Any] = {}
        for ref in self.refs:
            rows = self._rows(ref, cache)
            where = f"{ref.data_file}: {mapping.feature!r}"
            column = _column_numpy(rows.column(mapping.feature), ref.length, where)
            yield column.reshape(ref.length).astype(np.float64)

    def episodes(self) -> Iterator[SourceEpisode]:
        cursors: dict[str, _VideoCursor] = {}
        cache: dict[Path, Any] = {}
        try:
            for ref in self.refs:
                yield self._episode(ref, cache, cursors)
        finally:
            for cursor in cursors.values():
                cursor.close()

    def _episode(
        self, ref: EpisodeRef, cache: dict[Path, Any], cursors: dict[str, _VideoCursor]
    ) -> SourceEpisode:
        rows = self._rows(ref, cache)
        n = ref.length
        columns: dict[str, np.ndarray] = {}
        arrays: dict[str, np.ndarray] = {}
        where = f"{ref.data_file}: 'timestamp'"
        times = _column_numpy(rows.column(TIMESTAMP_KEY), n, where).astype(np.float64)
        for m in self.mappings:
            spec = self.schema.keys[m.key]
            ft = self.features[m.feature]
            where = f"{ref.data_file}: feature {m.feature!r}"
            if ft.get("dtype") == "video":
                cursor = cursors.get(m.feature)
                if cursor is None:
                    height, width, _ = _image_shape(m.feature, ft)
                    video_fps = float((ft.get("info") or {}).get("video.fps") or self.fps)
                    cursor = cursors[m.feature] = _VideoCursor(height, width, video_fps)
                file, start = ref.videos[m.feature]
                value = cursor.frames(file, start + times.reshape(n), ref.index, m.feature)
            elif ft.get("dtype") == "image":
                value = _decode_images(rows.column(m.feature), where)
            else:
                if m.feature not in columns:
                    if m.feature not in rows.column_names:
                        raise DatasetFormatError(f"{ref.data_file}: no column {m.feature!r}")
                    columns[m.feature] = _column_numpy(rows.column(m.feature), n, where)
                value = columns[m.feature]
                if m.start is not None:
                    value = value[:, m.start : m.stop]
            arrays[m.key] = value.reshape(n, *spec.shape).astype(spec.dtype, copy=False)
        info = {key: column[ref.index] for key, column in self._episode_info.items()}
        return SourceEpisode(arrays, info)

    def _rows(self, ref: EpisodeRef, cache: dict[Path, Any]) -> pa.Table:
        _, pq, pc = load_pyarrow()
        table = cache.get(ref.data_file)
        if table is None:
            if not ref.data_file.is_file():
                raise DatasetFormatError(
                    f"{ref.data_file}: data file of episode {ref.index} is missing"
                )
            cache.clear()
            table = cache[ref.data_file] = pq.read_table(ref.data_file)
            for column in ("episode_index", TIMESTAMP_KEY):
                if column not in table.column_names:
                    raise DatasetFormatError(f"{ref.data_file}: no column {column!r}")
        rows = table.filter(pc.equal(table.column("episode_index"), ref.index))
        if rows.num_rows != ref.length:
            raise DatasetFormatError(
                f"{ref.data_file}: has {rows.num_rows} row(s) of episode {ref.index}, the "
                f"episode metadata says {ref.length}"
            )
        if "frame_index" in rows.column_names:
            order = np.asarray(rows.column("frame_index").to_numpy())
            if not np.array_equal(order, np.arange(len(order))):
                rows = rows.take(np.argsort(order, kind="stable"))
        return rows


def _column_numpy(column: Any, n: int, where: str) -> np.ndarray:
    """A parquet column as ``(n, width)``: scalars, (fixed-size) lists, nested lists and
    ``datasets``' Array extension columns alike."""
    pa, _, _ = load_pyarrow()
    array = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    while True:
        if isinstance(array.type, pa.ExtensionType):
            array = array.storage
        elif (
            pa.types.is_list(array.type)
            or pa.types.is_large_list(array.type)
            or pa.types.is_fixed_size_list(array.type)
        ):
            if array.null_count:
                raise DatasetFormatError(f"{where}: has missing values")
            array = array.flatten()
        else:
            break
    if array.null_count:
        raise DatasetFormatError(f"{where}: has missing values")
    values = np.asarray(array.to_numpy(zero_copy_only=False))
    if n == 0 or values.size % n:
        raise DatasetFormatError(f"{where}: {values.size} value(s) do not split into {n} rows")
    return values.reshape(n, -1)


def _decode_images(column: Any, where: str) -> np.ndarray:
    """An ``image`` feature's PNG/JPEG bytes (``{"bytes", "path"}`` structs) as frames."""
    image = load_pillow(where)
    frames = []
    for cell in column.to_pylist():
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if not data:
            raise DatasetFormatError(f"{where}: an image has no embedded bytes")
        with image.open(io.BytesIO(data)) as picture:
            frames.append(np.asarray(picture.convert("RGB")))
    return np.stack(frames)


class _VideoCursor:
    """One camera's frames by time, reading its files forward (episodes come in order)."""

    def __init__(self, height: int, width: int, fps: float) -> None:
        self.height, self.width, self.fps = height, width, fps
        self.reader: Mp4Reader | None = None

    def frames(self, file: Path, times: np.ndarray, episode: int, feature: str) -> np.ndarray:
        indices = np.round(times * self.fps).astype(np.int64)
        off = np.abs(indices / self.fps - times)
        if (off > TOLERANCE_S).any() or (indices < 0).any():
            bad = int(np.argmax(off))
            raise DatasetFormatError(
                f"{file}: episode {episode} frame {bad} of {feature!r} is at {times[bad]:.6f} s, "
                f"{off[bad]:.6f} s from any video frame (tolerance {TOLERANCE_S} s)"
            )
        first, last = int(indices.min()), int(indices.max())
        reader = self.reader
        if reader is None or reader.path != file or first < reader.position:
            self.close()
            reader = self.reader = Mp4Reader(file, self.height, self.width)
        block = reader.read(first, last + 1)
        return block[indices - first]

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


def read_lerobot(path: str | Path) -> LeRobotSource:
    """A LeRobot dataset directory (v3.0, v2.1 or v2.0) as an :class:`EpisodeSource`."""
    return LeRobotSource(path)


__all__ = [
    "CODEBASE_VERSION",
    "IMPLEMENTED_COMMIT",
    "KeyMapping",
    "LeRobotSource",
    "LeRobotWriteReport",
    "plan_features",
    "read_lerobot",
    "write_lerobot",
]
