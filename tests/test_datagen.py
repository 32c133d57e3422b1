"""``prt datagen`` on real MuJoCo and real zarr: reproducible, resumable, parallel, careful."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from policy_runtime.cli.main import app
from policy_runtime.data import EpisodeDataset
from sim_bridge.datagen import DatagenConfig, generate

LOW_DIM = ("joint_pos", "ee_pose", "gripper", "cube_pose", "bin_pos")
runner = CliRunner()


def _config(out: Path, episodes: int, **overrides: object) -> DatagenConfig:
    settings: dict[str, object] = {"task": "pick_place", "episodes": episodes, "out": out}
    settings["obs"] = LOW_DIM
    settings.update(overrides)
    return DatagenConfig(**settings)  # type: ignore[arg-type]


def _same_store(a: Path, b: Path) -> bool:
    """Byte-identical trees (every chunk, every metadata file)."""
    comparison = filecmp.dircmp(a, b)
    if comparison.left_only or comparison.right_only:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, comparison.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_store(a / d, b / d) for d in comparison.common_dirs)


def test_store_holds_the_episodes_with_seeds_schema_and_actions(tmp_path: Path):
    report = generate(_config(tmp_path / "d.zarr", 3, start_seed=10))
    assert (report.stored, report.next_seed) == (3, 13)
    ds = EpisodeDataset.open(tmp_path / "d.zarr")
    assert ds.n_episodes == 3
    np.testing.assert_array_equal(ds.episode_info("seed"), [10, 11, 12])
    assert ds.episode_info("success").all()
    assert set(ds.keys) == {*LOW_DIM, "action", "action_ee", "action_joint", "timestamp"}
    assert ds.schema is not None and ds.schema.provenance["task"] == "pick_place"
    episode = ds.episode(0)
    np.testing.assert_array_equal(episode["action"], episode["action_ee"])
    assert episode["action_ee"].shape[1] == 10 and episode["action_joint"].shape[1] == 7
    # The action recorded with step t's observation is the target the arm reaches at the end
    # of step t (where step t + 1's observation finds it), not the command at t: the schema
    # says so, and a policy carries it to the robot.
    assert ds.schema.action_offset_steps == 1
    joints, commands = episode["joint_pos"], episode["action_joint"][:, :6]
    moving = np.abs(np.diff(commands, axis=0)).max(axis=1) > 5e-3
    reached = np.abs(joints[1:] - commands[:-1]).max(axis=1)[moving]
    ahead = np.abs(joints[1:] - commands[1:]).max(axis=1)[moving]
    assert moving.sum() > 10 and np.median(reached) < 0.3 * np.median(ahead)


def test_resuming_continues_after_the_last_seed_and_matches_one_run(tmp_path: Path):
    generate(_config(tmp_path / "resumed.zarr", 2))
    report = generate(_config(tmp_path / "resumed.zarr", 4))
    assert (report.written, report.stored, report.next_seed) == (2, 4, 4)
    generate(_config(tmp_path / "straight.zarr", 4))
    assert _same_store(tmp_path / "resumed.zarr", tmp_path / "straight.zarr")
    assert generate(_config(tmp_path / "resumed.zarr", 4)).written == 0


def test_worker_processes_write_the_same_bytes(tmp_path: Path):
    generate(_config(tmp_path / "one.zarr", 4, workers=1))
    generate(_config(tmp_path / "two.zarr", 4, workers=2))
    assert _same_store(tmp_path / "one.zarr", tmp_path / "two.zarr")


def test_ray_actors_on_a_local_ray_instance_write_the_same_bytes(tmp_path: Path):
    pytest.importorskip("ray", reason="Ray (the 'distributed' extra) is not installed")
    generate(_config(tmp_path / "local.zarr", 3))
    generate(_config(tmp_path / "ray.zarr", 3, workers=2, ray_address="local"))
    assert _same_store(tmp_path / "local.zarr", tmp_path / "ray.zarr")


def test_images_are_stored_at_the_requested_size(tmp_path: Path):
    generate(_config(tmp_path / "img.zarr", 1, obs=("joint_pos", "wrist_rgb"), image_size=(32, 48)))
    ds = EpisodeDataset.open(tmp_path / "img.zarr")
    assert ds.keys == sorted(
        ["joint_pos", "wrist_rgb", "action", "action_ee", "action_joint", "timestamp"]
    )
    wrist = ds.episode(0)["wrist_rgb"]
    assert wrist.shape[1:] == (32, 48, 3) and wrist.dtype == np.uint8 and wrist.std() > 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "push_tee"], "unknown task 'push_tee'"),
        (["--task", "pick_place", "--obs", "joint_pos,lidar"], "['lidar']"),
        (["--task", "pick_place", "--domain-rand", "fog"], "['fog']"),
        (["--task", "pick_place", "--image-size", "96by96"], "is not HxW"),
    ],
)
def test_bad_input_fails_naming_it_and_writes_nothing(tmp_path: Path, args, message):
    out = tmp_path / "d.zarr"
    result = runner.invoke(app, ["datagen", *args, "--episodes", "2", "--out", str(out)])
    assert result.exit_code != 0
    assert message in result.output
    assert list(tmp_path.iterdir()) == []


def test_unwritable_path_is_named(tmp_path: Path):
    result = runner.invoke(
        app, ["datagen", "--task", "pick_place", "--episodes", "1", "--out", "/proc/prt.zarr"]
    )
    assert result.exit_code == 1
    assert "/proc/prt.zarr: cannot create the store" in result.output
    result = runner.invoke(
        app,
        [
            "datagen",
            "--task",
            "pick_place",
            "--episodes",
            "1",
            "--out",
            str(tmp_path / "no" / "such" / "d.zarr"),
        ],
    )
    assert result.exit_code == 1 and "does not exist" in result.output


def test_store_with_another_schema_is_refused_untouched(tmp_path: Path):
    generate(_config(tmp_path / "d.zarr", 1))
    before = {p: p.read_bytes() for p in (tmp_path / "d.zarr").rglob("*") if p.is_file()}
    result = runner.invoke(
        app,
        [
            "datagen",
            "--task",
            "pick_place",
            "--episodes",
            "3",
            "--out",
            str(tmp_path / "d.zarr"),
            "--obs",
            "joint_pos",
            "--domain-rand",
            "all",
        ],
    )
    assert result.exit_code == 1 and "holds another schema" in result.output
    after = {p: p.read_bytes() for p in (tmp_path / "d.zarr").rglob("*") if p.is_file()}
    assert before == after


def test_cli_reports_progress_and_the_result(tmp_path: Path):
    out = tmp_path / "d.zarr"
    result = runner.invoke(
        app,
        [
            "datagen",
            "--task",
            "pick_place",
            "--episodes",
            "2",
            "--out",
            str(out),
            "--obs",
            ",".join(LOW_DIM),
            "--action",
            "joint",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "success 100% (2/2)" in result.output
    assert f"{out}: 2 episodes (2 new from 2 attempts, next seed 2)" in result.output
    episode = EpisodeDataset.open(out).episode(1)
    np.testing.assert_array_equal(episode["action"], episode["action_joint"])


def test_variant_all_cycles_the_variants_with_the_seed(tmp_path: Path):
    config = DatagenConfig(
        task="drawer",
        variant="all",
        episodes=3,
        out=tmp_path / "d.zarr",
        obs=("joint_pos", "drawer_pos", "task_variant"),
    )
    generate(config)
    ds = EpisodeDataset.open(tmp_path / "d.zarr")
    one_hots = [ds.episode(i)["task_variant"][0].tolist() for i in range(3)]
    assert one_hots == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert ds.schema is not None and ds.schema.provenance["variant"] == "all"
