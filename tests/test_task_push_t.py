"""``push_t`` on real MuJoCo: reset, observations, coverage, expert, determinism."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

import sim_bridge.experts.push_t as push_t_expert
from sim_bridge.env import make_env
from sim_bridge.experts import expert_for
from sim_bridge.experts.primitives import hold
from sim_bridge.rollout import run_expert_episode
from sim_bridge.tasks.push_t import (
    BAR_SIZE,
    MAX_INITIAL_COVERAGE,
    TARGET_POSE,
    THICKNESS,
    coverage,
    from_frame,
    inside_t,
    to_frame,
)

#: A seed the expert solves in few steps (about 5 s of simulated time).
from tests.factories import robot_observation_spec

EXPERT_SEED = 48


@pytest.fixture(scope="module")
def env():
    env = make_env("push_t", image_size=(96, 96))
    yield env
    env.close()


def place_block(env, pose: np.ndarray, settle_steps: int = 5) -> None:
    """Teleport the block to (x, y, yaw) in base_link and let it settle."""
    base = env.cell.body_pose("base_link")[:3, 3]
    joint = env.data.joint("t_block")
    joint.qpos[:3] = base + np.array([pose[0], pose[1], THICKNESS / 2])
    joint.qpos[3:] = [np.cos(pose[2] / 2), 0.0, 0.0, np.sin(pose[2] / 2)]
    joint.qvel[:] = 0.0
    for _ in range(settle_steps):
        env.step(env.last_action_ee)


def test_reset_is_seeded_and_randomises_the_block(env):
    first = env.reset(seed=1)["block_pose"]
    again = env.reset(seed=1)["block_pose"]
    other = env.reset(seed=2)["block_pose"]
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3
    assert env.body_pose("t_block")[2, 3] == pytest.approx(THICKNESS / 2, abs=1e-3)
    for seed in range(20):
        env.reset(seed=seed)
        assert env.score() < MAX_INITIAL_COVERAGE and not env.success()


def test_observation_keys_shapes_and_dtypes(env):
    obs = env.reset(seed=0)
    expected = robot_observation_spec() | {
        "block_pose": ((3,), np.float32),
        "block_keypoints": ((16,), np.float32),
        "target_pose": ((3,), np.float32),
    }
    assert {k: (v.shape, v.dtype) for k, v in obs.items()} == expected
    np.testing.assert_allclose(obs["target_pose"], TARGET_POSE, atol=1e-6)
    assert obs["front_rgb"].std() > 5  # a real rendered scene, not a blank frame


def test_coverage_is_one_on_the_target_and_low_far_away(env):
    env.reset(seed=0)
    place_block(env, TARGET_POSE)
    np.testing.assert_allclose(env.observation()["block_pose"], TARGET_POSE, atol=1e-4)
    assert env.score() == 1.0 and env.success()
    place_block(env, TARGET_POSE + np.array([0.0, 0.25, 0.0]))
    assert env.score() == 0.0 and not env.success()
    place_block(env, TARGET_POSE + np.array([0.0, 0.0, np.pi]))  # upside down on the same centroid
    assert env.score() < 0.5 and not env.success()


def test_half_shifted_block_covers_a_middle_fraction(env):
    env.reset(seed=0)
    # Slide the block along its bar by half the bar's length: half the bar overlaps, the stem
    # not at all, so the coverage is 0.5 * bar area / T area = 2/7.
    yaw = TARGET_POSE[2]
    shift = BAR_SIZE[0] / 2 * np.array([np.cos(yaw), np.sin(yaw), 0.0])
    place_block(env, TARGET_POSE + shift)
    assert env.score() == pytest.approx(2 / 7, abs=0.01)
    # The coverage is symmetric in the two poses and falls off with a small offset.
    assert coverage(TARGET_POSE + np.array([0.005, 0.0, 0.0])) == pytest.approx(
        coverage(TARGET_POSE, TARGET_POSE + np.array([0.005, 0.0, 0.0]))
    )
    assert 0.5 < coverage(TARGET_POSE + np.array([0.005, 0.0, 0.0])) < 0.95


def test_expert_succeeds_with_the_gripper_closed():
    env = make_env("push_t", cameras=())
    result = run_expert_episode(env, expert_for("push_t"), seed=EXPERT_SEED)
    assert result.success and result.score >= 0.95
    assert result.steps < env.task.max_steps // 2
    assert result.ik_failures == 0
    arrays = result.arrays
    assert arrays["action_ee"].shape == (result.steps, 10)
    assert arrays["action_joint"].shape == (result.steps, 7)
    assert np.all(arrays["action_ee"][:, 9] == 0.0)  # pushing: closed throughout
    # Down once, then at pushing height (going around the block) until the final lift.
    z = arrays["action_ee"][:, 2]
    down = np.flatnonzero(z <= push_t_expert.PUSH_Z + 1e-6)
    assert np.all(z[down[0] : down[-1]] <= push_t_expert.PUSH_Z + 1e-6)
    assert np.all(np.diff(arrays["timestamp"]) > 0)
    # The block was pushed, not lifted or tipped over.
    assert env.body_pose("t_block")[2, 3] == pytest.approx(THICKNESS / 2, abs=1e-3)
    assert env.body_pose("t_block")[2, 2] > 0.999
    env.close()


def test_path_around_the_block_keeps_the_fingertips_clear():
    pose = np.array([0.5, 0.0, 0.3])
    start = from_frame(np.array([0.0, 0.12]), pose)  # beyond the bar's top face
    goal = from_frame(np.array([0.0, -0.16]), pose)  # beyond the stem's end
    path = push_t_expert.plan_path(start, goal, pose)
    assert path is not None and np.allclose(path[-1], goal)
    points = np.stack([start, *path])
    dense = np.concatenate(
        [a + (b - a) * np.linspace(0, 1, 200)[:, None] for a, b in pairwise(points)]
    )
    assert not inside_t(to_frame(dense, pose), margin=push_t_expert.NAV_CLEARANCE_M - 1e-6).any()
    # Around one bar end only (the shortest way), not over the block.
    sides = np.sign(to_frame(np.stack(path[:-1]), pose)[:, 0])
    assert len(path) >= 3 and abs(sides.sum()) == len(sides)
    length = np.linalg.norm(np.diff(points, axis=0), axis=-1).sum()
    assert 0.28 < length < 0.4
    # A start on the block itself has no path.
    assert push_t_expert.plan_path(pose[:2], goal, pose) is None


def test_expert_retries_another_push_when_one_does_nothing(monkeypatch):
    pushes = []
    execute = push_t_expert._execute

    def first_push_fails(env, push):
        pushes.append(push.key)
        if len(pushes) == 1:  # e.g. the fingers missed the block: nothing moves
            yield from hold(env, 0.3, push_t_expert.CLOSED)
        else:
            yield from execute(env, push)

    monkeypatch.setattr(push_t_expert, "_execute", first_push_fails)
    env = make_env("push_t", cameras=())
    result = run_expert_episode(env, expert_for("push_t"), seed=EXPERT_SEED)
    assert result.success
    assert len(pushes) >= 2 and pushes[1] != pushes[0]  # the failed push was not repeated
    env.close()


def test_same_seed_same_trajectory():
    env = make_env("push_t", cameras=())
    first = run_expert_episode(env, expert_for("push_t"), seed=EXPERT_SEED).arrays
    second = run_expert_episode(env, expert_for("push_t"), seed=EXPERT_SEED).arrays
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    env.close()
