"""An object's pose from one ArUco marker on it, seen by a calibrated camera: the state a
low-dim policy observes (e.g. push_t's ``block_keypoints``) on a real cell, which has no
simulator to ask where the object is.

Frames (``a_from_b`` maps points in frame b to frame a):

* marker: OpenCV's ArUco convention (that of ``SOLVEPNP_IPPE_SQUARE``), origin at the centre
  of the black square, x to the right of the drawing (:meth:`MarkerSpec.image`), y up the
  drawing, z out of the printed face, toward a camera that sees it. The black square's corners,
  in the detector's order (the drawing's top-left, top-right, bottom-right, bottom-left), are
  at ``(-s/2, s/2, 0), (s/2, s/2, 0), (s/2, -s/2, 0), (-s/2, -s/2, 0)``, ``s`` = ``size_m``.
* camera: the optical frame (x right, y down, z forward), as in :mod:`calibration.board`.
* object: whatever frame the policy's keypoints are given in; :attr:`ObjectModel.
  object_from_marker` says where the marker is stuck on it.
* base: ``base_link``; ``base_from_camera`` is a calibration's
  :meth:`~calibration.result.CameraCalibration.parent_from_optical` (eye-to-base).

Image points follow OpenCV: pixel (0, 0)'s centre is at (0, 0), x to the right, y down.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from calibration.board import aruco_dictionary, known_dictionary

if TYPE_CHECKING:
    from calibration.intrinsics import CameraIntrinsics

#: :func:`detect_marker` refuses a marker whose apparent side (the square root of its image
#: area) is below this many pixels: a 4x4 marker with its border is 6 cells across, and under
#: 2 px a cell its bits are no longer resolved.
MIN_SIDE_PX = 12.0
#: :attr:`MarkerDetection.confidence`'s scales: the apparent side at which the size term
#: reaches 1 (5 px a cell of a 4x4 marker), and the reprojection RMS at which the residual
#: term falls to exp(-1/2) ~ 0.61.
FULL_CONFIDENCE_SIDE_PX = 30.0
CONFIDENCE_RMS_PX = 0.5
#: ... and the alignment's correlation at which the match term falls to 0 (clean views reach
#: 0.97-0.995; a shadow edge across a 15 px marker, which biases its corners by ~1 px, 0.88).
CONFIDENCE_MIN_CORRELATION = 0.75
#: The size of the Gaussian blur (image pixels) that the template the corners are aligned to
#: (see :func:`detect_marker`) is given: a sharp camera's, and MuJoCo's texture filtering's.
#: The 6-DoF pose's depth depends on it by ~1 mm a 0.1 px near 1 m for a 3 cm marker (the
#: marker's apparent size does); the table-constrained pose of :func:`object_state` does not.
TEMPLATE_BLUR_PX = 0.6


class MarkerNotVisible(ValueError):
    """The marker is not in the image, or too small in it to give a pose. The message names
    the marker and says what to do."""


class MarkerSpec(BaseModel):
    """A printed ArUco marker: ``marker_id`` of the ``cv2.aruco`` predefined ``dictionary``,
    whose black square (the ``border_bits`` wide black border included) is ``size_m`` metres
    on a side, on a white plate that leaves ``quiet_fraction * size_m`` of white around it on
    every side (the detector needs the black border to stand out from what surrounds it), so
    the plate is :attr:`plate_size_m` = ``size_m * (1 + 2 * quiet_fraction)`` on a side."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dictionary: str = "DICT_4X4_50"
    marker_id: int = Field(ge=0)
    size_m: float = Field(gt=0.0)
    quiet_fraction: float = Field(default=0.25, gt=0.0, le=2.0)
    #: Width of the black border in cells. The detector must be told the same: it is part of
    #: the marker, not of its drawing.
    border_bits: int = Field(default=1, ge=1, le=4)

    @field_validator("dictionary")
    @classmethod
    def _known_dictionary(cls, name: str) -> str:
        return known_dictionary(name)

    @model_validator(mode="after")
    def _id_in_dictionary(self) -> MarkerSpec:
        count = aruco_dictionary(self.dictionary).bytesList.shape[0]
        if self.marker_id >= count:
            raise ValueError(
                f"marker_id {self.marker_id}: {self.dictionary} has ids 0 to {count - 1}"
            )
        return self

    @property
    def plate_size_m(self) -> float:
        """The side of the square white plate the marker is printed on (what :meth:`png`
        draws, edge to edge), metres."""
        return self.size_m * (1.0 + 2.0 * self.quiet_fraction)

    @property
    def cells(self) -> int:
        """How many cells the black square is across: the code's bits plus the border."""
        return int(aruco_dictionary(self.dictionary).markerSize) + 2 * self.border_bits

    def object_points(self) -> np.ndarray:
        """(4, 3) float64: the black square's corners in the marker frame (module docs), in
        the detector's order."""
        half = self.size_m / 2.0
        return np.array(
            [[-half, half, 0.0], [half, half, 0.0], [half, -half, 0.0], [-half, -half, 0.0]]
        )

    def image(self, pixels: int = 400) -> np.ndarray:
        """(P, P) uint8 drawing of the plate: the black square ``pixels`` wide, centred in its
        white quiet zone, so that the whole image maps onto the plate (:attr:`plate_size_m`)
        1:1. ``quiet_fraction * pixels`` must be a whole number (else the marker would sit up
        to half a pixel off the plate's centre); a multiple of :attr:`cells` keeps the cells
        equal."""
        if pixels < 4 * self.cells:
            raise ValueError(f"pixels {pixels}: draw at least {4 * self.cells} (4 a cell)")
        margin = self.quiet_fraction * pixels
        if abs(margin - round(margin)) > 1e-6:
            raise ValueError(
                f"quiet_fraction {self.quiet_fraction} of {pixels} pixels is {margin:.2f}: choose"
                " pixels that make the quiet zone a whole number of pixels"
            )
        marker = cv2.aruco.generateImageMarker(
            aruco_dictionary(self.dictionary), self.marker_id, pixels, borderBits=self.border_bits
        )
        return np.pad(np.asarray(marker), round(margin), constant_values=255)

    def png(self, pixels: int = 400) -> bytes:
        """:meth:`image` as PNG bytes (a simulator's texture, a file to print at
        :attr:`plate_size_m`)."""
        ok, encoded = cv2.imencode(".png", self.image(pixels))
        if not ok:
            raise ValueError("could not encode the marker image")
        return encoded.tobytes()


