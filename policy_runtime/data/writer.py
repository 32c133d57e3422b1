"""Append episodes to a dataset store, each one committed atomically.

Crash safety rests on three facts:
- zarr's LocalStore replaces every chunk and metadata file atomically (temp file + rename), so a
  chunk shared by a committed and a new episode is either the old bytes or the new ones;
- an append writes data rows first and ``meta/episode_ends`` last, so the new end is the commit;
- on open, :func:`committed_episode_ends` decides what was committed and the writer cuts the
  rest (and stray temp files) away before appending.
A new store is built beside its final path and renamed into place, so a failed creation leaves
nothing behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import numpy as np
import zarr
from numcodecs import Blosc

from policy_runtime.data.layout import (
    DATA_GROUP,
    EPISODE_ENDS,
    META_GROUP,
    ZARR_FORMAT,
    DatasetFormatError,
    open_store,
)
from policy_runtime.data.schema import (
    TIMESTAMP_KEY,
    DatasetSchema,
    DatasetSchemaError,
    FieldSpec,
)

log = logging.getLogger(__name__)

#: Uncompressed bytes per chunk. A training window of 16 frames of a 96x96 image touches at
#: most two chunks; low-dim keys get ~10^4 steps per chunk.
CHUNK_BYTES = 1 << 20
EPISODE_ENDS_CHUNK = 1 << 14
#: The folder of per-episode files (videos) inside a store: ``episodes/episode_<index>/``.
EPISODE_FILES = "episodes"


def default_compressor() -> Blosc:
    """Blosc zstd with byte shuffle: fast to decode in training, ~3-10x on robot data."""
    return Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE)


def chunk_length(spec: FieldSpec, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Steps per chunk so one chunk holds about ``chunk_bytes`` uncompressed."""
    row_bytes = int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
    return max(1, chunk_bytes // max(row_bytes, 1))


class DatasetWriter:
    """Appends episodes to ``path``, creating the store with ``schema`` if it does not exist.

    Opening an existing store checks that its schema equals ``schema`` (when given) and
    recovers from an interrupted append. One writer per store at a time (an exclusive lock on
    the store directory enforces it).

    Example::

        with DatasetWriter("demo.zarr", schema) as writer:
            writer.add_episode({"action": actions, "timestamp": stamps, "qpos": qpos})
    """

    def __init__(self, path: str | Path, schema: DatasetSchema | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if schema is None:
                raise DatasetFormatError(f"{self.path}: does not exist and no schema was given")
            _create_store(self.path, schema)
        elif not self.path.is_dir():
            raise DatasetFormatError(f"{self.path}: exists and is not a zarr directory store")
        self._lock_fd: int | None = _lock_directory(self.path)
        self._append: EpisodeAppend | None = None
        try:
            self._store = open_store(self.path, mode="r+")
            self.schema = stored_schema(self._store.meta, self.path)
            if schema is not None and schema != self.schema:
                raise DatasetSchemaError(schema_difference(self.path, self.schema, schema))
            self._recover()
        except BaseException:
            self.close()
            raise

    @property
    def n_episodes(self) -> int:
        return int(self._store.episode_ends.shape[0])

    @property
    def n_steps(self) -> int:
        ends = self._store.episode_ends
        return int(np.asarray(ends[self.n_episodes - 1])) if self.n_episodes else 0

    def add_episode(
        self, episode: Mapping[str, np.ndarray], info: Mapping[str, object] | None = None
    ) -> int:
        """Validate and append one episode (and its ``episode_keys`` values in ``info``);
        returns its index once it is committed."""
        length = self.schema.validate_episode(episode)
        values = self.schema.validate_episode_info(info or {})
        append = self.begin_episode()
        for key in self.schema.keys:
            append.write(key, episode[key])
        return append.commit(length, values)

    def begin_episode(self) -> EpisodeAppend:
        """Start an episode written a few rows at a time (a recorder's): rows go to disk as
        they come, and the episode exists only once :meth:`EpisodeAppend.commit` writes its end.
        One at a time."""
        if self._append is not None and not self._append.closed:
            raise RuntimeError(f"{self.path}: an episode is already being written")
        self._append = EpisodeAppend(self, self.n_steps, self.n_episodes)
        return self._append

    def episode_dir(self, index: int) -> Path:
        """The folder for episode ``index``'s files beside the arrays (its videos): removed by
        the next open when the episode was never committed."""
        return self.path / EPISODE_FILES / f"episode_{index:06d}"

    def set_episode_value(self, index: int, key: str, value: np.generic) -> None:
        """Change a committed episode's ``episode_keys`` value (an operator's relabel)."""
        if not 0 <= index < self.n_episodes:
            raise IndexError(f"{self.path}: no episode {index} (has {self.n_episodes})")
        spec = self.schema.episode_keys.get(key)
        if spec is None:
            raise DatasetSchemaError(f"{self.path}: no per-episode key {key!r}")
        self._store.episode_array(key)[index] = np.asarray(value).astype(spec.dtype)

    def bytes_on_disk(self) -> int:
        """The store's size on disk (every file under it)."""
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def remove_last_episode(self) -> int:
        """Delete the newest committed episode (an operator's "re-record the last one"); returns
        how many remain. Its end goes first, so a crash midway leaves it uncommitted."""
        n = self.n_episodes
        if n == 0:
            raise DatasetFormatError(f"{self.path}: has no episode to remove")
        self._store.episode_ends.resize((n - 1,))
        self._recover()
        return n - 1

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _recover(self) -> None:
        for partial in self.path.rglob("*.partial"):
            partial.unlink()
        ends = self._store.committed_ends()
        end = int(ends[-1]) if len(ends) else 0
        n_stored = int(self._store.episode_ends.shape[0])
        if len(ends) != n_stored:
            log.warning(
                "%s: dropping %d uncommitted episode end(s) left by an interrupted append",
                self.path,
                n_stored - len(ends),
            )
            self._store.episode_ends.resize((len(ends),))
        for key in self.schema.episode_keys:
            column = self._store.episode_array(key)
            if column.shape[0] != len(ends):
                column.resize((len(ends), *column.shape[1:]))
        for key, length in self._store.lengths().items():
            if length != end:
                log.warning(
                    "%s: truncating data/%s from %d to %d steps", self.path, key, length, end
                )
                array = self._store.array(key)
                array.resize((end, *array.shape[1:]))
        files = self.path / EPISODE_FILES
        if files.is_dir():
            for folder in files.iterdir():
                index = folder.name.removeprefix("episode_")
                if not index.isdigit() or int(index) >= len(ends):
                    shutil.rmtree(folder, ignore_errors=True)


class EpisodeAppend:
    """An episode being written (see :meth:`DatasetWriter.begin_episode`).

    Rows of each key are held until they fill the key's current chunk, then written, so a chunk
    is compressed once and memory holds less than one chunk per key (a 640x480 image's chunk is
    one row). Nothing is an episode until :meth:`commit`; a crash before it leaves rows past the
    last end, which the next open cuts away.
    """

    def __init__(self, writer: DatasetWriter, start: int, index: int) -> None:
        self._writer = writer
        self.start, self.index = start, index
        self.closed = False
        self._written = dict.fromkeys(writer.schema.keys, 0)
        self._pending: dict[str, list[np.ndarray]] = {key: [] for key in writer.schema.keys}

    def rows(self, key: str) -> int:
        """Rows of ``key`` given so far (written or pending)."""
        return self._written[key] + sum(len(block) for block in self._pending[key])

    def write(self, key: str, rows: np.ndarray) -> None:
        """Append ``rows`` ``(n, *shape)`` of ``key``; checked against the schema (shape, dtype,
        finite floats) with the key named."""
        self._check_open()
        spec = self._writer.schema.keys.get(key)
        if spec is None:
            raise DatasetSchemaError(f"key {key!r} is not in the schema")
        rows = np.asarray(rows)
        spec.check_rows(key, rows)
        self._pending[key].append(rows)
        array = self._writer._store.array(key)
        chunk = array.chunks[0]
        position = self.start + self._written[key]
        pending = self.rows(key) - self._written[key]
        full = (position + pending) // chunk * chunk - position
        if full > 0:
            self._flush(key, full)

    def commit(self, length: int, info: Mapping[str, object] | None = None) -> int:
        """Make the first ``length`` rows of every key an episode (rows beyond are dropped: a
        stream that ran ahead of the others); returns its index."""
        self._check_open()
        writer = self._writer
        values = writer.schema.validate_episode_info(info or {})
        short = {key: self.rows(key) for key in self._written if self.rows(key) < length}
        if length <= 0 or short:
            raise DatasetSchemaError(f"episode of {length} steps: keys with fewer rows: {short}")
        stamps = writer._store.array(TIMESTAMP_KEY)
        for key in self._written:
            self._flush(key, self.rows(key) - self._written[key])
            array = writer._store.array(key)
            array.resize((self.start + length, *array.shape[1:]))
        if length > 1 and not (np.diff(stamps[self.start : self.start + length]) > 0).all():
            raise DatasetSchemaError(f"key {TIMESTAMP_KEY!r}: stamps are not strictly increasing")
        index = self.index
        for key, value in values.items():
            column = writer._store.episode_array(key)
            column.resize((index + 1, *column.shape[1:]))
            column[index] = value
        writer._store.episode_ends.resize((index + 1,))
        writer._store.episode_ends[index] = self.start + length
        self.closed = True
        return index

    def discard(self) -> None:
        """Drop every row and file of this episode (the store is as before it began)."""
        if self.closed:
            return
        self.closed = True
        self._pending = {key: [] for key in self._pending}
        self._writer._recover()

    def _flush(self, key: str, n: int) -> None:
        if n <= 0:
            return
        block = np.concatenate(self._pending[key])
        head, rest = block[:n], block[n:]
        self._pending[key] = [rest] if len(rest) else []
        array = self._writer._store.array(key)
        position = self.start + self._written[key]
        array.resize((position + n, *array.shape[1:]))
        array[position:] = head
        self._written[key] += n

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"{self._writer.path}: episode {self.index} is already closed")


def _create_store(path: Path, schema: DatasetSchema) -> None:
    if not path.parent.is_dir():
        raise DatasetFormatError(f"{path}: parent directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise DatasetFormatError(f"{path}: parent directory {path.parent} is not writable")
    staging = path.parent / f".{path.name}.creating-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot create the store ({exc.strerror})") from exc
    try:
        root = zarr.open_group(str(staging), mode="w", zarr_format=ZARR_FORMAT)
        data = root.create_group(DATA_GROUP)
        meta = root.create_group(META_GROUP)
        for key, spec in schema.keys.items():
            data.create_array(
                key,
                shape=(0, *spec.shape),
                chunks=(chunk_length(spec), *spec.shape),
                dtype=spec.dtype,
                compressors=default_compressor(),
                fill_value=0,
            )
        for key, spec in schema.episode_keys.items():
            meta.create_array(
                key,
                shape=(0, *spec.shape),
                chunks=(EPISODE_ENDS_CHUNK, *spec.shape),
                dtype=spec.dtype,
                compressors=None,
                fill_value=0,
            )
        meta.create_array(
            EPISODE_ENDS,
            shape=(0,),
            chunks=(EPISODE_ENDS_CHUNK,),
            dtype="int64",
            compressors=None,
            fill_value=0,
        )
        meta.attrs.update(schema.to_attrs())
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def stored_schema(meta: zarr.Group, path: Path) -> DatasetSchema:
    attrs = meta.attrs.asdict()
    if not attrs:
        raise DatasetFormatError(
            f"{path}: has no schema in meta attrs (a Diffusion Policy store?); "
            "it can be read but not appended to"
        )
    try:
        return DatasetSchema.from_attrs(attrs)
    except ValueError as exc:
        raise DatasetFormatError(f"{path}: invalid schema in meta attrs: {exc}") from exc


def schema_difference(path: Path, stored: DatasetSchema, wanted: DatasetSchema) -> str:
    """What differs between two schemas, named down to the key or field (``keys differ:
    ['wrist_rgb']``, ``provenance.cameras.front_rgb``)."""
    if stored.keys != wanted.keys:
        keys = sorted(set(stored.keys) | set(wanted.keys))
        diff = [k for k in keys if stored.keys.get(k) != wanted.keys.get(k)]
        return f"{path}: holds another schema; keys differ: {diff}"
    fields = _differing(stored.to_attrs(), wanted.to_attrs(), "")
    return f"{path}: holds another schema; fields differ: {fields}"


def _differing(a: object, b: object, prefix: str, depth: int = 3) -> list[str]:
    """The dotted paths where two JSON-like values differ (mappings followed ``depth`` deep)."""
    if a == b:
        return []
    if depth == 0 or not isinstance(a, dict) or not isinstance(b, dict):
        return [prefix or "."]
    paths: list[str] = []
    for name in sorted(set(a) | set(b)):
        paths += _differing(a.get(name), b.get(name), f"{prefix}{name}.", depth - 1)
    return [p.removesuffix(".") for p in paths]


def _lock_directory(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DatasetFormatError(f"{path}: another writer holds this store") from None
    return fd
