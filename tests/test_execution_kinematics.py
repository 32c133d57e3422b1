"""End-effector targets to joints (policy_runtime.execution.kinematics): the TCP layer over the
analytic IK (whose own tests are in test_ur5_ik.py), and its agreement with the simulated arm."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from spatialmath import SE3

from policy_runtime.execution.kinematics import DEFAULT_TOOL0_TO_TCP, EeToJoint, tcp_target
from policy_runtime.robots.poses import rot6d_from_matrix
from policy_runtime.robots.ur5 import JOINT_NAMES, UR5_POSITION_LIMITS, forward_kinematics
from policy_runtime.robots.ur5_ik import wrap_to_pi

HOME_Q = np.array([0.0, -1.9, 1.9, -1.571, -1.571, 0.0])
LOWER = np.array([lo for lo, _ in UR5_POSITION_LIMITS])
UPPER = np.array([hi for _, hi in UR5_POSITION_LIMITS])


def position_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3]))


def rotation_error(a: np.ndarray, b: np.ndarray) -> float:
    """Angle (rad) of the rotation between two poses."""
    cosine = 0.5 * (np.trace(a[:3, :3].T @ b[:3, :3]) - 1.0)
    return float(np.arccos(np.clip(cosine, -1.0, 1.0)))


def as_action(pose: np.ndarray, gripper: float) -> np.ndarray:
    """10-D action in float64 (poses.pose_to_ee_action rounds to float32)."""
    return np.concatenate([pose[:3, 3], rot6d_from_matrix(pose[:3, :3]), [gripper]])


def test_default_tool_offset_is_the_simulated_grippers():
    from sim_bridge.tcp import TOOL0_TO_TCP

    np.testing.assert_array_equal(DEFAULT_TOOL0_TO_TCP, TOOL0_TO_TCP)


def test_round_trips_over_random_reachable_poses_in_every_form():
    kinematics = EeToJoint()
    rng = np.random.default_rng(7)
    for _ in range(200):
        q = rng.uniform(LOWER, UPPER)
        tcp = kinematics.forward(q)
        np.testing.assert_allclose(tcp, forward_kinematics(q) @ DEFAULT_TOOL0_TO_TCP, atol=1e-15)
        q_near = q + rng.normal(0.0, 0.05, 6)  # the previous command is near, not equal
        for target in (tcp, as_action(tcp, 0.3), SE3(tcp, check=False)):
            solution = kinematics.solve(target, q_near=q_near)
            assert solution.ok and solution.failure is None
            assert solution.q is not None
            reached = kinematics.forward(solution.q)
            assert position_error(reached, tcp) < 1e-6
            assert rotation_error(reached, tcp) < 1e-6
            assert np.all(solution.q >= LOWER) and np.all(solution.q <= UPPER)
            # q is one solution, so the one chosen is at least as near the previous command.
            distance = np.linalg.norm(solution.q - q_near)
            assert distance <= np.linalg.norm(q - q_near) + 1e-6
        assert kinematics.solve(as_action(tcp, 0.3), q_near=q_near).gripper == 0.3
        assert kinematics.solve(tcp, q_near=q_near).gripper is None


def test_ee_action_is_forward_kinematics_in_action_form():
    kinematics = EeToJoint()
    action = kinematics.ee_action(HOME_Q, 0.25)
    pose, gripper = tcp_target(action)
    np.testing.assert_allclose(pose, kinematics.forward(HOME_Q), atol=1e-12)
    assert gripper == 0.25
    # The home pose's TCP: pointing down, 14.5 cm below tool0.
    np.testing.assert_allclose(pose[:3, 2], [0.0, 0.0, -1.0], atol=1e-3)
    tool0 = forward_kinematics(HOME_Q)
    np.testing.assert_allclose(pose[:3, 3], tool0[:3, 3] - [0.0, 0.0, 0.145], atol=1e-3)


def test_a_custom_tool_offset_is_used_both_ways():
    offset = np.eye(4)
    offset[:3, :3] = SE3.Rx(0.4).R
    offset[:3, 3] = [0.01, -0.02, 0.2]
    kinematics = EeToJoint(tool0_to_tcp=offset)
    q = np.array([0.2, -1.4, 1.5, -1.2, -1.4, 0.3])
    tcp = kinematics.forward(q)
    np.testing.assert_allclose(tcp, forward_kinematics(q) @ offset, atol=1e-15)
    solution = kinematics.solve(tcp, q_near=q)
    assert solution.q is not None
    np.testing.assert_allclose(solution.q, q, atol=1e-9)


def test_branch_is_continuous_along_a_cartesian_path():
    """A 40 cm line with a 1 rad turn of the tool, in 1 mm steps: every IK step stays small
    (no branch flip), each pose is exact, and the wrist never wraps by a full turn."""
    kinematics = EeToJoint()
    start = kinematics.forward(HOME_Q)
    steps = 400
    q_prev = HOME_Q
    largest_step = 0.0
    for i in range(1, steps + 1):
        s = i / steps
        target = start.copy()
        target[:3, 3] += s * np.array([0.25, -0.25, 0.15])
        target[:3, :3] = SE3.Rz(1.0 * s).R @ start[:3, :3]
        solution = kinematics.solve(target, q_near=q_prev)
        assert solution.q is not None, i
        assert position_error(kinematics.forward(solution.q), target) < 1e-6
        assert rotation_error(kinematics.forward(solution.q), target) < 1e-6
        largest_step = max(largest_step, float(np.abs(solution.q - q_prev).max()))
        q_prev = solution.q
    # 1 mm and 2.5 mrad of tool rotation per step move no joint by more than ~0.01 rad here.
    assert largest_step < 0.02
    # The same shoulder/elbow/wrist branch as the start (signs of the branch-defining angles).
    assert np.sign(q_prev[2]) == np.sign(HOME_Q[2])
    assert np.sign(np.sin(q_prev[4])) == np.sign(np.sin(HOME_Q[4]))


def test_failures_come_back_with_a_reason_not_an_exception():
    kinematics = EeToJoint()
    far = kinematics.forward(HOME_Q)
    far[:3, 3] = [2.0, 0.0, 0.3]
    result = kinematics.solve(as_action(far, 0.5), q_near=HOME_Q)
    assert (result.q, result.failure, result.gripper) == (None, "unreachable", 0.5)
    assert not result.ok

    nan_action = as_action(kinematics.forward(HOME_Q), 0.5)
    nan_action[1] = np.nan
    assert kinematics.solve(nan_action, q_near=HOME_Q).failure == "invalid_target"
    degenerate = as_action(kinematics.forward(HOME_Q), 0.5)
    degenerate[3:9] = 0.0  # no rotation in it
    assert kinematics.solve(degenerate, q_near=HOME_Q).failure == "invalid_target"
    skewed = kinematics.forward(HOME_Q)
    skewed[0, 0] = 2.0  # not a rotation
    assert kinematics.solve(skewed, q_near=HOME_Q).failure == "invalid_target"

    # Reachable, but every branch needs an elbow outside these limits.
    limits = list(UR5_POSITION_LIMITS)
    limits[2] = (-0.2, 0.2)
    narrow = EeToJoint(limits=tuple(limits))
    result = narrow.solve(kinematics.forward(HOME_Q), q_near=HOME_Q)
    assert (result.q, result.failure) == (None, "outside_joint_limits")


def test_programming_errors_raise_and_name_the_input():
    kinematics = EeToJoint()
    with pytest.raises(ValueError, match="target"):
        kinematics.solve(np.zeros(7), q_near=HOME_Q)
    with pytest.raises(ValueError, match="q_near"):
        kinematics.solve(np.eye(4), q_near=np.full(6, np.nan))
    with pytest.raises(ValueError, match="q_near"):
        kinematics.solve(np.eye(4), q_near=np.zeros(5))
    with pytest.raises(ValueError, match="single SE3"):
        kinematics.solve(SE3([SE3(), SE3()]), q_near=HOME_Q)
    with pytest.raises(ValueError, match="tool0_to_tcp"):
        EeToJoint(tool0_to_tcp=np.diag([1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="tool0_to_tcp"):
        EeToJoint(tool0_to_tcp=np.eye(3))


def test_agrees_with_the_simulated_arm():
    """The MJCF arm is built from the same DH numbers: its tool0 body and tcp site must sit
    where our forward kinematics puts them, and IK of the site must give the joints back."""
    from sim_bridge import make_env

    env = make_env("push_t", cameras=())
    try:
        env.reset(seed=0)
        kinematics = EeToJoint()
        rng = np.random.default_rng(11)
        for q in [HOME_Q, *rng.uniform(-np.pi, np.pi, (5, 6))]:
            for name, value in zip(JOINT_NAMES, q, strict=True):
                env.data.joint(name).qpos[0] = value
            mujoco.mj_forward(env.model, env.data)
            np.testing.assert_allclose(env.body_pose("tool0"), forward_kinematics(q), atol=1e-9)
            tcp = env.tcp_pose()
            np.testing.assert_allclose(tcp, kinematics.forward(q), atol=1e-9)
            solution = kinematics.solve(tcp, q_near=q)
            assert solution.q is not None
            assert np.abs(wrap_to_pi(solution.q - q)).max() < 1e-6
    finally:
        env.close()
