"""The simulated cell with a calibration board, and the ground truth a calibration must find.

Eye-in-hand: the board lies on the table and the wrist camera (on ``tool0``) looks at it;
the answer is ``tool0_from_camera``. Eye-to-base: the gripper holds the board (a plate beyond
the fingers, facing along the tool's z) and the front camera sees it; the answer is
``base_from_camera``. :meth:`CalibrationCell.view` puts the arm at joints ``q`` (kinematically:
no dynamics to settle) and renders the camera's image.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sim_bridge.boards import plate_from_board, plate_xml
from sim_bridge.cell import CellOptions, Ur5Cell

#: Where the board plate sits: on the table (eye-in-hand), or in tool0 beyond the fingers
#: (eye-to-base), its face looking along the tool's z.
TABLE_BOARD_CENTRE = np.array([0.5, 0.0, 0.002])  # its face 2 mm above the table top
TOOL_BOARD_OFFSET_M = 0.2


@dataclass(frozen=True)
class BoardScene:
    """The XML and files that put a board in the cell (:class:`~sim_bridge.cell.Ur5Cell`'s
    arguments), and where its OpenCV frame is in its parent (world, or ``tool0``)."""

    scene_xml: str
    assets_xml: str
    tool_xml: str
    assets: dict[str, bytes]
    parent_from_board: np.ndarray


def board_scene(
    where: Literal["table", "tool"],
    board_png: bytes,
    board_size_m: tuple[float, float],
    table_height_m: float = 0.0,
) -> BoardScene:
    """A board lying on the table, or held by the gripper (see the module docs)."""
    plate = np.eye(4)
    if where == "table":
        plate[:3, 3] = TABLE_BOARD_CENTRE + np.array([0.0, 0.0, table_height_m])
    else:
        plate[2, 3] = TOOL_BOARD_OFFSET_M  # the face looks along the tool's z
    assets, body = plate_xml("calibration_board", board_size_m, plate, "calibration_board.png")
    return BoardScene(
        scene_xml=body if where == "table" else "",
        assets_xml=assets,
        tool_xml=body if where == "tool" else "",
        assets={"calibration_board.png": board_png},
        parent_from_board=plate @ plate_from_board(board_size_m),
    )


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
        where: Literal["table", "tool"] = "table" if mode == "eye_in_hand" else "tool"
        scene = board_scene(where, board_png, board_size_m, options.table_height_m)
        self.cell = Ur5Cell(
            options, scene.scene_xml, scene.assets_xml, scene.tool_xml, scene.assets
        )
        #: The board's frame in its parent (world for eye-in-hand, tool0 for eye-to-base).
        self.parent_from_board = scene.parent_from_board

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
