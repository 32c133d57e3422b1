"""The last check between a policy and the robot: every command is made safe or refused.

Two kinds of rule, on purpose:

* **Clamps** keep a plausible command inside the limits: joint positions, joint velocity and
  acceleration, the end-effector workspace box and speeds, the gripper range. A policy that
  asks a bit too much still moves, just more slowly or less far.
* **Refusals** reject a command that means something is wrong: NaN/inf anywhere, a degenerate
  rotation, a jump beyond the largest plausible step (a target 1 m away is a bug or a
  corrupted message, not something to approach at the speed limit). A refused command is
  replaced by a *hold*: the commanded velocity ramps to zero at the acceleration limit, from
  wherever the robot is, rather than stopping dead (which the hardware cannot do either).

Joint motion is limited per tick by scaling, so the direction is kept: the velocity is scaled
uniformly until every joint is within its limit, the change of velocity likewise. Approaching a
target, the speed is also capped so every joint could still stop *at* the target within the
acceleration limit (the exact discrete-time braking curve), so the command never passes the
current target. A target may stop dead at any tick (a workspace clamp, the end of a chunk,
a refused command), and the only way never to overshoot one is to be able to stop there: the
price is a lag behind a moving target of ``v^2 / (2 a) - v dt / 2`` per joint (10 mrad at
0.5 rad/s, 10 rad/s^2, 125 Hz), which a larger acceleration limit shrinks.

**The braking envelope.** A hold can begin at any tick, and it decelerates all joints together
along their current direction (see :meth:`SafetyFilter.hold`), which for a joint that is not the
slowest to stop is a longer path than its own braking curve. So every joint command is also
checked at its *stopping point*, where a hold begun from it would come to rest: that point must
lie inside the joint position limits and keep the TCP inside the workspace box (or, for an arm
that starts outside either, no further out than the previous command's stopping point). When
the command would break that, the filter brakes earlier: it takes the largest step between the
hold's own next step (which always keeps the stopping point) and the command, so the arm slows
down as it nears a limit instead of being clipped to a stop at it. A joint-space command cannot
be clamped into a Cartesian box, and this is how it is kept inside one: it slows and stops at
the boundary; moving back in, or along it, stays allowed.

Every intervention is counted by reason (:attr:`SafetyFilter.counts`) and reported with the
command. numpy only: this runs at the controller rate (125 or 500 Hz).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from policy_runtime.execution.kinematics import EeToJoint
from policy_runtime.robots.poses import (
    EE_ACTION_DIM,
    matrix_from_rot6d,
    rot6d_from_matrix,
    valid_rot6d,
)
from policy_runtime.robots.ur5 import UR5_POSITION_LIMITS, UR5_VELOCITY_LIMITS

__all__ = [
    "DEFAULT_JOINT_ACCELERATION",
    "INTERVENTIONS",
    "Clamp",
    "Intervention",
    "Refusal",
    "SafeEeCommand",
    "SafeJointCommand",
    "SafetyFilter",
    "SafetyLimits",
]

#: Reasons a command is refused (replaced by a hold).
Refusal = Literal["non_finite", "invalid_rotation", "joint_jump", "ee_jump"]
#: Reasons a command is changed but still executed.
Clamp = Literal[
    "position_limit",
    "velocity_limit",
    "acceleration_limit",
    "workspace",
    "ee_speed",
    "ee_angular_speed",
    "gripper_range",
]
Intervention = Literal[Refusal, Clamp]
#: Every intervention, in a fixed order (the keys of :attr:`SafetyFilter.counts`).
INTERVENTIONS: tuple[Intervention, ...] = get_args(Intervention)
#: A gripper opening this far outside its range is clamped without being reported.
_GRIPPER_SLACK = 0.01
#: The depth inside the box (m) below which the envelope computes the TCP instead of bounding it.
_DEPTH_MARGIN_M = 0.005
#: Halvings of the search for the largest step that keeps the braking envelope (2^-10 of the
#: step: finer than any limit is stated).
_ENVELOPE_BISECTIONS = 10

#: Default joint acceleration limit (rad/s^2, every joint), also the deceleration of a hold: a
#: UR5 at the default velocity fraction (pi / 2 rad/s) stops in 0.16 s, and a 10 Hz policy's
#: velocity changes of a few tenths of rad/s between waypoints are followed within 30 ms.
DEFAULT_JOINT_ACCELERATION = 10.0


class SafetyLimits(BaseModel):
    """Every limit of the safety filter; UR5 defaults. Units: m, rad, s; frame ``base_link``.

    The default workspace box is the UR5 table cell of the simulation: x 0.2-0.8 m in front of
    the base, y +-0.45 m, z from 1 cm above the table top (the fingertips reach ~7 mm below the
    TCP, so they stay ~3 mm clear) to 0.6 m. It is for the TCP, not for the whole arm.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: (lower, upper) per joint (rad).
    joint_position_limits: tuple[tuple[float, float], ...] = UR5_POSITION_LIMITS
    #: The arm's maximum joint speeds (rad/s) ...
    joint_velocity_limits: tuple[float, ...] = UR5_VELOCITY_LIMITS
    #: ... of which commands may use this fraction (a learned policy gets half by default).
    velocity_fraction: float = Field(default=0.5, gt=0.0, le=1.0)
    #: Largest change of commanded joint velocity per second (rad/s^2), per joint.
    joint_acceleration_limits: tuple[float, ...] = (DEFAULT_JOINT_ACCELERATION,) * 6
    #: A joint target further than this from the previous command is refused (rad).
    max_joint_jump_rad: float = Field(default=0.5, gt=0.0)
    #: The TCP workspace box in ``base_link`` (m): lower and upper corners.
    workspace_min_m: tuple[float, float, float] = (0.2, -0.45, 0.01)
    workspace_max_m: tuple[float, float, float] = (0.8, 0.45, 0.6)
    #: TCP linear and angular speed limits (Diffusion Policy's real-UR5 caps).
    max_ee_speed_m_s: float = Field(default=0.43, gt=0.0)
    max_ee_angular_speed_rad_s: float = Field(default=1.04, gt=0.0)
    #: A TCP target further than this from the previous one is refused (m, rad). The
    #: angle must stay below pi, where the rotation between two poses stops being unique.
    max_ee_jump_m: float = Field(default=0.15, gt=0.0)
    max_ee_jump_rad: float = Field(default=0.8, gt=0.0, lt=np.pi)
    #: Allowed gripper openings (0 closed, 1 fully open).
    gripper_range: tuple[float, float] = (0.0, 1.0)

    @model_validator(mode="after")
    def _consistent(self) -> SafetyLimits:
        pairs = self.joint_position_limits
        if len(pairs) != 6 or any(lo >= hi for lo, hi in pairs):
            raise ValueError(
                f"joint_position_limits must be 6 (lower, upper) pairs with lower < upper, "
                f"got {pairs}"
            )
        for name in ("joint_velocity_limits", "joint_acceleration_limits"):
            values = getattr(self, name)
            if len(values) != 6 or any(v <= 0.0 for v in values):
                raise ValueError(f"{name} must be 6 positive values, got {values}")
        if any(lo >= hi for lo, hi in zip(self.workspace_min_m, self.workspace_max_m, strict=True)):
            raise ValueError(
                f"workspace_min_m {self.workspace_min_m} must be below workspace_max_m "
                f"{self.workspace_max_m} on every axis"
            )
        lo, hi = self.gripper_range
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"gripper_range must satisfy 0 <= lower < upper <= 1, got {lo, hi}")
        return self