def _rigid_pose(values: tuple[float, ...]) -> tuple[float, ...]:
    """Checks 16 row-major values are a rigid transform (the validators' common part)."""
    pose = np.asarray(values, dtype=np.float64).reshape(4, 4)
    if not np.all(np.isfinite(pose)):
        raise ValueError("object_from_marker has non-finite values")
    rotation = pose[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6) or not np.allclose(
        pose[3], [0.0, 0.0, 0.0, 1.0]
    ):
        raise ValueError("object_from_marker is not a rigid transform (row-major 4x4)")
    if np.linalg.det(rotation) < 0:
        raise ValueError("object_from_marker's rotation is a reflection")
    return values


class PlacedMarker(BaseModel):
    """A marker stuck on an object, and where."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    marker: MarkerSpec
    #: The marker frame in the object frame, 4x4 row-major (16 values): the marker-to-object
    #: offset, measured on the object (or known from its CAD).
    object_from_marker: tuple[float, ...] = Field(min_length=16, max_length=16)

    _rigid = field_validator("object_from_marker")(_rigid_pose)

    def object_from_marker_matrix(self) -> np.ndarray:
        """:attr:`object_from_marker` as a 4x4 float64 array."""
        return np.asarray(self.object_from_marker, dtype=np.float64).reshape(4, 4)


class ObjectModel(BaseModel):
    """An object with one or more markers stuck on it and the 2D keypoints (in the object's
    frame, metres) that a policy observes, e.g. the corners of push_t's T. Several markers keep
    the object in view when one is occluded (by the gripper pushing it) or in a shadow; all
    are of one dictionary and border, each id once, so one detector pass finds them all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    markers: tuple[PlacedMarker, ...] = Field(min_length=1)
    keypoints_m: tuple[tuple[float, float], ...] = Field(min_length=1)
    #: The height of the object frame's origin above the table when the object lies on it as
    #: its keypoints assume (its z axis up), metres: what :func:`object_state` needs to fit
    #: the pose on the table (``table_z_m``). None: unknown (6-DoF poses only).
    rest_height_m: float | None = None

    @model_validator(mode="after")
    def _one_dictionary(self) -> ObjectModel:
        first = self.markers[0].marker
        ids = [placed.marker.marker_id for placed in self.markers]
        for index, placed in enumerate(self.markers):
            marker = placed.marker
            if (marker.dictionary, marker.border_bits) != (first.dictionary, first.border_bits):
                raise ValueError(
                    f"markers.{index}: {marker.dictionary} with border_bits "
                    f"{marker.border_bits}; every marker of an object must be of the first's "
                    f"dictionary ({first.dictionary}) and border ({first.border_bits})"
                )
        if len(set(ids)) != len(ids):
            raise ValueError(f"markers: ids {ids} repeat; give each marker its own id")
        return self

    @classmethod
    def from_arrays(
        cls,
        markers: Sequence[tuple[MarkerSpec, np.ndarray]],
        keypoints_m: np.ndarray,
        rest_height_m: float | None = None,
    ) -> ObjectModel:
        """From (marker, 4x4 ``object_from_marker``) pairs and (N, 2) keypoints."""
        points = np.asarray(keypoints_m, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"keypoints {points.shape} must be (N, 2)")
        placed = []
        for spec, object_from_marker in markers:
            pose = np.asarray(object_from_marker, dtype=np.float64)
            if pose.shape != (4, 4):
                raise ValueError(f"object_from_marker {pose.shape} must be (4, 4)")
            placed.append(
                PlacedMarker(marker=spec, object_from_marker=tuple(float(v) for v in pose.ravel()))
            )
        return cls(
            markers=tuple(placed),
            keypoints_m=tuple((float(x), float(y)) for x, y in points),
            rest_height_m=rest_height_m,
        )

    def placed(self, marker_id: int) -> PlacedMarker:
        """The marker with id ``marker_id``."""
        for placed in self.markers:
            if placed.marker.marker_id == marker_id:
                return placed
        raise KeyError(f"the object has no marker {marker_id}")

    def keypoints(self) -> np.ndarray:
        """:attr:`keypoints_m` as an (N, 2) float64 array."""
        return np.asarray(self.keypoints_m, dtype=np.float64)


