"""The recorder from stamped samples to committed episodes: grid alignment, gap reports,
operator commands, and what survives a SIGKILL, a mismatched resume and a full disk.

Expected rows are worked out by hand from the sample schedules below (every stream starts at
the episode's start, so the grid starts there too), not recomputed with the code under test.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
import zarr

from policy_runtime.alignment import GridAligner, newest_not_after
from policy_runtime.data import DatasetSchemaError, DatasetWriter, EpisodeDataset
from policy_runtime.recording.config import RecordedSource, RecordingConfig
from policy_runtime.recording.episode import EpisodeInfo, EpisodeRecorder, RecordingError
from policy_runtime.recording.session import RecordingSession
from policy_runtime.serving.topics import Decoder

REPO = Path(__file__).resolve().parents[1]
#: Seconds to wait for a session's answer; far above what any command takes here.
ANSWER_S = 30.0
#: Offsets that make each low-dim stream's values distinct, so a stored row names its stream.
OFFSETS = {"ee_pose": 0.0, "action.0": 1000.0, "action.1": 2000.0}


# -- helpers ----------------------------------------------------------------------------------


def make_config(
    image_shape: tuple[int, int, int] = (48, 64, 3),
    image_hz: float = 20.0,
    video: bool = False,
    extra_image: str | None = None,
) -> RecordingConfig:
    """A UR5 teleop recording: a 100 Hz pose, one camera, and a two-part action (a 50 Hz pose
    target and a 25 Hz gripper), on a 10 Hz grid. Every rate divides the span of the episodes
    below, so each stream has a sample exactly at the stop time."""
    observations = {
        "ee_pose": RecordedSource(topic="/tcp_pose", type="pose", rate_hz=100),
        "front_rgb": RecordedSource(
            topic="/camera/front/color/image_raw",
            type="image",
            shape=image_shape,
            rate_hz=image_hz,
        ),
    }
    if extra_image is not None:
        observations[extra_image] = RecordedSource(
            topic=f"/camera/{extra_image}/image_raw", type="image", shape=(48, 64, 3), rate_hz=20
        )
    return RecordingConfig(
        task="push_t",
        control_hz=10,
        max_gap_s=0.3,
        settle_s=0.2,
        video=video,
        observations=observations,
        action=[
            RecordedSource(topic="/teleop/target", type="pose", rate_hz=50),
            RecordedSource(
                topic="/teleop/gripper", type="joint_state", names=("gripper",), rate_hz=25
            ),
        ],
    )


def frame(shape: tuple[int, ...], index: int) -> np.ndarray:
    """Camera frame ``index``: noise seeded by the index (incompressible, so a full disk is
    reached by data, and a stored row proves which frame it is)."""
    return np.random.default_rng(index).integers(0, 256, shape, dtype=np.uint8)


def schedule(config: RecordingConfig, t_from: float, t_to: float) -> list[tuple[float, str, int]]:
    """``(stamp, key, i)`` of every stream's i-th sample at its ``rate_hz`` from ``t_from`` to
    ``t_to`` inclusive, in stamp order (ties in the config's stream order)."""
    items = []
    for key, source in config.streams().items():
        assert source.rate_hz is not None
        n = round((t_to - t_from) * source.rate_hz)
        items += [(t_from + i / source.rate_hz, key, i) for i in range(n + 1)]
    order = {key: n for n, key in enumerate(config.streams())}
    return sorted(items, key=lambda item: (item[0], order[item[1]]))


def sample_value(
    config: RecordingConfig, key: str, stamp: float, index: int, base: float
) -> np.ndarray | Decoder:
    """A low-dim sample holds its stamp relative to ``base`` (plus the stream's offset), so a
    stored row says which sample it took; an image is a lazy decoder of frame ``index``."""
    source = config.streams()[key]
    if source.type == "image":
        return functools.partial(frame, source.stored_shape, index)
    return np.full(source.stored_shape, OFFSETS[key] + (stamp - base), dtype=np.float32)


class FakeClock:
    """The session's ROS clock, set by the test: commands read it when the worker takes them."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def answer(future: Future[str]) -> str:
    return future.result(timeout=ANSWER_S)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = ANSWER_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def feed(
    session: RecordingSession,
    config: RecordingConfig,
    t_from: float,
    t_to: float,
    frames: bool = False,
) -> None:
    """Queue every stream's samples over ``[t_from, t_to]`` (and, when ``frames``, each camera
    frame at 160x120 for the video, before its sample as a camera node sends them)."""
    for stamp, key, i in schedule(config, t_from, t_to):
        value = sample_value(config, key, stamp, i, t_from)
        if frames and key == "front_rgb":
            session.frame(config.observations[key].topic, stamp, frame((120, 160, 3), i))
        session.sample(key, stamp, value)


def record(
    session: RecordingSession,
    clock: FakeClock,
    config: RecordingConfig,
    t_from: float,
    t_to: float,
    frames: bool = False,
) -> str:
    """One episode through the session: start at ``t_from``, samples up to ``t_to``, stop at
    ``t_to``; returns the stop's answer (raises RecordingError when not saved)."""
    clock.now = t_from
    assert answer(session.command("start")).startswith("recording episode")
    feed(session, config, t_from, t_to, frames)
    clock.now = t_to
    return answer(session.command("stop"))


