"""The simulated cell with a calibration board, and the ground truth a calibration must find.

Eye-in-hand: the board lies on the table and the wrist camera (on ``tool0``) looks at it;
the answer is ``tool0_from_camera``. Eye-to-base: the gripper holds the board (a plate beyond
the fingers, facing along the tool's z) and the front camera sees it; the answer is
``base_from_camera``. :meth:`CalibrationCell.view` puts the arm at joints ``q`` (kinematically:
no dynamics to settle) and renders the camera's image.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from sim_bridge.boards import plate_from_board, plate_xml
from sim_bridge.cell import CellOptions, Ur5Cell

#: Where the board plate sits: on the table (eye-in-hand), or in tool0 beyond the fingers
#: (eye-to-base), its face looking along the tool's z.
TABLE_BOARD_CENTRE = np.array([0.5, 0.0, 0.002])  # its face 2 mm above the table top
TOOL_BOARD_OFFSET_M = 0.2


class CalibrationCell:
    """See the module docs. ``board_png`` is the board image (PNG bytes) of ``board_size_m``."""

    def __init__(
        self,
        mode: Literal["eye_in_hand", "eye_to_base"],
        board_png: bytes,
        board_size_m: tuple[float, float],
        options: CellOptions | None = None,
    ) -> None:
        self.mode = mode
        self.camera = "wrist" if mode == "eye_in_hand" else "front"
        options = options or CellOptions()
        plate = np.eye(4)
        if mode == "eye_in_hand":
            plate[:3, 3] = TABLE_BOARD_CENTRE + np.array([0.0, 0.0, options.table_height_m])
            assets, body = plate_xml("board", board_size_m, plate, "board.png")
            scene, tool = body, ""
        else:
            plate[2, 3] = TOOL_BOARD_OFFSET_M  # the face looks along the tool's z
            assets, body = plate_xml("board", board_size_m, plate, "board.png")
            scene, tool = "", body
        self.cell = Ur5Cell(
            options, scene_xml=scene, assets_xml=assets, tool_xml=tool,
            assets={"board.png": board_png},
        )  # fmt: skip
        #: The board's frame in its parent (world for eye-in-hand, tool0 for eye-to-base).
        self.parent_from_board = plate @ plate_from_board(board_size_m)

    @property
    def options(self) -> CellOptions:
        return self.cell.options

    def view(self, q: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
        """The camera's RGB image with the arm at joints ``q``."""
        self.cell.reset(np.asarray(q, dtype=np.float64))
        return self.cell.render(self.camera, width, height)

    def intrinsics(self, width: int = 640, height: int = 480) -> np.ndarray:
        """The camera's true K at ``width`` x ``height``."""
        return self.cell.camera_intrinsics(self.camera, width, height)

    def truth(self) -> np.ndarray:
        """The transform a calibration must recover: ``tool0_from_camera`` (eye-in-hand) or
        ``base_from_camera`` (eye-to-base), camera = its optical frame."""
        camera = self.cell.camera_pose(self.camera)
        parent = self.cell.body_pose("tool0" if self.mode == "eye_in_hand" else "base_link")
        return np.linalg.inv(parent) @ camera

    def base_from_board(self) -> np.ndarray:
        """Eye-in-hand: the board on the table in ``base_link``."""
        return np.linalg.inv(self.cell.body_pose("base_link")) @ self.parent_from_board

    def placed(self, parent_from_optical: np.ndarray) -> CellOptions:
        """These options with this mode's camera placed at ``parent_from_optical``."""
        cameras = list(self.options.cameras)
        index = 1 if self.mode == "eye_in_hand" else 0
        cameras[index] = cameras[index].placed(parent_from_optical)
        return dataclasses.replace(self.options, cameras=tuple(cameras))

    def close(self) -> None:
        self.cell.close()
