"""An action chunk as the runtime hands it to the execution engine: actions with their stamps.

A plain type (numpy only) in a module of its own: the inference runtime makes chunks and the
execution engine consumes them, and neither needs the other's dependencies for it.

The architecture's time rule: a chunk predicted from observations whose newest stamp is
``t_obs`` has action ``i`` due at ``t_obs + (i + offset) * dt``. The runtime keeps the part of the
predicted horizon that starts at the newest observation (index ``n_obs_steps - 1`` of the
prediction, Diffusion Policy's alignment), and ``offset`` is the data's own timing
(``action_offset_steps`` of the dataset, carried by the bundle): 0 when an action was recorded as
the command sent at its step's observation (a teleop recorder, Diffusion Policy's real data), 1
when it was recorded as the target reached at the end of the step (this project's simulated
demonstrations: the env moves to the action over the step). An imported policy whose chunk
starts elsewhere in its prediction (the bundle's ``action.start``: Diffusion Policy's
``oa_step_convention: false`` starts a step after the newest observation) has the steps by which
it starts later added to ``offset``. The engine decides which actions
are still in the future when the chunk arrives; ``n_action_steps`` is what the policy was
trained to execute before re-planning, and the rest of the horizon is there for blending and
real-time chunking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class ChunkPrefix(Protocol):
    """Actions already committed for the chunk about to be predicted (real-time chunking).

    ``actions`` ``(n, action_dim)`` unnormalised and ``weights`` ``(n,)`` in [0, 1], both on the
    chunk's own grid (``i`` due at the chunk's ``stamps[i]``, like :class:`ActionChunk`):
    ``weights[i] = 1`` where the new chunk must continue the committed plan (it executes during
    inference anyway), decaying to 0 where the policy is free.
    :class:`policy_runtime.execution.RtcPrefix` is one.
    """

    @property
    def actions(self) -> np.ndarray: ...

    @property
    def weights(self) -> np.ndarray: ...


@dataclass(frozen=True)
class ActionChunk:
    #: Unnormalised actions ``(n, action_dim)``, or ``(B, n, action_dim)`` for a batch.
    actions: np.ndarray
    #: Seconds after the newest observation at which each action is due, ``(n,)`` float64.
    stamps: np.ndarray
    #: Actions to execute before asking for the next chunk (receding horizon).
    n_action_steps: int
    #: The policy's control period in seconds (``1 / control_hz``).
    dt: float

    def __post_init__(self) -> None:
        if self.actions.ndim not in (2, 3):
            raise ValueError(
                f"actions must be (n, action_dim) or (B, n, action_dim), got {self.actions.shape}"
            )
        if self.stamps.shape != (self.actions.shape[-2],):
            raise ValueError(
                f"stamps must be ({self.actions.shape[-2]},) like the actions' step axis, "
                f"got {self.stamps.shape}"
            )
        n = self.actions.shape[-2]
        if not 1 <= self.n_action_steps <= n:
            raise ValueError(f"n_action_steps must be in [1, {n}], got {self.n_action_steps}")
        if not self.dt > 0:
            raise ValueError(f"dt must be > 0, got {self.dt}")

    @classmethod
    def from_actions(
        cls, actions: np.ndarray, n_action_steps: int, dt: float, offset_steps: int = 0
    ) -> ActionChunk:
        """Stamp ``actions`` at ``(i + offset_steps) * dt`` after the newest observation."""
        if offset_steps < 0:
            raise ValueError(f"offset_steps must be >= 0, got {offset_steps}")
        stamps = (np.arange(actions.shape[-2], dtype=np.float64) + offset_steps) * dt
        return cls(actions, stamps, n_action_steps, dt)

    @property
    def batched(self) -> bool:
        return self.actions.ndim == 3

    def item(self, index: int) -> ActionChunk:
        """One element of a batched chunk."""
        if not self.batched:
            raise ValueError("item() needs a batched chunk (B, n, action_dim)")
        return ActionChunk(self.actions[index], self.stamps, self.n_action_steps, self.dt)

    def absolute_stamps(self, t_obs: float) -> np.ndarray:
        """The stamps on the observation clock: ``t_obs + stamps``."""
        return t_obs + self.stamps