def raw_lengths(path: Path) -> dict[str, int]:
    """Rows of every ``data/`` array on disk, committed or not."""
    root = zarr.open_group(str(path), mode="r")
    return {name: int(array.shape[0]) for name, array in root["data"].arrays()}  # type: ignore[union-attr]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def digests(episode: dict[str, np.ndarray]) -> dict[str, str]:
    return {
        key: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
        for key, v in sorted(episode.items())
    }


# -- 1. grid alignment ------------------------------------------------------------------------

T0 = 10.0
#: A ~30 Hz camera (33.3 ms) with a few ms of jitter; the frame due at ~167 ms was dropped, and
#: the one at 200 ms lies exactly on grid time 4.
STAMPS_MS = [0, 34, 66, 101, 133, 200, 235, 266, 301, 332, 368, 399]
#: Grid t0 + k * 50 ms, k = 0..8, each takes the newest stamp not after it, by hand:
#:   k=2 (100 ms): 101 is 1 ms late, so the 66 ms frame (index 2);
#:   k=3 (150 ms): 167 was dropped, so the 133 ms frame (index 4), 17 ms old;
#:   k=4 (200 ms): the 200 ms frame itself (index 5): equal is not after;
#:   k=6 (300 ms): 301 is late again, 266 (index 7); k=7 (350 ms): 332 (index 9);
#:   k=8 (400 ms): 399 (index 11).
EXPECTED = [0, 1, 2, 4, 5, 6, 7, 9, 11]


def test_newest_not_after_picks_hand_computed_indices_on_jittered_stamps() -> None:
    stamps = T0 + np.array(STAMPS_MS) / 1000
    grid = T0 + np.arange(9) * 0.05
    np.testing.assert_array_equal(newest_not_after(stamps, grid), EXPECTED)
    # Before the first stamp there is no sample; exactly on it there is.
    np.testing.assert_array_equal(
        newest_not_after(stamps, np.array([T0 - 0.05, T0, T0 + 0.0339])), [-1, 0, 0]
    )


def test_grid_aligner_decides_the_same_rows_online() -> None:
    """The online aligner must agree with the batch rule, and decide a grid time only once a
    sample stamped after it has come (a sample exactly on a grid time does not decide it)."""
    aligner: GridAligner[int] = GridAligner(T0, 0.05)
    decided: list[list[int]] = []
    rows = []
    for i, ms in enumerate(STAMPS_MS):
        new = aligner.add(T0 + ms / 1000, i)
        assert new is not None
        decided.append([row.index for row in new])
        rows += new
    rows += aligner.finish(9)
    # Which arrival decides which grid time, by hand: 34 ms decides k=0 (0 ms), 101 decides
    # k=2 (100 ms), 133 decides nothing (k=3 is at 150), 200 decides only k=3 (150 ms), and
    # k=4 (200 ms) waits for 235; 399 leaves k=8 (400 ms) to finish().
    assert decided == [[], [0], [1], [2], [], [3], [4], [5], [6], [], [7], []]
    assert [row.index for row in rows] == list(range(9))
    assert [row.value for row in rows] == EXPECTED
    assert [round((row.stamp - T0) * 1000) for row in rows] == [STAMPS_MS[i] for i in EXPECTED]
    assert aligner.out_of_order == 0


