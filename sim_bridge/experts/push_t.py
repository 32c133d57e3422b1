"""Scripted expert for ``push_t``: closed-loop pushing with the closed gripper.

Each round the expert reads the block's pose and plans one straight push with a quasi-static
model of planar pushing (ellipsoidal limit surface, sticking or sliding point contact with
Coulomb friction, as in Lynch & Mason's motion cones): it tries contact points along every face
of the T and push directions within the friction cone, predicts the block's motion for push
lengths up to ``MAX_PUSH_M``, and keeps the push that brings the block closest to the target
(distance of the centroids plus ``YAW_WEIGHT_M`` per radian of yaw error). Pushing through the
centre of mass translates the block; pushing near a bar end turns it. The gripper comes down
once, clear of the block, and then stays at pushing height like Diffusion Policy's planar
pusher: between pushes it backs off the face and goes around the block to the next contact on
the shortest path that keeps its fingertips clear of the T (a visibility graph over the corners
of the T grown by the fingertips' half-diagonal). Only when no such path exists does it lift
over the block. The gripper keeps one orientation all episode (as the round pusher of Diffusion
Policy's real PushT, a policy never has to turn the wrist): its fingertips touch a face with
whichever corner or side reaches furthest along the face's normal, and the planner puts that
point on the contact.

During a push the expert watches the block and stops early once the error stops falling.

Verify & Retry: after each push it checks that the error fell; if the push made things worse
or did nothing, that contact and direction are banned and the next try picks another (at random
among the best few), up to ``retries`` failed pushes in a row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from policy_runtime.robots.poses import pose_to_ee_action
from sim_bridge.env import SimEnv
from sim_bridge.experts import register_expert
from sim_bridge.experts.primitives import commanded_pose, hold, move_to
from sim_bridge.tasks.push_t import (
    SUCCESS_COVERAGE,
    T_POLYGON,
    TARGET_POSE,
    block_pose,
    coverage,
    from_frame,
    inside_t,
    t_polygon,
    to_frame,
)
from sim_bridge.tcp import top_down_pose

CLOSED = 0.0
TRAVEL_Z = 0.065  # TCP height for moving over the block (fingertips ~3 cm above its top)
PUSH_Z = 0.015  # TCP height while pushing (fingertips 8 mm above the table)
#: Closed fingertips seen from above: half extents along the tool's x and y axes.
FINGER_HALF = (0.012, 0.0155)
#: The gripper's yaw (``top_down_pose``) for the whole episode: the one it starts with.
PUSHER_YAW = 0.0
#: Clearance from the face when coming down, and from the rest of the block. Generous, so a
#: learned policy that copies these demos a centimetre off still comes down beside the block,
#: not on it (on it, the fingers press the block into the table and tip or fling it).
GAP_M = 0.04
CLEARANCE_M = 0.015
PUSH_SPEED_MPS = 0.06
#: Slow enough that a policy a step early or late is off by 15 mm, not 25.
TRAVEL_SPEED_MPS = 0.15
#: Going around the block at pushing height, the fingertips' centre keeps this far from the T:
#: their half-diagonal (the most they reach at any angle to the block) plus a margin.
NAV_CLEARANCE_M = float(np.hypot(*FINGER_HALF)) + 0.005
NAV_SAMPLE_M = 0.003  # resolution of the clearance check along a path segment
MAX_BACK_OFF_M = 0.06
MAX_PUSH_M = 0.10
MODEL_STEP_M = 0.002
#: Limit-surface radius (m) and pusher friction of the planning model.
LS_RADIUS_M = 0.06
MODEL_MU = 0.7
YAW_WEIGHT_M = 0.1
CORNER_INSET_M = 0.008  # contact centres stay this far from a convex corner
DIRECTION_OFFSETS = np.radians([-30.0, -15.0, 0.0, 15.0, 30.0])
CONTACT_SPACING_M = 0.01
WORKSPACE = ((0.3, 0.72), (-0.28, 0.28))  # where the block's centroid may be pushed


POLYGON = T_POLYGON


def _concave(i: int) -> bool:
    a, b, c = POLYGON[i - 1], POLYGON[i], POLYGON[(i + 1) % len(POLYGON)]
    (ux, uy), (vx, vy) = b - a, c - b
    return bool(ux * vy - uy * vx < 0)


@dataclass(frozen=True)
class Contact:
    """A place to push: a point on a face (block frame), the face's inward normal, and where
    along the face a sliding contact may go."""

    point: np.ndarray
    normal: np.ndarray
    tangent: np.ndarray
    along: float  # coordinate of ``point`` along ``tangent`` from the face's first vertex
    face_range: tuple[float, float]


def _contacts() -> list[Contact]:
    contacts = []
    n = len(POLYGON)
    half_width = max(FINGER_HALF)
    for i in range(n):
        a, b = POLYGON[i], POLYGON[(i + 1) % n]
        length = float(np.linalg.norm(b - a))
        tangent = (b - a) / length
        normal = np.array([-tangent[1], tangent[0]])  # inward for a CCW polygon
        lo = half_width + CLEARANCE_M if _concave(i) else CORNER_INSET_M
        hi = length - (half_width + CLEARANCE_M if _concave((i + 1) % n) else CORNER_INSET_M)
        if hi < lo:
            continue
        count = max(1, round((hi - lo) / CONTACT_SPACING_M) + 1)
        for along in np.linspace(lo, hi, count) if count > 1 else [(lo + hi) / 2]:
            contacts.append(Contact(a + tangent * along, normal, tangent, float(along), (lo, hi)))
    return contacts


CONTACTS = _contacts()


def _rotate(v: np.ndarray, angle: np.ndarray | float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _perp(v: np.ndarray) -> np.ndarray:
    return np.stack([-v[..., 1], v[..., 0]], axis=-1)


def _wrap(angle: np.ndarray | float) -> np.ndarray:
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def pose_error(pose: np.ndarray, target: np.ndarray = TARGET_POSE) -> np.ndarray:
    """Distance of the centroids plus ``YAW_WEIGHT_M`` per radian of yaw error (m)."""
    pose = np.asarray(pose)
    return np.asarray(
        np.linalg.norm(pose[..., :2] - target[:2], axis=-1)
        + YAW_WEIGHT_M * np.abs(_wrap(pose[..., 2] - target[2]))
    )


def predict_pushes(
    pose: np.ndarray,
    points: np.ndarray,
    normals: np.ndarray,
    tangents: np.ndarray,
    along: np.ndarray,
    ranges: np.ndarray,
    directions: np.ndarray,
    steps: int,
) -> np.ndarray:
    """Block poses (steps, K, 3) while K pushers move ``MODEL_STEP_M`` per step along world
    ``directions`` (K, 2) from contact ``points`` on faces with inward ``normals`` (block frame).

    Quasi-static pushing with an ellipsoidal limit surface of radius ``LS_RADIUS_M``: the block's
    twist is (f, r x f / c^2) for a contact force f at r; the contact sticks while the force
    stays inside the friction cone, and slides along the face at the cone's edge otherwise. A
    pusher that slides off its face or stops pressing on it stops moving the block.
    """
    k = len(points)
    c2 = LS_RADIUS_M**2
    edge = np.arctan(MODEL_MU)
    poses = np.repeat(np.asarray(pose, dtype=np.float64)[None], k, axis=0)
    r_b, s = points.copy(), along.copy()
    alive = np.ones(k, dtype=bool)
    out = np.empty((steps, k, 3))
    for i in range(steps):
        theta = poses[:, 2]
        r = _rotate(r_b, theta)
        n = _rotate(normals, theta)
        press = np.sum(directions * n, axis=-1)
        alive &= (press > 0.1) & (s >= ranges[:, 0] - 1e-9) & (s <= ranges[:, 1] + 1e-9)
        # Sticking: the contact point moves with the pusher.
        omega = _cross(r, directions) / (c2 + np.sum(r * r, axis=-1))
        v = directions - omega[:, None] * _perp(r)
        cos_f = np.sum(v * n, axis=-1)
        sin_f = _cross(n, v)
        stick = (cos_f > 0) & (np.abs(sin_f) <= MODEL_MU * cos_f)
        # Sliding: the force on the cone's edge, scaled to keep up with the pusher's pressing.
        f = _rotate(n, np.where(sin_f >= 0, edge, -edge))
        w_f = _cross(r, f) / c2
        u = f + w_f[:, None] * _perp(r)
        scale = press / np.maximum(np.sum(u * n, axis=-1), 1e-6)
        v = np.where(stick[:, None], v, scale[:, None] * f)
        omega = np.where(stick, omega, scale * w_f)
        slip = np.where(stick[:, None], 0.0, directions - scale[:, None] * u)
        slip_b = _rotate(slip, -theta)
        ds = np.where(alive, MODEL_STEP_M, 0.0)
        s += np.sum(slip_b * tangents, axis=-1) * ds
        r_b += tangents * (np.sum(slip_b * tangents, axis=-1) * ds)[:, None]
        poses[:, :2] += v * ds[:, None]
        poses[:, 2] += omega * ds
        out[i] = poses
    return out


@dataclass(frozen=True)
class Push:
    key: int  # candidate index (contact * len(DIRECTION_OFFSETS) + direction)
    start: np.ndarray  # fingertips' centre before touching (base_link x, y)
    direction: np.ndarray  # unit push direction (base_link x, y)
    distance: float  # from ``start``, gap included
    predicted_error: float


def _finger_footprint(centre: np.ndarray, yaw: float, grow: float, samples: int = 7) -> np.ndarray:
    """``samples`` x ``samples`` points on the fingertips' rectangle (grown by ``grow``) in
    base_link, (N, 2); with ``samples=2``, its corners."""
    hx, hy = FINGER_HALF[0] + grow, FINGER_HALF[1] + grow
    u, v = np.meshgrid(np.linspace(-hx, hx, samples), np.linspace(-hy, hy, samples))
    local = np.stack([u.ravel(), v.ravel()], axis=-1)
    # The tool's x axis points along base_link angle yaw - pi/2 for top_down_pose(yaw).
    return centre + _rotate(local, yaw - np.pi / 2)


def _touching_point(normal: np.ndarray) -> np.ndarray:
    """Where the fingertips (at ``PUSHER_YAW``) touch a face with world inward ``normal``,
    relative to their centre: the corner furthest along it, or the middle of the side when two
    corners tie."""
    corners = _finger_footprint(np.zeros(2), PUSHER_YAW, 0.0, samples=2)
    reach = corners @ normal
    return np.asarray(corners[reach >= reach.max() - 1e-9].mean(axis=0))


def plan_push(
    pose: np.ndarray, banned: set[int], rng: np.random.Generator, pick: int
) -> Push | None:
    """The push predicted to reduce :func:`pose_error` most (or, with ``pick`` > 0, one chosen
    at random among the best ``pick + 1``), skipping ``banned`` candidates."""
    contacts = CONTACTS
    m = len(DIRECTION_OFFSETS)
    points = np.repeat(np.stack([c.point for c in contacts]), m, axis=0)
    normals = np.repeat(np.stack([c.normal for c in contacts]), m, axis=0)
    tangents = np.repeat(np.stack([c.tangent for c in contacts]), m, axis=0)
    along = np.repeat(np.array([c.along for c in contacts]), m)
    ranges = np.repeat(np.array([c.face_range for c in contacts]), m, axis=0)
    offsets = np.tile(DIRECTION_OFFSETS, len(contacts))
    directions = _rotate(_rotate(normals, offsets), pose[2])
    steps = round(MAX_PUSH_M / MODEL_STEP_M)
    predicted = predict_pushes(pose, points, normals, tangents, along, ranges, directions, steps)
    errors = pose_error(predicted)  # (steps, K)
    (x0, x1), (y0, y1) = WORKSPACE
    outside = (
        (predicted[..., 0] < x0)
        | (predicted[..., 0] > x1)
        | (predicted[..., 1] < y0)
        | (predicted[..., 1] > y1)
    )
    errors = np.where(np.maximum.accumulate(outside, axis=0), np.inf, errors)
    best_step = np.argmin(errors, axis=0)
    best_error = errors[best_step, np.arange(len(points))]
    now = float(pose_error(pose))
    order = np.argsort(best_error, kind="stable")
    feasible: list[Push] = []
    for key in order:
        if best_error[key] >= now - 1e-4 or len(feasible) > pick:
            break
        if int(key) in banned:
            continue
        contact = contacts[key // m]
        normal_w = _rotate(contact.normal, pose[2])
        direction = directions[key]
        touch = from_frame(contact.point, pose) - _touching_point(normal_w)
        approach = GAP_M / float(np.dot(direction, normal_w))
        start = touch - direction * approach
        footprint = to_frame(_finger_footprint(start, PUSHER_YAW, CLEARANCE_M - 1e-3), pose)
        if inside_t(footprint).any():
            continue
        feasible.append(
            Push(
                key=int(key),
                start=start,
                direction=direction,
                distance=approach + (best_step[key] + 1) * MODEL_STEP_M,
                predicted_error=float(best_error[key]),
            )
        )
    if not feasible:
        return None
    return feasible[int(rng.integers(len(feasible)))] if pick else feasible[0]


def _clear(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Whether fingertips centred at world ``points`` (..., 2) keep ``NAV_CLEARANCE_M`` from
    the block at ``pose``."""
    return ~inside_t(to_frame(points, pose), margin=NAV_CLEARANCE_M)


