"""``push_t``: push a T-shaped block onto a fixed target pose with the closed gripper, as in
Diffusion Policy's real-UR5 PushT.

The block is a T (top bar 16 x 4 cm, stem 4 x 12 cm, 3 cm thick) on a free joint; a flat green T
on the table marks the target. Poses are (x, y, yaw) in ``base_link`` of the T's centroid, with
the bar along the block's local x axis and the stem along its local -y axis.

Coverage is the area of (block footprint intersected with target footprint) over the target's
area, computed in 2D from the two poses by sampling the target T at the centres of a 0.5 mm grid
(44,800 cells of equal area) and counting those inside the block's T. Success: coverage >= 0.95;
``score`` is the coverage.

Physics, chosen so quasi-static pushing is predictable: the block weighs 100 g (spread by area
over bar and stem, so its centre of mass is the centroid), block-table friction is 0.6 (the
table's; MuJoCo takes the larger of two geoms' coefficients) and block-finger friction 1.0 (the
fingers'), so a push sticks to the block unless it is more than ~45 degrees off the face normal.
A 100 g block at pushing speeds (<= 0.1 m/s) slides less than 1 mm after the pusher stops.

Fiducial markers (``EnvOptions.block_marker``, :func:`marker_scene`): four ArUco markers on
white plates on the block's top face, visual only (they collide with nothing and weigh
nothing), for the marker-based state estimate a real cell uses (:func:`marker_model`,
:mod:`calibration.markers`).

Initial pose (from the seed): centroid x in [0.36, 0.64], y in [-0.18, 0.18] (a 28 x 36 cm
area around the target, all of it and every push around it within the arm's top-down reach), yaw
any angle (offset from the target's yaw uniform in [-pi, pi)); poses whose coverage is already
>= ``MAX_INITIAL_COVERAGE`` (0.5) are drawn again, so the block never starts near the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim_bridge.tasks import register_task
from sim_bridge.tasks.base import Task
from sim_bridge.tcp import joints_for_tcp, top_down_pose

if TYPE_CHECKING:
    from calibration.markers import MarkerSpec, ObjectModel
    from sim_bridge.env import SimEnv

BAR_SIZE = (0.16, 0.04)  # (x, y) extent in the block frame
STEM_SIZE = (0.04, 0.12)
THICKNESS = 0.03
MASS_KG = 0.1
#: y of the centroid below the bar's centre line (the block frame's origin is the centroid).
_BAR_AREA = BAR_SIZE[0] * BAR_SIZE[1]
_STEM_AREA = STEM_SIZE[0] * STEM_SIZE[1]
_CENTROID_Y = -(BAR_SIZE[1] / 2 + STEM_SIZE[1] / 2) * _STEM_AREA / (_BAR_AREA + _STEM_AREA)
#: The T as two rectangles (centre x, centre y, half x, half y) in the block frame.
T_RECTS = np.array(
    [
        [0.0, -_CENTROID_Y, BAR_SIZE[0] / 2, BAR_SIZE[1] / 2],
        [0.0, -_CENTROID_Y - (BAR_SIZE[1] + STEM_SIZE[1]) / 2, STEM_SIZE[0] / 2, STEM_SIZE[1] / 2],
    ]
)
#: Target (x, y, yaw) of the centroid in base_link: in front of the robot, turned 45 degrees.
TARGET_POSE = np.array([0.5, 0.0, np.pi / 4])
BLOCK_REGION = ((0.36, 0.64), (-0.18, 0.18))
MAX_YAW_OFFSET = np.pi
MAX_INITIAL_COVERAGE = 0.5
SUCCESS_COVERAGE = 0.95
#: Where the TCP starts: above the table, clear of the block, pointing down.
START_TCP = np.array([0.3, 0.0, 0.08])
GRID_M = 0.0005
#: The block's markers: ArUco DICT_4X4_50 ids 0-3, each a 32 mm black square on a 40 mm white
#: plate (a 4 mm quiet zone) that spans the block's 40 mm width: on the bar's left end, centre
#: and right end and on the stem's end, the drawing's top toward the block's +y (away from the
#: stem). Four, because the pusher hides whichever part of the top it pushes next to from the
#: front camera, and the arm's shadow falls across others. The plates are 1 mm thick (printed
#: cards), so the markers' faces are 1 mm above the block's top.
MARKER_IDS = (0, 1, 2, 3)
MARKER_SIZE_M = 0.032
MARKER_QUIET_FRACTION = 0.125
MARKER_PLATE_THICKNESS_M = 0.001


def _grid_points() -> np.ndarray:
    """Centres of the GRID_M cells covering the T, in the block frame, (N, 2)."""
    points = []
    for cx, cy, hx, hy in T_RECTS:
        nx, ny = round(2 * hx / GRID_M), round(2 * hy / GRID_M)
        xs = cx - hx + GRID_M * (np.arange(nx) + 0.5)
        ys = cy - hy + GRID_M * (np.arange(ny) + 0.5)
        points.append(np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2))
    return np.concatenate(points)


T_GRID = _grid_points()
_GRID_X, _GRID_Y = T_GRID[:, 0].copy(), T_GRID[:, 1].copy()
#: Farthest point of the T from its centroid: poses further apart than twice this never overlap.
_T_RADIUS = float(max(np.hypot(abs(cx) + hx, abs(cy) + hy) for cx, cy, hx, hy in T_RECTS))


def t_polygon(grow: float = 0.0) -> np.ndarray:
    """The T's 8 corners in the block frame, counter-clockwise; with ``grow``, the corners of
    the T grown by that much on every side (the union of its two rectangles, each grown)."""
    (_, by, bhx, bhy), (_, sy, shx, shy) = T_RECTS
    top, under, bottom = by + bhy + grow, by - bhy - grow, sy - shy - grow
    bar, stem = bhx + grow, shx + grow
    return np.array(
        [
            [-stem, bottom],
            [stem, bottom],
            [stem, under],
            [bar, under],
            [bar, top],
            [-bar, top],
            [-bar, under],
            [-stem, under],
        ]
    )


T_POLYGON = t_polygon()


def to_frame(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """World (base_link) 2D points -> the frame of ``pose`` (x, y, yaw)."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    d = np.asarray(points) - pose[:2]
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


