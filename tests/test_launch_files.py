"""Launch files: every node, executable, parameter and argument checked against what the
package declares; the launch-file reader's rules; ``prt launch`` running processes."""

from __future__ import annotations

import importlib
import itertools
import os
from pathlib import Path

import pytest
import tomllib

from policy_runtime.bringup.launch_file import (
    LaunchFileError,
    load_launch_file,
    parse_cli_arguments,
)

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.yaml"))
#: Parameters every rclpy node has.
BUILTIN_PARAMETERS = {"use_sim_time"}


def _scripts() -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return pyproject["project"]["scripts"]


def _declared_parameters(executable: str) -> set[str]:
    module = importlib.import_module(_scripts()[executable].split(":")[0])
    return set(module.PARAMETERS) | BUILTIN_PARAMETERS


def _boolean_arguments(path: Path) -> list[str]:
    defaults = load_launch_file(path).arguments
    return [name for name, value in defaults.items() if value in ("true", "false")]


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_node_parameter_and_argument_is_declared(path: Path):
    assert LAUNCH_FILES, "no launch files"
    booleans = _boolean_arguments(path)
    seen_nodes = set()
    # Every combination of the boolean arguments, so both branches of each if/unless are read.
    for values in itertools.product(("true", "false"), repeat=len(booleans)):
        description = load_launch_file(path, dict(zip(booleans, values, strict=True)))
        for name in description.arguments:
            assert description.descriptions[name], f"{path.name}: argument {name} undescribed"
        for node in description.nodes:
            seen_nodes.add(node.executable)
            assert node.package == "policy_runtime", node
            assert node.executable in _scripts(), f"{node.executable} is no console script"
            declared = _declared_parameters(node.executable)
            for name, _ in node.parameters:
                assert name in declared, f"{path.name}: {node.label} has no parameter {name}"
            for file in node.parameter_files:
                assert Path(file).is_file(), file
    assert seen_nodes


def test_the_sim_launch_file_resolves_to_the_files_of_the_repository():
    description = load_launch_file(ROOT / "launch" / "sim.launch.yaml")
    profile = Path(description.environment["FASTRTPS_DEFAULT_PROFILES_FILE"])
    assert profile.is_file() and profile.parent == ROOT / "config"
    server = next(n for n in description.nodes if n.executable == "prt-policy-node")
    values = dict(server.parameters)
    assert Path(values["bundle"]) == ROOT / "bundles" / "push_t_drifting"
    assert values["lockstep"] == "false"  # realtime by default
    fast = load_launch_file(ROOT / "launch" / "sim.launch.yaml", {"realtime": "false"})
    assert dict(fast.nodes[1].parameters)["use_sim_time"] == "true"


def test_the_real_cell_launch_file_reads_one_deployment_and_starts_disarmed():
    """Every node reads the repository's deployment; the executor, composed or not, starts in
    shadow mode; each camera node serves its deployment camera and can be left out."""
    path = ROOT / "launch" / "ur5_real.launch.yaml"
    for composed in ("true", "false"):
        description = load_launch_file(path, {"composed": composed})
        profile = Path(description.environment["FASTRTPS_DEFAULT_PROFILES_FILE"])
        assert profile.is_file() and profile.parent == ROOT / "config"
        executors = [
            n for n in description.nodes if n.executable in ("prt-policy-node", "prt-executor")
        ]
        assert len(executors) == 1 and dict(executors[0].parameters)["require_arming"] == "true"
        for node in description.nodes:
            assert Path(dict(node.parameters)["deployment"]) == ROOT / "config" / "deploy_ur5.yaml"
        cameras = [dict(n.parameters) for n in description.nodes if n.executable == "prt-camera"]
        assert [c["camera_name"] for c in cameras] == ["front", "wrist", "side"]
        assert {c["device"] for c in cameras} == {"realsense"}
    from policy_runtime.deployment.config import DeploymentConfig

    assert set(DeploymentConfig.load(ROOT / "config" / "deploy_ur5.yaml").cameras) == {
        "front",
        "wrist",
        "side",
    }
    without = load_launch_file(
        path, {"wrist": "false", "side": "false", "camera_device": "test_pattern"}
    )
    cameras = [dict(n.parameters) for n in without.nodes if n.executable == "prt-camera"]
    assert [(c["camera_name"], c["device"]) for c in cameras] == [("front", "test_pattern")]