@dataclass(frozen=True)
class SafeJointCommand:
    """A joint command that respects the limits, and what the filter did to get it."""

    #: Joint positions (6,) to send (rad).
    q: np.ndarray
    #: The velocity (6,) this command implies, ``(q - q_prev) / dt``: the next call's ``v_prev``.
    velocity: np.ndarray
    #: Gripper opening to send; None when none was given or the command was refused (keep the
    #: previous one).
    gripper: float | None
    #: True when ``q`` is a step of the deceleration ramp (a refused target, or :meth:`hold`).
    hold: bool
    #: Why the target was refused, if it was.
    refusal: Refusal | None
    interventions: tuple[Intervention, ...]


@dataclass(frozen=True)
class SafeEeCommand:
    """An end-effector target that respects the limits, and what the filter did to get it."""

    #: The 10-D action (float64; position, 6D rotation, gripper); if refused, ``previous``.
    action: np.ndarray
    #: Why the target was refused, if it was: then the caller holds (decelerates in joints).
    refusal: Refusal | None
    interventions: tuple[Intervention, ...]

    @property
    def hold(self) -> bool:
        return self.refusal is not None


def _vector(value: np.ndarray, size: int, name: str, finite: bool) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {array.shape}")
    if finite and not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite (it contains NaN or inf)")
    return array