def test_a_stamp_exactly_on_a_grid_time_is_the_newest_not_after_it() -> None:
    """With binary-exact times (dt = 0.25) a stamp on grid time 2 is bit-equal to it, so only
    the rule itself (not float luck) can keep it from deciding that grid time early."""
    picked = newest_not_after(np.array([0.0, 0.5, 0.6]), np.array([0.25, 0.5, 0.75]))
    assert picked.tolist() == [0, 1, 2]
    aligner: GridAligner[str] = GridAligner(0.0, 0.25)
    assert aligner.add(0.0, "a") == []
    on_grid = aligner.add(0.5, "b")  # decides 0.0 and 0.25 with "a", not 0.5
    assert on_grid is not None and [(r.index, r.value) for r in on_grid] == [(0, "a"), (1, "a")]
    later = aligner.add(0.6, "c")  # now 0.5 is decided, with the sample stamped on it
    assert later is not None and [(r.index, r.value, r.stamp) for r in later] == [(2, "b", 0.5)]
    assert [(r.index, r.value) for r in aligner.finish(4)] == [(3, "c")]


def test_stamps_on_grid_times_at_epoch_seconds_are_not_after_them() -> None:
    """A robot stamps with system time (~1.8e9 s), where float64 resolves ~0.24 us: a 125 Hz
    stream's stamps from integer nanoseconds, on every grid time of a 10 Hz grid from its first
    sample, must each be taken at their own grid time (index 12.5 * k), not the one before."""
    t0_ns = 1_796_194_492_000_000_000
    stamps = np.array([(t0_ns + i * 8_000_000) * 1e-9 for i in range(126)])
    grid = stamps[0] + np.arange(11) * 0.1
    assert newest_not_after(stamps, grid).tolist() == [round(12.5 * k - 0.25) for k in range(11)]
    aligner: GridAligner[int] = GridAligner(float(stamps[0]), 0.1)
    rows = []
    for i, stamp in enumerate(stamps):
        rows += aligner.add(float(stamp), i) or []
    rows += aligner.finish(11)
    assert [row.value for row in rows] == [round(12.5 * k - 0.25) for k in range(11)]


def test_grid_aligner_refuses_and_counts_duplicate_and_older_stamps() -> None:
    aligner: GridAligner[int] = GridAligner(T0, 0.05)
    rows = []
    for i, ms in enumerate(STAMPS_MS):
        rows += aligner.add(T0 + ms / 1000, i) or []
        if i == 3:  # a duplicate of 101 ms, and a late 90 ms sample: both refused
            assert aligner.add(T0 + 0.101, 100) is None
            assert aligner.add(T0 + 0.090, 101) is None
    rows += aligner.finish(9)
    assert aligner.out_of_order == 2
    assert [row.value for row in rows] == EXPECTED  # the refused ones changed nothing
    with pytest.raises(ValueError, match="after the grid start"):
        GridAligner[int](T0, 0.05).add(T0 + 0.001, 0)


# -- 2. gaps ----------------------------------------------------------------------------------


