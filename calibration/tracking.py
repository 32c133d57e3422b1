"""An object's state, frame after frame, from its markers in one calibrated fixed camera: what
a real cell publishes for a low-dim policy in place of the simulator's state (push_t's
``block_keypoints``), and what ``prt eval --object-state marker`` feeds the policy in sim.

:class:`MarkerTracker` turns an image into the object's keypoints in ``base_link``
(:func:`calibration.markers.detect_markers` then :func:`~calibration.markers.object_state` on
the table), or into nothing: a frame without a usable estimate is *lost*, counted by reason,
never a zero or a guess. Whoever publishes the state then publishes nothing for that frame, so
the policy server's window stops advancing and the executor holds on a stale observation
(the watchdog's ``observation_stale``), exactly as when a camera stops.

Cores only: no rclpy here (the node is :mod:`calibration.ros.object_state_node`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from calibration.intrinsics import CameraIntrinsics
from calibration.markers import (
    MarkerNotVisible,
    ObjectModel,
    ObjectState,
    detect_markers,
    object_state,
)
from calibration.result import CameraCalibration
from calibration.tracker_settings import TrackerSettings
from policy_runtime.validation import load_yaml_model

__all__ = ["LostReason", "MarkerTracker", "TrackedObject", "TrackerSettings"]

#: Why a frame gave no estimate: the marker not found (out of view, occluded, too small), an
#: estimate the tracker does not trust (:attr:`TrackerSettings.min_confidence`), corners no pose
#: on the table explains (the object lifted, tipped over, or on something), or an image the
#: camera's intrinsics do not fit.
LostReason = Literal["not_visible", "low_confidence", "off_table", "bad_image"]
LOST_REASONS: tuple[str, ...] = get_args(LostReason)


@dataclass(frozen=True)
class TrackedObject:
    """One frame's estimate."""

    #: (N, 2) float64: the model's keypoints in base_link's xy plane (m).
    keypoints: np.ndarray
    #: In [0, 1] (:attr:`~calibration.markers.ObjectState.confidence`).
    confidence: float
    #: Wall-clock seconds from the image to this estimate (detection and fit).
    processing_s: float
    state: ObjectState


class MarkerTracker:
    """One object's markers in one fixed camera (see the module docs).

    ``base_from_camera`` is the camera's optical frame in base_link (an eye-to-base
    calibration's :meth:`~calibration.result.CameraCalibration.parent_from_optical`).
    ``lost`` counts the frames without an estimate by :data:`LostReason`; ``last_problem``
    says in words why the newest one was lost (for a node's diagnostics)."""

    def __init__(
        self,
        model: ObjectModel,
        intrinsics: CameraIntrinsics,
        base_from_camera: np.ndarray,
        settings: TrackerSettings | None = None,
    ) -> None:
        pose = np.asarray(base_from_camera, dtype=np.float64)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise ValueError(f"base_from_camera must be a finite 4x4 pose, got shape {pose.shape}")
        self.model = model
        self.intrinsics = intrinsics
        self.base_from_camera = pose
        self.settings = settings or TrackerSettings()
        if self.settings.table_z_m is not None and model.rest_height_m is None:
            raise ValueError(
                "table_z_m is set but the object model has no rest_height_m: give the height"
                " of the object's origin above the table, or set table_z_m: null (6-DoF poses)"
            )
        self.tracked = 0
        self.lost: dict[str, int] = dict.fromkeys(LOST_REASONS, 0)
        self.last_problem = ""

    @classmethod
    def from_calibration(
        cls,
        model: ObjectModel,
        calibration: CameraCalibration,
        settings: TrackerSettings | None = None,
    ) -> MarkerTracker:
        """A tracker for the camera a calibration YAML describes; it must be fixed in the cell
        (``parent_frame: base_link``): a camera on the tool would need the arm's pose at every
        frame."""
        if calibration.parent_frame != "base_link":
            raise ValueError(
                f"camera {calibration.camera!r} is calibrated in {calibration.parent_frame}: "
                "track objects with a camera fixed in the cell (an eye_to_base calibration)"
            )
        return cls(model, calibration.intrinsics, calibration.parent_from_optical, settings)

    def estimate(
        self, image: np.ndarray, base_from_camera: np.ndarray | None = None
    ) -> TrackedObject | None:
        """The object's keypoints in ``image`` ((H, W, 3) RGB or (H, W) grey uint8), or None
        (lost: counted, with :attr:`last_problem`). Never raises on what a camera can send.
        ``base_from_camera``: where the camera was when it took ``image`` (a camera on the arm:
        the tool's pose at the image's stamp times the eye-in-hand calibration); default the
        fixed camera's pose."""
        start = time.perf_counter()
        try:
            detections = detect_markers(image, self.model, self.intrinsics)
        except MarkerNotVisible as exc:
            return self._lose("not_visible", str(exc))
        except ValueError as exc:  # wrong size or layout: the intrinsics are another camera's
            return self._lose("bad_image", str(exc))
        pose = self.base_from_camera if base_from_camera is None else base_from_camera
        state = object_state(detections, pose, self.model, self.settings.table_z_m)
        if state.reprojection_rms_px > self.settings.max_reprojection_px:
            return self._lose(
                "off_table",
                f"the marker's corners are {state.reprojection_rms_px:.1f} px from any pose on "
                "the table: the object is lifted, tipped over or on something",
            )
        if state.confidence < self.settings.min_confidence:
            seen = ", ".join(
                f"{d.marker_id}: {d.side_px:.0f} px, correlation {d.correlation:.2f}"
                for d in detections
            )
            return self._lose(
                "low_confidence",
                f"confidence {state.confidence:.2f} < {self.settings.min_confidence:g} (markers "
                f"{seen}): light them evenly, bring the camera closer or use bigger markers",
            )
        self.tracked += 1
        self.last_problem = ""
        return TrackedObject(
            keypoints=state.keypoints,
            confidence=state.confidence,
            processing_s=time.perf_counter() - start,
            state=state,
        )

    def _lose(self, reason: LostReason, problem: str) -> TrackedObject | None:
        """Count a lost frame; None (what :meth:`estimate` returns for it)."""
        self.lost[reason] += 1
        self.last_problem = f"{reason}: {problem}"
        return None


def load_object_model(path: Path | str) -> ObjectModel:
    """An object model (marker, offset, keypoints) from YAML; ValueError naming the file and
    the field."""
    return load_yaml_model(ObjectModel, Path(path), "object model")
