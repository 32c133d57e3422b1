"""Diffusion Policy's replay buffers (zarr) as our episodes.

The layout of ``diffusion_policy/common/replay_buffer.py`` (real-stanford/diffusion_policy at
commit 5ba07ac6661db573af695b419a7947ecb704690f): ``data/<key>`` arrays concatenated over
episodes along time, ``meta/episode_ends`` (int64, cumulative ends), zarr format 2, a
directory or a ``.zarr.zip``. :class:`~policy_runtime.data.EpisodeDataset` reads the arrays;
this module adds what such a store lacks for ours: a schema (each key's per-step shape and
dtype as stored), the rate (a replay buffer does not record it: ``fps`` must be given) and
stamps (``data/timestamp`` when the buffer has one, else ``step / fps`` from each episode's
start). The action offset is 0: Diffusion Policy stores the action commanded at each
observation.

Writing needs no code of its own: our stores are replay buffers in this layout (zarr 2,
``data/<key>``, ``meta/episode_ends``) with a schema in ``meta`` attrs that Diffusion Policy's
``ReplayBuffer`` ignores, so ``write_store`` is the writer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from policy_runtime.data.formats.base import EpisodeSource, SourceEpisode
from policy_runtime.data.layout import DatasetFormatError
from policy_runtime.data.reader import EpisodeDataset
from policy_runtime.data.schema import (
    _ALLOWED_DTYPES,
    ACTION_KEY,
    TIMESTAMP_KEY,
    DatasetSchema,
    FieldSpec,
)

IMPLEMENTED_COMMIT = "5ba07ac6661db573af695b419a7947ecb704690f"


class ReplayBufferSource(EpisodeSource):
    """A Diffusion Policy replay buffer read as ours (see the module docs)."""

    format = "dp"

    def __init__(self, dataset: EpisodeDataset, fps: float, task: str = "") -> None:
        self.dataset, self.path = dataset, dataset.path
        if not fps > 0:
            raise DatasetFormatError(f"{self.path}: fps must be positive, got {fps}")
        self.fps = float(fps)
        arrays = {row.key: row for row in dataset.info()}
        if ACTION_KEY not in arrays:
            raise DatasetFormatError(
                f"{self.path}: no {ACTION_KEY!r} array in data/ (has {sorted(arrays)})"
            )
        keys: dict[str, FieldSpec] = {}
        self.casts: dict[str, str] = {}
        for key, row in arrays.items():
            shape, dtype = tuple(row.shape[1:]), row.dtype
            if key == ACTION_KEY:
                if len(shape) != 1:
                    raise DatasetFormatError(
                        f"{self.path}: data/{ACTION_KEY} has per-step shape {shape}, not (D,)"
                    )
                if dtype != "float32":
                    self.casts[key] = f"{dtype} -> float32"
                    dtype = "float32"
            elif key == TIMESTAMP_KEY:
                if shape not in ((), (1,)):
                    raise DatasetFormatError(
                        f"{self.path}: data/{TIMESTAMP_KEY} has per-step shape {shape}, not ()"
                    )
                if dtype != "float64" or shape != ():
                    self.casts[key] = f"{dtype}{list(shape)} -> float64[]"
                shape, dtype = (), "float64"
            elif dtype not in _ALLOWED_DTYPES:
                raise DatasetFormatError(
                    f"{self.path}: data/{key} has dtype {dtype}; supported: "
                    f"{sorted(_ALLOWED_DTYPES)}"
                )
            keys[key] = FieldSpec(shape=shape, dtype=dtype, unit="s" if key == "timestamp" else "")
        self.stored_stamps = TIMESTAMP_KEY in keys
        if not self.stored_stamps:
            keys[TIMESTAMP_KEY] = FieldSpec(shape=(), dtype="float64", unit="s")
        provenance: dict[str, Any] = {
            "diffusion_policy": {
                "timestamps": "stored" if self.stored_stamps else f"step / {self.fps:g} Hz",
                "casts": self.casts,
            }
        }
        try:
            self.schema = DatasetSchema(
                keys=keys,
                control_hz=self.fps,
                action_offset_steps=0,
                task=task,
                source=f"Diffusion Policy replay buffer {self.path.name}",
                provenance=provenance,
            )
        except ValueError as exc:
            raise DatasetFormatError(f"{self.path}: {exc}") from exc
        self.episode_lengths = np.asarray(dataset.episode_lengths)

    def _stamps(self, index: int, stored: np.ndarray | None) -> np.ndarray:
        if stored is not None:
            return stored.reshape(-1).astype(np.float64)
        return np.arange(int(self.episode_lengths[index])) / self.fps

    def timestamps(self) -> Iterator[np.ndarray]:
        for index in range(self.n_episodes):
            stored = (
                self.dataset.episode(index, [TIMESTAMP_KEY])[TIMESTAMP_KEY]
                if self.stored_stamps
                else None
            )
            yield self._stamps(index, stored)

    def episodes(self) -> Iterator[SourceEpisode]:
        stored_keys = [key for key in self.schema.keys if key in self.dataset.keys]
        for index in range(self.n_episodes):
            arrays = self.dataset.episode(index, stored_keys)
            for key, spec in self.schema.keys.items():
                if key == TIMESTAMP_KEY:
                    arrays[key] = self._stamps(index, arrays.get(key))
                else:
                    arrays[key] = arrays[key].astype(spec.dtype, copy=False)
            yield SourceEpisode(arrays, {})


def read_replay_buffer(path: str | Path, fps: float, task: str = "") -> ReplayBufferSource:
    """A Diffusion Policy replay buffer (zarr 2 directory or ``.zarr.zip``) at ``fps`` Hz."""
    dataset = EpisodeDataset.open(path)
    if dataset.schema is not None:
        raise DatasetFormatError(
            f"{dataset.path}: is one of our stores (it has a schema); read it as one"
        )
    return ReplayBufferSource(dataset, fps, task)
