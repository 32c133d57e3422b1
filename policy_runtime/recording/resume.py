"""``--resume``: refuse, before anything records, a store that holds another recording's data."""

from __future__ import annotations

from pathlib import Path

from policy_runtime.data.layout import open_store
from policy_runtime.data.schema import DatasetSchemaError
from policy_runtime.data.writer import schema_difference, stored_schema
from policy_runtime.recording.config import CameraCalibration, RecordingConfig


def check_resume(path: Path, config: RecordingConfig) -> None:
    """Raise DatasetSchemaError naming the keys (or fields) where the store at ``path`` and
    ``config`` disagree. The cameras' intrinsics are checked when the recorder has them (the
    writer compares the whole schema when it opens the store)."""
    store = open_store(path)
    stored = stored_schema(store.meta, path)
    cameras = {
        key: CameraCalibration.model_validate(value)
        for key, value in stored.provenance.get("cameras", {}).items()
    }
    wanted = config.dataset_schema(cameras)
    if stored != wanted:
        raise DatasetSchemaError(schema_difference(path, stored, wanted))
