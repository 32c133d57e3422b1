"""Hand-eye solvers side by side on the same simulated captures, in one run.

    python -m bench.handeye [--trials 20] [--seed 0] [--backend auto|opencv|numpy]

For each mode (eye_in_hand: camera on the tool, board on the table; eye_to_base: camera fixed
in front of the robot, board on the tool) and each trial, one data set of robot poses is drawn
and every method (tsai, park, horaud, andreff, daniilidis, shah, li) solves the SAME captures
(no outlier rejection: the solvers alone; two more rows show park and shah with solve()'s
outlier rejection). Printed, per mode:

1. the error of X (translation mm, rotation deg; median and p90 over trials) at 20 poses:
   without noise; with 0.5 px pixel noise (the board's 10x7 corners, 25 mm apart, projected
   through a 640x480 pinhole camera with fx = fy = 615, Gaussian noise added, the board pose
   re-estimated with ``cv2.solvePnP`` (IPPE), so the board-pose noise has PnP's shape: mostly
   depth and tilt, heavy-tailed for near-frontal views); with robot pose noise (0.1 mm per
   axis on the flange position, 0.01 deg per axis on its orientation); with both;
2. the same against the number of poses (5, 10, 15, 20, 40), with both noises, median / p90 /
   max (the max shows a solver's bad draws: practitioners report Tsai unstable between 10 and
   20 poses, which these rows measure).

The views are drawn as a calibration would be: the board fully in the image at 0.25-0.45 m
(eye_in_hand) or 0.4-0.65 m (eye_to_base), tilted up to 30 deg from facing the camera and
rolled up to ±60 deg; the robot pose follows from the ground-truth chain. Every condition and
pose count uses the same poses per trial (the first k of them for k poses). The solvers are the
installed OpenCV's where it binds them, else calibration.handeye's numpy ones (the first line
says which). No timed assertions; a default run takes about 40 s on 2 cores.
:func:`simulate` is also the tests' generator.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from calibration.handeye import (
    METHODS,
    Backend,
    Capture,
    HandEyeError,
    Method,
    Mode,
    resolve_backend,
    solve,
)

#: The simulated camera (colour, 640x480) and board (OpenCV frame: z into the board).
WIDTH, HEIGHT = 640, 480
CAMERA_MATRIX = np.array([[615.0, 0.0, 320.0], [0.0, 615.0, 240.0], [0.0, 0.0, 1.0]])
BOARD_CORNERS = np.array(
    [[0.025 * c, 0.025 * r, 0.0] for r in range(7) for c in range(10)], dtype=np.float64
)
BOARD_CENTRE = BOARD_CORNERS.mean(axis=0)
POSE_COUNTS = (5, 10, 15, 20, 40)
#: The rows: every solver alone, then park and shah with solve()'s outlier rejection.
ROWS: tuple[tuple[str, Method, bool], ...] = (
    *((m, m, False) for m in METHODS),
    ("park, rejecting", "park", True),
    ("shah, rejecting", "shah", True),
)


@dataclass(frozen=True)
class Scene:
    """A ground truth: ``x_true`` (``tool0_from_camera`` or ``base_from_camera``) and
    ``board_true`` (``base_from_board`` or ``tool0_from_board``), and where views are drawn."""

    mode: Mode
    x_true: np.ndarray
    board_true: np.ndarray
    distance_m: tuple[float, float]


def rotation(axis: str | np.ndarray, degrees: float) -> np.ndarray:
    """A 4x4 rotation about ``axis`` ("x", "y", "z" or a 3-vector)."""
    k = np.eye(3)["xyz".index(axis)] if isinstance(axis, str) else np.asarray(axis, float)
    k = k / np.linalg.norm(k)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    angle = math.radians(degrees)
    pose = np.eye(4)
    pose[:3, :3] = np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross
    return pose


def translation(x: float, y: float, z: float) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, 3] = (x, y, z)
    return pose


def scene(mode: Mode) -> Scene:
    """A realistic cell. eye_in_hand: a wrist camera 8 cm off the flange axis, tilted 12 deg
    toward it; the board flat on the table 0.45 m in front of the robot, facing up.
    eye_to_base: a camera at (1.0, 0, 0.7) m looking down at the workspace; the board on a
    bracket on the flange, facing the camera when the tool points down."""
    if mode == "eye_in_hand":
        x = translation(0.03, -0.08, 0.045) @ rotation("z", -90) @ rotation("x", 8)
        board = translation(0.4, 0.05, 0.0) @ rotation("z", 20) @ rotation("x", 180)
        return Scene(mode, x, board, (0.25, 0.45))
    x = _look_at(np.array([0.85, 0.0, 0.7]), np.array([0.3, 0.0, 0.2]))
    # The board faces the camera (nominal view: board axes = camera axes) when the tool points
    # down (tool0 z along -z of base_link) with its x along base_link x.
    tool_down = rotation("x", 180)
    board = _inv(tool_down) @ x
    board[:3, 3] = (0.02, 0.07, 0.05)
    return Scene(mode, x, board, (0.4, 0.65))


def simulate(
    scene: Scene,
    n: int,
    rng: np.random.Generator,
    *,
    pixel_noise_px: float = 0.0,
    robot_noise: tuple[float, float] = (0.0, 0.0),
    board_noise: tuple[float, float] = (0.0, 0.0),
    max_tilt_deg: float = 30.0,
    max_roll_deg: float = 60.0,
) -> list[Capture]:
    """``n`` captures of ``scene``: exact unless noise is asked for.

    ``pixel_noise_px``: the corners' Gaussian noise; the board pose is then re-estimated with
    PnP (IPPE). ``robot_noise`` / ``board_noise``: (mm, deg) Gaussian noise per axis on the
    reported flange pose / on the board pose directly (a stand-in for PnP's noise without
    images), each applied in the pose's own frame.
    """
    # Every view first, then the noise: one seed gives the same poses with or without noise,
    # and the first k of n poses are the k-pose data set.
    views = [_sample_view(scene, rng, max_tilt_deg, max_roll_deg) for _ in range(n)]
    captures = []
    for camera_from_board in views:
        # A_i @ X @ B_i = C  =>  A_i = C @ inv(B_i) @ inv(X)
        a = scene.board_true @ _inv(camera_from_board) @ _inv(scene.x_true)
        base_from_tool0 = a if scene.mode == "eye_in_hand" else _inv(a)
        measured = camera_from_board
        if pixel_noise_px > 0:
            measured = _pnp(camera_from_board, pixel_noise_px, rng)
        measured = _perturb(measured, board_noise, rng)
        captures.append(Capture(_perturb(base_from_tool0, robot_noise, rng), measured))
    return captures


def errors(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(translation mm, rotation deg) between two poses."""
    translation_mm = float(np.linalg.norm(estimate[:3, 3] - truth[:3, 3]) * 1e3)
    cosine = (np.trace(estimate[:3, :3].T @ truth[:3, :3]) - 1) / 2
    sine = np.linalg.norm(_vee(estimate[:3, :3].T @ truth[:3, :3]))
    return translation_mm, float(np.degrees(np.arctan2(sine, cosine)))