@dataclass(frozen=True)
class MarkerDetection:
    """One marker found in an image, and its pose."""

    marker_id: int
    #: (4, 4): the marker frame (module docs) in the camera's optical frame, metres.
    camera_from_marker: np.ndarray
    #: RMS distance between the corners and the pose's reprojection, pixels.
    reprojection_rms_px: float
    #: In [0, 1]: ``size * match * residual`` with ``size = min(1, side_px /
    #: FULL_CONFIDENCE_SIDE_PX)`` (the pose's noise grows as the marker shrinks in the image),
    #: ``match = clip((correlation - CONFIDENCE_MIN_CORRELATION) / (1 -
    #: CONFIDENCE_MIN_CORRELATION), 0, 1)`` (0.5 when the alignment failed and the detector's
    #: coarser corners were kept; a low one: blur, a shadow across the marker, glare, partial
    #: occlusion) and ``residual = exp(-(reprojection_rms_px / CONFIDENCE_RMS_PX)**2 / 2)``
    #: (corners that no square fits: a bent marker, wrong intrinsics). Clean views of a marker
    #: 15-22 px wide score 0.4-0.7, of one 30 px or more ~0.9.
    confidence: float
    #: (4, 2) float64: the black square's corners in the image, pixels, detector order.
    corners_px: np.ndarray
    #: (4, 2) float64: the same undistorted, on the normalized image plane (x/z, y/z of the
    #: optical frame): what :func:`object_state` fits a pose on the table to.
    corners_normalized: np.ndarray
    #: The camera's focal length (the geometric mean of fx and fy), pixels: to express
    #: residuals on the normalized plane in pixels.
    focal_px: float
    #: The marker's apparent side: the square root of its image area, pixels.
    side_px: float
    #: The correlation coefficient between the marker's drawing, aligned, and the image (ECC,
    #: in [-1, 1]; ~0.99 for a clean view); NaN where the alignment failed.
    correlation: float


@dataclass(frozen=True)
class ObjectState:
    """Where the object is in ``base_link``."""

    #: (4, 4): the object frame in base_link (on the table: upright at the table's height).
    base_from_object: np.ndarray
    #: (3,): (x, y, yaw) of the object lying on the table: its origin's x, y and the angle of
    #: its x axis projected on base_link's xy plane, from base_link's x axis (rad, (-pi, pi]).
    planar_pose: np.ndarray
    #: (N, 2): the model's keypoints in base_link's xy plane, placed by ``planar_pose``.
    keypoints: np.ndarray
    #: The angle between the object's z axis and base_link's in the 6-DoF estimate, degrees:
    #: ~0 for an object lying flat; a large one means it is not flat, or the pose is wrong.
    tilt_deg: float
    #: RMS distance between the marker's corners and their reprojection by this pose, pixels
    #: (on the table: large when the object is not on it, e.g. lifted or tipped over).
    reprojection_rms_px: float
    #: Whether the pose was fitted on the table (:func:`object_state`'s ``table_z_m``).
    on_table: bool
    #: The ids of the markers the pose was fitted to.
    marker_ids: tuple[int, ...]
    #: The detection's :attr:`MarkerDetection.confidence`; on the table, times
    #: ``exp(-(reprojection_rms_px / CONFIDENCE_RMS_PX)**2 / 2)`` of the fit.
    confidence: float


def detect_marker(
    image: np.ndarray,
    spec: MarkerSpec,
    intrinsics: CameraIntrinsics,
    min_side_px: float = MIN_SIDE_PX,
) -> MarkerDetection:
    """The marker ``spec`` in ``image`` ((H, W, 3) RGB or (H, W) grey, uint8) and its pose in
    the camera's optical frame; :func:`detect_markers` for one marker (raises as it does)."""
    return detect_markers(image, [spec], intrinsics, min_side_px)[0]


