"""How much a marker tracker trusts an estimate (:class:`TrackerSettings`): pydantic only, so a
deployment file can hold it without importing OpenCV."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrackerSettings"]


class TrackerSettings(BaseModel):
    """The defaults suit push_t's block seen by the front camera about 1 m away."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The table top's z in base_link (m): the object is fitted lying on it. None: the 6-DoF
    #: pose (depth from the markers' apparent size: millimetres worse for small markers).
    table_z_m: float | None = 0.0
    #: Estimates below this :attr:`~calibration.markers.ObjectState.confidence` are lost.
    min_confidence: float = Field(default=0.2, ge=0.0, le=1.0)
    #: Corners further than this (RMS, pixels) from the fitted pose are lost as ``off_table``
    #: (a clean fit is under 0.3 px).
    max_reprojection_px: float = Field(default=2.0, gt=0.0)
