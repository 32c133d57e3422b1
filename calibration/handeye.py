"""Hand-eye calibration: where the camera is, from robot poses and board poses.

Each capture pairs the flange pose the robot reports (``base_from_tool0``, forward kinematics)
with the board pose the camera measured (``camera_from_board``, PnP on the detected corners;
``camera`` is the optical frame: x right, y down, z forward). Two set-ups:

``eye_in_hand``
    The camera rides on the tool; the board lies still in the cell. Unknown:
    ``tool0_from_camera`` (X). Constant: ``base_from_board``, and for every capture
    ``base_from_board = base_from_tool0 @ tool0_from_camera @ camera_from_board``.
``eye_to_base``
    The camera is fixed; the board rides on the tool. Unknown: ``base_from_camera`` (X).
    Constant: ``tool0_from_board``, and for every capture
    ``tool0_from_board = tool0_from_base @ base_from_camera @ camera_from_board``.

Both are ``A_i @ X @ B_i = C`` with ``A_i`` the robot pose OpenCV calls ``gripper2base``
(``base_from_tool0`` for eye_in_hand; its inverse ``tool0_from_base`` for eye_to_base, as
OpenCV's docs say), ``B_i = camera_from_board`` and ``C`` the board's constant pose. Between two
captures this gives ``A_ij @ X = X @ B_ij`` with ``A_ij = inv(A_j) @ A_i`` and
``B_ij = B_j @ inv(B_i)`` (all pairs are used, as OpenCV does), which the classic solvers
(tsai, park, horaud, andreff, daniilidis) solve for X alone. The robot-world solvers (shah, li)
solve ``camera_from_board_i @ inv(C) = inv(X) @ inv(A_i)`` for X and C together.

The solvers: OpenCV's ``cv2.calibrateHandEye`` / ``cv2.calibrateRobotWorldHandEye`` where the
installed wheel binds them (4.x does; opencv-python 5.0.0.93 does not: the functions are
built but not exposed to Python, opencv/opencv#29565, fixed by #29584 after that release), and
otherwise this module's numpy implementations of the same published methods on the same
equations (Tsai-Lenz 1989, Park-Martin 1994, Horaud-Dornaika 1995, Andreff et al. 1999,
Daniilidis 1999, Shah 2013, Li et al. 2010). ``backend`` chooses; the result says which ran.
They follow the papers as OpenCV implements them (all pairs, the same least squares and
orthonormalisations): on the same data the two agree to ~1e-12 m (checked against OpenCV 4.12,
noise-free and noisy, relative rotations up to 179 deg; its tsai alone lands 0.01-0.2 mm away
under noise). One deliberate difference: daniilidis picks the root of its quadratic by the real
part's share of the candidate. OpenCV's rule picks the degenerate pure-dual root when the null
space's first vector is nearly pure dual, and X is then off by kilometres and 180 deg
(bench.handeye hit it in 1 of 20 noisy eye_to_base data sets), so "auto" runs daniilidis in
numpy even where OpenCV has it.

Then the board's constant pose is estimated (the mean over captures given X; shah/li estimate it
themselves), every capture is checked against the solution (the board pose the solution
predicts in the camera vs the measured one) and, with ``reject_outliers``, the worst capture is
dropped and the rest re-solved while it stands out. Degenerate sets (too few captures, rotations
too small or all about one axis) raise :class:`HandEyeError` saying which poses to add. numpy
only at import; OpenCV and spatialmath are imported when used.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    from spatialmath import SE3

Mode = Literal["eye_in_hand", "eye_to_base"]
Method = Literal["tsai", "park", "horaud", "andreff", "daniilidis", "shah", "li"]
Backend = Literal["auto", "opencv", "numpy"]

#: Every method, in the order the benchmark prints them.
METHODS: tuple[Method, ...] = get_args(Method)
#: The robot-world methods (AX = ZB): they estimate the board's pose together with X.
ROBOT_WORLD_METHODS: tuple[Method, ...] = ("shah", "li")

#: Fewer captures than this cannot be solved (two relative motions with distinct axes).
MIN_CAPTURES = 3
#: The largest rotation between two captures must exceed this: smaller rotations drown in noise.
MIN_ROTATION_DEG = 5.0
#: The relative rotations' second principal spread (deg, RMS) must exceed this, or they are all
#: about one axis, along which X's translation cannot be observed. Two distinct axes suffice, so
#: this is the second singular value of the stacked rotation vectors, not the smallest.
MIN_AXIS_SPREAD_DEG = 3.0
#: :func:`guidance` asks for rotations about a tool axis whose RMS share is below this.
WEAK_AXIS_DEG = 8.0
#: :func:`guidance` asks for more poses below this many (10-20 is typical).
ENOUGH_CAPTURES = 10


class HandEyeError(ValueError):
    """The captures cannot determine the hand-eye transform; the message says what to add."""


@dataclass(frozen=True)
class Capture:
    """One robot pose and the board pose the camera saw there (4x4 each, metres).

    ``base_from_tool0``: the flange in ``base_link`` (forward kinematics at capture time).
    ``camera_from_board``: the board's frame (OpenCV's: origin at a corner, z into the board)
    in the camera's optical frame, from PnP. A spatialmath ``SE3`` is accepted for either.
    """

    base_from_tool0: np.ndarray
    camera_from_board: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "base_from_tool0", _as_pose(self.base_from_tool0, "base_from_tool0")
        )
        object.__setattr__(
            self, "camera_from_board", _as_pose(self.camera_from_board, "camera_from_board")
        )


@dataclass(frozen=True)
class CaptureResidual:
    """How far capture ``index``'s measured board pose is from the one the solution predicts
    (``inv(X) @ inv(A_i) @ C``, in the camera's optical frame): the board origin's distance in
    mm and the rotation between the two in degrees. ``used``: whether the solve used it."""

    index: int
    translation_mm: float
    rotation_deg: float
    used: bool


@dataclass(frozen=True)
class PairResidual:
    """AX = XB between consecutive used captures ``i`` and ``j``: the motion ``inv(A_ij @ X) @
    (X @ B_ij)`` (identity when consistent), its translation in mm and rotation in degrees."""

    i: int
    j: int
    translation_mm: float
    rotation_deg: float


@dataclass(frozen=True)
class PoseDiversity:
    """How varied the captures' robot poses are, which is what the solvers need.

    From every pair of captures, the tool's relative rotation ``tool0_i_from_tool0_j`` as a
    rotation vector (its axis has the same coordinates in both tool frames):

    ``rotation_deg_max`` / ``rotation_deg_median``: the pairs' rotation angles.
    ``axis_spread_deg``: the RMS of the rotation vectors' components about the tool's x, y and
    z axes: how much the set rotates about each (for a tool pointing down, x and y tilt it, z
    rolls it about the flange axis).
    ``principal_spread_deg``: the rotation vectors' principal spreads (RMS, largest first); the
    second must be well above zero (see :data:`MIN_AXIS_SPREAD_DEG`).
    ``dominant_axis``: the tool axis (unit 3-vector) the rotations are mostly about.
    ``translation_spread_mm``: the flange positions' standard deviation along base x, y, z.
    Translation itself does not constrain X; it is shown because views from one place give
    the board poses less variety.
    """

    captures: int
    pairs: int
    rotation_deg_max: float
    rotation_deg_median: float
    axis_spread_deg: tuple[float, float, float]
    principal_spread_deg: tuple[float, float, float]
    dominant_axis: tuple[float, float, float]
    translation_spread_mm: tuple[float, float, float]


@dataclass(frozen=True)
class HandEyeResult:
    """A solved hand-eye calibration.

    ``transform``: X, ``tool0_from_camera`` (eye_in_hand) or ``base_from_camera``
    (eye_to_base), 4x4 metres; :attr:`se3` is the same as a spatialmath ``SE3``.
    ``board_transform``: the board's constant pose, ``base_from_board`` (eye_in_hand) or
    ``tool0_from_board`` (eye_to_base).
    ``residuals``: one per input capture, in input order (rejected ones against the final
    solution too); ``pair_residuals``: AX = XB between consecutive used captures.
    ``used`` / ``rejected``: input indices. ``backend``: which implementation ran.
    ``diversity`` / ``hints``: :func:`pose_diversity` and :func:`guidance` of the used captures.
    """

    mode: Mode
    method: Method
    backend: Literal["opencv", "numpy"]
    transform: np.ndarray
    board_transform: np.ndarray
    residuals: tuple[CaptureResidual, ...]
    pair_residuals: tuple[PairResidual, ...]
    used: tuple[int, ...]
    rejected: tuple[int, ...]
    diversity: PoseDiversity
    hints: tuple[str, ...] = field(default=())

    @property
    def se3(self) -> SE3:
        """X as a spatialmath ``SE3`` (spatialmath is the ``sim`` extra; imported here)."""
        from spatialmath import SE3

        return SE3(_orthonormal(self.transform), check=False)

    @property
    def tool0_from_camera(self) -> np.ndarray:
        """X for eye_in_hand; ValueError for eye_to_base."""
        return self._named("eye_in_hand", self.transform, "tool0_from_camera")

    @property
    def base_from_camera(self) -> np.ndarray:
        """X for eye_to_base; ValueError for eye_in_hand."""
        return self._named("eye_to_base", self.transform, "base_from_camera")

    @property
    def base_from_board(self) -> np.ndarray:
        """The board's pose for eye_in_hand; ValueError for eye_to_base."""
        return self._named("eye_in_hand", self.board_transform, "base_from_board")

    @property
    def tool0_from_board(self) -> np.ndarray:
        """The board's pose for eye_to_base; ValueError for eye_in_hand."""
        return self._named("eye_to_base", self.board_transform, "tool0_from_board")

    @property
    def residual_translation_mm(self) -> np.ndarray:
        """The used captures' board-pose residuals (mm), in ``used`` order."""
        return np.array([r.translation_mm for r in self.residuals if r.used])

    @property
    def residual_rotation_deg(self) -> np.ndarray:
        """The used captures' board-pose residuals (deg), in ``used`` order."""
        return np.array([r.rotation_deg for r in self.residuals if r.used])

    def report(self) -> str:
        """A plain-text summary: X, the board, the residuals, rejected captures, diversity."""
        x_name, board_name = _names(self.mode)
        lines = [
            f"hand-eye calibration: {self.mode}, method {self.method} ({self.backend}), "
            f"{len(self.used)} of {len(self.residuals)} captures used",
            f"  {x_name}: {_describe(self.transform)}",
            f"  {board_name}: {_describe(self.board_transform)}",
        ]
        t, r = self.residual_translation_mm, self.residual_rotation_deg
        lines.append(
            f"  board pose residuals (used): translation median {np.median(t):.2f} mm, "
            f"max {np.max(t):.2f} mm; rotation median {np.median(r):.3f} deg, "
            f"max {np.max(r):.3f} deg"
        )
        if self.pair_residuals:
            pt = np.array([p.translation_mm for p in self.pair_residuals])
            pr = np.array([p.rotation_deg for p in self.pair_residuals])
            lines.append(
                f"  AX=XB residuals (consecutive pairs): translation median "
                f"{np.median(pt):.2f} mm, max {np.max(pt):.2f} mm; rotation median "
                f"{np.median(pr):.3f} deg, max {np.max(pr):.3f} deg"
            )
        lines.append("  capture  translation_mm  rotation_deg")
        for res in self.residuals:
            flag = "" if res.used else "  rejected"
            lines.append(
                f"  {res.index:7d}  {res.translation_mm:14.2f}  {res.rotation_deg:12.3f}{flag}"
            )
        d = self.diversity
        lines.append(
            f"  pose diversity: rotations between poses up to {d.rotation_deg_max:.1f} deg "
            f"(median {d.rotation_deg_median:.1f}); RMS about tool x/y/z "
            + "/".join(f"{v:.1f}" for v in d.axis_spread_deg)
            + " deg; flange spread x/y/z "
            + "/".join(f"{v:.0f}" for v in d.translation_spread_mm)
            + " mm"
        )
        lines.extend(f"  hint: {hint}" for hint in self.hints)
        return "\n".join(lines)

    def _named(self, mode: Mode, value: np.ndarray, name: str) -> np.ndarray:
        if self.mode != mode:
            raise ValueError(f"{name} is a {mode} result; this one is {self.mode}")
        return value


def solve(
    captures: Sequence[Capture],
    mode: Mode,
    method: Method = "park",
    reject_outliers: bool = True,
    *,
    min_captures: int = 5,
    outlier_k: float = 3.0,
    outlier_floor_mm: float = 2.0,
    outlier_floor_deg: float = 0.2,
    backend: Backend = "auto",
) -> HandEyeResult:
    """Solve for X (see the module docs) from ``captures``.

    ``reject_outliers``: after each solve, the capture whose residual (translation or rotation,
    each relative to its threshold) is largest is dropped if it exceeds
    ``max(outlier_k * median, floor)`` and more than ``min_captures`` would remain, and the rest
    are re-solved: a capture with a mis-detected board or a robot pose read at the wrong instant
    drags every method; the floors keep a clean set from being thinned by its own noise. With
    real PnP noise, which is heavy-tailed (a near-frontal board's tilt is poorly determined),
    this also drops the worst-measured views of a clean set, and X improves for it (simulated
    0.5 px corners, 20 poses, park: median error 1.9 -> 1.5 mm eye_to_base, 1.1 -> 0.8 mm
    eye_in_hand).
    ``backend``: "auto" uses OpenCV's solver where the installed wheel binds it, else numpy.

    Raises :class:`HandEyeError` for captures that cannot determine X (too few; rotations too
    small or all about one axis), with the poses to add.
    """
    if mode not in get_args(Mode):
        raise ValueError(f"mode must be one of {get_args(Mode)}, not {mode!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if backend not in get_args(Backend):
        raise ValueError(f"backend must be one of {get_args(Backend)}, not {backend!r}")
    captures = list(captures)
    check_captures(captures)
    ran = resolve_backend(method, backend)
    base_from_tool0 = np.stack([c.base_from_tool0 for c in captures])
    a = base_from_tool0 if mode == "eye_in_hand" else _inv(base_from_tool0)
    b = np.stack([c.camera_from_board for c in captures])

    used = list(range(len(captures)))
    rejected: list[int] = []
    while True:
        x, board = _solve_once(a[used], b[used], method, ran)
        res_t, res_r = _capture_residuals(a, b, x, board)
        if not reject_outliers or len(used) <= min_captures:
            break
        limit_t = max(outlier_k * float(np.median(res_t[used])), outlier_floor_mm)
        limit_r = max(outlier_k * float(np.median(res_r[used])), outlier_floor_deg)
        score = np.maximum(res_t[used] / limit_t, res_r[used] / limit_r)
        worst = used[int(np.argmax(score))]
        if float(np.max(score)) <= 1.0:
            break
        remaining = [i for i in used if i != worst]
        if _degeneracy([captures[i] for i in remaining]) is not None:
            break  # dropping it would leave the set unsolvable: keep it, and say so below
        used, rejected = remaining, [*rejected, worst]

    residuals = tuple(
        CaptureResidual(i, float(res_t[i]), float(res_r[i]), i in used)
        for i in range(len(captures))
    )
    pairs = []
    for i, j in itertools.pairwise(used):
        a_ij, b_ij = _inv(a[j]) @ a[i], b[j] @ _inv(b[i])
        t_mm, r_deg = _pose_error(a_ij @ x, x @ b_ij)
        pairs.append(PairResidual(i, j, t_mm, r_deg))
    used_captures = [captures[i] for i in used]
    return HandEyeResult(
        mode=mode,
        method=method,
        backend=ran,
        transform=x,
        board_transform=board,
        residuals=residuals,
        pair_residuals=tuple(pairs),
        used=tuple(used),
        rejected=tuple(rejected),
        diversity=pose_diversity(used_captures),
        hints=tuple(guidance(used_captures)),
    )


def check_captures(captures: Sequence[Capture]) -> None:
    """Raise :class:`HandEyeError` if ``captures`` cannot determine X (see :func:`solve`)."""
    problem = _degeneracy(captures)
    if problem is not None:
        raise HandEyeError(problem)


def pose_diversity(captures: Sequence[Capture]) -> PoseDiversity:
    """The captures' rotation and translation variety (see :class:`PoseDiversity`)."""
    n = len(captures)
    if n < 2:
        zero3 = (0.0, 0.0, 0.0)
        return PoseDiversity(n, 0, 0.0, 0.0, zero3, zero3, (0.0, 0.0, 1.0), zero3)
    poses = np.stack([c.base_from_tool0 for c in captures])
    i, j = np.triu_indices(n, k=1)
    # tool0_i_from_tool0_j: its axis has the same coordinates in tool0_i and tool0_j.
    rel = np.swapaxes(poses[i, :3, :3], -1, -2) @ poses[j, :3, :3]
    rotvec = np.degrees(_rotvec(rel))
    angles = np.linalg.norm(rotvec, axis=1)
    spread = np.sqrt(np.mean(rotvec**2, axis=0))
    _, singular, vt = np.linalg.svd(rotvec / math.sqrt(len(rotvec)), full_matrices=False)
    dominant = vt[0] if vt[0][np.argmax(np.abs(vt[0]))] > 0 else -vt[0]
    translation = np.std(poses[:, :3, 3], axis=0) * 1e3
    return PoseDiversity(
        captures=n,
        pairs=len(rotvec),
        rotation_deg_max=float(angles.max()),
        rotation_deg_median=float(np.median(angles)),
        axis_spread_deg=_triple(spread),
        principal_spread_deg=_triple(np.pad(singular, (0, 3 - len(singular)))),
        dominant_axis=_triple(dominant),
        translation_spread_mm=_triple(translation),
    )


def guidance(captures: Sequence[Capture]) -> list[str]:
    """What to capture next, from :func:`pose_diversity`; empty when the set looks sufficient.

    Simple rules, honestly: more poses below :data:`ENOUGH_CAPTURES`; larger rotations when
    every rotation between poses is small; rotations about each tool axis the set barely
    rotates about. Whether the board stays in view (and the robot can reach) is not known here:
    re-aim the camera at the board (or the board at the camera) after each tilt.
    """
    n = len(captures)
    if n < MIN_CAPTURES:
        return [
            f"capture at least {MIN_CAPTURES} poses ({n} so far); 10-20 with varied rotations "
            "is typical"
        ]
    hints = []
    if n < ENOUGH_CAPTURES:
        hints.append(f"add {ENOUGH_CAPTURES - n} or more poses: 10-20 is typical")
    d = pose_diversity(captures)
    if d.rotation_deg_max < 2 * MIN_ROTATION_DEG:
        hints.append(
            f"rotate more between poses: the largest rotation is {d.rotation_deg_max:.1f} deg; "
            "aim for 20-40 deg about each tool axis"
        )
        return hints
    for name, spread in zip("xyz", d.axis_spread_deg, strict=True):
        if spread < WEAK_AXIS_DEG:
            what = "roll the tool about its flange axis" if name == "z" else "tilt the tool"
            hints.append(
                f"rotate about the tool's {name} axis by ±20 deg ({what}) at a few poses: "
                f"the set rotates {spread:.1f} deg RMS about it"
            )
    return hints


def resolve_backend(method: Method, backend: Backend = "auto") -> Literal["opencv", "numpy"]:
    """Which implementation :func:`solve` runs for ``method``: for "auto", "opencv" where the
    installed OpenCV binds the function (4.x; not opencv-python 5.0.0.93) and the method is not
    daniilidis, else "numpy". ValueError for ``backend="opencv"`` without it."""
    if backend == "numpy":
        return "numpy"
    name = "calibrateRobotWorldHandEye" if method in ROBOT_WORLD_METHODS else "calibrateHandEye"
    if backend == "auto" and method == "daniilidis":
        return "numpy"  # OpenCV's root choice can fail outright (see the module docs)
    try:
        import cv2
    except ImportError:
        version, available = "not installed", False
    else:
        version, available = cv2.__version__, hasattr(cv2, name)
    if available:
        return "opencv"
    if backend == "opencv":
        raise ValueError(
            f"backend='opencv': cv2.{name} is not available (OpenCV {version}; "
            "opencv-python 5.0.0.93 does not bind it); use backend='numpy' or 'auto'"
        )
    return "numpy"


# --- degeneracy -----------------------------------------------------------------------------


def _degeneracy(captures: Sequence[Capture]) -> str | None:
    n = len(captures)
    if n < MIN_CAPTURES:
        return (
            f"{n} capture(s): capture at least {MIN_CAPTURES} poses; 10-20 with varied "
            "rotations is typical"
        )
    d = pose_diversity(captures)
    if d.rotation_deg_max < MIN_ROTATION_DEG:
        return (
            f"the rotations between poses are all below {MIN_ROTATION_DEG:g} deg (largest "
            f"{d.rotation_deg_max:.2f} deg): rotate more between poses (20-40 deg about each "
            "tool axis)"
        )
    if d.principal_spread_deg[1] < MIN_AXIS_SPREAD_DEG:
        axis = ", ".join(f"{v:.2f}" for v in d.dominant_axis)
        nearest = "xyz"[int(np.argmax(np.abs(d.dominant_axis)))]
        others = " or ".join(a for a in "xyz" if a != nearest)
        return (
            f"all rotations are about ({axis}) of the tool (about its {nearest} axis; spread "
            f"about any other axis {d.principal_spread_deg[1]:.2f} deg RMS): add poses that "
            f"tilt the tool about another axis (its {others} axis, ±20 deg)"
        )
    return None


# --- solving --------------------------------------------------------------------------------


def _solve_once(
    a: np.ndarray, b: np.ndarray, method: Method, backend: Literal["opencv", "numpy"]
) -> tuple[np.ndarray, np.ndarray]:
    """X and the board's constant pose C from ``A_i @ X @ B_i = C``."""
    if method in ROBOT_WORLD_METHODS:
        # camera_from_board_i @ inv(C) = inv(X) @ inv(A_i): OpenCV's AX = ZB with
        # A = world2cam (the board is the "world"), B = base2gripper = inv(A_i).
        g = _inv(a)
        if backend == "opencv":
            board_inv, x_inv = _opencv_robot_world(b, g, method)
        else:
            board_inv, x_inv = _ROBOT_WORLD[method](b, g)
        return _inv(x_inv), _inv(board_inv)
    if backend == "opencv":
        x = _opencv_hand_eye(a, b, method)
    else:
        i, j = np.triu_indices(len(a), k=1)
        x = _HAND_EYE[method](_inv(a[j]) @ a[i], b[j] @ _inv(b[i]))
    return x, _mean_pose(a @ x @ b)


def _opencv_hand_eye(a: np.ndarray, b: np.ndarray, method: Method) -> np.ndarray:
    import cv2

    flag = getattr(cv2, f"CALIB_HAND_EYE_{method.upper()}")
    calibrate = getattr(cv2, "calibrateHandEye")  # noqa: B009 (not in OpenCV 5.0's stubs)
    rotation, translation = calibrate(
        list(a[:, :3, :3]), list(a[:, :3, 3]), list(b[:, :3, :3]), list(b[:, :3, 3]),
        method=flag,
    )  # fmt: skip
    return _pose(np.asarray(rotation), np.asarray(translation).ravel())


def _opencv_robot_world(
    world2cam: np.ndarray, base2gripper: np.ndarray, method: Method
) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    flag = getattr(cv2, f"CALIB_ROBOT_WORLD_HAND_EYE_{method.upper()}")
    calibrate = getattr(cv2, "calibrateRobotWorldHandEye")  # noqa: B009 (as above)
    r_bw, t_bw, r_gc, t_gc = calibrate(
        list(world2cam[:, :3, :3]), list(world2cam[:, :3, 3]),
        list(base2gripper[:, :3, :3]), list(base2gripper[:, :3, 3]),
        method=flag,
    )  # fmt: skip
    return _pose(np.asarray(r_bw), np.asarray(t_bw).ravel()), _pose(
        np.asarray(r_gc), np.asarray(t_gc).ravel()
    )


def _translation(a: np.ndarray, b: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """X's translation given its rotation: ``(R_Aij - I) t = R_X t_Bij - t_Aij``, stacked."""
    lhs = (a[:, :3, :3] - np.eye(3)).reshape(-1, 3)
    rhs = (b[:, :3, 3] @ rotation.T - a[:, :3, 3]).reshape(-1)
    return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


def _tsai(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tsai-Lenz: ``skew(Pa + Pb) y = Pb - Pa`` with ``P = 2 sin(angle/2) axis``; X's rotation
    is ``tan(angle/2) axis = y``, so it fails for X near 180 degrees."""
    pa, pb = 2 * _quat(a[:, :3, :3])[:, 1:], 2 * _quat(b[:, :3, :3])[:, 1:]
    lhs = _skew(pa + pb).reshape(-1, 3)
    y = np.linalg.lstsq(lhs, (pb - pa).reshape(-1), rcond=None)[0]
    rotation = _matrix_from_quat(np.concatenate([[1.0], y]) / math.sqrt(1 + y @ y))
    return _pose(rotation, _translation(a, b, rotation))


def _park(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Park-Martin: the rotation best mapping the B rotation vectors onto the A ones,
    ``(M^T M)^(-1/2) M^T`` with ``M = sum(beta alpha^T)``."""
    m = np.einsum("ki,kj->ij", _rotvec(b[:, :3, :3]), _rotvec(a[:, :3, :3]))
    u, _, vt = np.linalg.svd(m)
    rotation = vt.T @ np.diag([1.0, 1.0, np.linalg.det(vt.T @ u.T)]) @ u.T
    return _pose(rotation, _translation(a, b, rotation))


def _horaud(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Horaud-Dornaika (linear): ``q_A q_X = q_X q_B``; q_X is the eigenvector of
    ``sum((Q(q_A) - W(q_B))^T (Q(q_A) - W(q_B)))`` with the smallest eigenvalue."""
    diff = _left(_quat(a[:, :3, :3])) - _right(_quat(b[:, :3, :3]))
    _, vectors = np.linalg.eigh(np.einsum("kji,kjl->il", diff, diff))
    rotation = _matrix_from_quat(vectors[:, 0])
    return _pose(rotation, _translation(a, b, rotation))


def _andreff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Andreff et al.: rotation and translation in one linear system,
    ``(I9 - R_A kron R_B) vec(R_X) = 0`` and ``(I3 - R_A) t_X + (I3 kron t_B^T) vec(R_X) = t_A``
    (row-major vec), then R_X orthonormalised (t_X is not re-solved, as in the paper)."""
    k = len(a)
    ra, rb, ta, tb = a[:, :3, :3], b[:, :3, :3], a[:, :3, 3], b[:, :3, 3]
    lhs = np.zeros((k, 12, 12))
    rhs = np.zeros((k, 12))
    lhs[:, :9, :9] = np.eye(9) - np.einsum("kij,klm->kiljm", ra, rb).reshape(k, 9, 9)
    for row in range(3):  # (I3 kron t_B^T) vec(R_X) = R_X t_B
        lhs[:, 9 + row, 3 * row : 3 * row + 3] = tb
    lhs[:, 9:, 9:] = np.eye(3) - ra
    rhs[:, 9:] = ta
    solution = np.linalg.lstsq(lhs.reshape(-1, 12), rhs.reshape(-1), rcond=None)[0]
    return _pose(_normalise_rotation(solution[:9].reshape(3, 3)), solution[9:])


def _daniilidis(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Daniilidis: with dual quaternions ``a + eps a'``, ``b + eps b'`` (same-sign scalar
    parts), ``[a-b, [a+b]x, 0, 0; a'-b', [a'+b']x, a-b, [a+b]x] (q; q') = 0``; X is the unit
    dual quaternion in the span of the two smallest right singular vectors."""
    qa, qb = _dual_quat(a), _dual_quat(b)
    va, vb, va_, vb_ = qa[:, 1:4], qb[:, 1:4], qa[:, 5:8], qb[:, 5:8]
    k = len(a)
    t = np.zeros((k, 6, 8))
    t[:, :3, 0] = va - vb
    t[:, :3, 1:4] = _skew(va + vb)
    t[:, 3:, 0] = va_ - vb_
    t[:, 3:, 1:4] = _skew(va_ + vb_)
    t[:, 3:, 4] = va - vb
    t[:, 3:, 5:8] = _skew(va + vb)
    _, _, vt = np.linalg.svd(t.reshape(-1, 8))
    v1, v2 = vt[6], vt[7]
    u1, w1, u2, w2 = v1[:4], v1[4:], v2[:4], v2[4:]
    # lambda1 v1 + lambda2 v2 with |q| = 1 and q . q' = 0; s = lambda1 / lambda2.
    qa_, qb_, qc_ = u1 @ w1, u1 @ w2 + u2 @ w1, u2 @ w2
    if abs(qa_) < 1e-12:
        roots = [-qc_ / qb_] if abs(qb_) > 1e-12 else [0.0]
    else:
        disc = math.sqrt(max(qb_ * qb_ - 4 * qa_ * qc_, 0.0))
        roots = [(-qb_ + disc) / (2 * qa_), (-qb_ - disc) / (2 * qa_)]
    norms = [s * s * (u1 @ u1) + 2 * s * (u1 @ u2) + u2 @ u2 for s in roots]
    # One root is (nearly) the pure-dual direction (0; q), which is in the null space too. Pick
    # the other by the real part's share of the candidate, |q|^2 / |s v1 + v2|^2: OpenCV
    # compares |q|^2 / lambda2^2 alone, which a large s inflates (then X is off by kilometres).
    best = int(np.argmax([norm / (1 + s * s) for norm, s in zip(norms, roots, strict=True)]))
    lam2 = 1.0 / math.sqrt(norms[best])
    dual = roots[best] * lam2 * v1 + lam2 * v2
    return _pose_from_dual_quat(dual)


def _shah(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shah (AX = ZB, here ``camera_from_board_i @ inv(C) = inv(X) @ inv(A_i)``): rotations
    from the top singular pair of ``sum(R_B kron R_A)`` (column-major vec), then both
    translations from one linear least squares. Returns (the AX=ZB X, Z)."""
    t = np.einsum("kij,klm->iljm", b[:, :3, :3], a[:, :3, :3]).reshape(9, 9)
    u, _, vt = np.linalg.svd(t)
    rx = _normalise_rotation(vt[0].reshape(3, 3).T)
    rz = _normalise_rotation(u[:, 0].reshape(3, 3).T)
    n = len(a)
    lhs = np.zeros((n, 3, 6))
    lhs[:, :, :3] = -a[:, :3, :3]
    lhs[:, :, 3:] = np.eye(3)
    rhs = a[:, :3, 3] - b[:, :3, 3] @ rz.T
    sol = np.linalg.lstsq(lhs.reshape(-1, 6), rhs.reshape(-1), rcond=None)[0]
    return _pose(rx, sol[:3]), _pose(rz, sol[3:])


def _li(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Li et al. (AX = ZB, Kronecker form): ``R_A R_X = R_Z R_B`` and
    ``R_Z t_B - R_A t_X + t_Z = t_A`` as one 24-unknown linear system (row-major vec), then
    both rotations orthonormalised (translations not re-solved, as in the paper)."""
    n = len(a)
    eye = np.eye(3)
    ra, rb, ta, tb = a[:, :3, :3], b[:, :3, :3], a[:, :3, 3], b[:, :3, 3]
    lhs = np.zeros((n, 12, 24))
    lhs[:, :9, :9] = np.einsum("kij,lm->kiljm", ra, eye).reshape(n, 9, 9)
    lhs[:, :9, 9:18] = -np.einsum("ij,kml->kiljm", eye, rb).reshape(n, 9, 9)
    lhs[:, 9:, 9:18] = np.einsum("ij,kl->kijl", eye, tb).reshape(n, 3, 9)
    lhs[:, 9:, 18:21] = -ra
    lhs[:, 9:, 21:24] = eye
    rhs = np.zeros((n, 12))
    rhs[:, 9:] = ta
    sol = np.linalg.lstsq(lhs.reshape(-1, 24), rhs.reshape(-1), rcond=None)[0]
    rx = _normalise_rotation(sol[:9].reshape(3, 3))
    rz = _normalise_rotation(sol[9:18].reshape(3, 3))
    return _pose(rx, sol[18:21]), _pose(rz, sol[21:24])


_HAND_EYE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "tsai": _tsai,
    "park": _park,
    "horaud": _horaud,
    "andreff": _andreff,
    "daniilidis": _daniilidis,
}
_ROBOT_WORLD: dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "shah": _shah,
    "li": _li,
}


# --- residuals ------------------------------------------------------------------------------


def _capture_residuals(
    a: np.ndarray, b: np.ndarray, x: np.ndarray, board: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per capture: predicted ``camera_from_board = inv(X) @ inv(A_i) @ C`` vs measured."""
    predicted = _inv(x) @ _inv(a) @ board
    translation = np.linalg.norm(predicted[:, :3, 3] - b[:, :3, 3], axis=1) * 1e3
    relative = np.swapaxes(predicted[:, :3, :3], -1, -2) @ b[:, :3, :3]
    return translation, np.degrees(np.linalg.norm(_rotvec(relative), axis=1))


def _pose_error(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    error = _inv(expected) @ actual
    return (
        float(np.linalg.norm(error[:3, 3]) * 1e3),
        float(np.degrees(np.linalg.norm(_rotvec(error[None, :3, :3])[0]))),
    )


def _mean_pose(poses: np.ndarray) -> np.ndarray:
    """The chordal mean rotation (nearest rotation to the summed matrices), mean translation."""
    return _pose(_orthonormal_rotation(poses[:, :3, :3].sum(axis=0)), poses[:, :3, 3].mean(0))


# --- rotations ------------------------------------------------------------------------------


def _as_pose(value: Any, name: str) -> np.ndarray:
    matrix = np.asarray(getattr(value, "A", value), dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name} must be a finite 4x4 pose, got shape {matrix.shape}")
    rotation = matrix[:3, :3]
    if (
        not np.allclose(matrix[3], [0, 0, 0, 1])
        or not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6)
        or np.linalg.det(rotation) < 0
    ):
        raise ValueError(f"{name} is not a rigid transform (rotation orthonormal, last row 0001)")
    return matrix


def _pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = translation
    return pose


def _inv(poses: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms, (..., 4, 4)."""
    out = np.zeros_like(poses)
    rt = np.swapaxes(poses[..., :3, :3], -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -(rt @ poses[..., :3, 3, None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def _orthonormal_rotation(matrix: np.ndarray) -> np.ndarray:
    """The nearest rotation (Frobenius) to a 3x3 matrix."""
    u, _, vt = np.linalg.svd(matrix)
    return u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt


def _orthonormal(pose: np.ndarray) -> np.ndarray:
    return _pose(_orthonormal_rotation(pose[:3, :3]), pose[:3, 3])


def _normalise_rotation(matrix: np.ndarray) -> np.ndarray:
    """A linear solver's 3x3 estimate (any scale and sign) -> the nearest rotation: scaled to
    unit determinant first (so a sign-flipped solution becomes a rotation), then SVD."""
    det = np.linalg.det(matrix)
    if abs(det) < 1e-12:
        raise HandEyeError("the rotation estimate is singular: the captures are degenerate")
    return _orthonormal_rotation(matrix * np.cbrt(1.0 / det))


def _quat(rotations: np.ndarray) -> np.ndarray:
    """(k, 3, 3) -> (k, 4) unit quaternions (w, x, y, z) with w >= 0, so both sides of a pair
    agree in sign as horaud and daniilidis need (ambiguous only for rotations within noise of
    180 deg). Bar-Itzhack: robust for any angle and for slightly non-orthonormal input."""
    r = rotations
    k = np.empty((len(r), 4, 4))
    k[:, 0, 0] = r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2]
    k[:, 1, 1] = r[:, 0, 0] - r[:, 1, 1] - r[:, 2, 2]
    k[:, 2, 2] = r[:, 1, 1] - r[:, 0, 0] - r[:, 2, 2]
    k[:, 3, 3] = r[:, 2, 2] - r[:, 0, 0] - r[:, 1, 1]
    k[:, 0, 1] = k[:, 1, 0] = r[:, 2, 1] - r[:, 1, 2]
    k[:, 0, 2] = k[:, 2, 0] = r[:, 0, 2] - r[:, 2, 0]
    k[:, 0, 3] = k[:, 3, 0] = r[:, 1, 0] - r[:, 0, 1]
    k[:, 1, 2] = k[:, 2, 1] = r[:, 0, 1] + r[:, 1, 0]
    k[:, 1, 3] = k[:, 3, 1] = r[:, 0, 2] + r[:, 2, 0]
    k[:, 2, 3] = k[:, 3, 2] = r[:, 1, 2] + r[:, 2, 1]
    _, vectors = np.linalg.eigh(k)
    q = vectors[:, :, -1]
    return q * np.where(q[:, :1] < 0, -1.0, 1.0)


def _rotvec(rotations: np.ndarray) -> np.ndarray:
    """(k, 3, 3) -> (k, 3) rotation vectors (axis * angle, radians; angle in [0, pi])."""
    q = _quat(rotations)
    s = np.linalg.norm(q[:, 1:], axis=1)
    angle = 2 * np.arctan2(s, q[:, 0])
    scale = np.where(s > 1e-12, angle / np.maximum(s, 1e-300), 2.0)
    return q[:, 1:] * scale[:, None]


def _matrix_from_quat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _skew(v: np.ndarray) -> np.ndarray:
    """(k, 3) -> (k, 3, 3) cross-product matrices."""
    out = np.zeros((*v.shape[:-1], 3, 3))
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


def _left(q: np.ndarray) -> np.ndarray:
    """(k, 4) -> (k, 4, 4) with ``left(q) @ p = q * p`` (Hamilton product)."""
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([w, -x, -y, -z], -1),
            np.stack([x, w, -z, y], -1),
            np.stack([y, z, w, -x], -1),
            np.stack([z, -y, x, w], -1),
        ],
        axis=1,
    )


def _right(q: np.ndarray) -> np.ndarray:
    """(k, 4) -> (k, 4, 4) with ``right(q) @ p = p * q``."""
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([w, -x, -y, -z], -1),
            np.stack([x, w, z, -y], -1),
            np.stack([y, -z, w, x], -1),
            np.stack([z, y, -x, w], -1),
        ],
        axis=1,
    )


def _dual_quat(poses: np.ndarray) -> np.ndarray:
    """(k, 4, 4) -> (k, 8): ``q`` (w >= 0) and ``q' = t q / 2`` (t as a pure quaternion)."""
    q = _quat(poses[:, :3, :3])
    t = np.concatenate([np.zeros((len(q), 1)), poses[:, :3, 3]], axis=1)
    return np.concatenate([q, 0.5 * (_left(t) @ q[:, :, None])[:, :, 0]], axis=1)


def _pose_from_dual_quat(dual: np.ndarray) -> np.ndarray:
    q, q_ = dual[:4], dual[4:]
    conjugate = q * np.array([1.0, -1.0, -1.0, -1.0])
    t = 2 * _left(q_[None])[0] @ conjugate
    return _pose(_matrix_from_quat(q), t[1:])


def _triple(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def _names(mode: Mode) -> tuple[str, str]:
    if mode == "eye_in_hand":
        return "tool0_from_camera", "base_from_board"
    return "base_from_camera", "tool0_from_board"


def _describe(pose: np.ndarray) -> str:
    rotvec = np.degrees(_rotvec(pose[None, :3, :3])[0])
    xyz = ", ".join(f"{v * 1e3:.2f}" for v in pose[:3, 3])
    angle = float(np.linalg.norm(rotvec))
    axis = ", ".join(f"{v:.3f}" for v in (rotvec / angle if angle > 0 else rotvec))
    return f"translation ({xyz}) mm, rotation {angle:.3f} deg about ({axis})"
