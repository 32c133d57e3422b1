"""LeRobot v3.0's file names, defaults and default features, and where our keys go in it.

The rules are stated in :mod:`policy_runtime.data.formats.lerobot`; the values are those of
huggingface/lerobot at commit 7427f31801f944f5ec9ce53cda02862ce7d1638b
(``src/lerobot/datasets/utils.py``, ``src/lerobot/utils/constants.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policy_runtime.data.layout import DatasetFormatError
from policy_runtime.data.schema import ACTION_KEY, TIMESTAMP_KEY, DatasetSchema, FieldSpec

CODEBASE_VERSION = "v3.0"
LEGACY_VERSIONS = ("v2.1", "v2.0")
IMPLEMENTED_COMMIT = "7427f31801f944f5ec9ce53cda02862ce7d1638b"

DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE_PATTERN + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
LEGACY_EPISODES_PATH = "meta/episodes.jsonl"
LEGACY_TASKS_PATH = "meta/tasks.jsonl"
#: Our schema, key mapping and per-episode values; LeRobot ignores the file.
SIDECAR_PATH = "meta/policy_runtime.json"
SIDECAR_FORMAT = "policy_runtime.lerobot"
SIDECAR_VERSION = 1

#: LeRobot's ``DEFAULT_FEATURES``: every dataset has them, after the user's features.
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
OBS_PREFIX = "observation."
OBS_STATE = "observation.state"
OBS_IMAGES = "observation.images."
EXTRA_PREFIX = "policy_runtime."
SOURCE_TIMESTAMP = EXTRA_PREFIX + "timestamp"
TASK_INDEX_KEY = "task_index"
IMAGE_NAMES = ["height", "width", "channels"]
#: LeRobotDataset's default ``tolerance_s``: a frame's time must be this close to a video frame.
TOLERANCE_S = 1e-4
#: LeRobot buffers episode rows and writes them 10 at a time (``metadata_buffer_size``).
EPISODE_ROWS_PER_WRITE = 10
MB = 1024**2


@dataclass(frozen=True)
class KeyMapping:
    """Where our ``key`` lives in LeRobot: a whole ``feature``, or its elements
    ``start:stop`` (a key concatenated into ``observation.state``)."""

    key: str
    feature: str
    start: int | None = None
    stop: int | None = None


def load_pyarrow() -> tuple[Any, Any, Any]:
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet
    except ImportError as exc:
        raise DatasetFormatError(
            "LeRobot datasets need pyarrow (pip install 'policy_runtime[interop]')"
        ) from exc
    return pyarrow, pyarrow.parquet, pyarrow.compute


def _element_names(key: str, shape: tuple[int, ...]) -> list[str]:
    if shape == ():
        return [key]
    return [f"{key}.{'.'.join(str(i) for i in index)}" for index in np.ndindex(*shape)]


def _width(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


def camera_name(key: str) -> str:
    return key.removesuffix("_rgb") or key


@dataclass
class FeaturePlan:
    """The LeRobot features of a schema and where each of our keys goes."""

    features: dict[str, dict[str, Any]]
    mappings: list[KeyMapping]
    #: LeRobot feature -> our keys concatenated into it (in order).
    parts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def video_features(self) -> list[str]:
        return [name for name, ft in self.features.items() if ft["dtype"] == "video"]


def plan_features(schema: DatasetSchema, source_timestamps: bool = True) -> FeaturePlan:
    """LeRobot features for ``schema`` (see the module docs for the rules)."""
    provenance = schema.provenance.get("lerobot")
    named: dict[str, str] = {}
    names_of: dict[str, Any] = {}
    image_features: set[str] = set()
    if isinstance(provenance, Mapping):
        named = dict(provenance.get("features") or {})
        names_of = dict(provenance.get("names") or {})
        image_features = set(provenance.get("image_features") or [])
    has_tasks = TASK_INDEX_KEY in schema.keys and bool(provenance_tasks(schema))
    action: dict[str, dict[str, Any]] = {}
    state: list[str] = []
    images: dict[str, dict[str, Any]] = {}
    extras: dict[str, dict[str, Any]] = {}
    mappings: list[KeyMapping] = []
    parts: dict[str, list[str]] = {}

    def numeric(feature: str, key: str, spec: FieldSpec) -> dict[str, Any]:
        width = _width(spec.shape)
        names = names_of.get(feature, [])  # LeRobot's own, kept in the provenance
        if isinstance(names, list) and len(names) != width:
            names = _element_names(key, spec.shape)
        return {"dtype": spec.dtype, "shape": [width], "names": names}

    for key, spec in schema.keys.items():
        if key == TIMESTAMP_KEY or (key == TASK_INDEX_KEY and has_tasks):
            continue
        if "/" in key:
            raise DatasetFormatError(f"key {key!r}: LeRobot feature names may not contain '/'")
        feature = named.get(key)
        if spec.is_image:
            feature = feature or OBS_IMAGES + camera_name(key)
            # A camera LeRobot stored as PNG frames goes back as PNG (lossless); others as video.
            dtype = "image" if feature in image_features else "video"
            images[feature] = {"dtype": dtype, "shape": list(spec.shape), "names": IMAGE_NAMES}
        elif key == ACTION_KEY:
            feature = ACTION_KEY
            action[feature] = numeric(feature, key, spec)
        elif feature is not None:
            extras[feature] = numeric(feature, key, spec)
        elif not named and spec.dtype == "float32" and not key.startswith(ACTION_KEY):
            state.append(key)
            continue
        else:
            feature = EXTRA_PREFIX + key
            extras[feature] = numeric(feature, key, spec)
        taken = next((m.key for m in mappings if m.feature == feature), None)
        if taken is not None or (feature == OBS_STATE and state):
            raise DatasetFormatError(
                f"keys {taken or state[0]!r} and {key!r} both map to LeRobot feature {feature!r}"
            )
        mappings.append(KeyMapping(key, feature))

    features: dict[str, dict[str, Any]] = dict(action)
    if state:
        start, names = 0, []
        for key in state:
            spec = schema.keys[key]
            stop = start + _width(spec.shape)
            mappings.append(KeyMapping(key, OBS_STATE, start, stop))
            names += _element_names(key, spec.shape)
            start = stop
        features[OBS_STATE] = {"dtype": "float32", "shape": [start], "names": names}
        parts[OBS_STATE] = state
    features.update(images)
    features.update(extras)
    if named:  # a dataset from LeRobot: its own feature order
        order = list(dict.fromkeys(named.values()))
        features = dict(
            sorted(
                features.items(), key=lambda f: order.index(f[0]) if f[0] in order else len(order)
            )
        )
    if source_timestamps:
        features[SOURCE_TIMESTAMP] = {"dtype": "float64", "shape": [1], "names": None}
        mappings.append(KeyMapping(TIMESTAMP_KEY, SOURCE_TIMESTAMP))
    else:
        mappings.append(KeyMapping(TIMESTAMP_KEY, "timestamp"))
    if has_tasks:
        mappings.append(KeyMapping(TASK_INDEX_KEY, "task_index"))
    clash = sorted(set(features) & set(DEFAULT_FEATURES))
    if clash:
        raise DatasetFormatError(f"keys map to LeRobot's reserved feature(s) {clash}")
    features.update({k: dict(v) for k, v in DEFAULT_FEATURES.items()})
    return FeaturePlan(features, mappings, parts)


def provenance_tasks(schema: DatasetSchema) -> list[str]:
    provenance = schema.provenance.get("lerobot")
    tasks = provenance.get("tasks") if isinstance(provenance, Mapping) else None
    return [str(t) for t in tasks] if isinstance(tasks, list) else []


def load_pillow(where: str) -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise DatasetFormatError(
            f"{where}: image features need Pillow (pip install 'policy_runtime[interop]')"
        ) from exc
    return Image