def detect_markers(
    image: np.ndarray,
    markers: ObjectModel | Sequence[MarkerSpec],
    intrinsics: CameraIntrinsics,
    min_side_px: float = MIN_SIDE_PX,
) -> list[MarkerDetection]:
    """Every one of ``markers`` (an object's, or specs of one dictionary and border) that is
    in ``image``, with its pose in the camera's optical frame, in the order given.

    Found by one pass of ``cv2.aruco.ArucoDetector`` (sub-pixel corners:
    ``CORNER_REFINE_SUBPIX``). At 15-25 px (a 3 cm marker 1 m away) its corners are up to a
    pixel off and it may sample the cells wrongly, so a square it found but could not decode
    is decoded again after aligning it to the marker's border, and failing that (no marker
    found at all), the image is searched again at twice its resolution. Each marker's corners
    are then aligned by ECC: its drawing (its bits' edges and half its quiet zone included),
    blurred by :data:`TEMPLATE_BLUR_PX`, matched to the image under a homography. On MuJoCo's
    renders of 15-22 px markers this takes the corners from 0.3-1 px off to under 0.1 px
    (``CORNER_REFINE_SUBPIX``'s window shrinks with the cells and cannot do better). The pose
    is ``cv2.solvePnP`` with ``SOLVEPNP_IPPE_SQUARE`` (the closed form for a square's
    corners, the better of its two solutions), refined by ``cv2.solvePnPRefineLM``, on the
    corners undistorted by ``intrinsics`` (the fisheye model for ``equidistant``) onto the
    normalized image plane.

    Raises :class:`MarkerNotVisible` (saying what to do) when none of them is found, or every
    one found is smaller than ``min_side_px`` in the image (those are left out otherwise);
    ValueError for an image of another size than the intrinsics' or a marker seen twice."""
    specs = (
        [placed.marker for placed in markers.markers]
        if isinstance(markers, ObjectModel)
        else list(markers)
    )
    gray = _gray(image)
    height, width = gray.shape
    if (width, height) != (intrinsics.width, intrinsics.height):
        raise ValueError(
            f"the image is {width}x{height} pixels, the intrinsics {intrinsics.width}x"
            f"{intrinsics.height}: give the camera's intrinsics at this resolution"
        )
    found, seen = _find(gray, specs)
    if not found:  # small markers often decode at twice the resolution
        upscaled = cv2.resize(gray, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
        found, _ = _find(upscaled, specs)
        found = {i: (corners + 0.5) / 2.0 - 0.5 for i, corners in found.items()}  # back at 1x
    names = ", ".join(str(spec.marker_id) for spec in specs)
    if not found:
        others = f" (saw markers {', '.join(map(str, seen))})" if seen else ""
        raise MarkerNotVisible(
            f"marker {names} ({specs[0].dictionary}) not in view{others}: bring it into the"
            " camera's view, facing it, unoccluded and lit"
        )
    detections, small = [], []
    for spec in specs:
        corners = found.get(spec.marker_id)
        if corners is None:
            continue
        side = _apparent_side(corners)
        if side < min_side_px:
            small.append(_too_small(spec, side, min_side_px))
            continue
        detections.append(_pose(gray, spec, corners, intrinsics))
    if not detections:
        raise MarkerNotVisible("; ".join(small))
    return detections


def _pose(
    gray: np.ndarray, spec: MarkerSpec, found: np.ndarray, intrinsics: CameraIntrinsics
) -> MarkerDetection:
    """The detection of ``spec`` from its corners ``found`` (:func:`detect_markers`)."""
    side = _apparent_side(found)
    corners, correlation = _refine(gray, spec, found)
    # Solved on the normalized image plane (K = I, no distortion) for every lens model alike.
    k, eye, none = intrinsics.k, np.eye(3), np.zeros(0)
    fisheye = intrinsics.distortion_model == "equidistant"
    if fisheye:
        normalized = cv2.fisheye.undistortPoints(
            corners.reshape(-1, 1, 2), k, intrinsics.dist_coeffs
        )
    else:  # no rectification (R = I), the normalized plane out (P = I)
        normalized = cv2.undistortPointsIter(
            corners.reshape(-1, 1, 2), k, intrinsics.dist_coeffs, eye, eye, _UNDISTORT_CRITERIA
        )
    normalized = np.asarray(normalized, dtype=np.float64).reshape(4, 2)
    object_points = spec.object_points()
    ok, rvec, tvec = cv2.solvePnP(
        object_points, normalized, eye, none, flags=cv2.SOLVEPNP_IPPE_SQUARE
    )
    if not ok:
        raise MarkerNotVisible(
            f"marker {spec.marker_id}: no pose fits its corners: check that the marker is flat"
            " and the intrinsics are this camera's"
        )
    rvec, tvec = cv2.solvePnPRefineLM(object_points, normalized, eye, none, rvec, tvec)
    pose = np.eye(4)
    pose[:3, :3] = cv2.Rodrigues(rvec)[0]
    pose[:3, 3] = np.asarray(tvec).ravel()
    if fisheye:
        projected, _ = cv2.fisheye.projectPoints(
            object_points.reshape(-1, 1, 3), rvec, tvec, k, intrinsics.dist_coeffs
        )
    else:
        projected, _ = cv2.projectPoints(object_points, rvec, tvec, k, intrinsics.dist_coeffs)
    rms = _rms(projected.reshape(-1, 2) - corners)
    floor = CONFIDENCE_MIN_CORRELATION
    match = (
        0.5 if math.isnan(correlation) else min(1.0, max(0.0, (correlation - floor) / (1 - floor)))
    )
    confidence = min(1.0, side / FULL_CONFIDENCE_SIDE_PX) * match * _residual_term(rms)
    return MarkerDetection(
        marker_id=spec.marker_id,
        camera_from_marker=pose,
        reprojection_rms_px=rms,
        confidence=float(confidence),
        corners_px=corners,
        corners_normalized=normalized,
        focal_px=math.sqrt(intrinsics.fx * intrinsics.fy),
        side_px=side,
        correlation=correlation,
    )


def object_state(
    detections: MarkerDetection | Sequence[MarkerDetection],
    base_from_camera: np.ndarray,
    model: ObjectModel,
    table_z_m: float | None = None,
) -> ObjectState:
    """The object's pose and keypoints in ``base_link`` from detections of its markers
    (:func:`detect_markers`) and the camera's pose ``base_from_camera`` (its optical frame in
    base_link, from a calibration).

    Without ``table_z_m``: the most confident detection's 6-DoF pose, moved to the object by
    its marker's ``object_from_marker``; the planar pose is its origin's x, y and its x axis's
    direction in the xy plane. Its depth comes from the marker's apparent size, the least
    precise part of a small marker's pose (a 1% error in the size is 1% of the distance).

    With ``table_z_m`` (the table top's z in base_link: 0 where the robot stands on the table,
    as in the sim cell): the object lies flat on the table, its origin ``model.rest_height_m``
    above it, so only (x, y, yaw) are unknown; they are fitted to every detected marker's
    corners at once (Gauss-Newton on the normalized image plane, from the corners' rays met
    with the markers' planes), after leaving out markers whose own pose on the table disagrees
    with the others' (a misread marker; the largest agreeing set is kept). The apparent size
    then no longer matters: in sim, push_t's keypoints within 0.5 mm where the 6-DoF pose gives
    1.5-4 mm, depending on the assumed blur.

    The keypoints are placed by the planar pose, as a policy trained in simulation saw them
    (push_t's ``from_frame(T_POLYGON, pose)``)."""
    seen = [detections] if isinstance(detections, MarkerDetection) else list(detections)
    if not seen:
        raise ValueError("object_state needs at least one detection")
    base_from_camera = np.asarray(base_from_camera, dtype=np.float64)
    best = max(seen, key=lambda detection: detection.confidence)
    object_from_best = model.placed(best.marker_id).object_from_marker_matrix()
    six_dof = base_from_camera @ best.camera_from_marker @ np.linalg.inv(object_from_best)
    tilt = math.degrees(math.acos(float(np.clip(six_dof[2, 2], -1.0, 1.0))))
    if table_z_m is None:
        yaw = math.atan2(six_dof[1, 0], six_dof[0, 0])
        planar = np.array([six_dof[0, 3], six_dof[1, 3], yaw])
        base_from_object, rms = six_dof, best.reprojection_rms_px
        confidence = best.confidence
    else:
        if model.rest_height_m is None:
            raise ValueError(
                "the pose on the table needs the object's rest_height_m (its origin's height"
                " above the table when it lies on it)"
            )
        height = table_z_m + model.rest_height_m
        seen = _agreeing(seen, base_from_camera, model, height)
        best = max(seen, key=lambda detection: detection.confidence)
        object_from_best = model.placed(best.marker_id).object_from_marker_matrix()
        six_dof = base_from_camera @ best.camera_from_marker @ np.linalg.inv(object_from_best)
        tilt = math.degrees(math.acos(float(np.clip(six_dof[2, 2], -1.0, 1.0))))
        fit = _TableFit(seen, base_from_camera, model, height)
        planar = fit.solve(fit.initial_guess(six_dof))
        base_from_object = _planar_matrix(planar, height)
        rms = _rms(fit.residuals(planar).reshape(-1, 2)) * best.focal_px
        confidence = best.confidence * _residual_term(rms)
    planar[2] = math.remainder(planar[2], 2 * math.pi)
    c, s = math.cos(planar[2]), math.sin(planar[2])
    keypoints = model.keypoints() @ np.array([[c, s], [-s, c]]) + planar[:2]
    return ObjectState(
        base_from_object=base_from_object,
        planar_pose=planar,
        keypoints=keypoints,
        tilt_deg=tilt,
        reprojection_rms_px=rms,
        on_table=table_z_m is not None,
        marker_ids=tuple(detection.marker_id for detection in seen),
        confidence=float(confidence),
    )


# -- internals ---------------------------------------------------------------------------------

#: Markers whose poses on the table (each fitted alone) lie within this of each other (m, rad)
#: describe one object pose. A misread marker (a partly hidden one decoded as another id of the
#: object) puts it at least one marker spacing (push_t's block: 60 mm) or a quarter turn away.
AGREEMENT_M = 0.01
AGREEMENT_RAD = math.radians(5.0)


def _agreeing(
    detections: list[MarkerDetection],
    base_from_camera: np.ndarray,
    model: ObjectModel,
    height: float,
) -> list[MarkerDetection]:
    """The largest set of detections whose single-marker poses on the table agree (ties: the
    most confident), so one misread marker cannot drag the joint fit away: during push_t
    episodes, a marker partly under the gripper was read as another of the block's ids and
    the joint fit of three markers landed 47 mm off."""
    if len(detections) < 2:
        return detections
    poses = []
    for detection in detections:
        object_from_marker = model.placed(detection.marker_id).object_from_marker_matrix()
        six_dof = (
            base_from_camera @ detection.camera_from_marker @ np.linalg.inv(object_from_marker)
        )
        fit = _TableFit([detection], base_from_camera, model, height)
        poses.append(fit.solve(fit.initial_guess(six_dof)))

    def agree(a: np.ndarray, b: np.ndarray) -> bool:
        turn = abs(math.remainder(float(a[2] - b[2]), 2 * math.pi))
        return float(np.hypot(*(a[:2] - b[:2]))) <= AGREEMENT_M and turn <= AGREEMENT_RAD

    groups = [
        [j for j in range(len(poses)) if agree(poses[i], poses[j])] for i in range(len(poses))
    ]
    chosen = max(groups, key=lambda g: (len(g), sum(detections[j].confidence for j in g)))
    return [detections[j] for j in chosen]


@functools.cache
@functools.cache
def _detector(dictionary: str, border_bits: int) -> cv2.aruco.ArucoDetector:
    parameters = cv2.aruco.DetectorParameters()
    parameters.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    parameters.markerBorderBits = border_bits
    # Small markers (15-25 px, as a 3 cm marker is from a camera 1 m away): sample each cell
    # more finely and further from its blurred edges when decoding.
    parameters.perspectiveRemovePixelPerCell = 8
    parameters.perspectiveRemoveIgnoredMarginPerCell = 0.3
    return cv2.aruco.ArucoDetector(aruco_dictionary(dictionary), parameters)


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image is {image.dtype}: give uint8")
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    raise ValueError(f"image of shape {image.shape}: give (H, W, 3) RGB or (H, W) grey")


def _find(gray: np.ndarray, specs: Sequence[MarkerSpec]) -> tuple[dict[int, np.ndarray], list[int]]:
    """The corners (4, 2) float64, detector order, of each of ``specs`` found, by id; and every
    id decoded."""
    first = specs[0]
    corners, ids, rejected = _detector(first.dictionary, first.border_bits).detectMarkers(gray)
    seen = [] if ids is None else [int(i) for i in ids.ravel()]
    wanted = {spec.marker_id for spec in specs}
    found: dict[int, np.ndarray] = {}
    for index, marker_id in enumerate(seen):
        if marker_id not in wanted:
            continue
        if marker_id in found:
            raise ValueError(
                f"marker {marker_id} ({first.dictionary}) seen {seen.count(marker_id)} times:"
                " give each marker its own id"
            )
        found[marker_id] = np.asarray(corners[index], dtype=np.float64).reshape(4, 2)
    if len(found) < len(wanted):
        quads = [np.asarray(candidate, np.float64).reshape(4, 2) for candidate in rejected]
        quads.sort(key=_apparent_side, reverse=True)
        for quad in quads[:_MAX_CANDIDATES]:
            if _signed_area(quad) < 0:  # the marker's corners go clockwise in the image
                quad = quad[[0, 3, 2, 1]]
            decoded = _decode_candidate(gray, first, quad)
            if decoded is not None and decoded[0] in wanted and decoded[0] not in found:
                found[decoded[0]] = decoded[1]
                if len(found) == len(wanted):
                    break
    return found, sorted(set(seen))


def _decode_candidate(
    gray: np.ndarray, spec: MarkerSpec, quad: np.ndarray
) -> tuple[int, np.ndarray] | None:
    """A square the detector found but could not decode, decoded again after aligning it to
    the border of a marker of ``spec``'s dictionary and size (the black ring and the white
    around it) by ECC: small, blurred markers fail the detector's decoding because it samples
    the cells from corners that are half a pixel off. The id read and the corners in the
    marker's order, or None.
    """
    if _apparent_side(quad) < MIN_SIDE_PX / 2:
        return None
    template, template_corners, data_mask = _template(spec)
    homography = cv2.getPerspectiveTransform(template_corners, quad.astype(np.float32))
    homography = homography.astype(np.float32)
    border_mask = np.where(data_mask, 0, 255).astype(np.uint8)
    try:
        _, homography = cv2.findTransformECCWithMask(
            _blurred_template(spec, quad),
            gray.astype(np.float32),
            border_mask,
            np.full(gray.shape, 255, np.uint8),
            homography,
            cv2.MOTION_HOMOGRAPHY,
            _ECC_CRITERIA,
            1,
        )
    except cv2.error:
        return None
    aligned = cv2.warpPerspective(
        gray.astype(np.float32),
        homography,
        template.shape[::-1],
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
    )
    bits = _cell_means(aligned, spec)
    black = float(np.median(bits[0]))  # the border ring's top row
    white = float(np.median(aligned[data_mask == 0][template[data_mask == 0] > 127]))
    if white - black < 10.0:
        return None
    n = spec.cells - 2 * spec.border_bits
    inner = bits[spec.border_bits : spec.border_bits + n, spec.border_bits : spec.border_bits + n]
    hard = (inner > (black + white) / 2).astype(np.uint8)
    ok, marker_id, rotation = aruco_dictionary(spec.dictionary).identify(hard, 0.6)
    if not ok:
        return None
    corners = cv2.perspectiveTransform(template_corners[None].astype(np.float64), homography)[0]
    return int(marker_id), np.roll(corners.reshape(4, 2), int(rotation), axis=0)  # as detected


def _refine(gray: np.ndarray, spec: MarkerSpec, corners: np.ndarray) -> tuple[np.ndarray, float]:
    """The corners aligned by ECC (the marker's whole drawing, its bits' edges included,
    matched to the image under a homography), and the correlation coefficient reached (NaN
    when ECC failed or wandered off, the corners then as given)."""
    _, template_corners, _ = _template(spec)
    homography = cv2.getPerspectiveTransform(template_corners, corners.astype(np.float32))
    homography = homography.astype(np.float32)
    try:
        rho, homography = cv2.findTransformECC(
            _blurred_template(spec, corners),
            gray.astype(np.float32),
            homography,
            cv2.MOTION_HOMOGRAPHY,
            _ECC_CRITERIA,
            np.full(gray.shape, 255, np.uint8),
            1,
        )
    except cv2.error:
        return corners, math.nan
    refined = cv2.perspectiveTransform(template_corners[None].astype(np.float64), homography)
    refined = refined[0].reshape(4, 2)
    if np.abs(refined - corners).max() > 0.2 * _apparent_side(corners):
        return corners, math.nan
    return refined, float(rho)


#: Template pixels a marker cell.
_TEMPLATE_CELL_PX = 8
_ECC_CRITERIA = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-6)
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 50, 1e-12)
#: At most this many of the detector's undecoded squares are decoded again, the largest first.
_MAX_CANDIDATES = 32


