"""Run one episode with a scripted expert and collect it in the dataset format.

Step t pairs the observation taken before the action with the command actually executed during
step t (after IK: the target reached at the step's end), in both end-effector and joint form
(hence the schema's ``action_offset_steps`` of 1); ``timestamp`` is the
observation's simulated time. This is what ``prt datagen`` writes and ``prt sim`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim_bridge.env import SimEnv
from sim_bridge.experts import Expert


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    score: float
    steps: int
    sim_time_s: float
    ik_failures: int
    #: Per-step arrays, time first: observations, ``action_ee``, ``action_joint``, ``timestamp``.
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def run_expert_episode(env: SimEnv, expert: Expert, seed: int) -> EpisodeResult:
    """Reset with ``seed`` and follow the expert until success, the step limit, or its end.

    The expert draws its own randomness from a generator seeded by ``seed`` too, so an episode
    is a pure function of (task, options, seed).
    """
    obs = env.reset(seed)
    columns: dict[str, list[np.ndarray]] = {}
    actions = expert(env, np.random.default_rng([seed, 1]))
    for action in actions:
        if env.done:
            break
        stamp = env.time
        before = obs
        obs = env.step(action)
        for key, value in before.items():
            columns.setdefault(key, []).append(value)
        columns.setdefault("action_ee", []).append(env.last_action_ee)
        columns.setdefault("action_joint", []).append(env.last_action_joint)
        columns.setdefault("timestamp", []).append(np.array(stamp, dtype=np.float64))
    arrays = {key: np.stack(values) for key, values in columns.items()}
    return EpisodeResult(
        seed=seed,
        success=env.success(),
        score=env.score(),
        steps=env.steps,
        sim_time_s=env.time,
        ik_failures=env.ik_failures,
        arrays=arrays,
    )
