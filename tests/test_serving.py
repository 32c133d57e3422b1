"""The policy server's cores without ROS: stamped history, decoding, the config, answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from policy_runtime.robots.poses import (
    matrix_from_quaternion,
    pose_to_ee_action,
    quaternion_from_matrix,
)
from policy_runtime.serving.config import ServerConfig
from policy_runtime.serving.decode import DecodeError, NamePicker, fit_image, pose_observation
from policy_runtime.serving.history import ObservationHistory, StreamSpec
from policy_runtime.serving.lockstep import PublishedStamps
from policy_runtime.serving.server import PolicyInfo, PolicyServerCore

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "push_t_drifting"
SIM_CONFIG = ROOT / "config" / "server_sim.yaml"


# -- history ----------------------------------------------------------------------------------


def test_window_takes_the_newest_sample_not_after_each_grid_time():
    # Diffusion Policy's rule, by hand: a 125 Hz stream and a 30 Hz one, window of 2 at 10 Hz.
    history = ObservationHistory([StreamSpec("fast", 0.008), StreamSpec("slow", 1 / 30)], 2, 0.1)
    for i in range(60):
        history.add("fast", 1.0 + 0.008 * i, np.array([i], np.float32))
    for i in range(15):
        history.add("slow", 1.0 + i / 30, np.array([100 + i], np.float32))
    # Newest common time: the slow stream's 1.4667; grid 1.3667 and 1.4667.
    window = history.window()
    assert window is not None
    assert window.t_obs == pytest.approx(1.0 + 14 / 30)
    # fast: newest stamp <= 1.3667 is 1.36 (i = 45), <= 1.4667 is 1.464 (i = 58).
    np.testing.assert_array_equal(window.obs["fast"][:, 0], [45, 58])
    np.testing.assert_array_equal(window.obs["slow"][:, 0], [111, 114])
    assert window.gaps == () and window.padded == 0


def test_window_repeats_the_first_sample_before_a_stream_began_and_counts_gaps():
    history = ObservationHistory([StreamSpec("a", 0.01)], 3, 0.1)
    history.add("a", 5.0, np.zeros(1))
    window = history.window(5.0)
    assert window is not None and window.padded == 2
    np.testing.assert_array_equal(window.stamps["a"], [5.0, 5.0, 5.0])
    history.add("a", 5.5, np.ones(1))  # 0.5 s without a sample: grid 5.3 picks 5.0, a gap
    window = history.window(5.5)
    assert window is not None and window.gaps == ("a",) and history.gaps["a"] == 1


def test_history_refuses_old_and_reordered_samples_and_clear_sets_a_floor():
    history = ObservationHistory([StreamSpec("a")], 1, 0.1)
    assert history.add("a", 1.0, np.zeros(1))
    assert not history.add("a", 1.0, np.zeros(1)) and not history.add("a", 0.5, np.zeros(1))
    history.clear(since=2.0)
    assert history.newest_stamp("a") is None
    assert not history.add("a", 1.5, np.zeros(1)) and history.add("a", 2.5, np.zeros(1))
    assert history.out_of_order == 3


def test_lockstep_waits_for_each_announced_sample_not_for_one_within_a_period():
    """The race a period's tolerance had: the state at 1.008 is due, the one at 1.000 has
    arrived (one period old). Only the announcement of tick 1.008 and its sample complete it;
    a camera whose newest frame is older (1.000) is complete once that frame is here."""
    stamps = PublishedStamps(["/joint_states", "/camera/color", "/unread"])
    stamps.arrived("/joint_states", 1.000)
    stamps.arrived("/camera/color", 0.968)
    assert not stamps.complete(1.008)  # nothing announced for 1.008 yet
    stamps.announced(1.008, {"/joint_states": 1.008, "/camera/color": 1.000, "/other": 1.008})
    assert not stamps.complete(1.008)
    assert stamps.missing() == ["/joint_states", "/camera/color"]
    stamps.arrived("/joint_states", 1.008)
    stamps.arrived("/camera/color", 1.000)
    assert stamps.complete(1.008) and stamps.missing() == []
    assert stamps.unannounced() == ["/unread"]  # read here, never announced: not waited for
    stamps.announced(1.000, {"/joint_states": 0.5})  # an older announcement changes nothing
    assert stamps.complete(1.008) and not stamps.complete(1.016)
    stamps.arrived("/not_read", 5.0)  # a topic not read here is ignored
    stamps.announced(1.016, {"/joint_states": 1.016, "/camera/color": 1.000})
    assert stamps.missing() == ["/joint_states"]
    fresh = PublishedStamps(["/camera/color"])  # announced before its first frame: -inf
    fresh.announced(0.008, {"/camera/color": -math.inf})
    assert fresh.complete(0.008) and fresh.unannounced() == []


# -- decoding ---------------------------------------------------------------------------------


def test_quaternions_agree_with_mujoco():
    import mujoco

    rng = np.random.default_rng(0)
    for _ in range(50):
        q_wxyz = rng.normal(size=4)
        q_wxyz /= np.linalg.norm(q_wxyz)
        matrix = np.zeros(9)
        mujoco.mju_quat2Mat(matrix, q_wxyz)
        ours = matrix_from_quaternion([*q_wxyz[1:], q_wxyz[0]])
        np.testing.assert_allclose(ours, matrix.reshape(3, 3), atol=1e-12)
        back = quaternion_from_matrix(ours)
        sign = np.sign(q_wxyz[0]) or 1.0
        np.testing.assert_allclose(back, sign * np.array([*q_wxyz[1:], q_wxyz[0]]), atol=1e-12)


def test_pose_observation_is_the_simulations_ee_pose_encoding():
    rotation = matrix_from_quaternion([0.1, -0.7, 0.2, 0.6])
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, [0.4, -0.1, 0.2]
    expected = pose_to_ee_action(pose, 0.0)[:9]
    got = pose_observation([0.4, -0.1, 0.2], quaternion_from_matrix(rotation))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(DecodeError, match="quaternion"):
        pose_observation([0, 0, 0], [0, 0, 0, 0])


def test_name_picker_orders_by_name_and_refuses_what_is_missing():
    pick = NamePicker(["b", "a"])
    np.testing.assert_array_equal(pick(["a", "b", "c"], [1.0, 2.0, 3.0]), [2.0, 1.0])
    with pytest.raises(DecodeError, match=r"\['b'\]"):
        pick(["a", "c"], [1.0, 3.0])
    with pytest.raises(DecodeError, match="NaN"):
        pick(["a", "b"], [1.0, float("nan")])
    prefixed = NamePicker(prefix="k/")
    np.testing.assert_array_equal(prefixed(["x", "k/1", "k/0"], [9.0, 2.0, 1.0]), [1.0, 2.0])


def test_fit_image_crops_the_centre_and_resizes_like_a_linear_filter():
    # A horizontal ramp stays a ramp under bilinear resizing: value = 2 * column + 1 on a
    # 640x480 image; the centre 480x480 crop resized to 96x96 samples column
    # 80 + (j + 0.5) * 5 - 0.5, where the ramp is worth 2 * that + 1.
    ramp = np.broadcast_to((2 * np.arange(640) % 256).astype(np.uint8), (480, 640))
    ramp = np.ascontiguousarray(np.repeat(ramp[..., None], 3, axis=2))
    small = fit_image(ramp, (96, 96, 3))
    assert small.shape == (96, 96, 3)
    columns = 80 + (np.arange(96) + 0.5) * 5 - 0.5
    expected = (2 * columns) % 256
    inside = (2 * columns + 2 < 256) & (columns >= 80)  # away from the wrap of the ramp
    np.testing.assert_allclose(small[0, inside, 0], np.rint(expected[inside]), atol=1)
    with pytest.raises(DecodeError):
        fit_image(ramp[..., 0], (96, 96, 3))


# -- the config and the core --------------------------------------------------------------------


def test_config_errors_name_the_file_and_the_field(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("observations:\n  ee_pose: {topic: /x, type: pose, names: [a]}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*observations\.ee_pose"):
        ServerConfig.load(bad)


@pytest.fixture(scope="module")
def core() -> PolicyServerCore:
    from policy_runtime.inference import load_policy

    return PolicyServerCore(load_policy(BUNDLE), ServerConfig.load(SIM_CONFIG), seed=3)


def test_config_maps_every_key_of_the_bundled_policy(core: PolicyServerCore):
    assert set(core.sources) == {"block_keypoints", "ee_pose"}
    info = PolicyInfo.from_json(core.info.to_json())
    assert info == core.info and info.action_space == "ee" and info.offset_steps == 1


def test_a_config_without_a_key_the_policy_reads_is_refused(tmp_path: Path):
    from policy_runtime.inference import load_policy

    config = tmp_path / "partial.yaml"
    config.write_text("observations:\n  ee_pose: {topic: /p, type: pose}\n")
    with pytest.raises(ValueError, match="block_keypoints"):
        PolicyServerCore(load_policy(BUNDLE), ServerConfig.load(config))


def test_answer_is_the_runtimes_prediction_from_the_aligned_window(core: PolicyServerCore):
    core.reset(seed=5, since=0.0)
    assert core.answer(1.0).problem is not None  # nothing observed yet
    rng = np.random.default_rng(1)
    keypoints = rng.normal(size=(2, 16)).astype(np.float32)
    ee = np.tile(pose_to_ee_action(np.eye(4), 0.0)[:9], (2, 1))
    for i, t in enumerate((1.0, 1.1)):
        core.observe("block_keypoints", t, keypoints[i])
        core.observe("ee_pose", t, ee[i])
    answer = core.answer(1.15)
    assert answer.chunk is not None and answer.t_obs == pytest.approx(1.1)
    reference = core.runtime.predict(
        {"block_keypoints": keypoints, "ee_pose": ee}, np.random.default_rng(5)
    )
    np.testing.assert_allclose(answer.chunk.actions, reference.actions, atol=1e-6)
    assert answer.chunk.n_action_steps == core.info.n_action_steps


def test_a_tracker_that_stops_publishing_leaves_the_observation_stale(core: PolicyServerCore):
    """An object tracker publishes nothing while the object is lost (calibration.tracking): the
    newest time every stream reached stays at its last estimate, so the heartbeat the
    executor's watchdog reads stops advancing (it holds once that is older than
    ``max_observation_age_s``) and no chunk comes, where a zero would have been a position."""
    from policy_runtime.execution.watchdog import WatchdogConfig

    core.reset(seed=5, since=0.0)
    keypoints = np.zeros(16, np.float32) + 0.5
    ee = pose_to_ee_action(np.eye(4), 0.0)[:9]
    for step in range(11):  # both streams up to 1.0 s
        core.observe("block_keypoints", step / 10, keypoints)
        core.observe("ee_pose", step / 10, ee)
    for step in range(11, 21):  # the block lost for a second: the arm's pose keeps coming
        core.observe("ee_pose", step / 10, ee)
    assert core.t_obs_for(2.0) == pytest.approx(1.0)
    assert 2.0 - core.t_obs_for(2.0) > WatchdogConfig().max_observation_age_s
    # The arm's pose of 1.0 s has aged out of its history by now: no window, no chunk.
    answer = core.answer(2.0)
    assert answer.chunk is None and answer.problem == "no_observations: no window at 1.000"