def from_frame(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Points in the frame of ``pose`` -> world (base_link) 2D points."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    p = np.asarray(points)
    return np.stack(
        [c * p[..., 0] - s * p[..., 1] + pose[0], s * p[..., 0] + c * p[..., 1] + pose[1]], axis=-1
    )


def inside_t(points: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Whether block-frame points lie in the T (grown by ``margin``), boolean (...)."""
    p = np.asarray(points)[..., None, :]
    rects = T_RECTS
    within = np.abs(p - rects[:, :2]) <= rects[:, 2:] + margin
    return np.any(np.all(within, axis=-1), axis=-1)


def coverage(block_pose: np.ndarray, target_pose: np.ndarray = TARGET_POSE) -> float:
    """Area of (block T intersected with target T) / area of the target T, in [0, 1]."""
    block = np.asarray(block_pose, dtype=np.float64)
    target = np.asarray(target_pose, dtype=np.float64)
    offset = target[:2] - block[:2]
    if np.hypot(*offset) > 2 * _T_RADIUS:
        return 0.0
    # The target's grid cells in the block frame: rotate by the relative yaw, then shift.
    c, s = np.cos(target[2] - block[2]), np.sin(target[2] - block[2])
    cb, sb = np.cos(block[2]), np.sin(block[2])
    ox, oy = cb * offset[0] + sb * offset[1], -sb * offset[0] + cb * offset[1]
    x = c * _GRID_X - s * _GRID_Y + ox
    y = s * _GRID_X + c * _GRID_Y + oy
    (bx, by, bhx, bhy), (sx, sy, shx, shy) = T_RECTS
    inside = (np.abs(x - bx) <= bhx) & (np.abs(y - by) <= bhy)
    inside |= (np.abs(x - sx) <= shx) & (np.abs(y - sy) <= shy)
    return float(np.count_nonzero(inside)) / len(T_GRID)


def marker_spec(marker_id: int) -> MarkerSpec:
    """One of the block's markers (see :data:`MARKER_IDS`): what to print, and what to
    detect."""
    from calibration.markers import MarkerSpec

    return MarkerSpec(
        dictionary="DICT_4X4_50",
        marker_id=marker_id,
        size_m=MARKER_SIZE_M,
        quiet_fraction=MARKER_QUIET_FRACTION,
    )


def block_from_markers() -> dict[int, np.ndarray]:
    """Each marker's frame (:mod:`calibration.markers`: centred on the black square, x to the
    drawing's right, y up it, z out of its face) in the block frame of :func:`block_pose`
    (origin at the centroid, halfway up the block), by id: on top of its plate, centred across
    the bar or the stem, its plate's edge on the end of the bar or stem."""
    (_, bar_y, bar_hx, _), (_, stem_y, _, stem_hy) = T_RECTS
    inset = BAR_SIZE[1] / 2  # a plate as wide as the bar, flush with its end
    centres = (
        (-bar_hx + inset, bar_y),
        (0.0, bar_y),
        (bar_hx - inset, bar_y),
        (0.0, stem_y - stem_hy + inset),
    )
    poses = {}
    for marker_id, (x, y) in zip(MARKER_IDS, centres, strict=True):
        pose = np.eye(4)
        pose[:3, 3] = (x, y, THICKNESS / 2 + MARKER_PLATE_THICKNESS_M)
        poses[marker_id] = pose
    return poses


def marker_model() -> ObjectModel:
    """The block as :func:`calibration.markers.object_state` sees it: its markers, where they
    are on it and the keypoints the policy observes (:data:`T_POLYGON`, whose base_link
    positions are the ``block_keypoints`` observation)."""
    from calibration.markers import ObjectModel

    placed = [(marker_spec(i), pose) for i, pose in block_from_markers().items()]
    return ObjectModel.from_arrays(placed, T_POLYGON, THICKNESS / 2)


@dataclass(frozen=True)
class MarkerScene:
    """The push_t scene with the marker on the block: the task's ``scene_xml`` and
    ``assets_xml`` in its place, and the texture file (PNG bytes, by name) the XML names."""

    scene_xml: str
    assets_xml: str
    assets: dict[str, bytes]


def marker_scene(pixels: int = 400) -> MarkerScene:
    """The scene with the block's markers (:func:`block_from_markers`) drawn at ``pixels`` a
    black square, each on a plate on the block. A plate is a box geom of the block with no mass
    and no contacts, so the block's physics are the same with them or without them; its top
    face shows the texture as :mod:`sim_bridge.boards` describes (the drawing's top at +y),
    which puts the marker frame's axes along the block's."""
    geoms, assets, files = [], [], {}
    half_z = MARKER_PLATE_THICKNESS_M / 2
    for marker_id, pose in block_from_markers().items():
        spec = marker_spec(marker_id)
        plate = spec.plate_size_m / 2
        centre = pose[:3, 3] - (0.0, 0.0, half_z)
        name = f"t_block_marker_{marker_id}"
        geoms.append(
            f'<geom name="{name}" type="box" pos="{" ".join(f"{v:.10g}" for v in centre)}" '
            f'size="{plate:.10g} {plate:.10g} {half_z:.10g}" material="{name}" '
            'contype="0" conaffinity="0" mass="0"/>'
        )
        assets.append(
            f'<texture name="{name}" type="2d" file="{name}.png"/>'
            f'<material name="{name}" texture="{name}" specular="0" shininess="0"/>'
        )
        files[f"{name}.png"] = spec.png(pixels)
    return MarkerScene(
        scene_xml=_scene_xml("".join(geoms)), assets_xml="".join(assets), assets=files
    )


def block_pose(env: SimEnv) -> np.ndarray:
    """(x, y, yaw) of the block's centroid in base_link, float64."""
    pose = env.body_pose("t_block")
    return np.array([pose[0, 3], pose[1, 3], np.arctan2(pose[1, 0], pose[0, 0])])


def _boxes(prefix: str, half_z: float, z: float, extra: str) -> str:
    return "".join(
        f'<geom name="{prefix}_{part}" type="box" pos="{cx:.10g} {cy:.10g} {z:.10g}" '
        f'size="{hx:.10g} {hy:.10g} {half_z:.10g}" {extra.format(mass=MASS_KG * w)}/>'
        for part, (cx, cy, hx, hy), w in zip(
            ("bar", "stem"),
            T_RECTS,
            (_BAR_AREA / (_BAR_AREA + _STEM_AREA), _STEM_AREA / (_BAR_AREA + _STEM_AREA)),
            strict=True,
        )
    )


def _scene_xml(block_extra: str = "") -> str:
    """The target and the block, ``block_extra`` (e.g. the marker's geom) added to the block."""
    block = _boxes(
        "t_block",
        THICKNESS / 2,
        0.0,
        'mass="{mass:.10g}" friction="0.6 0.005 0.0001" rgba="0.45 0.5 0.75 1"',
    )
    target = _boxes("t_target", 0.0005, 0.0006, 'contype="0" conaffinity="0" rgba="0.2 0.75 0.3 1"')
    return (
        f'<body name="t_target" pos="{TARGET_POSE[0]} {TARGET_POSE[1]} 0">{target}</body>'
        f'<body name="t_block" pos="0.5 0.3 {THICKNESS / 2}"><freejoint name="t_block"/>'
        f"{block}{block_extra}</body>"
    )


@register_task
class PushT(Task):
    name = "push_t"
    max_steps = 600  # 60 s at 10 Hz, as long as Diffusion Policy's real PushT episodes

    def scene_xml(self) -> str:
        return _scene_xml()

    def initial_joints(self, env: SimEnv, rng: np.random.Generator) -> np.ndarray:
        from sim_bridge.cell import HOME_Q

        return joints_for_tcp(top_down_pose(START_TCP, 0.0), HOME_Q)

    def reset(self, env: SimEnv, rng: np.random.Generator) -> None:
        (x0, x1), (y0, y1) = BLOCK_REGION
        while True:
            pose = np.array(
                [
                    rng.uniform(x0, x1),
                    rng.uniform(y0, y1),
                    TARGET_POSE[2] + rng.uniform(-MAX_YAW_OFFSET, MAX_YAW_OFFSET),
                ]
            )
            if coverage(pose) < MAX_INITIAL_COVERAGE:
                break
        env.place_free_body("t_block", np.array([pose[0], pose[1], THICKNESS / 2]), pose[2])
        env.place_fixed_body("t_target", TARGET_POSE[:2], TARGET_POSE[2])

    def observation(self, env: SimEnv) -> dict[str, np.ndarray]:
        pose = block_pose(env)
        return {
            "block_pose": pose.astype(np.float32),
            # The corners in base_link: continuous in the block's yaw (no wrap at +-pi), like
            # the keypoints of Diffusion Policy's low-dim PushT.
            "block_keypoints": from_frame(T_POLYGON, pose).reshape(-1).astype(np.float32),
            "target_pose": TARGET_POSE.astype(np.float32),
        }

    def success(self, env: SimEnv) -> bool:
        return self.score(env) >= SUCCESS_COVERAGE

    def score(self, env: SimEnv) -> float:
        return coverage(block_pose(env))