def test_recorder_reports_a_paused_stream_and_stores_the_chosen_samples(tmp_path: Path) -> None:
    config = make_config()
    shape = config.observations["front_rgb"].stored_shape
    path = tmp_path / "gaps.zarr"
    decoded: list[int] = []

    def counted(index: int) -> Decoder:
        def decode() -> np.ndarray:
            decoded.append(index)
            return frame(shape, index)

        return decode

    with DatasetWriter(path, config.dataset_schema()) as writer:
        recorder = EpisodeRecorder(writer, config)
        # Episode 0: ee_pose (100 Hz) pauses 0.4 s, from its 100.33 sample to 100.73.
        base = 100.0
        recorder.start(base)
        for stamp, key, i in schedule(config, base, base + 1.0):
            if key == "ee_pose" and 33 < i < 73:
                continue
            value = counted(i) if key == "front_rgb" else sample_value(config, key, stamp, i, base)
            recorder.add(key, stamp, value)
            if key == "ee_pose" and i == 10:  # a duplicate and an older stamp: refused
                recorder.add(key, stamp, sample_value(config, key, stamp, i, base))
                recorder.add(key, stamp - 0.005, sample_value(config, key, stamp, i, base))
        report = recorder.finish(base + 1.0, EpisodeInfo(seed=3, score=0.5))
        # Episode 1: every stream steady.
        recorder.start(110.0)
        for stamp, key, i in schedule(config, 110.0, 111.0):
            recorder.add(key, stamp, sample_value(config, key, stamp, i, 110.0))
        clean = recorder.finish(111.0, EpisodeInfo(success=False))

    # Grid 100.0, 100.1, ..., 101.0: 11 rows. ee_pose's newest sample at 100.4/.5/.6/.7 is the
    # one at 100.33: ages 0.07, 0.17, 0.27, 0.37 s, all over its 2.5 / 100 Hz = 25 ms limit,
    # so 4 gap rows; 100.8 has the 100.80 sample again. 0.37 s > max_gap_s 0.3: flagged.
    assert report.index == 0 and report.length == 11
    assert report.duration_s == pytest.approx(1.0)
    assert report.gaps() == {"ee_pose": 4}
    assert report.max_gap_s == pytest.approx(0.37, abs=1e-9)
    assert report.flagged
    ee = report.streams["ee_pose"]
    assert ee.samples == 101 - 39 and ee.out_of_order == 2  # 39 samples (100.34-100.72) paused
    # Images: 21 frames came, only the 11 chosen (every second one, 0.05 s apart) were decoded.
    assert decoded == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]

    # The clean episode: the 25 Hz gripper is the oldest, 100.08 at 100.1 (20 ms, under its
    # 100 ms limit); every other stream has a sample exactly on each grid time.
    assert clean.index == 1 and clean.length == 11
    assert clean.gaps() == {} and not clean.flagged
    assert clean.max_gap_s == pytest.approx(0.02, abs=1e-9)

    ds = EpisodeDataset.open(path)
    assert ds.n_episodes == 2
    np.testing.assert_allclose(ds.episode_info("max_gap_s"), [0.37, 0.02], atol=1e-6)
    np.testing.assert_array_equal(ds.episode_info("gap_flagged"), [True, False])
    np.testing.assert_array_equal(ds.episode_info("seed"), [3, -1])
    np.testing.assert_array_equal(ds.episode_info("success"), [True, False])
    np.testing.assert_allclose(ds.episode_info("score"), [0.5, np.nan])

    ep = ds.episode(0)
    grid = np.arange(11) / 10
    np.testing.assert_allclose(ep["timestamp"], 100.0 + grid, atol=1e-9)
    ee_chosen = [0.0, 0.1, 0.2, 0.3, 0.33, 0.33, 0.33, 0.33, 0.8, 0.9, 1.0]
    np.testing.assert_allclose(
        ep["ee_pose"], np.repeat(np.array(ee_chosen)[:, None], 9, 1), atol=1e-5
    )
    # action = action.0 (the 50 Hz target: a sample on every grid time) then action.1 (the 25
    # Hz gripper: the newest of 0, .04, .08, ...), in that order.
    gripper_chosen = [0.0, 0.08, 0.2, 0.28, 0.4, 0.48, 0.6, 0.68, 0.8, 0.88, 1.0]
    assert ep["action"].shape == (11, 10)
    np.testing.assert_allclose(
        ep["action"][:, :9], 1000 + np.repeat(grid[:, None], 9, 1), atol=1e-4
    )
    np.testing.assert_allclose(ep["action"][:, 9], 2000 + np.array(gripper_chosen), atol=1e-4)
    for k in range(11):
        np.testing.assert_array_equal(ep["front_rgb"][k], frame(shape, 2 * k))
    np.testing.assert_allclose(ds.episode(1)["timestamp"], 110.0 + grid, atol=1e-9)


# -- 3. operator commands ---------------------------------------------------------------------


def test_gaps_count_only_the_saved_rows(tmp_path: Path) -> None:
    """A stream whose next sample comes long after the stop decides rows past the episode's end
    with an old sample; those rows are not saved, so they are not gaps of the episode."""
    config = make_config()
    with DatasetWriter(tmp_path / "ahead.zarr", config.dataset_schema()) as writer:
        recorder = EpisodeRecorder(writer, config)
        base = 100.0
        recorder.start(base)
        for stamp, key, i in schedule(config, base, base + 1.0):
            recorder.add(key, stamp, sample_value(config, key, stamp, i, base))
        # ee_pose's next sample 0.45 s later decides grid times 101.0 .. 101.4 with its 101.0
        # sample (up to 0.4 s old); the others stop at 101.0, so 11 rows (100.0 .. 101.0) save.
        recorder.add("ee_pose", base + 1.45, sample_value(config, "ee_pose", base + 1.45, 0, base))
        report = recorder.finish(base + 1.0, EpisodeInfo())
    assert report.length == 11
    assert report.gaps() == {} and not report.flagged
    assert report.max_gap_s == pytest.approx(0.02, abs=1e-6)  # the 25 Hz gripper's oldest