def _segment_clear(a: np.ndarray, b: np.ndarray, pose: np.ndarray) -> bool:
    count = max(2, int(np.ceil(np.linalg.norm(b - a) / NAV_SAMPLE_M)) + 1)
    points = a + (b - a) * np.linspace(0.0, 1.0, count)[:, None]
    return bool(_clear(points, pose).all())


def plan_path(start: np.ndarray, goal: np.ndarray, pose: np.ndarray) -> list[np.ndarray] | None:
    """Waypoints (after ``start``, ending at ``goal``) of the shortest path for the fingertips'
    centre around the block at ``pose`` that keeps ``NAV_CLEARANCE_M`` from it, or None when
    ``start`` or ``goal`` is not clear. Dijkstra over the visibility graph of the two ends and
    the corners of the T grown a little more than the clearance."""
    start, goal = np.asarray(start, np.float64), np.asarray(goal, np.float64)
    if not (_clear(start, pose) and _clear(goal, pose)):
        return None
    nodes = [start, goal, *from_frame(t_polygon(NAV_CLEARANCE_M + 0.002), pose)]
    n = len(nodes)
    cost = np.full(n, np.inf)
    cost[0] = 0.0
    previous = np.full(n, -1)
    done = np.zeros(n, dtype=bool)
    while not done[1]:
        i = int(np.argmin(np.where(done, np.inf, cost)))
        if not np.isfinite(cost[i]):
            return None
        done[i] = True
        for j in range(n):
            if done[j]:
                continue
            step = float(np.linalg.norm(nodes[j] - nodes[i]))
            if cost[i] + step < cost[j] and _segment_clear(nodes[i], nodes[j], pose):
                cost[j], previous[j] = cost[i] + step, i
    path = [1]
    while path[-1] != 0:
        path.append(int(previous[path[-1]]))
    return [nodes[k] for k in reversed(path[:-1])]


