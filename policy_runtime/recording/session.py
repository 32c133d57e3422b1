"""The live recorder without ROS: samples and operator commands in, episodes on disk out.

A worker thread owns the :class:`EpisodeRecorder`: subscription callbacks only put samples in
a bounded queue (a full queue drops the sample and counts it: a recorder that falls behind
never blocks the middleware's threads or grows without bound), and operator commands (start,
stop and save, discard, re-record, label, note, quit) go through the same queue, so a command
applies after every sample that came before it. A stop waits until every stream has reached
the stop time (or ``settle_s`` passes) so late camera frames still make the last rows.

Between episodes is the reset phase: with a ``reset`` hook (the simulator's reset service) the
session runs it and is ready when it returns; on a robot the operator resets the scene and
starts the next episode. A finished episode is committed before the next can start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import queue
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from policy_runtime.data.writer import DatasetWriter
from policy_runtime.recording.config import RecordingConfig
from policy_runtime.recording.episode import (
    EpisodeInfo,
    EpisodeRecorder,
    EpisodeReport,
    RecordingError,
)
from policy_runtime.serving.topics import Decoder

State = Literal["ready", "recording", "stopping", "resetting", "closed"]


@dataclass(frozen=True)
class Status:
    """What the status line shows."""

    state: State
    #: Saved episodes in the store; the one being recorded is number ``episodes``.
    episodes: int
    duration_s: float
    rows: int
    dropped: int
    store_bytes: int
    last: EpisodeReport | None
    message: str = ""

    def line(self) -> str:
        size = f"{self.store_bytes / 1e6:.1f} MB"
        text = (
            f"{self.state:<9} episode {self.episodes:>3}  {self.duration_s:6.1f} s  "
            f"{self.rows:>5} rows  dropped {self.dropped}  store {size}"
        )
        return f"{text}  | {self.message}" if self.message else text


class RecordingSession:
    """See the module docs. ``clock()`` is the ROS time samples are stamped with;
    ``episode_info()`` gives the simulator's verdict at a stop (None on a robot), ``reset()``
    runs the reset phase (None: the operator's)."""

    def __init__(
        self,
        writer: DatasetWriter,
        config: RecordingConfig,
        clock: Callable[[], float],
        episode_info: Callable[[], EpisodeInfo | None] | None = None,
        reset: Callable[[], None] | None = None,
        queue_size: int = 512,
    ) -> None:
        self.writer, self.config, self.clock = writer, config, clock
        self.recorder = EpisodeRecorder(writer, config)
        self._episode_info = episode_info
        self._reset = reset
        self._queue: queue.Queue[tuple[str, tuple[object, ...]]] = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self._state: State = "ready"
        self._message = "ready: start an episode"
        self._last: EpisodeReport | None = None
        self._label: bool | None = None
        self._note = ""
        self.dropped: dict[str, int] = {}
        self._started_at: float | None = None
        self._store_bytes = writer.bytes_on_disk()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    # -- inputs (any thread) --------------------------------------------------------------------

    def sample(self, key: str, stamp: float, value: Decoder | np.ndarray) -> None:
        self._put("sample", (key, stamp, value))

    def frame(self, topic: str, stamp: float, pixels: np.ndarray) -> None:
        if self.config.video:
            self._put("frame", (topic, stamp, pixels))

    def command(self, name: str, *args: object) -> Future[str]:
        """Queue an operator command (start, stop, discard, rerecord, label, note, quit); the
        future answers with what happened or raises RecordingError saying why not."""
        future: Future[str] = Future()
        self._queue.put((name, (future, *args)))  # commands are never dropped
        return future

    def backlog(self) -> int:
        """Samples and commands waiting for the worker."""
        return self._queue.qsize()

    def status(self) -> Status:
        with self._lock:
            state, last, message = self._state, self._last, self._message
            started = self._started_at
        duration = 0.0 if started is None or state != "recording" else self.clock() - started
        return Status(
            state,
            self.writer.n_episodes,
            max(duration, 0.0),
            self.recorder.rows() if state == "recording" else 0,
            sum(self.dropped.values()),
            self._store_bytes,
            last,
            message,
        )

    def close(self, timeout: float = 10.0) -> None:
        """Quit: the episode in progress is discarded; saved ones stay."""
        if self._thread.is_alive():
            self.command("quit")
            self._thread.join(timeout)

    # -- the worker -----------------------------------------------------------------------------

    def _put(self, kind: str, item: tuple[object, ...]) -> None:
        try:
            self._queue.put_nowait((kind, item))
        except queue.Full:  # counted while recording: between episodes nothing is lost
            if self._state == "recording":
                key = str(item[0])
                self.dropped[key] = self.dropped.get(key, 0) + 1

    def _run(self) -> None:
        stop_at: tuple[float, float, Future[str]] | None = None  # (t_stop, wall deadline, reply)
        start_deadline: float | None = None
        while True:
            try:
                kind, item = self._queue.get(timeout=0.05)
            except queue.Empty:
                kind, item = "", ()
            if kind in ("sample", "frame"):
                try:
                    if kind == "sample":
                        key, stamp, value = item
                        self.recorder.add(str(key), float(stamp), value)  # type: ignore[arg-type]
                    else:
                        topic, stamp, pixels = item
                        self.recorder.add_frame(str(topic), float(stamp), pixels)  # type: ignore[arg-type]
                except Exception as exc:  # a full disk (or a bug): this episode is lost, no other
                    self.recorder.discard()
                    if stop_at is not None:
                        stop_at[2].set_exception(RecordingError(str(exc)))
                        stop_at = None
                    self._set("ready", _failure(exc, self.writer.n_episodes, self.writer.path))
            elif kind:
                future = item[0]
                assert isinstance(future, Future)
                if kind == "quit":
                    self._quit(future, stop_at)
                    return
                try:
                    outcome = self._command(kind, item[1:])
                except Exception as exc:  # refused (RecordingError), or a disk or a bug: answered
                    future.set_exception(RecordingError(str(exc)))
                    # A refused command does not hide why recording stopped (a full disk).
                    previous = self._message if self._message.startswith("disk full") else ""
                    self._set(message=f"{exc}; {previous}" if previous else str(exc))
                else:
                    if kind == "stop" and outcome is None:
                        stop_at = (self.clock(), time.monotonic() + self.config.settle_s, future)
                        self._set("stopping", "stopping: waiting for the last samples")
                    else:
                        future.set_result(outcome or "")
                    if kind == "start" and self._state == "recording":
                        start_deadline = time.monotonic() + self.config.start_timeout_s
            if stop_at is not None:
                t_stop, deadline, future = stop_at
                if self.recorder.covers(t_stop) or time.monotonic() >= deadline:
                    stop_at = None
                    self._save(t_stop, future)
            if start_deadline is not None and self.recorder.recording:
                if self.recorder.t0 is not None:
                    start_deadline = None
                elif time.monotonic() >= start_deadline:
                    start_deadline = None
                    why = self.recorder.why_not_started()
                    self.recorder.discard()
                    self._set("ready", f"episode not started: {why}")

    def _command(self, kind: str, args: tuple[object, ...]) -> str | None:
        state = self._state
        if kind == "start":
            if state != "ready":
                raise RecordingError(f"cannot start while {state}")
            self._label, self._note = None, ""
            self.dropped = {}
            self.recorder.start(self.clock())
            self._started_at = self.clock()
            self._set("recording", "recording: stop to save, discard to drop")
            return f"recording episode {self.writer.n_episodes}"
        if kind == "stop":
            if state != "recording":
                raise RecordingError(f"nothing to stop ({state})")
            return None  # answered when saved
        if kind == "discard":
            if state != "recording":
                raise RecordingError(f"nothing to discard ({state}); re-record drops a saved one")
            self.recorder.discard()
            self._set("ready", "discarded: reset the scene, then start")
            return "discarded the episode in progress"
        if kind == "rerecord":
            if state == "recording":
                self.recorder.discard()
                what = "the episode in progress"
            elif state == "ready" and self.writer.n_episodes:
                self.writer.remove_last_episode()
                self._store_bytes = self.writer.bytes_on_disk()
                what = f"saved episode {self.writer.n_episodes}"
            else:
                raise RecordingError(f"nothing to re-record ({state})")
            self._reset_phase(f"dropped {what}")
            return f"dropped {what}; record it again"
        if kind == "label":
            success = bool(args[0])
            if state == "recording":
                self._label = success
                return f"episode {self.writer.n_episodes} will be saved as " + _word(success)
            if not self.writer.n_episodes:
                raise RecordingError("no episode to label")
            index = self.writer.n_episodes - 1
            self.writer.set_episode_value(index, "success", np.bool_(success))
            return f"saved episode {index} relabelled " + _word(success)
        if kind == "note":
            text = str(args[0]).strip()
            if state == "recording":
                self._note = text
                return f"note kept for episode {self.writer.n_episodes}"
            if not self.writer.n_episodes:
                raise RecordingError("no episode to note")
            index = self.writer.n_episodes - 1
            folder = self.writer.episode_dir(index)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "note.txt").write_text(text + "\n")
            return f"note written for saved episode {index}"
        raise RecordingError(f"unknown command {kind!r}")

    def _save(self, t_stop: float, future: Future[str]) -> None:
        info = (self._episode_info() if self._episode_info is not None else None) or EpisodeInfo()
        if self._label is not None:
            info = dataclasses.replace(info, success=self._label)
        if self._note:
            info = dataclasses.replace(info, note=self._note)
        try:
            report = self.recorder.finish(t_stop, info)
        except Exception as exc:  # not saved (a silent stream, a full disk, a bug): reported
            self.recorder.discard()
            message = _failure(exc, self.writer.n_episodes, self.writer.path)
            self._set("ready", message)
            future.set_exception(RecordingError(message))
            return
        self._store_bytes = report.bytes_on_disk
        with self._lock:
            self._last = report
        gaps = report.gaps()
        text = (
            f"saved episode {report.index}: {report.length} rows, {report.duration_s:.1f} s, "
            f"oldest sample {report.max_gap_s * 1e3:.0f} ms"
            + (" (FLAGGED: gap over the limit)" if report.flagged else "")
            + (f", gaps {gaps}" if gaps else "")
            + "".join(f"; {problem}" for problem in report.problems)
        )
        self._reset_phase(text)
        future.set_result(text)

    def _reset_phase(self, text: str) -> None:
        if self._reset is None:
            self._set("ready", f"{text}; reset the scene, then start")
            return
        self._set("resetting", f"{text}; resetting")
        try:
            self._reset()
        except Exception as exc:  # the hook is the simulator's service: report, keep going
            self._set("ready", f"{text}; reset failed ({exc}): reset by hand")
            return
        self._set("ready", f"{text}; ready")

    def _quit(self, future: Future[str], stop_at: tuple[float, float, Future[str]] | None) -> None:
        if stop_at is not None:
            stop_at[2].set_exception(RecordingError("quit before the episode was saved"))
        if self.recorder.recording:
            self.recorder.discard()
        self._set("closed", "closed")
        future.set_result(f"closed with {self.writer.n_episodes} episode(s) saved")

    def _set(self, state: State | None = None, message: str | None = None) -> None:
        with self._lock:
            if state is not None:
                self._state = state
            if message is not None:
                self._message = message


def _word(success: bool) -> str:
    return "a success" if success else "a failure"


#: Below this much free space a failed write is a full disk, whatever error reached us (the
#: video's ffmpeg dies of it and the pipe to it breaks: EPIPE, not ENOSPC).
FULL_DISK_BYTES = 1 << 20


def _failure(exc: BaseException, saved: int, store: Path) -> str:
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    with contextlib.suppress(OSError):
        full = full or shutil.disk_usage(store).free < FULL_DISK_BYTES
    if full:
        return (
            f"disk full: the episode was not saved and recording stopped; the {saved} episode(s) "
            "saved before it are intact. Free space, then start again"
        )
    return f"episode not saved: {exc}"