def test_a_grid_topic_puts_the_rows_on_its_stamps(tmp_path: Path) -> None:
    """Commands published once per period at 100.03, 100.13, ... (the teleop's): with the grid
    on their topic the grid starts at the first one after every stream has begun (100.03), and
    row k holds command k exactly (age 0); without, the grid starts at 100.0 and each row holds
    the command of 70 ms before."""
    for grid_topic, t0, age in ((None, 100.0, 0.07), ("/target", 100.03, 0.0)):
        config = RecordingConfig.model_validate(
            {
                "control_hz": 10,
                "grid_topic": grid_topic,
                "observations": {"ee_pose": {"topic": "/pose", "type": "pose", "rate_hz": 100}},
                "action": [{"topic": "/target", "type": "pose"}],
            }
        )
        with DatasetWriter(tmp_path / f"{grid_topic is None}.zarr", config.dataset_schema()) as w:
            recorder = EpisodeRecorder(w, config)
            events = [(99.93 + k / 10, "action.0", k) for k in range(12)]
            events += [(100.0 + i / 100, "ee_pose", i) for i in range(101)]
            recorder.start(100.0)
            for stamp, key, i in sorted(events):
                recorder.add(key, stamp, np.full(9, i, dtype=np.float32))
            report = recorder.finish(101.0, EpisodeInfo())
            episode = EpisodeDataset.open(w.path).episode(0)
        assert episode["timestamp"][0] == pytest.approx(t0, abs=1e-9)
        commands = episode["action"][:, 0]
        # Command k is stamped 99.93 + k / 10: the grid at 100.03 takes k = 1, 2, ...
        assert commands[:3].tolist() == ([1.0, 2.0, 3.0] if grid_topic else [0.0, 1.0, 2.0])
        assert report.streams["action.0"].max_age_s == pytest.approx(age, abs=1e-6)


def test_session_discard_rerecord_label_and_note(tmp_path: Path) -> None:
    # 120x160 images: 1 MiB / 57600 B = 18 rows per chunk, so rows reach the disk mid-episode.
    config = make_config(image_shape=(120, 160, 3), video=True)
    path = tmp_path / "session.zarr"
    episodes = path / "episodes"
    clock = FakeClock()
    writer = DatasetWriter(path, config.dataset_schema())
    session = RecordingSession(writer, config, clock, queue_size=4096)
    try:
        # Discard: 2 s in progress, 18 image rows and a video part on disk, then dropped.
        assert answer(session.command("start")) == "recording episode 0"
        feed(session, config, 0.0, 2.0, frames=True)
        wait_until(lambda: session.status().rows >= 20, "20 decided rows")
        assert raw_lengths(path)["front_rgb"] == 18
        partial = episodes / "episode_000000" / "front_rgb.mp4.partial"
        wait_until(partial.exists, "ffmpeg to open the video")  # ffmpeg runs on its own
        assert [p.name for p in files_under(episodes)] == ["front_rgb.mp4.partial"]
        assert answer(session.command("discard")) == "discarded the episode in progress"
        assert writer.n_episodes == 0
        assert set(raw_lengths(path).values()) == {0}
        assert files_under(episodes) == []
        with pytest.raises(RecordingError, match="nothing to discard"):
            answer(session.command("discard"))

        # Two saved episodes: 2 s (21 rows) and 1 s (11 rows).
        assert record(session, clock, config, 10.0, 12.0, frames=True).startswith(
            "saved episode 0: 21 rows, 2.0 s"
        )
        assert record(session, clock, config, 20.0, 21.0, frames=True).startswith(
            "saved episode 1: 11 rows, 1.0 s"
        )
        assert set(raw_lengths(path).values()) == {32}
        assert (episodes / "episode_000001" / "front_rgb.mp4").is_file()

        # Re-record while ready drops the last saved one: its rows and its video.
        assert answer(session.command("rerecord")) == "dropped saved episode 1; record it again"
        assert writer.n_episodes == 1
        assert set(raw_lengths(path).values()) == {21}
        assert not (episodes / "episode_000001").exists()
        first = episodes / "episode_000000"
        assert sorted(p.name for p in files_under(first)) == [
            "front_rgb.mp4",
            "front_rgb_stamps.npy",
        ]
        # Every one of the 41 frames (20 Hz over 10..12 s) is in the video, with its stamp.
        np.testing.assert_allclose(np.load(first / "front_rgb_stamps.npy"), 10 + np.arange(41) / 20)

        # Label and note apply to the last saved episode.
        assert answer(session.command("label", False)) == "saved episode 0 relabelled a failure"
        assert answer(session.command("note", "  cube slipped ")) == (
            "note written for saved episode 0"
        )
        assert (first / "note.txt").read_text() == "cube slipped\n"
        status = session.status()
        assert (status.state, status.episodes, status.dropped) == ("ready", 1, 0)
    finally:
        session.close()
        writer.close()
    ds = EpisodeDataset.open(path)
    assert ds.n_episodes == 1
    np.testing.assert_array_equal(ds.episode_info("success"), [False])
    np.testing.assert_allclose(ds.episode(0)["timestamp"], 10.0 + np.arange(21) / 10, atol=1e-9)