def _vee(r: np.ndarray) -> np.ndarray:
    return 0.5 * np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """An optical frame (x right, y down, z forward) at ``eye`` looking at ``target``."""
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(np.array([0.0, 0.0, 1.0]), z)
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, :3] = np.column_stack([x, np.cross(z, x), z])
    pose[:3, 3] = eye
    return pose


def _inv(pose: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = pose[:3, :3].T
    out[:3, 3] = -pose[:3, :3].T @ pose[:3, 3]
    return out


def _project(camera_from_board: np.ndarray) -> np.ndarray:
    points = BOARD_CORNERS @ camera_from_board[:3, :3].T + camera_from_board[:3, 3]
    uvw = points @ CAMERA_MATRIX.T
    return uvw[:, :2] / uvw[:, 2:]


def _sample_view(scene: Scene, rng: np.random.Generator, tilt: float, roll: float) -> np.ndarray:
    """``camera_from_board``: the board fully in the image, facing the camera within ``tilt``
    degrees, rolled within ±``roll`` about its normal."""
    margin = 15
    while True:
        depth = rng.uniform(*scene.distance_m)
        pixel = np.array([rng.uniform(200, 440), rng.uniform(150, 330), 1.0])
        centre = depth * np.linalg.solve(CAMERA_MATRIX, pixel)
        azimuth = rng.uniform(0, 360)
        axis = np.array([math.cos(math.radians(azimuth)), math.sin(math.radians(azimuth)), 0])
        view = rotation(axis, tilt * math.sqrt(rng.uniform())) @ rotation(
            "z", rng.uniform(-roll, roll)
        )
        view[:3, 3] = centre - view[:3, :3] @ BOARD_CENTRE
        uv = _project(view)
        inside = (uv[:, 0] > margin) & (uv[:, 0] < WIDTH - margin)
        inside &= (uv[:, 1] > margin) & (uv[:, 1] < HEIGHT - margin)
        if inside.all():
            return view


def _pnp(camera_from_board: np.ndarray, sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    corners = _project(camera_from_board) + rng.normal(0.0, sigma_px, (len(BOARD_CORNERS), 2))
    ok, rvec, tvec = cv2.solvePnP(
        BOARD_CORNERS, corners, CAMERA_MATRIX, None, flags=cv2.SOLVEPNP_IPPE
    )
    if not ok:
        raise RuntimeError("solvePnP failed on a simulated view")
    pose = np.eye(4)
    pose[:3, :3] = cv2.Rodrigues(rvec)[0]
    pose[:3, 3] = tvec.ravel()
    return pose


def _perturb(pose: np.ndarray, noise: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    sigma_mm, sigma_deg = noise
    if sigma_mm == 0 and sigma_deg == 0:
        return pose
    rotvec = rng.normal(0.0, sigma_deg, 3)
    angle = float(np.linalg.norm(rotvec))
    delta = rotation(rotvec, angle) if angle > 0 else np.eye(4)
    delta[:3, 3] = rng.normal(0.0, sigma_mm * 1e-3, 3)
    return pose @ delta


# --- the benchmark --------------------------------------------------------------------------

CONDITIONS: dict[str, dict[str, object]] = {
    "no noise": {},
    "pixels 0.5 px": {"pixel_noise_px": 0.5},
    "robot 0.1 mm/0.01°": {"robot_noise": (0.1, 0.01)},
    "both": {"pixel_noise_px": 0.5, "robot_noise": (0.1, 0.01)},
}


def _trials(
    mode: Mode, n: int, seeds: np.ndarray, backend: Backend, **noise: object
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per method: (trials, 2) errors (mm, deg) on the same data sets (one per seed: the same
    poses under every noise condition and pose count); failures per method."""
    truth = scene(mode)
    results: dict[str, list[tuple[float, float]]] = {row: [] for row, _, _ in ROWS}
    failed: dict[str, int] = {row: 0 for row, _, _ in ROWS}
    for seed in seeds:
        captures = simulate(truth, n, np.random.default_rng(seed), **noise)  # type: ignore[arg-type]
        for row, method, reject in ROWS:
            try:
                result = solve(captures, mode, method, reject_outliers=reject, backend=backend)
            except (HandEyeError, np.linalg.LinAlgError):
                failed[row] += 1
                results[row].append((math.inf, math.inf))
                continue
            results[row].append(errors(result.transform, truth.x_true))
    return {m: np.array(v) for m, v in results.items()}, failed


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "fail"
    if value < 0.005:
        return f"{value:.0e}"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _stats(values: np.ndarray, with_max: bool = False) -> str:
    quantiles = (0.5, 0.9, 1.0) if with_max else (0.5, 0.9)
    return " / ".join(_fmt(float(v)) for v in np.quantile(values, quantiles))


def run(trials: int, seed: int, backend: Backend) -> list[Table]:
    tables = []
    for mode in ("eye_in_hand", "eye_to_base"):
        seeds = np.random.default_rng([seed, int(mode == "eye_to_base")]).integers(
            2**32, size=trials
        )
        x_angle = errors(scene(mode).x_true, np.eye(4))[1]
        by_condition = {
            name: _trials(mode, 20, seeds, backend, **noise) for name, noise in CONDITIONS.items()
        }
        table = Table(
            title=f"{mode}: error of X at 20 poses, {trials} trials "
            "(median / p90; translation mm, rotation deg)"
        )
        table.add_column("method")
        for name in CONDITIONS:
            table.add_column(f"{name}\nmm", justify="right")
            table.add_column("\ndeg", justify="right")
        for method, _, _ in ROWS:
            cells = []
            for errs, _ in by_condition.values():
                cells += [_stats(errs[method][:, 0]), _stats(errs[method][:, 1])]
            table.add_row(method, *cells)
        failures = {
            f"{m} ({name})": f[m] for name, (_, f) in by_condition.items() for m in f if f[m]
        }
        table.caption = (
            f"X rotates {x_angle:.0f} deg (tsai's parametrisation, tan(angle/2), degrades toward "
            "180); failed solves: "
            + (", ".join(f"{k}: {v}" for k, v in failures.items()) if failures else "none")
        )
        tables.append(table)

        by_count = {n: _trials(mode, n, seeds, backend, **CONDITIONS["both"]) for n in POSE_COUNTS}
        for unit, column in (("mm", 0), ("deg", 1)):
            table = Table(
                title=f"{mode}: error of X ({'translation mm' if column == 0 else 'rotation deg'})"
                f" against the number of poses, pixel + robot noise, {trials} trials "
                "(median / p90 / max)"
            )
            table.add_column("method")
            for n in POSE_COUNTS:
                table.add_column(f"{n} poses", justify="right")
            for method, _, _ in ROWS:
                table.add_row(
                    method,
                    *(_stats(by_count[n][0][method][:, column], True) for n in POSE_COUNTS),
                )
            if column == 0:
                worst = {
                    m: max(float(by_count[n][0][m][:, 0].max()) for n in (10, 15, 20))
                    for m in METHODS
                }
                table.caption = "worst translation error at 10-20 poses: " + ", ".join(
                    f"{m} {_fmt(v)} {unit}" for m, v in worst.items()
                )
            tables.append(table)
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("auto", "opencv", "numpy"), default="auto")
    args = parser.parse_args()
    console = Console(width=max(Console().width, 150))
    started = time.perf_counter()
    backends = {m: resolve_backend(m, args.backend) for m in METHODS}
    console.print(
        f"hand-eye solvers, seed {args.seed}: "
        + ", ".join(
            f"{b}: {' '.join(m for m in METHODS if backends[m] == b)}"
            for b in ("opencv", "numpy")
            if b in backends.values()
        )
    )
    for table in run(args.trials, args.seed, args.backend):
        console.print(table)
    console.print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
