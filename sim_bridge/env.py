"""A task in the UR5 cell, stepped at the policy rate: ``make_env("push_t").reset(seed=0)``.

A policy period (``1 / policy_hz``) is a whole number of controller ticks on the controller's
grid: at 10 Hz on a 125 Hz UR5 it alternates 12 and 13. Two ways through one:

* ``step(action)``, the scripted experts' way: the action is either an end-effector target (TCP
  position + 6D rotation + gripper opening, in ``base_link``) turned into joints by the analytic
  IK nearest to the current command, or a joint target (6 joints + gripper); the commanded
  joints are interpolated linearly from the previous command over the period's ticks, so the
  target is reached at the period's end.
* ``step_controlled(controller)``, the deployed stack's way: ``controller(t, q_measured)`` gives
  the joint command of every tick, as the ROS 2 executor gives the real driver's position
  controller, and the cell applies it for that tick.

Either way the cell applies what it is commanded, like the real controller: the simulation has
no limiter of its own (limits are the execution stack's job, :mod:`policy_runtime.execution`,
which evaluation runs in the loop); the servos' own dynamics and the actuators' joint ranges are
all that stand between a command and the arm. Every step records the command in both forms
(``action_ee`` and ``action_joint``), so a dataset can train either kind of policy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import mujoco
import numpy as np

from policy_runtime.robots.poses import EE_ACTION_DIM, ee_action_to_pose, pose_to_ee_action
from policy_runtime.robots.ur5 import forward_kinematics
from policy_runtime.robots.ur5_ik import inverse_kinematics
from sim_bridge.cell import CellOptions, Ur5Cell
from sim_bridge.randomization import DomainRandomizer, EpisodeLatency, parse_factors
from sim_bridge.tasks import Task, make_task
from sim_bridge.tcp import TCP_TO_TOOL0, TOOL0_TO_TCP

JOINT_ACTION_DIM = 7
#: ``controller(t, q_measured) -> (q_command, gripper)`` of :meth:`SimEnv.step_controlled`:
#: the tick's time and measured joints in, the joint command (6,) and gripper opening (None:
#: keep the last) out; None keeps the last command.
TickController = Callable[[float, np.ndarray], "tuple[np.ndarray, float | None] | None"]


@dataclass(frozen=True)
class EnvOptions:
    """How an episode is simulated and observed."""

    cell: CellOptions = field(default_factory=CellOptions)
    policy_hz: float = 10.0
    action_space: Literal["ee", "joint"] = "ee"
    #: Camera images in the observation, rendered at ``image_size`` (H, W); () for low-dim only.
    cameras: tuple[str, ...] = ("front", "wrist")
    image_size: tuple[int, int] = (96, 96)
    depth: bool = False
    #: Domain randomisation factors (see :mod:`sim_bridge.randomization`); none by default.
    domain_rand: frozenset[str] = frozenset()
    #: Sim-to-real knobs when the ``latency`` factor is off: observations returned this many
    #: policy steps late; a new command reaching the controller this many seconds late.
    obs_delay_steps: int = 0
    action_latency_s: float = 0.0
    #: A calibration board (``calibration.board.STANDARD_BOARD``) on the table (eye-in-hand)
    #: or held by the gripper (eye-to-base); "none" by default.
    calibration_board: Literal["none", "table", "tool"] = "none"
    #: push_t only: ArUco markers on the T block's top (:func:`sim_bridge.tasks.push_t.
    #: marker_scene`), visual only, for estimating the block's pose from images.
    block_marker: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.policy_hz <= self.cell.control_hz:
            raise ValueError(
                f"policy_hz {self.policy_hz} must be in (0, controller rate {self.cell.control_hz}]"
            )
        object.__setattr__(self, "domain_rand", parse_factors(self.domain_rand))
        if self.obs_delay_steps < 0 or self.action_latency_s < 0:
            raise ValueError("obs_delay_steps and action_latency_s must be >= 0")


class SimEnv:
    """The simulated cell running one task. See the module docstring for step semantics."""

    def __init__(self, task: Task, options: EnvOptions | None = None) -> None:
        self.task = task
        self.options = options or EnvOptions()
        self.cell = _cell(task, self.options)
        self._ticks_per_policy_step = self.options.cell.control_hz / self.options.policy_hz
        self._base_inv = np.eye(4)
        self._q_cmd = np.zeros(6)
        self._gripper_cmd = 1.0
        self.steps = 0
        self._ticks_in_step = 0
        self.ik_failures = 0
        self.last_action_ee = np.zeros(EE_ACTION_DIM, np.float32)
        self.last_action_joint = np.zeros(JOINT_ACTION_DIM, np.float32)
        self.randomizer = (
            DomainRandomizer(self.model, self.options.domain_rand)
            if self.options.domain_rand
            else None
        )
        self.latency = EpisodeLatency(self.options.obs_delay_steps, self.options.action_latency_s)
        self._observations: deque[dict[str, np.ndarray]] = deque()
        #: Commands on their way to the controller (action latency), oldest first.
        self._in_transit: deque[tuple[np.ndarray, float]] = deque()

    @property
    def model(self) -> mujoco.MjModel:
        return self.cell.model

    @property
    def data(self) -> mujoco.MjData:
        return self.cell.data

    @property
    def time(self) -> float:
        return self.cell.time

    @property
    def policy_period_s(self) -> float:
        return 1.0 / self.options.policy_hz

    @property
    def done(self) -> bool:
        return self.success() or self.steps >= self.task.max_steps

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        """Start an episode; the same seed gives the same episode."""
        rng = np.random.default_rng(seed)
        if self.randomizer is not None:
            drawn = self.randomizer.apply(np.random.default_rng([seed, 2]))
            if "latency" in self.options.domain_rand:
                self.latency = drawn
        self.cell.reset()  # the (possibly randomised) base pose, before the task asks for it
        self._base_inv = np.linalg.inv(self.cell.body_pose("base_link"))
        q0 = self.task.initial_joints(self, rng)
        self.cell.reset(q0, gripper=1.0)
        self.task.reset(self, rng)
        mujoco.mj_forward(self.model, self.data)
        self._q_cmd, self._gripper_cmd = q0.copy(), 1.0
        self._in_transit.clear()
        self._record_command()
        self.steps = 0
        self._ticks_in_step = 0
        self.ik_failures = 0
        self._observations.clear()
        return self._delayed_observation()

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        """Move to one action over one policy period and return the observation after it."""
        if self._ticks_in_step:
            raise RuntimeError("step() in the middle of a policy period that tick() began")
        action = np.asarray(action, dtype=np.float64)
        if not np.isfinite(action).all():
            raise ValueError(f"action contains NaN or inf: {action}")
        if self.options.action_space == "ee":
            pose, gripper = ee_action_to_pose(action)
            q_target = self._solve_ik(pose)
        else:
            if action.shape != (JOINT_ACTION_DIM,):
                raise ValueError(
                    f"a joint action has shape ({JOINT_ACTION_DIM},), got {action.shape}"
                )
            q_target, gripper = action[:6], float(action[6])
        q_start, ticks = self._q_cmd, self._ticks_this_step()
        for tick in range(1, ticks + 1):
            self._command_tick(q_start + (q_target - q_start) * tick / ticks, gripper)
        return self._end_step()

    def step_controlled(self, controller: TickController) -> dict[str, np.ndarray]:
        """One policy period driven tick by tick by ``controller`` (see :data:`TickController`),
        as the real position controller is driven; returns the observation after it."""
        while True:
            command = controller(self.time, self.cell.joint_positions)
            if self.tick(*(command or (None, None))):
                return self._delayed_observation()

    def tick(self, q: np.ndarray | None, gripper: float | None) -> bool:
        """One controller tick applying ``q`` (None: the last command again) and ``gripper``
        (None: keep it), as the ROS 2 sim bridge drives the cell; True when the tick ended a
        policy period (``steps`` counts it; :attr:`done` is then up to date). Call
        :meth:`observation` for the state after it."""
        self._command_tick(
            self._q_cmd if q is None else q, self._gripper_cmd if gripper is None else gripper
        )
        self._ticks_in_step += 1
        if self._ticks_in_step < self._ticks_this_step():
            return False
        self._ticks_in_step = 0
        self._end_step_bookkeeping()
        return True

    @property
    def commanded_joints(self) -> np.ndarray:
        """The joint command the controller holds now (6,), as ``servoj`` holds its last."""
        return self._q_cmd.copy()

    def _ticks_this_step(self) -> int:
        """Controller ticks up to the next policy instant: 12 or 13 at 10 Hz on a 125 Hz UR5."""
        ratio = self._ticks_per_policy_step
        return int(np.floor((self.steps + 1) * ratio + 1e-9) - np.floor(self.steps * ratio + 1e-9))

    def _command_tick(self, q: np.ndarray, gripper: float) -> None:
        """Command ``q`` and ``gripper`` for one controller tick. With an action latency the
        controller acts on the command sent that many ticks earlier (the previous one before
        any was sent): a delay line, as a network and a driver are."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (6,) or not np.all(np.isfinite(q)) or not np.isfinite(gripper):
            raise ValueError(f"a joint command is 6 finite positions and a gripper, got {q}")
        late = round(self.latency.action_latency_s * self.options.cell.control_hz)
        if not self._in_transit:
            self._in_transit.extend([(self._q_cmd, self._gripper_cmd)] * late)
        self._q_cmd, self._gripper_cmd = q.copy(), float(np.clip(gripper, 0.0, 1.0))
        self._in_transit.append((self._q_cmd, self._gripper_cmd))
        applied = self._in_transit.popleft()
        self.cell.step(*applied)

    def _end_step(self) -> dict[str, np.ndarray]:
        self._end_step_bookkeeping()
        return self._delayed_observation()

    def _end_step_bookkeeping(self) -> None:
        self._record_command()
        self.steps += 1

    def tcp_pose(self) -> np.ndarray:
        """Measured TCP pose in ``base_link`` (4x4)."""
        return self._base_inv @ self.cell.site_pose("tcp")

    def body_pose(self, name: str) -> np.ndarray:
        """Pose (4x4) of a body in ``base_link``."""
        return self._base_inv @ self.cell.body_pose(name)

    def place_free_body(self, joint: str, position: np.ndarray, yaw: float) -> None:
        """Put a free-jointed object at ``position`` (base_link), turned by ``yaw``, at rest."""
        world = self.cell.body_pose("base_link")[:3, 3] + np.asarray(position, dtype=np.float64)
        self.data.joint(joint).qpos[:] = [*world, *_yaw_quat(yaw)]
        self.data.joint(joint).qvel[:] = 0.0

    def place_fixed_body(self, body: str, xy: np.ndarray, yaw: float = 0.0) -> None:
        """Move a fixed body (a bin, a cabinet, a marker) on the table to ``xy`` (base_link)."""
        base = self.cell.body_pose("base_link")[:3, 3]
        self.model.body(body).pos[:] = [base[0] + xy[0], base[1] + xy[1], base[2]]
        self.model.body(body).quat[:] = _yaw_quat(yaw)

    def body_pose7(self, name: str) -> np.ndarray:
        """Position + quaternion (w, x, y, z) of a body in ``base_link``, float32 (7,)."""
        pose = self.body_pose(name)
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, pose[:3, :3].flatten())
        return np.concatenate([pose[:3, 3], quat]).astype(np.float32)

    def _delayed_observation(self) -> dict[str, np.ndarray]:
        """The observation ``latency.obs_delay_steps`` policy steps old (the oldest kept)."""
        self._observations.append(self.observation())
        while len(self._observations) > self.latency.obs_delay_steps + 1:
            self._observations.popleft()
        return self._observations[0]

    def observation(self) -> dict[str, np.ndarray]:
        """The state now, undelayed (what the task and success checks see)."""
        tcp = self.tcp_pose()
        obs = {
            "joint_pos": self.cell.joint_positions.astype(np.float32),
            "joint_vel": self.cell.joint_velocities.astype(np.float32),
            "ee_pose": pose_to_ee_action(tcp, 0.0)[:9],
            "gripper": np.array([self.cell.gripper_opening], np.float32),
        }
        obs.update(self.task.observation(self))
        height, width = self.options.image_size
        for camera in self.options.cameras:
            obs[f"{camera}_rgb"] = self.cell.render(camera, width, height)
            if self.options.depth:
                obs[f"{camera}_depth"] = self.cell.render(camera, width, height, depth=True)
        return obs

    def render(
        self, camera: str, width: int | None = None, height: int | None = None, depth: bool = False
    ) -> np.ndarray:
        spec = next((c for c in self.options.cell.cameras if c.name == camera), None)
        if spec is None:
            raise ValueError(
                f"no camera {camera!r}; cameras: {[c.name for c in self.options.cell.cameras]}"
            )
        return self.cell.render(camera, width or spec.width, height or spec.height, depth)

    def success(self) -> bool:
        return self.task.success(self)

    def score(self) -> float:
        return self.task.score(self)

    def close(self) -> None:
        self.cell.close()

    def _solve_ik(self, tcp_pose: np.ndarray) -> np.ndarray:
        q = inverse_kinematics(tcp_pose @ TCP_TO_TOOL0, q_near=self._q_cmd)
        if q is None:  # unreachable: hold the last command, as a real driver would
            self.ik_failures += 1
            return self._q_cmd
        return q

    def _record_command(self) -> None:
        tcp_cmd = forward_kinematics(self._q_cmd) @ TOOL0_TO_TCP
        self.last_action_ee = pose_to_ee_action(tcp_cmd, self._gripper_cmd)
        self.last_action_joint = np.append(self._q_cmd, self._gripper_cmd).astype(np.float32)


