"""Diffusion Policy replay buffers (zarr 2: ``data/<key>``, ``meta/episode_ends``) converted to
ours and to LeRobot, and our stores as replay buffers Diffusion Policy's code can load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from policy_runtime.cli.main import app
from policy_runtime.data import EpisodeDataset
from policy_runtime.data.formats import convert, detect_format, read_replay_buffer
from policy_runtime.data.layout import DatasetFormatError
from tests.test_dataset import _write_diffusion_policy_store

runner = CliRunner()
ENDS = [10, 18, 25]


def test_replay_buffer_converts_to_ours_with_the_rate_given(tmp_path: Path):
    arrays = _write_diffusion_policy_store(tmp_path / "pusht_replay.zarr")
    assert detect_format(tmp_path / "pusht_replay.zarr") == "dp"
    report = convert(tmp_path / "pusht_replay.zarr", tmp_path / "pusht.zarr", fps=10, task="push_t")
    assert (report.source_format, report.target_format, report.episodes, report.steps) == (
        "dp",
        "ours",
        3,
        25,
    )
    ds = EpisodeDataset.open(tmp_path / "pusht.zarr")
    schema = ds.schema
    assert schema is not None and set(schema.keys) == {"action", "img", "state", "timestamp"}
    assert (schema.control_hz, schema.task, schema.action_offset_steps) == (10, "push_t", 0)
    assert schema.keys["img"].is_image
    assert schema.provenance["diffusion_policy"]["timestamps"] == "step / 10 Hz"
    np.testing.assert_array_equal(ds.episode_ends, ENDS)
    for key in ("action", "state", "img"):
        np.testing.assert_array_equal(ds.load([key])[key], arrays[f"data/{key}"])
    np.testing.assert_allclose(ds.episode(1)["timestamp"], np.arange(8) / 10)


def test_stored_stamps_are_kept_and_odd_dtypes_named(tmp_path: Path):
    path = tmp_path / "real.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    stamps = 1.7e9 + np.arange(6) * 0.1
    root.create_array("data/action", data=np.ones((6, 2), np.float64), chunks=(6, 2))
    root.create_array("data/timestamp", data=stamps, chunks=(6,))
    root.create_array("meta/episode_ends", data=np.array([4, 6]), chunks=(2,))
    source = read_replay_buffer(path, fps=10)
    assert source.schema.provenance["diffusion_policy"]["casts"] == {"action": "float64 -> float32"}
    episodes = list(source.episodes())
    np.testing.assert_array_equal(episodes[1].arrays["timestamp"], stamps[4:])
    assert episodes[0].arrays["action"].dtype == np.float32

    root.create_array("data/flags", data=np.zeros((6,), np.int8), chunks=(6,))
    with pytest.raises(DatasetFormatError, match=r"data/flags has dtype int8"):
        read_replay_buffer(path, fps=10)


def test_a_replay_buffer_needs_its_rate_and_an_action(tmp_path: Path):
    _write_diffusion_policy_store(tmp_path / "pusht_replay.zarr")
    with pytest.raises(DatasetFormatError, match=r"does not store its rate: give fps \(--fps\)"):
        convert(tmp_path / "pusht_replay.zarr", tmp_path / "out.zarr")
    result = runner.invoke(
        app, ["data", "convert", str(tmp_path / "pusht_replay.zarr"), str(tmp_path / "out.zarr")]
    )
    assert result.exit_code == 1 and "--fps" in result.output
    assert not (tmp_path / "out.zarr").exists()

    path = tmp_path / "no_action.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("data/state", data=np.zeros((3, 2), np.float32), chunks=(3, 2))
    root.create_array("meta/episode_ends", data=np.array([3]), chunks=(1,))
    with pytest.raises(DatasetFormatError, match=r"no 'action' array in data/ \(has \['state'\]\)"):
        read_replay_buffer(path, fps=10)


def test_replay_buffer_to_lerobot_and_back(tmp_path: Path):
    arrays = _write_diffusion_policy_store(tmp_path / "pusht_replay.zarr")
    result = runner.invoke(
        app,
        [
            "data",
            "convert",
            str(tmp_path / "pusht_replay.zarr"),
            str(tmp_path / "lr"),
            "--fps",
            "10",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "lr/meta/info.json").read_text())
    assert info["features"]["observation.state"]["names"] == [f"state.{i}" for i in range(5)]
    assert info["features"]["observation.images.img"]["dtype"] == "video"
    convert(tmp_path / "lr", tmp_path / "back.zarr")
    ds = EpisodeDataset.open(tmp_path / "back.zarr")
    np.testing.assert_array_equal(ds.episode_ends, ENDS)
    for key in ("action", "state"):
        np.testing.assert_array_equal(ds.load([key])[key], arrays[f"data/{key}"])
    assert ds.load(["img"])["img"].shape == (25, 8, 8, 3)  # random noise: only the shape


def test_our_store_is_a_replay_buffer_diffusion_policy_loads(tmp_path: Path):
    """What ``ReplayBuffer.create_from_path`` asserts: ``data`` and ``meta`` groups,
    ``meta/episode_ends``, every ``data/<key>`` exactly ``episode_ends[-1]`` long; zarr 2."""
    _write_diffusion_policy_store(tmp_path / "pusht_replay.zarr")
    convert(tmp_path / "pusht_replay.zarr", tmp_path / "ours.zarr", fps=10)
    root = zarr.open_group(str(tmp_path / "ours.zarr"), mode="r", zarr_format=2)
    ends = np.asarray(root["meta/episode_ends"][:])
    assert ends.dtype == np.int64 and ends.tolist() == ENDS
    for name, array in root["data"].arrays():
        assert array.shape[0] == ends[-1], name
    assert (tmp_path / "ours.zarr/data/action/.zarray").is_file()


def test_info_on_a_replay_buffer_says_how_to_convert_it(tmp_path: Path):
    _write_diffusion_policy_store(tmp_path / "pusht_replay.zarr")
    result = runner.invoke(
        app, ["data", "info", str(tmp_path / "pusht_replay.zarr")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "layout: diffusion_policy" in result.output and "--fps" in result.output