def test_substitutions_conditions_and_includes(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PRT_TEST_ENV", "from-env")
    inner = tmp_path / "inner.launch.yaml"
    inner.write_text(
        "launch:\n"
        "- arg: {name: level, default: '1', description: d}\n"
        "- node: {pkg: p, exec: e, name: inner, param: [{name: level, value: $(var level)}]}\n"
    )
    outer = tmp_path / "outer.launch.yaml"
    outer.write_text(
        "launch:\n"
        "- arg: {name: enabled, default: 'true', description: d}\n"
        "- arg: {name: empty, default: \"''\", description: d}\n"
        "- let: {name: disabled, value: $(not $(var enabled))}\n"
        "- set_env: {name: X, value: $(env PRT_TEST_ENV) $(env PRT_UNSET fallback)}\n"
        "- node: {if: $(var enabled), pkg: p, exec: e, name: a,\n"
        "         param: [{name: v, value: $(var disabled)}]}\n"
        "- node: {unless: $(var enabled), pkg: p, exec: e, name: b}\n"
        "- node: {if: $(equals $(var enabled) true), pkg: p, exec: e, name: c,\n"
        "         param: [{name: s, value: ''}], remap: [{from: /a, to: /b}]}\n"
        f"- include: {{file: {inner}, arg: [{{name: level, value: '7'}}]}}\n"
    )
    description = load_launch_file(outer)
    assert [n.label for n in description.nodes] == ["a", "c", "inner"]
    assert description.environment["X"] == "from-env fallback"
    a, c, inner_node = description.nodes
    assert a.parameters == (("v", "false"),)
    assert inner_node.parameters == (("level", "7"),)
    assert c.ros_arguments() == ["--ros-args", "-r", "__node:=c", "-p", "s:=''", "-r", "/a:=/b"]
    assert [n.label for n in load_launch_file(outer, {"enabled": "false"}).nodes] == ["b", "inner"]


@pytest.mark.parametrize(
    ("body", "arguments", "message"),
    [
        ("- node: {pkg: p, exec: $(eval 1+1)}", {}, r"\$\(eval"),
        ("- arg: {name: a}", {}, "has no default"),
        ("- arg: {name: a, default: x}", {"b": "1"}, r"no argument \['b'\]"),
        ("- node: {pkg: p, exec: e, if: maybe}", {}, "not a boolean"),
        ("- node: {pkg: p, exec: e, respawn: true}", {}, "respawn"),
        ("- group: {}", {}, "'group' is not supported"),
        ("- node: {pkg: p, exec: $(var nothing)}", {}, "no argument or let named 'nothing'"),
    ],
)
def test_what_the_reader_refuses_is_named(tmp_path: Path, body: str, arguments, message: str):
    path = tmp_path / "bad.launch.yaml"
    path.write_text(f"launch:\n{body}\n")
    with pytest.raises(LaunchFileError, match=message) as info:
        load_launch_file(path, arguments)
    assert "bad.launch.yaml" in str(info.value)


def test_cli_arguments_need_name_colon_equals_value():
    assert parse_cli_arguments(["a:=1", "b:=", "c:=x:=y"]) == {"a": "1", "b": "", "c": "x:=y"}
    with pytest.raises(LaunchFileError, match="a=1"):
        parse_cli_arguments(["a=1"])


def test_find_pkg_share_prefers_an_installed_share(tmp_path: Path, monkeypatch):
    share = tmp_path / "share" / "policy_runtime"
    share.mkdir(parents=True)
    (share / "package.xml").write_text("<package/>")
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path}{os.pathsep}/nonexistent")
    from policy_runtime.bringup.launch_file import package_share

    assert package_share("policy_runtime") == share
    monkeypatch.setenv("AMENT_PREFIX_PATH", "")
    assert package_share("policy_runtime") == ROOT
    with pytest.raises(LaunchFileError, match="not_a_package"):
        package_share("not_a_package")