def _yaw_quat(yaw: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of a turn by ``yaw`` about z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def make_env(task: str, variant: str | None = None, **options: object) -> SimEnv:
    """``make_env("pick_place", image_size=(96, 96), policy_hz=10.0)``: the env for a task.

    ``options`` are :class:`EnvOptions` fields; ``control_hz``, ``timestep_s``,
    ``table_height_m`` and ``camera_specs`` (the cell's cameras, e.g. placed by a calibration)
    go to the cell.
    """
    cell_fields = {"control_hz", "timestep_s", "table_height_m"}
    cell_options = {k: options.pop(k) for k in list(options) if k in cell_fields}
    if "camera_specs" in options:
        cell_options["cameras"] = options.pop("camera_specs")
    env_options = EnvOptions(cell=CellOptions(**cell_options), **options)  # type: ignore[arg-type]
    return SimEnv(make_task(task, variant), env_options)


def _cell(task: Task, options: EnvOptions) -> Ur5Cell:
    """The task's cell, with the block's markers and the calibration board when asked for."""
    scene_xml, assets_xml = task.scene_xml(), task.assets_xml()
    assets: dict[str, bytes] = {}
    if options.block_marker:
        from sim_bridge.tasks.push_t import PushT, marker_scene

        if not isinstance(task, PushT):
            raise ValueError(f"block_marker: task {task.name!r} has no marker (only push_t)")
        marker = marker_scene()
        scene_xml, assets_xml = marker.scene_xml, assets_xml + marker.assets_xml
        assets.update(marker.assets)
    if options.calibration_board == "none":
        return Ur5Cell(options.cell, scene_xml, assets_xml, assets=assets)
    from calibration.board import STANDARD_BOARD
    from sim_bridge.calibration_cell import board_scene

    board = board_scene(
        options.calibration_board,
        STANDARD_BOARD.png(),
        STANDARD_BOARD.size_m,
        options.cell.table_height_m,
    )
    return Ur5Cell(
        options.cell,
        scene_xml + board.scene_xml,
        assets_xml + board.assets_xml,
        board.tool_xml,
        assets | board.assets,
    )