# -- 4. SIGKILL mid-episode -------------------------------------------------------------------

CHILD = r"""
import hashlib, json, sys
import numpy as np
from policy_runtime.data import DatasetWriter, EpisodeDataset
from policy_runtime.recording.config import RecordingConfig
from policy_runtime.recording.episode import EpisodeInfo, EpisodeRecorder

path, config = sys.argv[1], RecordingConfig.model_validate_json(sys.argv[2])
streams = config.streams()
writer = DatasetWriter(path, config.dataset_schema())
recorder = EpisodeRecorder(writer, config)


def tick(t_from, n):
    # A 100 Hz tick: each stream whose rate divides it gets a sample.
    t = t_from + n / 100
    for key, source in streams.items():
        if n % round(100 / source.rate_hz):
            continue
        if source.type == "image":
            value = lambda n=n, shape=source.stored_shape: np.full(shape, n % 256, np.uint8)
        else:
            value = np.full(source.stored_shape, t, np.float32)
        recorder.add(key, t, value)


recorder.start(0.0)
for n in range(1501):
    tick(0.0, n)
recorder.finish(14.9, EpisodeInfo(seed=7))
episode = EpisodeDataset.open(path).episode(0)
print(json.dumps({k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
                  for k, v in sorted(episode.items())}), flush=True)

recorder.start(20.0)
told = False
for n in range(1_000_000):
    tick(20.0, n)
    if not told and n % 50 == 0:
        on_disk = writer._store.lengths()["front_rgb"]
        if on_disk > 150:
            print("rows_on_disk", on_disk, flush=True)
            told = True
sys.exit(3)  # never reached when the parent kills us
"""


def test_sigkill_mid_episode_keeps_the_saved_one_and_the_store_appendable(tmp_path: Path) -> None:
    config = make_config()
    schema = config.dataset_schema()
    path = tmp_path / "crash.zarr"
    log = tmp_path / "child.err"
    with log.open("w") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), config.model_dump_json()],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=REPO,
        )
    assert child.stdout is not None
    try:
        saved = json.loads(child.stdout.readline() or "null")
        line = child.stdout.readline().split()
        assert saved and line and line[0] == "rows_on_disk", log.read_text()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=ANSWER_S) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()

    # 48x64x3 images: 1 MiB / 9216 B = 113 rows per chunk, so the second episode's first rows
    # (150..225) went to disk, into the chunk shared with the saved episode's rows 113..149.
    assert raw_lengths(path)["front_rgb"] >= int(line[1]) > 150
    ds = EpisodeDataset.open(path)
    assert ds.n_episodes == 1
    np.testing.assert_array_equal(ds.episode_lengths, [150])  # grid 0.0 .. 14.9
    episode = ds.episode(0)
    assert digests(episode) == saved
    np.testing.assert_allclose(episode["timestamp"], np.arange(150) / 10, atol=1e-9)
    np.testing.assert_array_equal(ds.episode_info("seed"), [7])

    with DatasetWriter(path, schema) as writer:  # recovers: the torn rows are cut
        assert set(raw_lengths(path).values()) == {150}
        new: dict[str, np.ndarray] = {
            "timestamp": 30.0 + np.arange(3) / 10,
            "ee_pose": np.full((3, 9), 5, np.float32),
            "front_rgb": np.full((3, 48, 64, 3), 9, np.uint8),
            "action": np.full((3, 10), 6, np.float32),
        }
        info = {
            "seed": -1,
            "success": True,
            "score": np.nan,
            "max_gap_s": 0.0,
            "gap_flagged": False,
        }
        assert writer.add_episode(new, info) == 1
    ds = EpisodeDataset.open(path)
    np.testing.assert_array_equal(ds.episode_lengths, [150, 3])
    assert digests(ds.episode(0)) == saved
    for key, value in ds.episode(1).items():
        np.testing.assert_array_equal(value, new[key])
    assert list(path.rglob("*.partial")) == []


