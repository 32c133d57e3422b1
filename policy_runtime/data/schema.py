"""The dataset schema stored in ``meta`` attrs, and the checks every episode passes before writing.

The schema is what lets a training run, an evaluation and a deploy machine agree on what a key
means (shape, dtype, unit, frame) without reading code; it is written once, when a store is
created, and an append that disagrees with it is refused before a byte is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FORMAT_NAME: Literal["policy_runtime.dataset"] = "policy_runtime.dataset"
FORMAT_VERSION = 1

#: Keys every episode carries, whatever the robot or task.
ACTION_KEY = "action"
TIMESTAMP_KEY = "timestamp"

_ALLOWED_DTYPES = {"uint8", "uint16", "int32", "int64", "float32", "float64", "bool"}


class DatasetSchemaError(ValueError):
    """An episode or a store does not match the schema; the message names the key."""


class FieldSpec(BaseModel):
    """One time-first array: per-step ``shape`` (without the time axis) and ``dtype``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: tuple[int, ...]
    dtype: str
    unit: str = ""
    frame: str = ""
    description: str = ""

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in _ALLOWED_DTYPES:
            raise ValueError(f"dtype {value!r} is not one of {sorted(_ALLOWED_DTYPES)}")
        return value

    @field_validator("shape")
    @classmethod
    def _positive_dims(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(d <= 0 for d in value):
            raise ValueError(f"shape {value} has a non-positive dimension")
        return value

    def check_rows(self, key: str, rows: np.ndarray) -> None:
        """Refuse rows ``(T, *shape)`` of another shape or dtype, or with NaN or inf, naming
        ``key``."""
        if rows.ndim != len(self.shape) + 1 or tuple(rows.shape[1:]) != self.shape:
            raise DatasetSchemaError(
                f"key {key!r}: shape {rows.shape} does not match (T, *{self.shape})"
            )
        if rows.dtype != np.dtype(self.dtype):
            raise DatasetSchemaError(
                f"key {key!r}: dtype {rows.dtype} does not match schema dtype {self.dtype}"
            )
        if rows.dtype.kind == "f" and not np.isfinite(rows).all():
            raise DatasetSchemaError(f"key {key!r}: contains NaN or inf")

    @property
    def is_image(self) -> bool:
        """Images are (H, W, 3) uint8, as in Diffusion Policy's replay buffers."""
        return self.dtype == "uint8" and len(self.shape) == 3 and self.shape[-1] == 3


class DatasetSchema(BaseModel):
    """Everything a reader needs to interpret ``data/*`` without the code that wrote it."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["policy_runtime.dataset"] = FORMAT_NAME
    version: int = FORMAT_VERSION
    keys: dict[str, FieldSpec]
    #: One value per episode (e.g. the seed that generated it, whether it succeeded), stored as
    #: ``meta/<key>`` arrays of length n_episodes and committed with the episode.
    episode_keys: dict[str, FieldSpec] = Field(default_factory=dict)
    control_hz: float = Field(gt=0)
    #: When the action recorded with step ``t``'s observation is due, in steps after it: 0 when
    #: it is the command sent at that observation (a teleop recorder, Diffusion Policy's real
    #: data), 1 when it is the target reached at the end of the step (simulated demonstrations:
    #: the env moves to the action over the step). Policies carry it to the robot, where the
    #: execution engine schedules each predicted action at the time the data meant.
    action_offset_steps: int = Field(default=0, ge=0)
    robot: str = ""
    task: str = ""
    source: str = ""
    #: How the data was made (generator settings, ...): part of the schema, so appending data
    #: made another way is refused.
    provenance: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _required_keys(self) -> DatasetSchema:
        if self.version != FORMAT_VERSION:
            raise ValueError(
                f"schema version {self.version} is not supported (this build reads "
                f"{FORMAT_VERSION})"
            )
        action = self.keys.get(ACTION_KEY)
        if action is None:
            raise ValueError(f"schema has no {ACTION_KEY!r} key")
        if len(action.shape) != 1 or action.dtype != "float32":
            raise ValueError(f"{ACTION_KEY!r} must be (action_dim,) float32, got {action}")
        stamp = self.keys.get(TIMESTAMP_KEY)
        if stamp is None or stamp.shape != () or stamp.dtype != "float64":
            raise ValueError(f"schema needs {TIMESTAMP_KEY!r} as () float64 seconds")
        reserved = {"episode_ends"} & set(self.episode_keys)
        if reserved:
            raise ValueError(f"episode_keys may not use the reserved name(s) {sorted(reserved)}")
        return self

    @property
    def observation_keys(self) -> list[str]:
        return [k for k in self.keys if k not in (ACTION_KEY, TIMESTAMP_KEY)]

    def to_attrs(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> DatasetSchema:
        return cls.model_validate(dict(attrs))

    def validate_episode(self, episode: Mapping[str, np.ndarray]) -> int:
        """Check an episode against the schema and return its length.

        Refuses missing or unknown keys, wrong per-step shapes, wrong dtypes, ragged lengths,
        empty episodes and non-finite floats, naming the offending key each time.
        """
        missing = sorted(set(self.keys) - set(episode))
        if missing:
            raise DatasetSchemaError(f"episode is missing key(s) {missing}")
        unknown = sorted(set(episode) - set(self.keys))
        if unknown:
            raise DatasetSchemaError(
                f"episode has key(s) {unknown} that the schema does not declare"
            )
        lengths: dict[str, int] = {}
        for key, spec in self.keys.items():
            value = episode[key]
            if not isinstance(value, np.ndarray):
                raise DatasetSchemaError(f"key {key!r}: expected a numpy array, got {type(value)}")
            spec.check_rows(key, value)
            lengths[key] = value.shape[0]
        if len(set(lengths.values())) != 1:
            raise DatasetSchemaError(f"keys have different lengths: {lengths}")
        length = next(iter(lengths.values()))
        if length == 0:
            raise DatasetSchemaError("episode is empty (0 steps)")
        if length > 1 and not (np.diff(episode[TIMESTAMP_KEY]) > 0).all():
            raise DatasetSchemaError(f"key {TIMESTAMP_KEY!r}: stamps are not strictly increasing")
        return length

    def validate_episode_info(self, info: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check per-episode values against ``episode_keys``; return them as arrays."""
        if set(info) != set(self.episode_keys):
            raise DatasetSchemaError(
                f"episode info has keys {sorted(info)}, the schema declares "
                f"{sorted(self.episode_keys)}"
            )
        values = {}
        for key, spec in self.episode_keys.items():
            value = np.asarray(info[key])
            if value.shape != spec.shape or not np.can_cast(value.dtype, spec.dtype, "same_kind"):
                raise DatasetSchemaError(
                    f"episode info {key!r}: {value.dtype}{list(value.shape)} does not match "
                    f"{spec.dtype}{list(spec.shape)}"
                )
            values[key] = value.astype(spec.dtype)
        return values
