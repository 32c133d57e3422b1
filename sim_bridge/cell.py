"""The simulated UR5 cell: table, arm, gripper, a front and a wrist camera, stepped like the
real controller (joint targets held for one controller period of 125 Hz or 500 Hz, physics at
2 ms or finer underneath).

Tasks add their objects through ``scene_xml`` and read/write the MuJoCo ``model``/``data``.
Call :func:`sim_bridge.gl.configure_headless_rendering` before importing this module in a
process that renders without a display (``sim_bridge.make_env`` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from policy_runtime.robots.ur5 import CB3_CONTROL_HZ, JOINT_NAMES
from sim_bridge.cameras import (
    REALSENSE_COLOR_FOVY_DEG,
    CameraSpec,
    camera_xml,
    intrinsics_matrix,
    look_at_optical,
    look_at_xyaxes,
    optical_pose,
)
from sim_bridge.models.arm import ARM_DEFAULTS, arm_xml
from sim_bridge.models.gripper import STROKE_M, gripper_xml

#: A relaxed pose above the table: tool pointing down, elbow up.
HOME_Q = np.array([0.0, -1.9, 1.9, -1.571, -1.571, 0.0])

FRONT_CAMERA_POS = np.array([1.15, 0.0, 0.75])
FRONT_CAMERA_TARGET = np.array([0.35, 0.0, 0.12])
#: A second fixed camera, on the table's +y side looking across it: it tracks push_t's block
#: (its markers) when the arm hides it from the front camera, which the arm does when it
#: reaches over the block (measured in episodes of the bundled policy: the front camera lost
#: the block in ~1% of policy periods, this one saw it in 13 of those 14).
SIDE_CAMERA_POS = np.array([0.5, 0.95, 0.75])
SIDE_CAMERA_TARGET = np.array([0.5, 0.0, 0.0])


@dataclass(frozen=True)
class CellOptions:
    """How the cell is simulated; defaults are a UR5 (CB3) with D435-like cameras."""

    control_hz: float = CB3_CONTROL_HZ
    timestep_s: float = 0.002
    cameras: tuple[CameraSpec, ...] = field(
        default_factory=lambda: (
            CameraSpec("front", REALSENSE_COLOR_FOVY_DEG),
            CameraSpec("wrist", REALSENSE_COLOR_FOVY_DEG),
            CameraSpec("side", REALSENSE_COLOR_FOVY_DEG).placed(
                look_at_optical(SIDE_CAMERA_POS, SIDE_CAMERA_TARGET)
            ),
        )
    )
    table_height_m: float = 0.0

    def __post_init__(self) -> None:
        if self.timestep_s > 0.002:
            raise ValueError(f"timestep_s must be <= 0.002 s, got {self.timestep_s}")
        substeps = 1.0 / (self.control_hz * self.timestep_s)
        if abs(substeps - round(substeps)) > 1e-6 or round(substeps) < 1:
            raise ValueError(
                f"control period 1/{self.control_hz} s is not a whole number of "
                f"{self.timestep_s} s physics steps"
            )


def cell_xml(
    options: CellOptions, scene_xml: str = "", assets_xml: str = "", tool_xml: str = ""
) -> str:
    """MJCF of the whole cell; ``scene_xml`` is appended to the world body (task objects),
    ``assets_xml`` to the assets (their materials and textures) and ``tool_xml`` to ``tool0``
    (something the gripper holds, e.g. a calibration board)."""
    grip_bodies, grip_actuator, grip_coupling = gripper_xml()
    front, wrist = options.cameras[0], options.cameras[1]
    if wrist.placement is None:
        wrist_camera = (
            '<camera name="wrist" pos="0.075 0 0.06" '
            f'xyaxes="0 1 0 0.966 0 0.259" fovy="{wrist.fovy_deg:.10g}"/>'
        )
    else:
        wrist_camera = camera_xml("wrist", _matrix(wrist.placement), wrist.fovy_deg)
    arm_body, arm_actuators = arm_xml(attachment=grip_bodies + wrist_camera + tool_xml)
    table_top = options.table_height_m
    if front.placement is None:
        front_camera = (
            f'<camera name="{front.name}" pos="{" ".join(map(str, FRONT_CAMERA_POS))}" '
            f'xyaxes="{look_at_xyaxes(FRONT_CAMERA_POS, FRONT_CAMERA_TARGET)}" '
            f'fovy="{front.fovy_deg:.10g}"/>'
        )
    base = np.eye(4)  # base_link sits on the table top
    base[2, 3] = table_top
    if front.placement is not None:
        front_camera = camera_xml(front.name, base @ _matrix(front.placement), front.fovy_deg)
    for extra in options.cameras[2:]:  # more fixed cameras, e.g. one that tracks objects
        if extra.placement is None:
            raise ValueError(
                f"camera {extra.name}: a camera beyond front and wrist needs a placement (its"
                " optical frame in base_link)"
            )
        front_camera += camera_xml(extra.name, base @ _matrix(extra.placement), extra.fovy_deg)
    return f"""
