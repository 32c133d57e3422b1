"""A hand-eye capture run without ROS: where to go, what each stop saw, and the answer.

``prt calibrate handeye`` drives the arm (through the executor) to each generated pose in
turn; once the arm has settled there, the camera's next image and the measured joints become a
capture. Views the detector rejects are kept with their reason (the report lists them) and the
run goes on. At the end the intrinsics are the camera's own (its ``camera_info``, e.g. a
RealSense's factory calibration) or estimated from the views, each view's board pose is solved
with them, and the hand-eye solver gives the camera's pose. numpy + OpenCV only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from calibration.board import STANDARD_BOARD, BoardSpec, BoardView, ViewRejected, board_pose, detect
from calibration.handeye import Capture, HandEyeResult, Method, solve
from calibration.intrinsics import CameraIntrinsics, estimate_intrinsics
from calibration.poses import CalibrationPose, generate_poses
from calibration.result import CameraCalibration
from policy_runtime.robots.ur5 import forward_kinematics
from policy_runtime.validation import load_yaml_model

Mode = Literal["eye_in_hand", "eye_to_base"]


class CalibrateConfig(BaseModel):
    """A hand-eye run (``config/calibrate_*.yaml``). Poses are aimed with nominal transforms
    (a drawing's, a tape measure's): they only point the camera at the board; the run finds
    the real ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode
    camera: str = Field(min_length=1)
    board: BoardSpec = STANDARD_BOARD
    #: eye_in_hand: the board's centre on the table; eye_to_base: where to hold it (base_link).
    board_centre_m: tuple[float, float, float]
    #: eye_in_hand: tool0_from_camera; eye_to_base: base_from_camera (4x4, row-major, 16 values).
    nominal_camera: tuple[float, ...] = Field(min_length=16, max_length=16)
    #: eye_to_base: where the board is held, tool0_from_board (16 values).
    tool0_from_board: tuple[float, ...] | None = Field(default=None, min_length=16, max_length=16)
    poses: int = Field(default=20, ge=3)
    method: Method = "park"
    #: Use the camera's camera_info (factory intrinsics) instead of estimating them.
    use_camera_info: bool = True
    max_joint_speed_rad_s: float = Field(default=0.4, gt=0)
    settle_s: float = Field(default=0.5, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _board_held(self) -> CalibrateConfig:
        if self.mode == "eye_to_base" and self.tool0_from_board is None:
            raise ValueError("eye_to_base needs tool0_from_board: where the gripper holds it")
        return self

    @classmethod
    def load(cls, path: Path | str) -> CalibrateConfig:
        return load_yaml_model(cls, path, "calibration config")

    def plan(self, q_start: np.ndarray) -> list[CalibrationPose]:
        """The poses to visit, from ``q_start`` (see :func:`~calibration.poses.generate_poses`)."""
        nominal = np.asarray(self.nominal_camera, dtype=np.float64).reshape(4, 4)
        if self.mode == "eye_in_hand":
            return generate_poses(
                self.mode, self.poses, np.asarray(self.board_centre_m), tool0_from_camera=nominal,
                q_start=q_start, seed=self.seed,
            )  # fmt: skip
        assert self.tool0_from_board is not None
        return generate_poses(
            self.mode, self.poses, np.asarray(self.board_centre_m), base_from_camera=nominal,
            tool0_from_board=np.asarray(self.tool0_from_board, dtype=np.float64).reshape(4, 4),
            board_size_m=self.board.size_m, q_start=q_start, seed=self.seed,
        )  # fmt: skip


@dataclass(frozen=True)
class Stop:
    """What one pose gave: the measured joints and the view, or why the view was rejected."""

    index: int
    q: np.ndarray
    view: BoardView | None
    rejected: str | None = None


@dataclass
class CaptureRun:
    """The stops of a run, and the answer from them (see the module docs)."""

    config: CalibrateConfig
    stops: list[Stop] = field(default_factory=list)

    def record(self, index: int, q: np.ndarray, image: np.ndarray) -> Stop:
        """The stop at pose ``index``: the measured joints ``q`` and the camera's image."""
        try:
            stop = Stop(index, np.asarray(q, dtype=np.float64), detect(image, self.config.board))
        except ViewRejected as exc:
            stop = Stop(index, np.asarray(q, dtype=np.float64), None, str(exc))
        self.stops.append(stop)
        return stop

    def solve(self, intrinsics: CameraIntrinsics | None = None) -> CameraCalibration:
        """The calibration from the views so far, with ``intrinsics`` (None: estimated from
        the views); ValueError / HandEyeError saying what to capture more of."""
        good = [stop for stop in self.stops if stop.view is not None]
        if intrinsics is None:
            if not good:
                raise ValueError("no view found the board: aim the poses at it (board_centre_m)")
            size = good[0].view.image_size  # type: ignore[union-attr]
            intrinsics = estimate_intrinsics([s.view for s in good], size).intrinsics  # type: ignore[misc]
        captures = [
            Capture(forward_kinematics(stop.q), board_pose(stop.view, intrinsics).camera_from_board)
            for stop in good
            if stop.view is not None
        ]
        result = solve(captures, self.config.mode, self.config.method)
        self.result: HandEyeResult = result
        return CameraCalibration.from_transform(
            self.config.camera,
            result.transform,
            intrinsics,
            result.method,
            self.config.mode,
            len(result.used),
            result.residual_translation_mm,
            result.residual_rotation_deg,
        )

    def report(self) -> str:
        """Per stop, what was seen; then the solver's report."""
        lines = []
        for stop in self.stops:
            seen = (
                f"{len(stop.view.ids)} corners" if stop.view is not None else f"no: {stop.rejected}"
            )
            lines.append(f"pose {stop.index:>2}: {seen}")
        result = getattr(self, "result", None)
        if result is not None:
            lines.append(result.report())
        return "\n".join(lines)