def _check_dt(dt: float) -> float:
    if not (np.isfinite(dt) and dt > 0.0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt}")
    return float(dt)


def _rotation(rot6d: np.ndarray) -> np.ndarray | None:
    """The rotation a 6D encoding stands for, or None if its rows do not define one."""
    return matrix_from_rot6d(rot6d) if valid_rot6d(rot6d) else None


def _rotation_log(rotation: np.ndarray) -> tuple[np.ndarray, float]:
    """(axis * angle, angle) of a rotation matrix. The angle, from atan2 of the sine and cosine
    parts, is accurate on all of [0, pi]; the vector only below pi (at pi the axis is not in
    the skew part, but steps that large are refused before the vector is used)."""
    skew = 0.5 * np.array(
        [
            rotation[2, 1] - rotation[1, 2],
            rotation[0, 2] - rotation[2, 0],
            rotation[1, 0] - rotation[0, 1],
        ]
    )
    sine = float(np.linalg.norm(skew))
    angle = float(np.arctan2(sine, 0.5 * (np.trace(rotation) - 1.0)))
    return (skew * (angle / sine) if sine > 1e-12 else np.zeros(3)), angle


def _rotation_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: the rotation by ``|rotvec|`` about ``rotvec``."""
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = rotvec / angle
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _braking_speed(distance: np.ndarray, a_dt: np.ndarray, dt: float) -> np.ndarray:
    """The fastest speed to move at this tick and still stop exactly ``distance`` ahead,
    slowing by at most ``a_dt`` per tick afterwards (elementwise).

    At speed ``(n + f) a dt`` (n whole, 0 <= f < 1) the shortest stop covers, with this tick,
    ``a dt^2 (n (n + 1) / 2 + f (n + 1))``; inverting that piecewise-linear curve gives the
    cap. It is exact in discrete time: from the cap, the next tick's cap is exactly ``a dt``
    lower, so braking along it lands on the target with no overshoot, which the continuous
    ``sqrt(2 a d)`` would not (it overshoots by up to half a tick's step).
    """
    x = distance / (a_dt * dt)
    n = np.floor(0.5 * (np.sqrt(1.0 + 8.0 * x) - 1.0))
    f = np.clip((x - 0.5 * n * (n + 1.0)) / (n + 1.0), 0.0, 1.0)
    return (n + f) * a_dt


def _state_key(q: np.ndarray, velocity: np.ndarray) -> bytes:
    """Identifies a commanded state (the memo's key, with the kinematics it was measured with)."""
    return q.tobytes() + velocity.tobytes()


def _uniform_scale(values: np.ndarray, caps: np.ndarray) -> float:
    """The largest s <= 1 with |s * values| <= caps elementwise (caps >= 0)."""
    magnitude = np.abs(values)
    moving = magnitude > caps
    if not moving.any():
        return 1.0
    return float(np.min(caps[moving] / magnitude[moving]))


class SafetyFilter:
    """Applies :class:`SafetyLimits` to end-effector and joint commands (see module docs).

    Stateless apart from :attr:`counts` (and a one-entry memo of the last command's stopping
    point in the workspace, which saves a forward kinematics per tick): the caller passes the
    previous command, so the same filter serves the sim and the real robot, and a restart loses
    nothing but statistics.
    """

    def __init__(self, limits: SafetyLimits | None = None) -> None:
        self.limits = limits or SafetyLimits()
        positions = np.asarray(self.limits.joint_position_limits, dtype=np.float64)
        self._lower, self._upper = positions[:, 0], positions[:, 1]
        self._v_max = self.limits.velocity_fraction * np.asarray(self.limits.joint_velocity_limits)
        self._a_max = np.asarray(self.limits.joint_acceleration_limits, dtype=np.float64)
        self._box_lo = np.asarray(self.limits.workspace_min_m, dtype=np.float64)
        self._box_hi = np.asarray(self.limits.workspace_max_m, dtype=np.float64)
        #: How many commands each intervention has touched since construction / reset_counts().
        self.counts: dict[Intervention, int] = dict.fromkeys(INTERVENTIONS, 0)
        #: The last joint command's state (q, velocity), the kinematics it was measured with,
        #: its stopping point and that point's TCP's signed distance to the box (outside > 0,
        #: or minus the depth inside; an upper bound when it was not computed): the next command
        #: starts from it, most of the time, and a stopping point that moved less than the depth
        #: allows needs no kinematics at all.
        self._last_stop: tuple[bytes, EeToJoint, np.ndarray, float] | None = None

    @property
    def velocity_limits(self) -> np.ndarray:
        """The joint speeds commands may use (rad/s): the arm's limits times the fraction."""
        return self._v_max.copy()

    def reset_counts(self) -> None:
        self.counts = dict.fromkeys(INTERVENTIONS, 0)

    def _report(self, reasons: list[Intervention]) -> tuple[Intervention, ...]:
        for reason in reasons:
            self.counts[reason] += 1
        return tuple(reasons)

    # -- end effector --------------------------------------------------------------------

    def filter_ee(self, target: np.ndarray, previous: np.ndarray, dt: float) -> SafeEeCommand:
        """``target`` (10-D TCP action) made safe to follow ``previous`` after ``dt``.

        ``previous`` is the target this method returned on the previous tick, so the limits
        apply to the stream of targets; at the start and after a hold, when there is none, it
        is the TCP pose of the last joint command. (Not that pose on every tick: the joint
        filter trails a moving target by its braking distance, and a speed limit measured from
        the trailing command would cut the target's speed further, tick after tick.)

        Order: refuse NaN/inf, a degenerate rotation, a jump beyond ``max_ee_jump_*``; clamp
        the position into the workspace box; scale the step from ``previous`` so neither the
        linear nor the angular speed limit is exceeded (one factor for both, so position and
        orientation stay in step along the path); clamp the gripper.
        """
        target = _vector(target, EE_ACTION_DIM, "target", finite=False)
        previous = _vector(previous, EE_ACTION_DIM, "previous", finite=True)
        dt = _check_dt(dt)
        if not np.isfinite(target).all():
            return self._refuse_ee(previous, "non_finite")
        rotation = _rotation(target[3:9])
        rotation_prev = _rotation(previous[3:9])
        if rotation_prev is None:
            raise ValueError("previous must hold a valid 6D rotation")
        if rotation is None:
            return self._refuse_ee(previous, "invalid_rotation")
        rotvec, angle = _rotation_log(rotation_prev.T @ rotation)
        position = target[:3]
        if (
            np.linalg.norm(position - previous[:3]) > self.limits.max_ee_jump_m
            or angle > self.limits.max_ee_jump_rad
        ):
            return self._refuse_ee(previous, "ee_jump")

        reasons: list[Intervention] = []
        clamped = np.clip(position, self._box_lo, self._box_hi)
        if (clamped != position).any():
            reasons.append("workspace")
        step = clamped - previous[:3]
        distance = float(np.linalg.norm(step))
        linear_cap = self.limits.max_ee_speed_m_s * dt
        angular_cap = self.limits.max_ee_angular_speed_rad_s * dt
        scale = 1.0
        if distance > linear_cap:
            reasons.append("ee_speed")
            scale = linear_cap / distance
        if angle > angular_cap:
            reasons.append("ee_angular_speed")
            scale = min(scale, angular_cap / angle)
        if scale < 1.0:
            clamped = previous[:3] + scale * step
            rotation = rotation_prev @ _rotation_matrix(scale * rotvec)

        gripper = self._clamp_gripper(float(target[9]), reasons)
        action = np.concatenate([clamped, rot6d_from_matrix(rotation), [gripper]])
        return SafeEeCommand(action, refusal=None, interventions=self._report(reasons))

    def _clamp_gripper(self, gripper: float, reasons: list[Intervention]) -> float:
        """The opening clamped to the range; ``gripper_range`` is reported when the clamp moved
        it by more than :data:`_GRIPPER_SLACK` (less is a regression's noise at the edge of its
        training range, e.g. 1.003 for a fully open gripper, not a command worth reporting)."""
        clamped = float(np.clip(gripper, *self.limits.gripper_range))
        if abs(clamped - gripper) > _GRIPPER_SLACK:
            reasons.append("gripper_range")
        return clamped

    def _refuse_ee(self, previous: np.ndarray, reason: Refusal) -> SafeEeCommand:
        return SafeEeCommand(previous.copy(), refusal=reason, interventions=self._report([reason]))

    def workspace_distance(self, position: np.ndarray) -> float:
        """How far (m) a TCP position lies outside the workspace box; 0 inside."""
        return max(self._signed_distance(np.asarray(position, dtype=np.float64)), 0.0)

    def _signed_distance(self, position: np.ndarray) -> float:
        """How far (m) a TCP position lies outside the box, or minus its depth inside (the
        distance to the nearest face)."""
        outside = position - np.clip(position, self._box_lo, self._box_hi)
        if outside.any():
            return float(np.linalg.norm(outside))
        return -float(min((position - self._box_lo).min(), (self._box_hi - position).min()))

    # -- joints --------------------------------------------------------------------------

    def filter_joints(
        self,
        q_cmd: np.ndarray,
        q_prev: np.ndarray,
        v_prev: np.ndarray,
        dt: float,
        *,
        gripper: float | None = None,
        kinematics: EeToJoint | None = None,
    ) -> SafeJointCommand:
        """The joint command to send ``dt`` after the previous one (``q_prev``, sent with
        velocity ``v_prev``), heading for the target ``q_cmd``.

        Refuses (holds) when ``q_cmd`` or ``gripper`` is not finite or ``q_cmd`` is more than
        ``max_joint_jump_rad`` from ``q_prev`` on any joint. Otherwise: the target is clamped
        to the position limits; the velocity toward it is capped so every joint could still
        brake to a stop at it, then scaled into the velocity limits, and its change from
        ``v_prev`` scaled into the acceleration limits (both uniformly, keeping direction);
        then the braking envelope (module docs) keeps the command's stopping point inside the
        position limits and, given the arm's ``kinematics``, the TCP's inside the workspace
        box. ``acceleration_limit`` is reported when that scaling acts; the braking
        cap is how the filter follows any target, and acts on every tick of a motion, so it is
        not; the envelope reports ``position_limit`` or ``workspace``.
        """
        q_cmd = _vector(q_cmd, 6, "q_cmd", finite=False)
        q_prev = _vector(q_prev, 6, "q_prev", finite=True)
        v_prev = _vector(v_prev, 6, "v_prev", finite=True)
        dt = _check_dt(dt)
        if not np.isfinite(q_cmd).all() or (gripper is not None and not np.isfinite(gripper)):
            return self._refuse_joints(q_prev, v_prev, dt, "non_finite")
        if np.abs(q_cmd - q_prev).max() > self.limits.max_joint_jump_rad:
            return self._refuse_joints(q_prev, v_prev, dt, "joint_jump")

        reasons: list[Intervention] = []
        target = np.clip(q_cmd, self._lower, self._upper)
        if (target != q_cmd).any():
            reasons.append("position_limit")
        a_dt = self._a_max * dt
        gap = target - q_prev
        velocity = gap / dt  # reach the target in this tick, unless a limit says otherwise
        brake_scale = _uniform_scale(velocity, _braking_speed(np.abs(gap), a_dt, dt))
        velocity *= brake_scale
        speed_scale = _uniform_scale(velocity, self._v_max)
        if speed_scale < 1.0:
            reasons.append("velocity_limit")
            velocity = speed_scale * velocity
        change = velocity - v_prev
        accel_scale = _uniform_scale(change, a_dt)
        if accel_scale < 1.0:
            reasons.append("acceleration_limit")
            velocity = v_prev + accel_scale * change
        velocity, envelope, stop, signed = self._braking_envelope(
            q_prev, v_prev, velocity, dt, kinematics
        )
        for reason in envelope:
            if reason not in reasons:
                reasons.append(reason)
        if brake_scale == speed_scale == accel_scale == 1.0 and not envelope:
            q_safe = target  # exactly, without the round-off of q_prev + gap
        else:
            q_safe = q_prev + velocity * dt

        grip = None if gripper is None else self._clamp_gripper(gripper, reasons)
        v_safe = (q_safe - q_prev) / dt
        if kinematics is not None:
            self._last_stop = (_state_key(q_safe, v_safe), kinematics, stop, signed)
        return SafeJointCommand(
            q_safe,
            v_safe,
            grip,
            hold=False,
            refusal=None,
            interventions=self._report(reasons),
        )

    def _braking_envelope(
        self,
        q_prev: np.ndarray,
        v_prev: np.ndarray,
        velocity: np.ndarray,
        dt: float,
        kinematics: EeToJoint | None,
    ) -> tuple[np.ndarray, list[Intervention], np.ndarray, float]:
        """``velocity``, or the largest step toward it from the hold's next velocity, such that
        the stopping point stays inside the limits (see the module docs); which limit made it
        brake; the chosen stopping point; and its TCP's signed distance to the box (an upper
        bound). The hold's own step keeps the previous command's stopping point, so it is
        always allowed: that is the fallback, and the search's lower end."""
        stop_prev = self._stop_point(q_prev, v_prev)
        joint_allowance = np.maximum(self._outside(q_prev), self._outside(stop_prev)) + 1e-12
        # The previous stopping point's signed distance: remembered, or computed now.
        memo = self._last_stop
        known: tuple[np.ndarray, float] | None = None
        if kinematics is not None:
            if memo is not None and memo[1] is kinematics and memo[0] == _state_key(q_prev, v_prev):
                known = (memo[2], memo[3])
            else:
                known = (stop_prev, self._signed_distance(kinematics.tcp_position(stop_prev)))
        tcp_allowance = 0.0 if known is None else max(known[1], 0.0) + 1e-12
        signed = 0.0

        def violates(v: np.ndarray) -> tuple[list[Intervention], np.ndarray]:
            nonlocal signed
            stop = self._stop_point(q_prev + v * dt, v)
            broken: list[Intervention] = []
            if (self._outside(stop) > joint_allowance).any():
                broken.append("position_limit")
            if kinematics is not None and known is not None:
                # Deep enough inside, the TCP cannot have reached a face (it moves at most
                # max_lever_m per radian): no kinematics needed, the depth bound carries on.
                reach = kinematics.max_lever_m * float(np.abs(stop - known[0]).sum())
                if known[1] + reach < -_DEPTH_MARGIN_M:
                    signed = known[1] + reach
                else:
                    signed = self._signed_distance(kinematics.tcp_position(stop))
                    if signed > tcp_allowance:
                        broken.append("workspace")
            return broken, stop

        broken, stop = violates(velocity)
        chosen = velocity
        if broken:
            v_hold = self._hold_velocity(v_prev, dt)
            low, high = 0.0, 1.0
            for _ in range(_ENVELOPE_BISECTIONS):
                middle = 0.5 * (low + high)
                if violates(v_hold + middle * (velocity - v_hold))[0]:
                    high = middle
                else:
                    low = middle
            chosen = v_hold + low * (velocity - v_hold)
            _, stop = violates(chosen)  # the chosen stopping point and its distance
        return chosen, broken, stop, signed

    def _outside(self, q: np.ndarray) -> np.ndarray:
        """How far (rad) each joint of ``q`` lies outside its position limits; 0 inside."""
        return np.maximum(np.maximum(self._lower - q, q - self._upper), 0.0)

    def _hold_velocity(self, v_prev: np.ndarray, dt: float) -> np.ndarray:
        """The next velocity of the hold ramp from ``v_prev``: ``a dt`` closer to rest for the
        joint that needs longest, the others in proportion (the direction is kept)."""
        remaining = self._stop_time(v_prev)
        if remaining <= dt:
            return np.zeros(6)
        return v_prev * (1.0 - dt / remaining)

    def _refuse_joints(
        self, q_prev: np.ndarray, v_prev: np.ndarray, dt: float, reason: Refusal
    ) -> SafeJointCommand:
        held = self.hold(q_prev, v_prev, dt)
        return replace(held, refusal=reason, interventions=self._report([reason]))

    def hold(self, q_prev: np.ndarray, v_prev: np.ndarray, dt: float) -> SafeJointCommand:
        """One tick of ``dt`` bringing the arm to rest: the velocity ramps linearly to zero, all
        joints together (the path keeps its direction), at the acceleration limit of the joint
        that needs longest. At rest it stays put. Standstill is reached :meth:`stopping_time`
        after the hold begins, rounded up to a whole tick. Never clipped to the position
        limits: the braking envelope of :meth:`filter_joints` starts braking early enough that
        the ramp ends inside them (a clip would be a stop with no deceleration at all).
        """
        q_prev = _vector(q_prev, 6, "q_prev", finite=True)
        v_prev = _vector(v_prev, 6, "v_prev", finite=True)
        velocity = self._hold_velocity(v_prev, _check_dt(dt))
        q = q_prev + velocity * dt
        return SafeJointCommand(
            q, (q - q_prev) / dt, None, hold=True, refusal=None, interventions=()
        )

    def stopping_point(self, q: np.ndarray, velocity: np.ndarray) -> np.ndarray:
        """Where a :meth:`hold` starting after command ``q`` (sent with ``velocity``) comes to
        rest, at the latest: ``q + v T / 2``, ``T`` the :meth:`stopping_time`. The ramp's
        ticks move at its velocity at each tick's end, so whatever the ticks' lengths it
        covers at most the continuous ramp's distance; and each step of the ramp brings this
        point no further, which is what lets the braking envelope fall back on it."""
        q = _vector(q, 6, "q", finite=True)
        velocity = _vector(velocity, 6, "velocity", finite=True)
        return self._stop_point(q, velocity)

    def stopping_time(self, velocity: np.ndarray) -> float:
        """Seconds a hold needs to bring joint velocities ``velocity`` to zero:
        ``max_j |v_j| / a_j``, the slowest joint at its acceleration limit."""
        return self._stop_time(_vector(velocity, 6, "velocity", finite=True))

    # The per-tick internals take the arrays the public methods checked (and the loop's own).

    def _stop_time(self, velocity: np.ndarray) -> float:
        return float((np.abs(velocity) / self._a_max).max())

    def _stop_point(self, q: np.ndarray, velocity: np.ndarray) -> np.ndarray:
        return q + velocity * (0.5 * self._stop_time(velocity))