<mujoco model="ur5_cell">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{options.timestep_s}" integrator="implicitfast" cone="elliptic"
          impratio="10"/>
  <visual><global offwidth="1280" offheight="960"/><quality shadowsize="1024"/></visual>
  <default>{ARM_DEFAULTS}</default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.35 0.35 0.38" rgb2="0.3 0.3 0.33"
             width="256" height="256"/>
    <material name="floor" texture="grid" texrepeat="8 8"/>
    <material name="table" rgba="0.78 0.72 0.62 1"/>
    <texture name="dr_checker" type="2d" builtin="checker" rgb1="0.8 0.8 0.8"
             rgb2="0.45 0.45 0.45" width="128" height="128"/>
    <texture name="dr_gradient" type="2d" builtin="gradient" rgb1="0.9 0.85 0.7"
             rgb2="0.4 0.35 0.3" width="128" height="128"/>
    <texture name="dr_noise" type="2d" builtin="flat" mark="random" random="0.2"
             rgb1="0.6 0.6 0.6" markrgb="0.95 0.95 0.95" width="128" height="128"/>
    {assets_xml}
  </asset>
  <worldbody>
    <light name="key" pos="0.6 -0.6 2.0" dir="-0.2 0.3 -1" diffuse="0.7 0.7 0.7"/>
    <light name="fill" pos="-0.5 0.8 1.8" dir="0.3 -0.4 -1" diffuse="0.35 0.35 0.35"
           castshadow="false"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" material="floor"/>
    <!-- A mocap body, not a world geom: domain randomisation moves it at run time. -->
    <body name="table" mocap="true" pos="0.45 0 {table_top - 0.375}">
      <geom name="table" type="box" size="0.6 0.6 0.375" material="table"
            friction="0.6 0.005 0.0001"/>
    </body>
    {front_camera}
    <frame pos="0 0 {table_top}">{arm_body}</frame>
    {scene_xml}
  </worldbody>
  <equality>{grip_coupling}</equality>
  <actuator>{arm_actuators}{grip_actuator}</actuator>
