"""``prt launch`` with real node processes: a node that dies is reported while the others run
on; Ctrl-C brings every node down; a shutdown-on-exit node's status ends the launch."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Jazzy wheels are not installed")

from tests.ros_graph import BIN, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _launch(path: Path, *arguments: str) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [str(BIN / "prt"), "launch", str(path), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    import threading

    threading.Thread(target=read, daemon=True).start()
    return process, lines


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_dead_node_is_reported_and_ctrl_c_stops_the_rest(tmp_path: Path):
    path = tmp_path / "two.launch.yaml"
    path.write_text(
        "launch:\n"
        "- node: {pkg: policy_runtime, exec: prt-sim-bridge, name: broken,\n"
        "         param: [{name: controller_hz, value: '-1.0'}]}\n"
        "- node: {pkg: policy_runtime, exec: prt-executor, name: executor}\n"
    )
    process, lines = _launch(path)
    text = lambda: "".join(lines)  # noqa: E731
    wait_for(lambda: "broken DIED with status 2" in text(), 60, "the dead node's report")
    assert "parameter 'controller_hz'" in text()
    started = [line for line in lines if "started executor" in line]
    pid = int(started[0].rsplit("pid", 1)[1])
    time.sleep(1.0)
    assert _alive(pid) and process.poll() is None  # the rest runs on
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130
    wait_for(lambda: not _alive(pid), 10, "the executor to exit")


def test_a_shutdown_on_exit_node_ends_the_launch_with_its_status(tmp_path: Path):
    path = tmp_path / "runner.launch.yaml"
    path.write_text(
        "launch:\n"
        "- node: {pkg: policy_runtime, exec: prt-executor, name: executor}\n"
        "- node: {pkg: policy_runtime, exec: prt-episodes, name: runner, on_exit: shutdown,\n"
        "         param: [{name: episodes, value: '0'}]}\n"
    )
    process, lines = _launch(path)
    assert process.wait(timeout=60) == 2  # episodes:=0 is refused: the launch ends with it
    assert "parameter 'episodes'" in "".join(lines)
    assert "runner exited with status 2: shutting down" in "".join(lines)


def test_bad_launch_arguments_are_refused_before_anything_starts(tmp_path: Path):
    from tests.ros_graph import ROOT

    out = subprocess.run(
        [str(BIN / "prt"), "launch", str(ROOT / "launch" / "sim.launch.yaml"), "speed:=9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "no argument ['speed']" in out.stderr and "started" not in out.stdout
