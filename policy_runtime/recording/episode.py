"""One episode at a time, from stamped samples to a committed dataset episode.

Every stream (each observation key, each part of the action) goes through its own
:class:`~policy_runtime.alignment.GridAligner` onto the grid ``t0 + k / control_hz``, the newest
sample not after each grid time, the rule the policy server applies when it serves the policy.
``t0`` is the first time every stream has a sample at or after the start (the newest sample
before the start counts), so no row is padded. Low-dimensional rows stay in memory until the
commit (kilobytes); image rows are decoded (cropped, resized) when their grid time is decided
and written at once, compressed, past the store's last committed end: memory holds one frame
per camera, and a crash loses only the episode in progress (the writer cuts its rows on the next
open). The live recorder and the rosbag2 import both drive this class, so a bag and a live
recording of the same messages give the same episode.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from policy_runtime.alignment import STAMP_EPS, AlignedRow, GridAligner
from policy_runtime.data.schema import ACTION_KEY, TIMESTAMP_KEY
from policy_runtime.data.writer import DatasetWriter, EpisodeAppend
from policy_runtime.recording.config import RecordedSource, RecordingConfig
from policy_runtime.recording.video import VideoWriter
from policy_runtime.serving.decode import DecodeError
from policy_runtime.serving.topics import Decoder


class RecordingError(RuntimeError):
    """An episode that cannot start or be saved; the message says why (the topic, the disk)."""


@dataclass(frozen=True)
class EpisodeInfo:
    """The per-episode values (the schema's ``episode_keys``) and the operator's note."""

    seed: int = -1
    success: bool = True
    score: float = math.nan
    note: str = ""


@dataclass
class StreamStats:
    """One stream's figures over an episode."""

    samples: int = 0
    #: Rows whose sample was older than the stream's gap limit at their grid time.
    gaps: int = 0
    max_age_s: float = 0.0
    out_of_order: int = 0
    decode_errors: int = 0


@dataclass(frozen=True)
class EpisodeReport:
    """A finished episode: saved (``index``) or not, and what the operator should know."""

    index: int | None
    length: int
    duration_s: float
    max_gap_s: float
    flagged: bool
    streams: dict[str, StreamStats]
    bytes_on_disk: int = 0
    #: What went wrong beside the data (a video that failed: the episode is saved without it).
    problems: list[str] = field(default_factory=list)

    def gaps(self) -> dict[str, int]:
        return {key: s.gaps for key, s in self.streams.items() if s.gaps}


@dataclass
class _Stream:
    source: RecordedSource
    limit_s: float
    lazy: bool
    #: Before the grid starts: the newest sample before the start, and the ones after it.
    waiting: list[tuple[float, Decoder | np.ndarray]] = field(default_factory=list)
    aligner: GridAligner[Decoder | np.ndarray] | None = None
    rows: list[np.ndarray] = field(default_factory=list)
    #: Each decided row's sample age at its grid time (seconds).
    ages: list[float] = field(default_factory=list)
    previous: np.ndarray | None = None
    stats: StreamStats = field(default_factory=StreamStats)


class EpisodeRecorder:
    """Samples in (:meth:`add`, any time), one episode at a time out (:meth:`start`,
    :meth:`finish` or :meth:`discard`). Not thread-safe: one thread drives it."""

    def __init__(self, writer: DatasetWriter, config: RecordingConfig) -> None:
        self.writer, self.config = writer, config
        self._streams = {
            key: _Stream(source, _gap_limit(source, config), source.type == "image")
            for key, source in config.streams().items()
        }
        self._newest: dict[str, tuple[float, Decoder | np.ndarray]] = {}
        self._append: EpisodeAppend | None = None
        self._videos: dict[str, VideoWriter] = {}
        self.t_start: float | None = None
        self.t0: float | None = None

    @property
    def recording(self) -> bool:
        return self._append is not None

    @property
    def keys(self) -> list[str]:
        return list(self._streams)

    def newest_stamp(self, key: str) -> float | None:
        newest = self._newest.get(key)
        return None if newest is None else newest[0]

    def covers(self, t: float) -> bool:
        """Whether every stream has a sample at or after ``t``."""
        return all(
            key in self._newest and self._newest[key][0] >= t - STAMP_EPS for key in self._streams
        )

    def start(self, t_start: float) -> None:
        """Begin an episode at ``t_start``; its grid starts once every stream has a sample."""
        if self._append is not None:
            raise RecordingError("an episode is already being recorded")
        self._append = self.writer.begin_episode()
        self.t_start, self.t0 = t_start, None
        for key, stream in self._streams.items():
            stream.aligner, stream.rows, stream.ages, stream.previous = None, [], [], None
            stream.stats = StreamStats()
            newest = self._newest.get(key)
            stream.waiting = [newest] if newest is not None else []

    def add(self, key: str, stamp: float, value: Decoder | np.ndarray) -> None:
        """A sample of stream ``key``: its array, or (images) a function that makes it."""
        stream = self._streams[key]
        if not stream.lazy and not isinstance(value, np.ndarray):
            try:  # low-dim: decoded now (cheap), so a bad message never becomes a row
                value = value()
            except DecodeError:
                stream.stats.decode_errors += 1
                return
        if not self.recording:
            self._newest[key] = (stamp, value)
            return
        newest = self._newest.get(key)
        if newest is not None and stamp <= newest[0] + STAMP_EPS:
            stream.stats.out_of_order += 1
            return
        self._newest[key] = (stamp, value)
        stream.stats.samples += 1
        if stream.aligner is None:
            stream.waiting.append((stamp, value))
            self._start_grid_when_ready()
        else:
            self._take(key, stream, stream.aligner.add(stamp, value) or [])

    def add_frame(self, topic: str, stamp: float, pixels: np.ndarray) -> None:
        """A camera frame for the episode's video of ``topic`` (every frame, full size)."""
        if self._append is None or not self.config.video:
            return
        video = self._videos.get(topic)
        if video is None:
            name = next(k for k, s in self.config.observations.items() if s.topic == topic)
            folder = self.writer.episode_dir(self._append.index)
            video = VideoWriter(folder / f"{name}.mp4", fps=_rate(self.config, topic))
            self._videos[topic] = video
        video.write(stamp, pixels)

    def finish(self, t_end: float, info: EpisodeInfo) -> EpisodeReport:
        """Save the episode up to ``t_end`` (or the newest time every stream reached, if
        earlier) and return its report; RecordingError (nothing saved) when no grid time has
        every stream."""
        append = self._require_append()
        if self.t0 is None:
            why = self.why_not_started()
            self.discard()
            raise RecordingError(f"{why}: episode not saved")
        reached = min(self._newest[key][0] for key in self._streams)
        end = min(t_end, reached)
        length = math.floor((end - self.t0) / self.config.dt + 1e-6) + 1
        if length < 1:
            self.discard()
            raise RecordingError("the episode ended before its first grid time: not saved")
        for key, stream in self._streams.items():
            assert stream.aligner is not None
            self._take(key, stream, stream.aligner.finish(length))
        grid = self.t0 + np.arange(length) * self.config.dt
        append.write(TIMESTAMP_KEY, grid)
        for key, stream in self._streams.items():
            if not stream.lazy and not key.startswith(f"{ACTION_KEY}."):
                append.write(key, np.stack(stream.rows[:length]))
        parts = [self._streams[f"{ACTION_KEY}.{i}"] for i in range(len(self.config.action))]
        append.write(ACTION_KEY, np.concatenate([np.stack(p.rows[:length]) for p in parts], 1))
        stats = {key: self._summary(stream, length) for key, stream in self._streams.items()}
        max_gap = max(s.max_age_s for s in stats.values())
        flagged = max_gap > self.config.max_gap_s
        folder = self.writer.episode_dir(append.index)
        problems = [problem for video in self._videos.values() if (problem := video.close())]
        self._videos = {}
        if info.note:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "note.txt").write_text(info.note + "\n")
        values = {
            "seed": np.int64(info.seed),
            "success": np.bool_(info.success),
            "score": np.float32(info.score),
            "max_gap_s": np.float32(max_gap),
            "gap_flagged": np.bool_(flagged),
        }
        index = append.commit(length, values)
        self._append = None
        duration = (length - 1) * self.config.dt
        size = self.writer.bytes_on_disk()
        return EpisodeReport(index, length, duration, max_gap, flagged, stats, size, problems)

    def discard(self) -> None:
        """Drop the episode in progress (nothing of it stays on disk)."""
        for video in self._videos.values():
            video.abort()
        self._videos = {}
        if self._append is not None:
            append, self._append = self._append, None
            append.discard()

    def stats(self) -> dict[str, StreamStats]:
        """Each stream's figures over the rows decided so far."""
        return {key: self._summary(stream) for key, stream in self._streams.items()}

    def rows(self) -> int:
        """Grid rows decided so far in the episode (the slowest stream's)."""
        if self.t0 is None:
            return 0
        return min(s.aligner.next_index for s in self._streams.values() if s.aligner is not None)

    def why_not_started(self) -> str:
        """Why the episode's grid has not started: the topics with no sample yet, or no sample
        of the grid's topic since every stream began."""
        silent = [k for k, s in self._streams.items() if s.aligner is None and not s.waiting]
        if silent:
            return f"no data from {self._topics(silent)}"
        return f"no sample on {self.config.grid_topic} since every stream began"

    # -- internals ------------------------------------------------------------------------------

    def _require_append(self) -> EpisodeAppend:
        if self._append is None:
            raise RecordingError("no episode is being recorded")
        return self._append

    def _start_grid_when_ready(self) -> None:
        if any(not s.waiting for s in self._streams.values()):
            return
        assert self.t_start is not None
        t0 = max(self.t_start, *(s.waiting[0][0] for s in self._streams.values()))
        grid_topic = self.config.grid_topic
        if grid_topic is not None:  # the first sample of the grid's topic from t0 on
            stream = next(s for s in self._streams.values() if s.source.topic == grid_topic)
            on_grid = [stamp for stamp, _ in stream.waiting if stamp >= t0 - STAMP_EPS]
            if not on_grid:
                return
            t0 = on_grid[0]
        self.t0 = t0
        for key, stream in self._streams.items():
            samples = stream.waiting
            # The newest sample not after t0, and every one after it.
            first = max(i for i, (stamp, _) in enumerate(samples) if stamp <= t0 + STAMP_EPS)
            aligner: GridAligner[Decoder | np.ndarray] = GridAligner(t0, self.config.dt)
            stream.aligner, stream.waiting = aligner, []
            for stamp, value in samples[first:]:
                self._take(key, stream, aligner.add(stamp, value) or [])

    def _take(
        self, key: str, stream: _Stream, rows: list[AlignedRow[Decoder | np.ndarray]]
    ) -> None:
        assert self._append is not None and stream.aligner is not None
        for row in rows:
            stream.ages.append(stream.aligner.grid_time(row.index) - row.stamp)
            value = self._decoded(stream, row.value)
            if stream.lazy:
                self._append.write(key, value[None])
            else:
                stream.rows.append(value)

    @staticmethod
    def _summary(stream: _Stream, length: int | None = None) -> StreamStats:
        """The stream's counts, with gaps and the oldest sample over its first ``length`` rows
        (the saved ones; a stream that ran past the end decided more)."""
        ages = np.asarray(stream.ages[:length])
        return dataclasses.replace(
            stream.stats,
            gaps=int(np.count_nonzero(ages > stream.limit_s)),
            max_age_s=float(ages.max()) if ages.size else 0.0,
        )

    def _decoded(self, stream: _Stream, value: Decoder | np.ndarray) -> np.ndarray:
        if isinstance(value, np.ndarray):
            return value
        try:
            decoded = value()
        except DecodeError:
            stream.stats.decode_errors += 1
            shape = stream.source.stored_shape
            decoded = stream.previous if stream.previous is not None else np.zeros(shape, "u1")
        stream.previous = decoded
        return decoded

    def _topics(self, keys: list[str]) -> list[str]:
        streams = self.config.streams()
        return sorted({streams[k].topic for k in keys})


def _gap_limit(source: RecordedSource, config: RecordingConfig) -> float:
    if source.rate_hz is None:
        return config.max_gap_s
    return config.max_gap_periods / source.rate_hz


def _rate(config: RecordingConfig, topic: str) -> float:
    rates = [s.rate_hz for s in config.observations.values() if s.topic == topic and s.rate_hz]
    return rates[0] if rates else 30.0


__all__ = [
    "EpisodeInfo",
    "EpisodeRecorder",
    "EpisodeReport",
    "RecordingError",
    "StreamStats",
]
