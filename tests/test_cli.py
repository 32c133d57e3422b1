"""The ``prt`` entry point: help with examples, unbuilt commands, ``prt data info``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policy_runtime.cli.main import app
from policy_runtime.data import DatasetWriter
from tests.factories import make_episode, make_schema

runner = CliRunner()
ARCHITECTURE_COMMANDS = {
    "sim",
    "datagen",
    "train",
    "eval",
    "export",
    "serve",
    "record",
    "teleop",
    "calibrate",
    "bench",
    "launch",
}


def test_installed_entry_point_lists_every_command():
    prt = shutil.which("prt") or str(Path(sys.executable).parent / "prt")
    out = subprocess.run([prt, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ARCHITECTURE_COMMANDS | {"data", "doctor"}:
        assert f" {command} " in out, command
    assert "Examples" in out


BUILT = {
    "sim",
    "datagen",
    "train",
    "eval",
    "export",
    "bench",
    "launch",
    "serve",
    "record",
    "teleop",
    "calibrate",
}
#: Commands whose examples live on a subcommand.
SUBCOMMAND = {"bench": "inference", "calibrate": "handeye"}


def test_every_architecture_command_is_built():
    assert ARCHITECTURE_COMMANDS <= BUILT


@pytest.mark.parametrize("command", sorted(BUILT))
def test_built_commands_show_examples(command: str):
    argv = [command, SUBCOMMAND[command]] if command in SUBCOMMAND else [command]
    result = runner.invoke(app, [*argv, "--help"])
    assert result.exit_code == 0
    assert "Examples" in result.output and f"prt {' '.join(argv)} --" in result.output


def test_data_info_prints_episodes_keys_shapes_and_compression(tmp_path: Path):
    path = tmp_path / "demo.zarr"
    with DatasetWriter(path, make_schema(image=True)) as writer:
        for i, n in enumerate((40, 60, 50)):
            writer.add_episode(make_episode(i, n, image=True))
    result = runner.invoke(app, ["data", "info", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "episodes: 3  steps: 150  length min/median/max 40/50/60" in out
    assert "task: push_t  robot: ur5  control_hz: 10  action offset: 0 step(s)" in out
    assert "(150, 24, 32, 3)" in out and "uint8" in out and "blosc/zstd:3" in out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    assert "(150, 7)" in lines["action"] and "float32" in lines["action"]
    ratio = float(lines["total"].split("│")[-2].strip().rstrip("x"))
    assert 0.5 < ratio < 100


def test_data_info_names_a_bad_store_and_fails(tmp_path: Path):
    result = runner.invoke(app, ["data", "info", str(tmp_path / "nope.zarr")])
    assert result.exit_code == 1
    assert f"{tmp_path / 'nope.zarr'}: no such dataset" in result.output


def test_doctor_rejects_an_unknown_check_name():
    result = runner.invoke(app, ["doctor", "--skip", "warp-drive"])
    assert result.exit_code == 2
    assert "unknown check(s) ['warp-drive']" in result.output


def test_doctor_runs_the_real_checks():
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "all checks passed" in result.output
    assert (
        "MUJOCO_GL=egl" in result.output and "software-device frame round trip ok" in result.output
    )
    assert "FAILED" not in result.output and "rmw_fastrtps_cpp: 5/5" in result.output


def test_serve_and_launch_refuse_missing_files_naming_them(tmp_path: Path):
    result = runner.invoke(app, ["serve", "--bundle", str(tmp_path / "nope"), "--config", "x"])
    assert result.exit_code == 2 and "--bundle" in result.output and "nope" in result.output
    result = runner.invoke(app, ["launch", str(tmp_path / "missing.launch.yaml")])
    assert result.exit_code == 2 and "missing.launch.yaml" in result.output
