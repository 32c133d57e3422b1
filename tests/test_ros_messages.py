"""Chunks, requests and images as ROS 2 messages and back: nothing lost on the way."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Jazzy wheels are not installed")

from policy_runtime.chunk import ActionChunk
from policy_runtime.robots.poses import matrix_from_rot6d, pose_to_ee_action
from policy_runtime.ros.messages import (
    Prefix,
    chunk_from_msg,
    chunk_to_msg,
    image_to_msg,
    no_chunk_msg,
    request_from_msg,
    request_to_msg,
    seconds,
    stamp,
)
from policy_runtime.serving.server import PolicyInfo
from policy_runtime.serving.topics import image_pixels

pytestmark = pytest.mark.ros


def _info(space: str, dim: int) -> PolicyInfo:
    return PolicyInfo(
        kind="drifting",
        action_space=space,  # type: ignore[arg-type]
        action_dim=dim,
        chunk_length=15,
        n_action_steps=8,
        dt=0.1,
        offset_steps=1,
        obs_keys=("ee_pose",),
    )


def test_stamps_are_exact_to_the_nanosecond():
    for t in (0.0, 1.5, 1796173558.110597611, 12.999999999):
        assert abs(seconds(stamp(t)) - t) < 1e-9 * max(1.0, t) * 2


def test_a_joint_chunk_round_trips():
    info = _info("joint", 7)
    actions = np.random.default_rng(0).normal(size=(15, 7))
    chunk = ActionChunk.from_actions(actions, 8, 0.1, offset_steps=1)
    msg = chunk_to_msg(chunk, 12.3, info)
    assert msg.joint_names[-1] == "gripper" and msg.header.stamp.sec == 12
    decoded = chunk_from_msg(msg, info)
    assert decoded is not None
    back, t_obs = decoded
    assert t_obs == pytest.approx(12.3)
    np.testing.assert_allclose(back.actions, actions)
    np.testing.assert_allclose(back.stamps, chunk.stamps, atol=1e-9)
    assert back.n_action_steps == 8


def test_an_end_effector_chunk_round_trips_through_poses():
    info = _info("ee", 10)
    rng = np.random.default_rng(1)
    actions = []
    for _ in range(15):
        pose = np.eye(4)
        pose[:3, :3] = matrix_from_rot6d(rng.normal(size=6))
        pose[:3, 3] = rng.normal(size=3)
        actions.append(pose_to_ee_action(pose, float(rng.uniform())))
    chunk = ActionChunk.from_actions(np.array(actions, np.float64), 8, 0.1)
    msg = chunk_to_msg(chunk, 3.0, info)
    assert list(msg.joint_names) == ["tcp", "gripper"] and msg.header.frame_id == "base_link"
    decoded = chunk_from_msg(msg, info)
    assert decoded is not None
    np.testing.assert_allclose(decoded[0].actions, chunk.actions, atol=1e-6)


def test_mismatched_chunks_are_refused_and_an_empty_one_means_no_chunk():
    joint, ee = _info("joint", 7), _info("ee", 10)
    chunk = ActionChunk.from_actions(np.zeros((15, 7)), 8, 0.1)
    with pytest.raises(ValueError, match="end-effector policy"):
        chunk_from_msg(chunk_to_msg(chunk, 1.0, joint), ee)
    with pytest.raises(ValueError, match="stamped 0"):
        chunk_from_msg(chunk_to_msg(chunk, 0.0, joint), joint)
    assert chunk_from_msg(no_chunk_msg(1.0, joint), joint) is None


def test_a_request_carries_the_committed_prefix():
    info = _info("joint", 7)
    prefix = Prefix(np.arange(21.0).reshape(3, 7), np.array([1.0, 0.5, 0.0]))
    t, back = request_from_msg(request_to_msg(4.2, prefix), info)
    assert t == pytest.approx(4.2) and back is not None
    np.testing.assert_array_equal(back.actions, prefix.actions)
    np.testing.assert_array_equal(back.weights, prefix.weights)
    assert request_from_msg(request_to_msg(4.2, None), info)[1] is None


def test_images_round_trip_and_bgr_is_turned_to_rgb():
    rgb = np.random.default_rng(2).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_pixels(image_to_msg(rgb, 1.0, "f", "rgb8")), rgb)
    bgr = image_to_msg(np.ascontiguousarray(rgb[..., ::-1]), 1.0, "f", "bgr8")
    np.testing.assert_array_equal(image_pixels(bgr), rgb)
    with pytest.raises(ValueError, match="mono8"):
        image_pixels(image_to_msg(rgb[..., 0], 1.0, "f", "mono8"))


def test_a_calibration_is_the_static_transform_from_its_parent_to_its_optical_frame():
    """A camera 0.8 m above base_link looking straight down, its image x along base_link's -y
    and y along -x: a half turn about (1, -1, 0)/sqrt(2), quaternion (1/sqrt(2), -1/sqrt(2),
    0, 0); on the tool, the same numbers from tool0. A quaternion written unnormalised (a
    hand-edited YAML) comes out unit: (0, 0, 1, 1) is a quarter turn about z."""
    from calibration.intrinsics import CameraIntrinsics
    from calibration.result import CameraCalibration
    from policy_runtime.ros.transforms import static_transform, transform_stamped

    pose = np.array(
        [[0.0, -1.0, 0.0, 0.9], [-1.0, 0.0, 0.0, 0.1], [0.0, 0.0, -1.0, 0.8], [0, 0, 0, 1]]
    )
    intrinsics = CameraIntrinsics(width=640, height=480, fx=600.0, fy=600.0, cx=319.5, cy=239.5)
    half = np.sqrt(0.5)
    for mode, parent in (("eye_to_base", "base_link"), ("eye_in_hand", "tool0")):
        calibration = CameraCalibration.from_transform(
            "front", pose, intrinsics, "park", mode, 20, np.array([0.3]), np.array([0.02])
        )
        transform = static_transform(calibration)
        assert (transform.parent, transform.child) == (parent, "front_color_optical_frame")
        np.testing.assert_allclose(transform.translation, (0.9, 0.1, 0.8), atol=1e-12)
        np.testing.assert_allclose(transform.rotation_xyzw, (half, -half, 0.0, 0.0), atol=1e-12)

    edited = calibration.model_copy(update={"rotation_xyzw": (0.0, 0.0, 1.0, 1.0)})
    np.testing.assert_allclose(
        static_transform(edited).rotation_xyzw, (0.0, 0.0, half, half), atol=1e-12
    )

    msg = transform_stamped(*static_transform(edited), stamp(12.5))
    assert (msg.header.frame_id, msg.child_frame_id) == ("tool0", "front_color_optical_frame")
    assert seconds(msg.header.stamp) == 12.5
    t, r = msg.transform.translation, msg.transform.rotation
    assert (t.x, t.y, t.z) == pytest.approx((0.9, 0.1, 0.8), abs=1e-12)
    assert (r.x, r.y, r.z, r.w) == pytest.approx((0.0, 0.0, half, half), abs=1e-12)
