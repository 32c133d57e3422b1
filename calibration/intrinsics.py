"""A camera's pinhole intrinsics and lens distortion, and estimating them from board views.

Conventions are ROS ``sensor_msgs/CameraInfo``'s and OpenCV's: pixel (0, 0)'s centre is at
(0, 0); ``distortion_model`` is ROS's name and ``d`` its coefficients in OpenCV's order:
``plumb_bob`` (k1, k2, p1, p2, k3), ``rational_polynomial`` (k1, k2, p1, p2, k3, k4, k5, k6),
``equidistant`` (k1, k2, k3, k4: OpenCV's ``cv2.fisheye``, librealsense's Kannala-Brandt4),
``none`` (no distortion, ``d`` empty).

OpenCV (the ``calibration`` extra) is imported only to estimate: :class:`CameraIntrinsics`
itself (loading a calibration file, placing a simulated camera) needs numpy and pydantic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

if TYPE_CHECKING:
    from calibration.board import BoardView

DistortionModel = Literal["plumb_bob", "rational_polynomial", "equidistant", "none"]

#: How many coefficients each model has (a shorter ``d`` is padded with zeros).
COEFFICIENTS: dict[str, int] = {
    "plumb_bob": 5,
    "rational_polynomial": 8,
    "equidistant": 4,
    "none": 0,
}
#: :func:`estimate_intrinsics` refuses views whose corners, all together, cover less of the
#: image than this: the distortion, and the focal length with it, are then extrapolated.
MIN_COVERAGE = 0.30
#: ... and an estimate whose focal length's standard deviation is above this fraction of it.
MAX_FOCAL_RELATIVE_STD = 0.01
#: A view tells the focal length only if the board is inclined to the image plane: its far
#: corners at least this much farther than its near ones (1.1: 10%, ~10 deg of tilt of a board
#: half as wide as it is far); at least :data:`MIN_TILTED_VIEWS` views must be.
MIN_DEPTH_RATIO = 1.1
MIN_TILTED_VIEWS = 2


class CameraIntrinsics(BaseModel):
    """A camera's intrinsics at one resolution, as ROS's CameraInfo holds them (module docs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(gt=0)
    height: int = Field(gt=0)
    #: Focal lengths and principal point, pixels.
    fx: float = Field(gt=0.0)
    fy: float = Field(gt=0.0)
    cx: float
    cy: float
    distortion_model: DistortionModel = "plumb_bob"
    d: tuple[float, ...] = ()

    @field_validator("d")
    @classmethod
    def _coefficients(cls, d: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        model = info.data.get("distortion_model")
        if model is None:  # the model itself failed validation
            return d
        count = COEFFICIENTS[model]
        if model == "none":
            if any(c != 0.0 for c in d):
                raise ValueError(f"distortion_model none with coefficients {list(d)}")
            return ()
        if len(d) > count:
            raise ValueError(f"{model} has {count} coefficients, not {len(d)}")
        return tuple(float(c) for c in d) + (0.0,) * (count - len(d))

    @property
    def k(self) -> np.ndarray:
        """The 3x3 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def dist_coeffs(self) -> np.ndarray:
        """``d`` as float64 for OpenCV (``cv2.fisheye``'s functions for ``equidistant``)."""
        return np.array(self.d, dtype=np.float64)

    @classmethod
    def from_matrix(
        cls,
        k: np.ndarray,
        width: int,
        height: int,
        d: Sequence[float] = (),
        model: DistortionModel = "plumb_bob",
    ) -> CameraIntrinsics:
        """From a 3x3 camera matrix (its skew must be 0)."""
        k = np.asarray(k, dtype=np.float64)
        if k.shape != (3, 3) or abs(k[0, 1]) > 1e-9 * abs(k[0, 0]):
            raise ValueError(f"not a zero-skew 3x3 camera matrix: {k.tolist()}")
        k = k / k[2, 2]
        return cls(
            width=width,
            height=height,
            fx=float(k[0, 0]),
            fy=float(k[1, 1]),
            cx=float(k[0, 2]),
            cy=float(k[1, 2]),
            distortion_model=model,
            d=tuple(float(c) for c in d),
        )


def realsense_distortion(model: str, coeffs: Sequence[float]) -> tuple[str, tuple[float, ...]]:
    """A librealsense distortion model (``rs.distortion`` name) and its coefficients as
    realsense-ros 4.x publishes them in CameraInfo (``policy_runtime.ros.camera_node``'s
    ``camera_info``): ``kannala_brandt4`` is ``equidistant`` with 4 coefficients, every other
    model (Brown-Conrady, inverse and modified Brown-Conrady, none) ``plumb_bob`` with 5.
    (That is how ROS consumers see the camera; the inverse Brown-Conrady of a D400's colour
    stream has, in practice, all coefficients 0.)"""
    count = 4 if model == "kannala_brandt4" else 5
    name = "equidistant" if count == 4 else "plumb_bob"
    return name, tuple(float(c) for c in coeffs[:count])


def from_realsense(intrinsics: Any) -> CameraIntrinsics:
    """From a ``pyrealsense2.intrinsics`` (or anything with its attributes width, height, fx,
    fy, ppx, ppy, model, coeffs, such as :class:`policy_runtime.camera.frames.Intrinsics`,
    whose ``model`` is the enum's name), mapped as :func:`realsense_distortion`."""
    model = intrinsics.model
    name = model if isinstance(model, str) else model.name
    distortion_model, d = realsense_distortion(name, list(intrinsics.coeffs))
    return CameraIntrinsics(
        width=int(intrinsics.width),
        height=int(intrinsics.height),
        fx=float(intrinsics.fx),
        fy=float(intrinsics.fy),
        cx=float(intrinsics.ppx),
        cy=float(intrinsics.ppy),
        distortion_model=distortion_model,  # type: ignore[arg-type]
        d=d,
    )


@dataclass(frozen=True)
class IntrinsicsEstimate:
    """The result of :func:`estimate_intrinsics`."""

    intrinsics: CameraIntrinsics
    #: RMS reprojection error over all corners of all views, pixels.
    rms_px: float
    #: The same per view, in the order given (a view far above the rest is a bad detection).
    per_view_rms_px: list[float]
    #: Standard deviations of fx, fy, cx, cy (pixels), from the fit's covariance.
    std_px: tuple[float, float, float, float]
    #: The fraction of the image the views' corners cover (union of their convex hulls).
    coverage: float


def estimate_intrinsics(
    views: Sequence[BoardView],
    image_size: tuple[int, int],
    fix_aspect_ratio: bool = False,
    model: Literal["plumb_bob", "rational_polynomial"] = "plumb_bob",
    *,
    fix_k3: bool = True,
) -> IntrinsicsEstimate:
    """The camera's intrinsics from board views at ``image_size`` (width, height):
    ``cv2.calibrateCamera`` on their corners. ``fix_aspect_ratio`` fits one focal length
    (fx = fy). ``fix_k3`` (plumb_bob) keeps k3 at 0, as ROS's camera_calibration does by
    default: a small board under a narrow lens barely constrains it, and a free k3 bends the
    image's edges to fit noise.

    Raises ValueError, saying what to do, for fewer than 4 views, corners that cover under 30%
    of the image, fewer than 2 views with the board inclined to the image plane (boards that
    face the camera square on, wherever in the image, leave the focal length undetermined), or
    a focal length determined worse than 1%."""
    import cv2

    width, height = image_size
    if len(views) < 4:
        raise ValueError(
            f"only {len(views)} views: take at least 4 (10-20 is better), with the board"
            " tilted differently and in different parts of the image"
        )
    for index, view in enumerate(views):
        if tuple(view.image_size) != (width, height):
            raise ValueError(
                f"view {index} is {view.image_size[0]}x{view.image_size[1]} pixels, not"
                f" {width}x{height}: calibrate one resolution at a time"
            )
        if len(view.ids) < 4:
            raise ValueError(f"view {index} has {len(view.ids)} corners: at least 4 needed")
    coverage = _coverage(views, width, height)
    if coverage < MIN_COVERAGE:
        raise ValueError(
            f"the board's corners cover {coverage:.0%} of the image (< {MIN_COVERAGE:.0%}):"
            " move the board to the image's corners/edges"
        )

    tilted = sum(_depth_ratio(view) >= MIN_DEPTH_RATIO for view in views)
    if tilted < MIN_TILTED_VIEWS:
        raise ValueError(
            f"the board faces the camera square on in {len(views) - tilted} of {len(views)}"
            " views, which leaves the focal length undetermined: tilt the board 20-40 deg toward"
            " and away from the camera, about different axes, in several views"
        )

    flags = 0
    if fix_aspect_ratio:
        flags |= cv2.CALIB_FIX_ASPECT_RATIO  # fx/fy stays that of the initial matrix: 1
    if model == "rational_polynomial":
        flags |= cv2.CALIB_RATIONAL_MODEL
    elif fix_k3:
        flags |= cv2.CALIB_FIX_K3
    object_points = [v.object_points.astype(np.float32) for v in views]
    image_points = [v.corners.astype(np.float32).reshape(-1, 1, 2) for v in views]
    criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12)
    rms, k, d, _, _, std_intrinsics, _, per_view = cv2.calibrateCameraExtended(
        object_points,
        image_points,
        (width, height),
        np.eye(3),
        np.zeros(COEFFICIENTS[model]),
        flags=flags,
        criteria=criteria,
    )
    std = np.asarray(std_intrinsics, dtype=np.float64).ravel()
    std_px = (float(std[0]), float(std[1]), float(std[2]), float(std[3]))
    coefficients = [float(c) for c in np.asarray(d).ravel()[: COEFFICIENTS[model]]]
    intrinsics = CameraIntrinsics.from_matrix(k, width, height, coefficients, model)
    relative = max(std_px[0] / intrinsics.fx, std_px[1] / intrinsics.fy)
    if not math.isfinite(relative) or relative > MAX_FOCAL_RELATIVE_STD:
        raise ValueError(
            f"the focal length is unreliable (fx {intrinsics.fx:.1f} px, +/- {relative:.1%}):"
            " tilt the board 20-40 deg toward and away from the camera in several views, and"
            " take some closer and farther"
        )
    return IntrinsicsEstimate(
        intrinsics=intrinsics,
        rms_px=float(rms),
        per_view_rms_px=[float(e) for e in np.asarray(per_view).ravel()],
        std_px=std_px,
        coverage=coverage,
    )


def _depth_ratio(view: BoardView) -> float:
    """How much farther from the camera the view's farthest corner is than its nearest, as a
    ratio, whatever the focal length: the homography from the board plane to the image scales
    each point by its depth (its third row), up to one common factor."""
    import cv2

    homography, _ = cv2.findHomography(view.object_points[:, :2], view.corners)
    if homography is None:
        return 1.0
    points = np.column_stack([view.object_points[:, :2], np.ones(len(view.ids))])
    depth = np.abs(points @ homography[2])
    return float(depth.max() / depth.min()) if depth.min() > 0 else 1.0


def _coverage(views: Sequence[BoardView], width: int, height: int) -> float:
    """The fraction of the image inside the union of the views' corners' convex hulls, counted
    on a grid of at most 160 cells across."""
    import cv2

    scale = min(1.0, 160.0 / max(width, height))
    mask = np.zeros((max(1, round(height * scale)), max(1, round(width * scale))), np.uint8)
    for view in views:
        hull = cv2.convexHull(np.rint(view.corners * scale).astype(np.int32).reshape(-1, 1, 2))
        cv2.fillConvexPoly(mask, hull, 1)
    return float(mask.mean())
