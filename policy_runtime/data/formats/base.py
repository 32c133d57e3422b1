"""What every dataset format converts through: a schema and a stream of episodes in our terms.

An :class:`EpisodeSource` is a read-only dataset of any supported format seen as ours: a
:class:`DatasetSchema` (keys, shapes, dtypes, ``control_hz``, task, ...) and its episodes, one
at a time (``{key: (T, *shape) array}`` plus the ``episode_keys`` values), so a conversion
holds one episode in memory whatever the dataset's size. Writers take a source; outputs are
built in a staging directory beside the destination and renamed into place at the end, so a
failed conversion leaves nothing at the destination.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy_runtime.data.layout import DatasetFormatError
from policy_runtime.data.reader import EpisodeDataset
from policy_runtime.data.schema import DatasetSchema


@dataclass(frozen=True)
class SourceEpisode:
    """One episode in our terms: every schema key's rows and its ``episode_keys`` values."""

    arrays: dict[str, np.ndarray]
    info: dict[str, Any]

    @property
    def length(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])


class EpisodeSource:
    """A dataset of some format read as ours (see the module docs). Subclasses set the fields
    and implement :meth:`episodes`."""

    path: Path
    format: str
    schema: DatasetSchema
    episode_lengths: np.ndarray

    @property
    def n_episodes(self) -> int:
        return len(self.episode_lengths)

    @property
    def n_steps(self) -> int:
        return int(self.episode_lengths.sum())

    def episodes(self) -> Iterator[SourceEpisode]:
        raise NotImplementedError

    def timestamps(self) -> Iterator[np.ndarray]:
        """Every episode's ``timestamp`` rows (subclasses read them without the rest)."""
        for episode in self.episodes():
            yield episode.arrays["timestamp"]


class StoreSource(EpisodeSource):
    """One of our stores (a zarr dataset with a schema)."""

    format = "ours"

    def __init__(self, dataset: EpisodeDataset) -> None:
        if dataset.schema is None:
            raise DatasetFormatError(
                f"{dataset.path}: has no schema (a Diffusion Policy replay buffer): read it "
                "with read_replay_buffer(path, fps)"
            )
        self.dataset = dataset
        self.path = dataset.path
        self.schema = dataset.schema
        self.episode_lengths = np.asarray(dataset.episode_lengths)

    @classmethod
    def open(cls, path: str | Path) -> StoreSource:
        return cls(EpisodeDataset.open(path))

    def timestamps(self) -> Iterator[np.ndarray]:
        stamps = self.dataset.load(["timestamp"])["timestamp"]
        for index in range(self.n_episodes):
            yield stamps[self.dataset.episode_slice(index)]

    def episodes(self) -> Iterator[SourceEpisode]:
        values = {key: self.dataset.episode_info(key) for key in self.schema.episode_keys}
        for index in range(self.n_episodes):
            yield SourceEpisode(
                arrays=self.dataset.episode(index, self.schema.keys),
                info={key: column[index] for key, column in values.items()},
            )


def as_source(source: EpisodeSource | EpisodeDataset | str | Path) -> EpisodeSource:
    """A source from one of our stores (or its path), or the source itself."""
    if isinstance(source, EpisodeSource):
        return source
    if isinstance(source, EpisodeDataset):
        return StoreSource(source)
    return StoreSource.open(source)


@contextmanager
def staged_directory(destination: str | Path) -> Iterator[Path]:
    """A path beside ``destination`` (not yet created) to build an output at; renamed to
    ``destination`` when the block ends normally, removed when it raises or is interrupted.

    Refuses a destination that exists (nothing is overwritten) or whose parent is missing."""
    destination = Path(destination)
    if destination.exists():
        raise DatasetFormatError(f"{destination}: exists; remove it or choose another path")
    if not destination.parent.is_dir():
        raise DatasetFormatError(
            f"{destination}: parent directory {destination.parent} does not exist"
        )
    staging = destination.parent / f".{destination.name}.writing-{uuid.uuid4().hex[:8]}"
    try:
        yield staging
        if not staging.exists():
            raise DatasetFormatError(f"{destination}: nothing was written")
        if destination.exists():
            raise DatasetFormatError(f"{destination}: appeared while it was being written")
        staging.rename(destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_store(source: EpisodeSource | EpisodeDataset | str | Path, path: str | Path) -> Path:
    """Write ``source`` as one of our stores at ``path`` (which must not exist); all or
    nothing: the store appears only once every episode is written."""
    from policy_runtime.data.writer import DatasetWriter

    source = as_source(source)
    path = Path(path)
    with staged_directory(path) as staging, DatasetWriter(staging, source.schema) as writer:
        for episode in source.episodes():
            writer.add_episode(episode.arrays, episode.info)
    return path
