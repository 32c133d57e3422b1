"""LeRobot datasets: ours -> LeRobot v3.0 -> ours, LeRobot's own layouts read back, refusals.

The LeRobot fixtures here are laid out by hand with pyarrow and imageio-ffmpeg following
huggingface/lerobot's source (commit 7427f318: ``DatasetWriter._save_episode_data``,
``LeRobotDatasetMetadata._save_episode_metadata``, ``io_utils.write_tasks``,
``DatasetInfo.to_dict``, the v2.1 layout of ``convert_dataset_v21_to_v30.py``), not by our
writer. Video frames come back within the codec's loss: the bound below is a mean absolute
error of 8 uint8 levels per episode (AV1/CRF 30 and H.264/CRF 30 measure about 3 on these
frames).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from policy_runtime.cli.main import app
from policy_runtime.data import DatasetSchema, DatasetWriter, EpisodeDataset, FieldSpec
from policy_runtime.data.formats import (
    convert,
    detect_format,
    read_lerobot,
    write_lerobot,
    write_store,
)
from policy_runtime.data.layout import DatasetFormatError

runner = CliRunner()
VIDEO_MAE_BOUND = 8.0
LENGTH = 20
FPS = 10


def smooth_frames(n: int, seed: int, height: int = 64, width: int = 64) -> np.ndarray:
    """Gradients and a moving disc: camera-like content a video codec keeps well."""
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.zeros((n, height, width, 3), np.uint8)
    for t in range(n):
        frames[t, ..., 0] = (xx * 3 + t * 4 + seed * 40) % 256
        frames[t, ..., 1] = (yy * 3 + seed * 20) % 256
        frames[t, ..., 2] = 100
        disc = (xx - 12 - 2 * t) ** 2 + (yy - 20 - 8 * seed) ** 2 < 49
        frames[t][disc] = (240, 240, 40)
    return frames


def our_schema() -> DatasetSchema:
    return DatasetSchema(
        keys={
            "action": FieldSpec(shape=(7,), dtype="float32", unit="rad"),
            "timestamp": FieldSpec(shape=(), dtype="float64", unit="s"),
            "qpos": FieldSpec(shape=(6,), dtype="float32", unit="rad", frame="base_link"),
            "gripper": FieldSpec(shape=(1,), dtype="float32"),
            "front_rgb": FieldSpec(shape=(64, 64, 3), dtype="uint8", frame="front"),
        },
        episode_keys={
            "seed": FieldSpec(shape=(), dtype="int64"),
            "success": FieldSpec(shape=(), dtype="bool"),
        },
        control_hz=FPS,
        action_offset_steps=1,
        robot="ur5",
        task="push_t",
        source="test",
        provenance={"generator": {"seed": 3}},
    )


def our_episode(index: int, n: int = LENGTH) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(index)
    return {
        "action": rng.normal(size=(n, 7)).astype(np.float32),
        # Absolute stamps float32 cannot hold: they travel in policy_runtime.timestamp.
        "timestamp": 1.7e9 + 100.0 * index + np.arange(n) * 0.1,
        "qpos": rng.normal(size=(n, 6)).astype(np.float32),
        "gripper": rng.random((n, 1)).astype(np.float32),
        "front_rgb": smooth_frames(n, index),
    }


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ours") / "demo.zarr"
    with DatasetWriter(path, our_schema()) as writer:
        for i in range(3):
            writer.add_episode(our_episode(i), {"seed": 10 + i, "success": i != 1})
    return path


@pytest.fixture(scope="module")
def exported(ours: Path) -> Path:
    out = ours.parent / "demo_lerobot"
    write_lerobot(ours, out)
    return out


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


# --- ours -> LeRobot -> ours -------------------------------------------------------------------


def test_round_trip_restores_every_key_episode_and_value(ours: Path, exported: Path, tmp_path):
    back = write_store(read_lerobot(exported), tmp_path / "back.zarr")
    a, b = EpisodeDataset.open(ours), EpisodeDataset.open(back)
    assert b.schema == a.schema
    np.testing.assert_array_equal(b.episode_ends, a.episode_ends)
    for key in ("action", "timestamp", "qpos", "gripper"):
        x, y = a.load([key])[key], b.load([key])[key]
        assert y.dtype == x.dtype and y.shape == x.shape
        np.testing.assert_array_equal(y, x, err_msg=key)
    for key in ("seed", "success"):
        np.testing.assert_array_equal(b.episode_info(key), a.episode_info(key))
    for i in range(3):
        x, y = a.episode(i, ["front_rgb"])["front_rgb"], b.episode(i, ["front_rgb"])["front_rgb"]
        assert y.shape == x.shape and y.dtype == np.uint8
        assert np.abs(x.astype(int) - y).mean() < VIDEO_MAE_BOUND


def test_layout_follows_lerobot_v3(exported: Path):
    info = _json(exported / "meta/info.json")
    assert list(info) == [
        "codebase_version",
        "fps",
        "features",
        "total_episodes",
        "total_frames",
        "total_tasks",
        "chunks_size",
        "data_files_size_in_mb",
        "video_files_size_in_mb",
        "data_path",
        "video_path",
        "robot_type",
        "splits",
    ]
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 60, 1)
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (
        1000,
        100,
        200,
    )
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == (
        "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    )
    assert info["robot_type"] == "ur5" and info["splits"] == {"train": "0:3"}
    features = info["features"]
    assert list(features) == [
        "action",
        "observation.state",
        "observation.images.front",
        "policy_runtime.timestamp",
        "timestamp",
        "frame_index",
        "episode_index",
        "index",
        "task_index",
    ]
    assert features["observation.state"] == {
        "dtype": "float32",
        "shape": [7],
        "names": ["qpos.0", "qpos.1", "qpos.2", "qpos.3", "qpos.4", "qpos.5", "gripper.0"],
    }
    camera = features["observation.images.front"]
    assert camera["dtype"] == "video" and camera["shape"] == [64, 64, 3]
    assert camera["names"] == ["height", "width", "channels"]
    assert camera["info"]["video.codec"] == "av1" and camera["info"]["video.pix_fmt"] == "yuv420p"
    assert camera["info"]["is_depth_map"] is False and camera["info"]["video.fps"] == FPS
    assert features["timestamp"] == {"dtype": "float32", "shape": [1], "names": None}

    data = pq.read_table(exported / "data/chunk-000/file-000.parquet")
    assert data.schema.field("observation.state").type == pa.list_(pa.float32(), 7)
    assert data.schema.field("timestamp").type == pa.float32()
    assert data.schema.field("policy_runtime.timestamp").type == pa.float64()
    assert "observation.images.front" not in data.column_names
    hf = json.loads(data.schema.metadata[b"huggingface"])["info"]["features"]
    assert hf["action"] == {
        "feature": {"dtype": "float32", "_type": "Value"},
        "length": 7,
        "_type": "List",
    }
    np.testing.assert_array_equal(data.column("index").to_numpy(), np.arange(60))
    np.testing.assert_array_equal(
        data.column("timestamp").to_numpy(),
        np.tile(np.arange(LENGTH) / FPS, 3).astype(np.float32),
    )

    episodes = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["episode_index"] for e in episodes] == [0, 1, 2]
    assert [e["tasks"] for e in episodes] == [["push_t"]] * 3
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [
        (0, 20),
        (20, 40),
        (40, 60),
    ]
    video = "videos/observation.images.front/"
    assert [(e[video + "from_timestamp"], e[video + "to_timestamp"]) for e in episodes] == [
        (0.0, 2.0),
        (2.0, 4.0),
        (4.0, 6.0),
    ]
    assert {e["data/file_index"] for e in episodes} == {0}
    assert {e["meta/episodes/chunk_index"] for e in episodes} == {0}
    assert len(episodes[0]["stats/observation.images.front/mean"]) == 3
    assert (exported / "videos/observation.images.front/chunk-000/file-000.mp4").is_file()

    tasks = pq.read_table(exported / "meta/tasks.parquet")
    assert tasks.column_names == ["task_index", "task"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    assert tasks.column("task").to_pylist() == ["push_t"]


def test_stats_are_lerobots(ours: Path, exported: Path):
    stats = _json(exported / "meta/stats.json")
    ds = EpisodeDataset.open(ours)
    arrays = ds.load()
    expected_keys = {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    assert set(stats) == set(_json(exported / "meta/info.json")["features"])
    for feature in stats.values():
        assert set(feature) == expected_keys
    state = np.concatenate([arrays["qpos"], arrays["gripper"]], axis=1).astype(np.float64)
    s = stats["observation.state"]
    np.testing.assert_allclose(s["min"], state.min(axis=0))
    np.testing.assert_allclose(s["max"], state.max(axis=0))
    np.testing.assert_allclose(s["mean"], state.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s["std"], state.std(axis=0), rtol=1e-4, atol=1e-6)
    assert s["count"] == [60]
    assert np.all(np.asarray(s["q01"]) <= np.asarray(s["q99"]))
    np.testing.assert_allclose(stats["frame_index"]["max"], [LENGTH - 1])
    image = stats["observation.images.front"]
    assert np.asarray(image["mean"]).shape == (3, 1, 1) and image["count"] == [60]
    pixels = arrays["front_rgb"].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(np.asarray(image["mean"]).reshape(3), pixels.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(image["max"]).reshape(3), pixels.max(axis=0), rtol=1e-6)


def test_h264_and_file_limits_split_videos_and_chunks(ours: Path, tmp_path: Path):
    out = tmp_path / "split"
    write_lerobot(ours, out, vcodec="h264", chunks_size=2, video_files_size_in_mb=0.004)
    videos = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert videos == [
        "videos/observation.images.front/chunk-000/file-000.mp4",
        "videos/observation.images.front/chunk-000/file-001.mp4",
        "videos/observation.images.front/chunk-001/file-000.mp4",
    ]
    info = _json(out / "meta/info.json")
    assert info["features"]["observation.images.front"]["info"]["video.codec"] == "h264"
    source = read_lerobot(out)
    ds = EpisodeDataset.open(ours)
    for i, episode in enumerate(source.episodes()):
        truth = ds.episode(i)
        np.testing.assert_array_equal(episode.arrays["qpos"], truth["qpos"])
        error = np.abs(episode.arrays["front_rgb"].astype(int) - truth["front_rgb"]).mean()
        assert error < VIDEO_MAE_BOUND


def test_rate_must_be_an_integer_fps(tmp_path: Path):
    schema = our_schema().model_copy(update={"control_hz": 12.5})
    path = tmp_path / "odd.zarr"
    with DatasetWriter(path, schema) as writer:
        writer.add_episode(our_episode(0, 4), {"seed": 0, "success": True})
    with pytest.raises(DatasetFormatError, match=r"control_hz 12.5 is not an integer"):
        write_lerobot(path, tmp_path / "out")
    with pytest.raises(DatasetFormatError, match=r"fps 30 differs from the dataset's control_hz"):
        write_lerobot(path, tmp_path / "out", fps=30)
    assert not (tmp_path / "out").exists()


def test_keys_that_would_share_a_feature_are_named():
    from policy_runtime.data.formats.lerobot_layout import plan_features

    keys = dict(our_schema().keys)
    keys["front"] = keys["front_rgb"]
    schema = our_schema().model_copy(update={"keys": keys})
    with pytest.raises(DatasetFormatError, match=r"'front_rgb' and 'front' both map to "):
        plan_features(schema)


def test_a_failed_write_leaves_nothing(ours: Path, tmp_path: Path, monkeypatch):
    import policy_runtime.data.formats.lerobot_writer as lerobot

    calls = []

    def failing_encode(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise DatasetFormatError("encoding front_000001.mp4: ffmpeg failed: disk full")
        real_encode(*args, **kwargs)

    real_encode = lerobot.encode_mp4
    monkeypatch.setattr(lerobot, "encode_mp4", failing_encode)
    with pytest.raises(DatasetFormatError, match="disk full"):
        write_lerobot(ours, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# --- LeRobot's own datasets ------------------------------------------------------------------

DEFAULT_FEATURES = {
    name: {"dtype": dtype, "shape": [1], "names": None}
    for name, dtype in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    )
}
TASKS = ["pick the cube", "place the cube"]


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _encode_h264(path: Path, frames: np.ndarray, fps: int) -> None:
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (frames.shape[2], frames.shape[1]),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        quality=None,
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-g", "2", "-crf", "30"],
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def _hf_metadata(features: dict[str, Any]) -> dict[str, str]:
    hf = {}
    for name, ft in features.items():
        value = {"dtype": ft["dtype"], "_type": "Value"}
        if ft["dtype"] == "image":
            hf[name] = {"_type": "Image"}
        elif ft["shape"] == [1]:
            hf[name] = value
        elif ft["dtype"] != "video":
            hf[name] = {"feature": value, "length": ft["shape"][0], "_type": "List"}
    return {"huggingface": json.dumps({"info": {"features": hf}})}


def _data_table(columns: dict[str, Any], features: dict[str, Any]) -> pa.Table:
    arrays, fields = [], []
    for name, ft in features.items():
        if ft["dtype"] == "video":
            continue
        value = columns[name]
        if ft["dtype"] == "image":
            array = pa.array(
                [{"bytes": _png(img), "path": None} for img in value],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            )
        elif ft["shape"] == [1]:
            array = pa.array(value, pa.from_numpy_dtype(np.dtype(ft["dtype"])))
        else:
            inner = pa.from_numpy_dtype(np.dtype(ft["dtype"]))
            array = pa.FixedSizeListArray.from_arrays(
                pa.array(value.reshape(-1), inner), ft["shape"][0]
            )
        arrays.append(array)
        fields.append(pa.field(name, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, _hf_metadata(features)))


def _tasks_parquet(path: Path, tasks: list[str]) -> None:
    """What ``pd.DataFrame({"task_index": ...}, index=pd.Index(tasks, name="task"))
    .to_parquet(path)`` writes."""
    columns = [
        {"name": n, "field_name": n, "pandas_type": p, "numpy_type": t, "metadata": None}
        for n, p, t in (("task_index", "int64", "int64"), ("task", "unicode", "object"))
    ]
    meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": columns,
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.3.3",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": tasks})
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(meta)}), path)


def lerobot_v3_fixture(root: Path) -> dict[str, Any]:
    """Three episodes (12, 20, 15 frames) of a two-task dataset as LeRobot 0.6 records it:
    a state, an action, a reward, a video camera (H.264) and an image camera (PNG in the
    parquet); episodes 0-1 in data file 0, episode 2 in data file 1; one video file."""
    lengths = [12, 20, 15]
    task_of = [0, 1, 0]
    n = sum(lengths)
    rng = np.random.default_rng(7)
    truth: dict[str, Any] = {
        "state": rng.normal(size=(n, 2)).astype(np.float32),
        "action": rng.normal(size=(n, 2)).astype(np.float32),
        "reward": rng.random(n).astype(np.float32),
        "cam": np.concatenate([smooth_frames(k, i, 32, 48) for i, k in enumerate(lengths)]),
        "wrist": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
        "lengths": lengths,
        "task_of": task_of,
    }
    video_info = {
        "video.height": 32,
        "video.width": 48,
        "video.codec": "h264",
        "video.pix_fmt": "yuv420p",
        "video.fps": FPS,
        "video.channels": 3,
        "has_audio": False,
        "video.g": 2,
        "video.crf": 30,
        "video.preset": None,
        "video.fast_decode": 0,
        "video.video_backend": "pyav",
        "video.extra_options": {},
        "is_depth_map": False,
    }
    features = {
        "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": [2], "names": ["vx", "vy"]},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "observation.images.cam": {
            "dtype": "video",
            "shape": [32, 48, 3],
            "names": ["height", "width", "channels"],
            "info": video_info,
        },
        "observation.images.wrist": {
            "dtype": "image",
            "shape": [16, 16, 3],
            "names": ["height", "width", "channels"],
        },
        **DEFAULT_FEATURES,
    }
    ends = np.cumsum(lengths)
    starts = ends - lengths
    frame_index = np.concatenate([np.arange(k) for k in lengths])
    columns = {
        "observation.state": truth["state"],
        "action": truth["action"],
        "next.reward": truth["reward"],
        "observation.images.wrist": truth["wrist"],
        "timestamp": (frame_index / FPS).astype(np.float32),
        "frame_index": frame_index,
        "episode_index": np.repeat(np.arange(3), lengths),
        "index": np.arange(n),
        "task_index": np.repeat(task_of, lengths),
    }
    table = _data_table(columns, features)
    file_of = [0, 0, 1]
    for file in (0, 1):
        rows = [e for e in range(3) if file_of[e] == file]
        part = table.slice(starts[rows[0]], ends[rows[-1]] - starts[rows[0]])
        path = root / f"data/chunk-000/file-{file:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = pq.ParquetWriter(path, part.schema, compression="snappy", use_dictionary=True)
        for e in rows:  # one row group per episode, as DatasetWriter writes them
            writer.write_table(table.slice(starts[e], lengths[e]))
        writer.close()
    _encode_h264(root / "videos/observation.images.cam/chunk-000/file-000.mp4", truth["cam"], FPS)
    video = "videos/observation.images.cam/"
    episodes = [
        {
            "episode_index": e,
            "tasks": [TASKS[task_of[e]]],
            "length": lengths[e],
            "data/chunk_index": 0,
            "data/file_index": file_of[e],
            "dataset_from_index": int(starts[e]),
            "dataset_to_index": int(ends[e]),
            video + "chunk_index": 0,
            video + "file_index": 0,
            video + "from_timestamp": float(starts[e]) / FPS,
            video + "to_timestamp": float(ends[e]) / FPS,
            "stats/action/mean": truth["action"][starts[e] : ends[e]].mean(axis=0).tolist(),
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
        }
        for e in range(3)
    ]
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(episodes), root / "meta/episodes/chunk-000/file-000.parquet"
    )
    _tasks_parquet(root / "meta/tasks.parquet", TASKS)
    info = {
        "codebase_version": "v3.0",
        "fps": FPS,
        "features": features,
        "total_episodes": 3,
        "total_frames": n,
        "total_tasks": len(TASKS),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "robot_type": "so101_follower",
        "splits": {"train": "0:3"},
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    (root / "meta/stats.json").write_text("{}")
    return truth


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("native") / "so101_pick"
    return root, lerobot_v3_fixture(root)


def test_reads_a_lerobot_v3_dataset(native: tuple[Path, dict[str, Any]]):
    root, truth = native
    assert detect_format(root) == "lerobot"
    source = read_lerobot(root)
    schema = source.schema
    assert source.version == "v3.0" and source.sidecar is None
    assert set(schema.keys) == {
        "action",
        "state",
        "next_reward",
        "cam_rgb",
        "wrist_rgb",
        "timestamp",
        "task_index",
    }
    assert schema.keys["state"] == FieldSpec(shape=(2,), dtype="float32")
    assert schema.keys["cam_rgb"].is_image and schema.keys["cam_rgb"].shape == (32, 48, 3)
    assert (schema.control_hz, schema.robot, schema.task) == (FPS, "so101_follower", "")
    assert schema.provenance["lerobot"]["tasks"] == TASKS
    assert schema.provenance["lerobot"]["names"]["observation.state"] == ["x", "y"]
    np.testing.assert_array_equal(source.episode_lengths, truth["lengths"])
    start = 0
    for e, episode in enumerate(source.episodes()):
        n = truth["lengths"][e]
        rows = slice(start, start + n)
        arrays = episode.arrays
        np.testing.assert_array_equal(arrays["state"], truth["state"][rows])
        np.testing.assert_array_equal(arrays["action"], truth["action"][rows])
        np.testing.assert_array_equal(arrays["next_reward"][:, 0], truth["reward"][rows])
        np.testing.assert_array_equal(arrays["wrist_rgb"], truth["wrist"][rows])
        np.testing.assert_array_equal(arrays["task_index"], np.full(n, truth["task_of"][e]))
        np.testing.assert_array_equal(
            arrays["timestamp"], (np.arange(n) / FPS).astype(np.float32).astype(np.float64)
        )
        error = np.abs(arrays["cam_rgb"].astype(int) - truth["cam"][rows]).mean()
        assert arrays["cam_rgb"].dtype == np.uint8 and error < VIDEO_MAE_BOUND
        start += n


def test_lerobot_to_ours_to_lerobot_keeps_features_and_tasks(
    native: tuple[Path, dict[str, Any]], tmp_path: Path
):
    root, truth = native
    report = convert(root, tmp_path / "pick.zarr")
    assert (report.source_format, report.target_format, report.episodes) == ("lerobot", "ours", 3)
    ds = EpisodeDataset.open(tmp_path / "pick.zarr")
    np.testing.assert_array_equal(ds.episode_ends, np.cumsum(truth["lengths"]))
    convert(tmp_path / "pick.zarr", tmp_path / "again", vcodec="h264")
    original, again = _json(root / "meta/info.json"), _json(tmp_path / "again/meta/info.json")
    assert list(again["features"]) == list(original["features"])  # LeRobot's order
    for name in ("observation.state", "action", "next.reward", "observation.images.wrist"):
        assert again["features"][name] == original["features"][name], name
    assert again["features"]["observation.images.cam"]["dtype"] == "video"
    assert again["total_tasks"] == 2
    # The PNG camera went back as PNG frames: exactly the original pixels.
    wrist = np.concatenate(
        [e.arrays["wrist_rgb"] for e in read_lerobot(tmp_path / "again").episodes()]
    )
    np.testing.assert_array_equal(wrist, truth["wrist"])
    tasks = pq.read_table(tmp_path / "again/meta/tasks.parquet").column("task").to_pylist()
    assert tasks == TASKS
    data = pq.read_table(tmp_path / "again/data/chunk-000/file-000.parquet")
    np.testing.assert_array_equal(
        data.column("task_index").to_numpy(), np.repeat(truth["task_of"], truth["lengths"])
    )


def lerobot_v21_fixture(root: Path, version: str = "v2.1") -> np.ndarray:
    """Two episodes in LeRobot's v2.1 layout: a parquet and an mp4 per episode,
    ``episodes.jsonl`` and ``tasks.jsonl``."""
    lengths = [6, 9]
    features = {
        "observation.state": {"dtype": "float32", "shape": [3], "names": None},
        "action": {"dtype": "float32", "shape": [3], "names": None},
        "observation.images.top": {
            "dtype": "video",
            "shape": [16, 16, 3],
            "names": ["height", "width", "channels"],
            "info": {"video.fps": FPS, "video.codec": "h264"},
        },
        **DEFAULT_FEATURES,
    }
    state = np.arange(sum(lengths) * 3, dtype=np.float32).reshape(-1, 3)
    start = 0
    for e, n in enumerate(lengths):
        rows = slice(start, start + n)
        columns = {
            "observation.state": state[rows],
            "action": -state[rows],
            "timestamp": (np.arange(n) / FPS).astype(np.float32),
            "frame_index": np.arange(n),
            "episode_index": np.full(n, e),
            "index": np.arange(start, start + n),
            "task_index": np.zeros(n, dtype=np.int64),
        }
        path = root / f"data/chunk-000/episode_{e:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_data_table(columns, features), path)
        frames = smooth_frames(n, e, 16, 16)
        _encode_h264(
            root / f"videos/chunk-000/observation.images.top/episode_{e:06d}.mp4", frames, FPS
        )
        start += n
    (root / "meta").mkdir(parents=True, exist_ok=True)
    episodes = [
        {"episode_index": e, "tasks": ["stack"], "length": n} for e, n in enumerate(lengths)
    ]
    (root / "meta/episodes.jsonl").write_text("\n".join(json.dumps(e) for e in episodes) + "\n")
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "stack"}) + "\n")
    info = {
        "codebase_version": version,
        "robot_type": "aloha",
        "total_episodes": 2,
        "total_frames": sum(lengths),
        "total_tasks": 1,
        "total_videos": 2,
        "total_chunks": 1,
        "chunks_size": 1000,
        "fps": FPS,
        "splits": {"train": "0:2"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": (
            "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
        ),
        "features": features,
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return state


@pytest.mark.parametrize("version", ["v2.1", "v2.0"])
def test_reads_the_v2_layout(tmp_path: Path, version: str):
    state = lerobot_v21_fixture(tmp_path / "old", version)
    source = read_lerobot(tmp_path / "old")
    assert source.version == version and source.schema.task == "stack"
    episodes = list(source.episodes())
    assert [e.length for e in episodes] == [6, 9]
    np.testing.assert_array_equal(episodes[1].arrays["state"], state[6:])
    np.testing.assert_array_equal(episodes[1].arrays["action"], -state[6:])
    error = np.abs(episodes[1].arrays["top_rgb"].astype(int) - smooth_frames(9, 1, 16, 16))
    assert error.mean() < VIDEO_MAE_BOUND


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1.6", "v4.0"])
def test_unsupported_versions_are_refused_by_name(tmp_path: Path, version: str):
    lerobot_v21_fixture(tmp_path / "d")
    info = _json(tmp_path / "d/meta/info.json")
    info["codebase_version"] = version
    (tmp_path / "d/meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetFormatError, match=rf"codebase_version '{version}' is not supported"):
        read_lerobot(tmp_path / "d")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no_action", r"has no 'action' feature"),
        ("no_tasks", r"meta/tasks.parquet: missing"),
        ("no_episodes", r"meta/episodes: no episode metadata"),
        ("no_data_file", r"data/chunk-000/file-001.parquet: data file of episode 2 is missing"),
        ("no_video", r"chunk-000/file-000.mp4: video file is missing"),
        ("episode_column", r"missing column\(s\) \['data/file_index'\]"),
    ],
)
def test_missing_parts_are_named(
    native: tuple[Path, dict[str, Any]], tmp_path: Path, breakage: str, message: str
):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(native[0], root)
    if breakage == "no_action":
        info = _json(root / "meta/info.json")
        del info["features"]["action"]
        (root / "meta/info.json").write_text(json.dumps(info))
    elif breakage == "no_tasks":
        (root / "meta/tasks.parquet").unlink()
    elif breakage == "no_episodes":
        shutil.rmtree(root / "meta/episodes")
    elif breakage == "no_data_file":
        (root / "data/chunk-000/file-001.parquet").unlink()
    elif breakage == "no_video":
        (root / "videos/observation.images.cam/chunk-000/file-000.mp4").unlink()
    elif breakage == "episode_column":
        path = root / "meta/episodes/chunk-000/file-000.parquet"
        pq.write_table(pq.read_table(path).drop_columns(["data/file_index"]), path)
    with pytest.raises(DatasetFormatError, match=message):
        list(read_lerobot(root).episodes())


def test_not_a_dataset_is_named(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="neither a LeRobot dataset"):
        detect_format(tmp_path / "empty")
    with pytest.raises(DatasetFormatError, match=r"meta/info.json is missing"):
        read_lerobot(tmp_path / "empty")


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_convert_both_ways_and_info(ours: Path, tmp_path: Path):
    out = tmp_path / "lerobot_out"
    result = runner.invoke(app, ["data", "convert", str(ours), str(out), "--task", "push the T"])
    assert result.exit_code == 0, result.output
    assert "3 episode(s), 60 step(s)" in result.output and "LeRobot v3.0, 10 fps" in result.output
    assert pq.read_table(out / "meta/tasks.parquet").column("task").to_pylist() == ["push the T"]

    result = runner.invoke(app, ["data", "info", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "layout: lerobot v3.0  fps: 10  robot: ur5" in result.output
    assert "episodes: 3  frames: 60  length min/median/max 20/20/20" in result.output
    assert "qpos[0:6], gripper[6:7]" in result.output and "front_rgb" in result.output

    back = tmp_path / "back.zarr"
    result = runner.invoke(app, ["data", "convert", str(out), str(back)])
    assert result.exit_code == 0, result.output
    assert EpisodeDataset.open(back).schema == our_schema()


def test_cli_names_what_is_wrong_and_writes_nothing(tmp_path: Path):
    lerobot_v21_fixture(tmp_path / "d")
    info = _json(tmp_path / "d/meta/info.json")
    info["codebase_version"] = "v1.6"
    (tmp_path / "d/meta/info.json").write_text(json.dumps(info))
    result = runner.invoke(app, ["data", "convert", str(tmp_path / "d"), str(tmp_path / "o.zarr")])
    assert result.exit_code == 1
    assert "codebase_version 'v1.6' is not supported" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    result = runner.invoke(app, ["data", "info", str(tmp_path / "d")])
    assert result.exit_code == 1 and "'v1.6'" in result.output
    result = runner.invoke(
        app, ["data", "convert", str(tmp_path / "d"), str(tmp_path / "x"), "--to", "parquet"]
    )
    assert result.exit_code == 1 and "target format 'parquet'" in result.output


def test_image_stats_sample_frames_as_lerobot_does():
    from policy_runtime.data.formats.lerobot_stats import sample_indices

    # lerobot's estimate_num_samples: all frames up to 100, then T^0.75 (177 at 1000).
    assert sample_indices(20) == list(range(20))
    assert len(sample_indices(1000)) == 177 and len(sample_indices(5000)) == 594
    assert math.isclose(sample_indices(1000)[-1], 999)