# -- 5. resume with another schema ------------------------------------------------------------


@pytest.mark.parametrize(
    ("other", "key"),
    [
        (make_config(extra_image="wrist_rgb"), "wrist_rgb"),  # a camera added
        (make_config(image_shape=(96, 96, 3)), "front_rgb"),  # a camera resized
    ],
)
def test_resume_with_another_config_is_refused_naming_the_key(
    tmp_path: Path, other: RecordingConfig, key: str
) -> None:
    path = tmp_path / "resume.zarr"
    DatasetWriter(path, make_config().dataset_schema()).close()
    with pytest.raises(DatasetSchemaError, match=key):
        DatasetWriter(path, other.dataset_schema())
    # The refusal released the lock and changed nothing: the right config still resumes.
    with DatasetWriter(path, make_config().dataset_schema()) as writer:
        assert writer.n_episodes == 0


def test_prt_record_resume_refuses_another_schema_before_recording(tmp_path: Path) -> None:
    """``prt record --resume`` checks the store against the config before any node starts."""
    from typer.testing import CliRunner

    from policy_runtime.cli.main import app

    path = tmp_path / "resume.zarr"
    DatasetWriter(path, make_config().dataset_schema()).close()
    other = tmp_path / "other.yaml"
    other.write_text(make_config(extra_image="wrist_rgb").model_dump_json())  # JSON is YAML
    result = CliRunner().invoke(
        app, ["record", "--config", str(other), "--out", str(path), "--resume"]
    )
    assert result.exit_code == 2 and "wrist_rgb" in result.output
    fresh = CliRunner().invoke(app, ["record", "--config", str(other), "--out", str(path)])
    assert fresh.exit_code == 2 and "--resume" in fresh.output


# -- 6. disk full -----------------------------------------------------------------------------


