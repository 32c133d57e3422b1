"""Observations estimated from the simulated cameras, as a real cell must: ``prt eval
--object-state marker`` hands a low-dim policy the object state that
:class:`calibration.tracking.MarkerTracker` reads off the images of the object's markers (the
front camera's, else the side camera's), in place of the simulator's exact state.

A :data:`Perception` maps the env's observation to the one the policy sees, or to None when
its estimate is lost that period; the rollout (:mod:`policy_runtime.evaluation.rollout`) then
treats the period as the ROS graph treats a tracker that published nothing: the observation is
stale, no chunk is asked for, and the deployed stack's watchdog holds the arm once the newest
observation is older than ``max_observation_age_s``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from calibration.markers import ObjectModel
    from calibration.tracking import MarkerTracker
    from sim_bridge.env import SimEnv

__all__ = ["MarkerPerception", "Perception", "tracked_object"]

#: ``perception(env, obs) -> obs | None``: the observation the policy sees (None: lost).
Perception = Callable[["SimEnv", dict[str, np.ndarray]], "dict[str, np.ndarray] | None"]

#: The cameras that track objects in the sim cell, in order of preference (the side camera
#: sees the block when the arm hides it from the front one), at the real cameras' resolution.
TRACKING_CAMERAS = ("front", "side")
TRACKING_SIZE = (640, 480)


def tracked_object(task: str) -> tuple[str, ObjectModel]:
    """The observation key a task's object state is published as, and the object's marker
    model. Only push_t's T block carries markers (``EnvOptions.block_marker``)."""
    if task != "push_t":
        raise ValueError(
            f"object state from markers: task {task!r} has no markers on its object (only push_t)"
        )
    from sim_bridge.tasks.push_t import marker_model

    return "block_keypoints", marker_model()


class MarkerPerception:
    """The task's object state from its markers in the tracking cameras (module docs): each
    period, the first of :data:`TRACKING_CAMERAS` that sees the object gives its state (the
    next is rendered only when one loses it); lost when none does.

    A camera's pose is the simulated camera's true pose, or its calibration's
    (``calibrations``: camera YAMLs of ``prt calibrate``, one per camera at most, whose
    intrinsics also set the render size), so an evaluation can include the calibration's own
    error. ``trackers`` count periods tracked and lost over every episode of this env."""

    def __init__(self, env: SimEnv, calibrations: Sequence[Path] = ()) -> None:
        from calibration.intrinsics import CameraIntrinsics
        from calibration.result import CameraCalibration
        from calibration.tracking import MarkerTracker

        if not env.options.block_marker:
            raise ValueError("object state from markers needs the env built with block_marker")
        self.key, model = tracked_object(env.task.name)
        results = {}
        for path in calibrations:
            result = CameraCalibration.load(path)
            if result.camera not in TRACKING_CAMERAS or result.camera in results:
                raise ValueError(
                    f"{path}: a calibration of camera {result.camera!r}; give at most one for "
                    f"each tracking camera {TRACKING_CAMERAS}"
                )
            results[result.camera] = result
        cell = env.cell
        base_from_world = np.linalg.inv(cell.body_pose("base_link"))
        self.trackers: dict[str, MarkerTracker] = {}
        for camera in TRACKING_CAMERAS:
            if camera in results:
                self.trackers[camera] = MarkerTracker.from_calibration(model, results[camera])
                continue
            width, height = TRACKING_SIZE
            intrinsics = CameraIntrinsics.from_matrix(
                cell.camera_intrinsics(camera, width, height), width, height
            )
            pose = base_from_world @ cell.camera_pose(camera)
            self.trackers[camera] = MarkerTracker(model, intrinsics, pose)

    def __call__(self, env: SimEnv, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        for camera, tracker in self.trackers.items():
            intrinsics = tracker.intrinsics
            estimate = tracker.estimate(
                env.cell.render(camera, intrinsics.width, intrinsics.height)
            )
            if estimate is not None:
                dtype = obs[self.key].dtype
                return {**obs, self.key: estimate.keypoints.reshape(-1).astype(dtype)}
        return None