@functools.cache
def _template(spec: MarkerSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The marker's drawing for ECC (float32), with half its quiet zone (the plate's edge, and
    what lies beyond it, differ from object to object); its black square's corners in it
    (pixel centres at integers), detector order; and a mask of its data cells."""
    side = spec.cells * _TEMPLATE_CELL_PX
    margin = max(1, round(spec.quiet_fraction / 2 * side))
    marker = cv2.aruco.generateImageMarker(
        aruco_dictionary(spec.dictionary), spec.marker_id, side, borderBits=spec.border_bits
    )
    template = np.pad(np.asarray(marker), margin, constant_values=255).astype(np.float32)
    low, high = margin - 0.5, margin + side - 0.5
    corners = np.array([[low, low], [high, low], [high, high], [low, high]], np.float32)
    data = np.zeros(template.shape, np.uint8)
    first, last = margin + spec.border_bits * _TEMPLATE_CELL_PX, margin + side
    last -= spec.border_bits * _TEMPLATE_CELL_PX
    data[first:last, first:last] = 1
    return template, corners, data


def _blurred_template(spec: MarkerSpec, corners: np.ndarray) -> np.ndarray:
    """:func:`_template` blurred as the image is at the marker's apparent size."""
    template = _template(spec)[0]
    scale = _apparent_side(corners) / (spec.cells * _TEMPLATE_CELL_PX)  # image px / template px
    return cv2.GaussianBlur(template, (0, 0), TEMPLATE_BLUR_PX / scale)