def _at(xy: np.ndarray, z: float) -> np.ndarray:
    return top_down_pose(np.array([xy[0], xy[1], z]), PUSHER_YAW)


def _go_around(env: SimEnv, path: list[np.ndarray]) -> Iterator[np.ndarray]:
    """Along ``path`` at pushing height."""
    for point in path:
        yield from move_to(env, _at(point, PUSH_Z), CLOSED, TRAVEL_SPEED_MPS)


def _execute(env: SimEnv, push: Push) -> Iterator[np.ndarray]:
    """Get to the push's start (around the block at pushing height, or over it), push along
    the line, stop early once the error rises, back off until clear of the block."""
    here = commanded_pose(env)
    down = here[2, 3] < TRAVEL_Z - 1e-3
    path = plan_path(here[:2, 3], push.start, block_pose(env)) if down else None
    if path is not None:
        yield from _go_around(env, path)
    else:
        if down:
            yield from move_to(env, _at(here[:2, 3], TRAVEL_Z), CLOSED, TRAVEL_SPEED_MPS)
        yield from move_to(env, _at(push.start, TRAVEL_Z), CLOSED, TRAVEL_SPEED_MPS)
        yield from move_to(env, _at(push.start, PUSH_Z), CLOSED, TRAVEL_SPEED_MPS)
    step = PUSH_SPEED_MPS * env.policy_period_s
    count = max(1, int(np.ceil(push.distance / step)))
    best = float(pose_error(block_pose(env)))
    for i in range(1, count + 1):
        xy = push.start + push.direction * min(i * step, push.distance)
        yield pose_to_ee_action(_at(xy, PUSH_Z), CLOSED)
        error = float(pose_error(block_pose(env)))
        best = min(best, error)
        if error > best + 0.002:
            break
    end = commanded_pose(env)[:2, 3]
    pose = block_pose(env)
    back = 0.01
    while back < MAX_BACK_OFF_M and not _clear(end - push.direction * back, pose):
        back += NAV_SAMPLE_M
    yield from move_to(env, _at(end - push.direction * back, PUSH_Z), CLOSED, PUSH_SPEED_MPS)


@register_expert("push_t")
def push_t_expert(env: SimEnv, rng: np.random.Generator, retries: int = 5) -> Iterator[np.ndarray]:
    yield from hold(env, 0.2, CLOSED)
    banned: set[int] = set()
    failures = 0
    while failures <= retries:
        pose = block_pose(env)
        if coverage(pose) >= SUCCESS_COVERAGE:
            break
        push = plan_push(pose, banned, rng, min(failures, 2))
        if push is None:
            if not banned:
                break
            banned.clear()  # nothing else left: allow the banned pushes again
            failures += 1
            continue
        before = float(pose_error(pose))
        yield from _execute(env, push)
        after = float(pose_error(block_pose(env)))
        if after < before - 5e-4:
            banned.clear()
            failures = 0
        else:
            banned.add(push.key)
            failures += 1
    here = commanded_pose(env)
    yield from move_to(env, _at(here[:2, 3], TRAVEL_Z), CLOSED)
    yield from hold(env, 0.5, CLOSED)
