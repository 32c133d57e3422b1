"""One RealSense camera's settings, as a deployment YAML holds them under ``cameras.<name>``::

    cameras:
      front:
        serial: "123456789012"
        exposure_us: 20000
        white_balance_k: 4600

Pure pydantic: importable without rclpy or pyrealsense2.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SyncMode = Literal["default", "master", "slave"]

#: librealsense's ``inter_cam_sync_mode`` value of each mode (depth sensor option).
SYNC_MODE_VALUES: dict[str, float] = {"default": 0.0, "master": 1.0, "slave": 2.0}


class CameraConfig(BaseModel):
    """What to open and how. ``None`` for exposure and white balance means the camera's
    automatic control, which changes the images a policy was trained on from scene to scene; a
    deployment should fix both."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The device's serial number; "" opens the only connected device.
    serial: str = ""
    width: int = Field(default=640, gt=0)
    height: int = Field(default=480, gt=0)
    #: Colour and depth run at the same rate.
    fps: int = Field(default=30, gt=0)
    #: Depth aligned to the colour image.
    depth: bool = True
    #: Colour exposure in microseconds (None: auto exposure).
    exposure_us: float | None = Field(default=None, gt=0)
    #: Colour white balance in kelvin (None: auto white balance).
    white_balance_k: float | None = Field(default=None, gt=0)
    #: Projector power in milliwatts (None: the device's setting; 0 turns it off).
    laser_power_mw: float | None = Field(default=None, ge=0)
    #: Hardware sync between cameras (librealsense ``inter_cam_sync_mode`` 0/1/2).
    sync_mode: SyncMode = "default"
    #: Seconds between attempts to open a device that is gone or busy.
    reconnect_period_s: float = Field(default=1.0, gt=0)
    #: No frame for this long: the device stalled; it is closed and opened again. (Its first
    #: frame after opening may take longer: up to 5 s.)
    frame_timeout_s: float = Field(default=1.0, gt=0)