def _cell_means(aligned: np.ndarray, spec: MarkerSpec) -> np.ndarray:
    """(cells, cells): the mean of the middle half of each cell of an image aligned to
    :func:`_template`."""
    side = spec.cells * _TEMPLATE_CELL_PX
    margin = (aligned.shape[0] - side) // 2
    grid = aligned[margin : margin + side, margin : margin + side]
    cells = grid.reshape(spec.cells, _TEMPLATE_CELL_PX, spec.cells, _TEMPLATE_CELL_PX)
    quarter = _TEMPLATE_CELL_PX // 4
    middle = cells[
        :, quarter : _TEMPLATE_CELL_PX - quarter, :, quarter : _TEMPLATE_CELL_PX - quarter
    ]
    return middle.mean(axis=(1, 3))


def _signed_area(corners: np.ndarray) -> float:
    """The quadrilateral's area (shoelace), positive when its corners go clockwise in the image
    (x right, y down), pixels squared."""
    x, y = corners[:, 0], corners[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _apparent_side(corners: np.ndarray) -> float:
    """The square root of the quadrilateral's area, pixels."""
    return math.sqrt(abs(_signed_area(corners)))


def _rms(residuals: np.ndarray) -> float:
    """RMS length of (N, 2) residuals."""
    return float(np.sqrt(np.mean(np.sum(np.asarray(residuals) ** 2, axis=1))))


def _residual_term(rms_px: float) -> float:
    return math.exp(-0.5 * (rms_px / CONFIDENCE_RMS_PX) ** 2)


def _too_small(spec: MarkerSpec, side_px: float, min_side_px: float) -> str:
    return (
        f"marker {spec.marker_id} seen at {side_px:.1f} px: too small (at least"
        f" {min_side_px:.0f} px), move the camera closer or print a larger marker"
    )


def _planar_matrix(planar: np.ndarray, height: float) -> np.ndarray:
    """base_from_object (4x4) of an object upright at (x, y, yaw) with its origin at ``height``."""
    c, s = math.cos(planar[2]), math.sin(planar[2])
    return np.array(
        [[c, -s, 0.0, planar[0]], [s, c, 0.0, planar[1]], [0.0, 0.0, 1.0, height], [0, 0, 0, 1.0]]
    )


class _TableFit:
    """The markers' corners on the normalized image plane for an object lying on the table at
    a planar pose (x, y, yaw), its origin at ``height`` in base_link, against those detected."""

    def __init__(
        self,
        detections: Sequence[MarkerDetection],
        base_from_camera: np.ndarray,
        model: ObjectModel,
        height: float,
    ) -> None:
        self.base_from_camera = base_from_camera
        self.camera_from_base = np.linalg.inv(base_from_camera)
        columns = []
        for detection in detections:
            placed = model.placed(detection.marker_id)
            corners = np.hstack([placed.marker.object_points(), np.ones((4, 1))])
            columns.append(placed.object_from_marker_matrix() @ corners.T)
        #: (4, 4k): every detected corner (columns, homogeneous) in the object frame.
        self.corners_object = np.hstack(columns)
        self.observed = np.vstack([detection.corners_normalized for detection in detections])
        self.height = height

    def residuals(self, planar: np.ndarray) -> np.ndarray:
        """(8k,): projected minus detected corners, normalized image plane."""
        points = self.camera_from_base @ _planar_matrix(planar, self.height) @ self.corners_object
        return (points[:2] / points[2]).T.ravel() - self.observed.ravel()

    def initial_guess(self, six_dof: np.ndarray) -> np.ndarray:
        """(x, y, yaw) from where the corners' rays meet the heights the corners have when the
        object is upright (a turn about z keeps them): a 2D rigid fit of the corners' object
        x, y to those points. ``six_dof``'s planar projection if a ray misses (the camera
        level with the marker): the 6-DoF pose of a small marker may be the wrong one of two
        mirror-image solutions, so it is only the fallback."""
        count = self.observed.shape[0]
        rays = self.base_from_camera[:3, :3] @ np.vstack([self.observed.T, np.ones(count)])
        origin = self.base_from_camera[:3, 3]
        heights = self.height + self.corners_object[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = (heights - origin[2]) / rays[2]
        if not np.all(np.isfinite(distance) & (distance > 0)):
            return np.array(
                [six_dof[0, 3], six_dof[1, 3], math.atan2(six_dof[1, 0], six_dof[0, 0])]
            )
        base = (origin[:2, None] + rays[:2] * distance).T
        local = self.corners_object[:2].T
        a, b = local - local.mean(axis=0), base - base.mean(axis=0)
        yaw = math.atan2(float(np.sum(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])), float(np.sum(a * b)))
        c, s = math.cos(yaw), math.sin(yaw)
        xy = base.mean(axis=0) - np.array([[c, -s], [s, c]]) @ local.mean(axis=0)
        return np.array([xy[0], xy[1], yaw])

    def solve(self, planar: np.ndarray, iterations: int = 20) -> np.ndarray:
        """Gauss-Newton from ``planar`` (a numerical Jacobian: three parameters, eight
        residuals a marker)."""
        planar = np.asarray(planar, dtype=np.float64).copy()
        step = 1e-7
        for _ in range(iterations):
            residuals = self.residuals(planar)
            jacobian = np.stack(
                [(self.residuals(planar + delta) - residuals) / step for delta in np.eye(3) * step],
                axis=1,
            )
            update = np.linalg.lstsq(jacobian, -residuals, rcond=None)[0]
            planar += update
            if np.abs(update).max() < 1e-12:
                break
        return planar