</mujoco>"""


class Ur5Cell:
    """A stepped UR5 cell. Units: rad, m, s; ``gripper`` opening in [0, 1]."""

    def __init__(
        self,
        options: CellOptions | None = None,
        scene_xml: str = "",
        assets_xml: str = "",
        tool_xml: str = "",
        assets: dict[str, bytes] | None = None,
    ) -> None:
        """``assets``: files the XML names (textures), by name, as bytes."""
        self.options = options or CellOptions()
        xml = cell_xml(self.options, scene_xml, assets_xml, tool_xml)
        self.model = mujoco.MjModel.from_xml_string(xml, assets or {})
        self.data = mujoco.MjData(self.model)
        self.substeps = round(1.0 / (self.options.control_hz * self.options.timestep_s))
        self._qpos_adr = np.array([self.model.joint(n).qposadr[0] for n in JOINT_NAMES])
        self._qvel_adr = np.array([self.model.joint(n).dofadr[0] for n in JOINT_NAMES])
        self._arm_act = np.array([self.model.actuator(n).id for n in JOINT_NAMES])
        self._grip_act = self.model.actuator("gripper").id
        self._finger_adr = self.model.joint("left_finger_joint").qposadr[0]
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self.reset()

    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.options.control_hz

    def reset(self, q: np.ndarray = HOME_Q, gripper: float = 1.0) -> None:
        """Back to time 0 with the arm at ``q`` (at rest, targets = ``q``)."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._qpos_adr] = q
        finger = gripper * STROKE_M / 2
        self.data.qpos[self._finger_adr] = finger
        self.data.qpos[self.model.joint("right_finger_joint").qposadr[0]] = finger
        self.data.ctrl[self._arm_act] = q
        self.data.ctrl[self._grip_act] = gripper
        mujoco.mj_forward(self.model, self.data)

    def step(self, q_target: np.ndarray, gripper: float) -> None:
        """Hold joint targets and the gripper command for one controller period."""
        q_target = np.asarray(q_target, dtype=np.float64)
        if q_target.shape != (6,) or not np.isfinite(q_target).all():
            raise ValueError(f"q_target must be 6 finite joint positions, got {q_target}")
        self.data.ctrl[self._arm_act] = q_target
        self.data.ctrl[self._grip_act] = float(np.clip(gripper, 0.0, 1.0))
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)

    @property
    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self._qpos_adr].copy()

    @property
    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self._qvel_adr].copy()

    @property
    def gripper_opening(self) -> float:
        """Measured opening in [0, 1] (distance between the pads over the 85 mm stroke)."""
        return float(2 * self.data.qpos[self._finger_adr] / STROKE_M)

    def body_pose(self, name: str) -> np.ndarray:
        """World pose (4x4) of a body, e.g. ``tool0``."""
        body = self.data.body(name)
        return _pose(body.xpos, body.xmat)

    def site_pose(self, name: str) -> np.ndarray:
        """World pose (4x4) of a site, e.g. ``tcp``."""
        site = self.data.site(name)
        return _pose(site.xpos, site.xmat)

    def camera_intrinsics(self, camera: str, width: int, height: int) -> np.ndarray:
        return intrinsics_matrix(float(self.model.camera(camera).fovy[0]), width, height)

    def camera_pose(self, camera: str) -> np.ndarray:
        """World pose of the camera's optical frame (z forward, y down)."""
        cam = self.data.camera(camera)
        return optical_pose(cam.xpos, cam.xmat)

    def render(self, camera: str, width: int, height: int, depth: bool = False) -> np.ndarray:
        """RGB (H, W, 3) uint8, or metric depth (H, W) float32 in metres."""
        return render_view(self._renderers, self.model, self.data, camera, (width, height), depth)

    @property
    def joint_efforts(self) -> np.ndarray:
        """The arm's actuator forces (6,), N m: what the driver reports as effort."""
        return self.data.actuator_force[self._arm_act].copy()

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()


def render_view(
    renderers: dict[tuple[int, int], mujoco.Renderer],
    model: mujoco.MjModel,
    data: mujoco.MjData,
    camera: str,
    size: tuple[int, int],
    depth: bool = False,
) -> np.ndarray:
    """``camera``'s view of ``data`` at ``size`` (W, H): RGB (H, W, 3) uint8, or metric depth
    (H, W) float32 in metres. ``renderers`` caches one renderer per size; a renderer's GL context
    belongs to the thread that uses it, so each rendering thread keeps its own cache."""
    renderer = renderers.get(size)
    if renderer is None:
        renderer = mujoco.Renderer(model, height=size[1], width=size[0])
        renderers[size] = renderer
    if depth:
        renderer.enable_depth_rendering()
    else:
        renderer.disable_depth_rendering()
    renderer.update_scene(data, camera=camera)
    image = renderer.render()
    return image.astype(np.float32) if depth else image


def _pose(position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = np.asarray(rotation).reshape(3, 3)
    pose[:3, 3] = position
    return pose


def _matrix(values: tuple[float, ...]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(4, 4)