#: The tmpfs size: both cases below fail where their comment says for any size from about
#: 2.45 to 3.05 MB (measured), so this one sits in the middle.
DISK_SIZE = "2750k"


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    """A tmpfs of DISK_SIZE (root only), unmounted whatever the test does."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = Path(tempfile.mkdtemp(prefix="prt-full-disk-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
        mount_point.rmdir()


@pytest.mark.parametrize(
    ("image_shape", "fails_at"),
    [
        # 9 KB rows, 113 per chunk: a chunk spans 3.6 episodes, so rows mostly reach the disk
        # in a commit, and the save is what fails.
        ((48, 64, 3), "save"),
        # 57.6 KB rows, 18 per (1 MB) chunk: chunks fill mid-episode, so the failure comes
        # while the samples are taken (the sample path's handler), before the stop.
        ((120, 160, 3), "samples"),
    ],
)
def test_disk_full_stops_recording_and_keeps_the_saved_episodes(
    tiny_disk: Path, image_shape: tuple[int, int, int], fails_at: str
) -> None:
    config = make_config(image_shape=image_shape)
    schema = config.dataset_schema()
    path = tiny_disk / "full.zarr"
    clock = FakeClock()
    writer = DatasetWriter(path, schema)
    session = RecordingSession(writer, config, clock, queue_size=4096)
    saved: list[dict[str, np.ndarray]] = []
    failure, failed_at = "", ""
    try:
        # 3 s episodes (31 rows) of noise images until the disk is full.
        for n in range(40):
            t = 10.0 * n
            clock.now = t
            answer(session.command("start"))
            feed(session, config, t, t + 3.0)
            # 30 rows are decided by the samples (the last one by the stop), unless the disk
            # filled during the episode and the session already went back to ready.
            wait_until(
                lambda: (
                    session.status().state != "recording"
                    or session.status().rows >= 30
                    or not session._thread.is_alive()  # an uncaught error: fail fast below
                ),
                "the samples to be taken",
            )
            assert session._thread.is_alive(), "the worker died (see the thread's traceback)"
            if session.status().state != "recording":
                failure, failed_at = session.status().message, "samples"
                break
            clock.now = t + 3.0
            try:
                answer(session.command("stop"))
            except RecordingError as exc:
                failure, failed_at = str(exc), "save"
                break
            saved.append(EpisodeDataset.open(path).episode(len(saved)))
        assert failure, "the disk never filled"
        assert "disk full" in failure and failed_at == fails_at, (failed_at, failure)
        assert f"the {len(saved)} episode(s) saved before it are intact" in failure
        status = session.status()
        assert status.state == "ready" and "disk full" in status.message
        assert status.episodes == len(saved) >= 1
        assert session._thread.is_alive()
        with pytest.raises(RecordingError, match="nothing to discard"):  # still answering
            answer(session.command("discard"))
    finally:
        session.close()
        writer.close()
    ds = EpisodeDataset.open(path)
    assert ds.n_episodes == len(saved)
    for i, episode in enumerate(saved):
        assert digests(ds.episode(i)) == digests(episode)
        np.testing.assert_allclose(episode["timestamp"], 10.0 * i + np.arange(31) / 10, atol=1e-9)
    with DatasetWriter(path, schema) as writer:
        assert writer.n_episodes == len(saved)
        assert set(raw_lengths(path).values()) == {31 * len(saved)}
    assert list(path.rglob("*.partial")) == []


# -- 7. bounded memory ------------------------------------------------------------------------


def one_row_write_peak(path: Path, config: RecordingConfig) -> int:
    """Traced peak of writing one image row on its own: zarr and blosc allocate several
    transient copies of a chunk per write (about 7 frames for a VGA row here), a constant
    that a recorder holding no frames must stay within."""
    shape = config.observations["front_rgb"].stored_shape
    with DatasetWriter(path, config.dataset_schema()) as writer:
        append = writer.begin_episode()
        append.write("front_rgb", np.zeros((1, *shape), np.uint8))  # warm up zarr's caches
        tracemalloc.start()
        try:
            append.write("front_rgb", np.full((1, *shape), 1, np.uint8))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            append.discard()


def test_full_size_images_never_pile_up_in_memory(tmp_path: Path) -> None:
    """300 VGA frames at 30 Hz fed as fast as possible: a 640x480 chunk is one row, so each
    decided row must be on disk before the next one is decoded, and nothing else may hold
    frames: the traced peak stays that of one row's write (holding the episode's 101 frames
    would add 93 MB)."""
    config = make_config(image_shape=(480, 640, 3), image_hz=30)
    shape = config.observations["front_rgb"].stored_shape
    frame_bytes = int(np.prod(shape))
    baseline = one_row_write_peak(tmp_path / "baseline.zarr", config)
    clock = FakeClock()
    writer = DatasetWriter(tmp_path / "vga.zarr", config.dataset_schema())
    session = RecordingSession(writer, config, clock, queue_size=4096)
    pending_seen: list[int] = []

    def decoder(index: int) -> Decoder:
        def decode() -> np.ndarray:  # runs on the worker, when the row is decided
            append = session.recorder._append
            assert append is not None
            pending_seen.append(sum(len(block) for block in append._pending["front_rgb"]))
            return np.full(shape, index % 256, np.uint8)

        return decode

    try:
        clock.now = 0.0
        answer(session.command("start"))
        tracemalloc.start()
        try:
            for stamp, key, i in schedule(config, 0.0, 10.0):
                value = decoder(i) if key == "front_rgb" else sample_value(config, key, stamp, i, 0)
                session.sample(key, stamp, value)
            clock.now = 10.0
            text = answer(session.command("stop"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        session.close()
        writer.close()
    assert text.startswith("saved episode 0: 101 rows")
    assert session.status().dropped == 0
    # 301 frames came; the 101 chosen ones (every third) were decoded, each with nothing pending.
    assert pending_seen == [0] * 101
    # One decoded frame in flight, plus samples queued meanwhile (well under a frame).
    assert peak < baseline + 2 * frame_bytes, (
        f"traced peak {peak / 1e6:.1f} MB, one row's write {baseline / 1e6:.1f} MB"
    )
    ds = EpisodeDataset.open(tmp_path / "vga.zarr")
    images = ds.episode(0, ["front_rgb"])["front_rgb"]
    np.testing.assert_array_equal(images[:, 0, 0, 0], (3 * np.arange(101)) % 256)


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("record_*.yaml")), ids=str)
def test_shipped_recording_configs_load_with_the_policy_action_layout(path: Path) -> None:
    config = RecordingConfig.load(path)
    schema = config.dataset_schema()
    # The end-effector action every bundle of this project reads: position, 6D rotation, gripper.
    assert schema.keys["action"].shape == (10,)
    assert schema.action_offset_steps == 1
    assert set(config.observations) <= set(schema.keys)
