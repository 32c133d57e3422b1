"""The worst gap between consecutive executor commands, as the UR driver would see it.

    python -m bench.command_gaps [--minutes 10] [--rates 125 500] [--driver standin|sim]

The UR driver stops the robot program when position commands pause longer than its
``robot_receive_timeout`` (0.04 s by default); the goal is a worst gap under half of it
(20 ms) while moving, with everything a deployment runs on the same machine: the policy server
running inference, the executor (in its own process, its tick thread under SCHED_FIFO as the
real launch file runs it), and two camera nodes streaming 640x480 colour + aligned depth at
30 Hz through librealsense software devices.

The driver, at 125 Hz like a CB3 or 500 Hz like an e-series, is one of:

- ``standin`` (default): the real driver's timing without its physics, in its own process: a
  SCHED_FIFO thread publishing ``/joint_states`` (and the TCP pose) every controller cycle from
  a sleep loop, as ros2_control's update loop does, the arm following each newest command
  exactly, the program running, a push_t scene's block state for the policy; it receives the
  commands on a SCHED_FIFO thread too and measures the gaps where the driver would.
- ``sim``: the sim bridge (MuJoCo in the loop, Python); a separate process receives the
  commands and measures the gaps, resetting episodes as they end (gaps spanning a robot
  program stop are not counted: the executor stops streaming on purpose then).

Side by side: the driver's own joint-state gaps (what the executor ticks on). Figures of one
run on this machine; the README quotes them.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from policy_runtime.ros.probe import GraphProbe

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUNDLE = ROOT / "bundles" / "push_t_drifting"
PROFILE = ROOT / "config" / "fastdds_shm.xml"
LAUNCH = ROOT / "launch" / "sim.launch.yaml"
EXECUTOR_CONFIG = {125: "executor_ur5.yaml", 500: "executor_ur5e.yaml"}
CAMERAS = ("front", "wrist")
GOAL_S = 0.020


class Recorder(GraphProbe):
    """Command and joint-state arrivals (monotonic), robot program periods, and episode
    restarts, in a node of its own."""

    def __init__(self, streams: bool) -> None:
        """``streams``: record the command and joint-state arrivals here (the sim driver's
        case; the stand-in records them on its real-time threads, and a subscriber more here
        would only add load)."""
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, JointState
        from std_msgs.msg import Bool, Float64MultiArray
        from std_srvs.srv import Trigger

        from policy_runtime.ros import qos

        super().__init__("bench_command_gaps")
        self.commands: list[float] = []
        self.joint_states: list[float] = []
        self.frames = dict.fromkeys(CAMERAS, 0)
        #: (monotonic, running) at each robot program change.
        self.program: list[tuple[float, bool]] = []
        self.executor_status: dict[str, str] = {}
        self.episodes = 0
        self._done_seen = ""
        node = self.node
        if streams:
            node.create_subscription(
                Float64MultiArray,
                "/forward_position_controller/commands",
                lambda _: self._stamp(self.commands),
                qos.STREAM,
            )
            node.create_subscription(
                JointState, "/joint_states", lambda _: self._stamp(self.joint_states), qos.STREAM
            )
        node.create_subscription(
            Bool, "/io_and_status_controller/robot_program_running", self._on_program, qos.LATCHED
        )
        node.create_subscription(
            DiagnosticArray, "/sim_bridge/episode", self._on_episode, qos.LATCHED
        )
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos.STREAM)
        for name in CAMERAS:
            node.create_subscription(
                CameraInfo,
                f"/camera/{name}/color/camera_info",
                lambda _, name=name: self._count_frame(name),
                qos.SENSOR,
            )
        self.bridge_reset = node.create_client(Trigger, "/sim_bridge/reset")
        self.executor_reset = node.create_client(Trigger, "/executor/reset")

    def _stamp(self, times: list[float]) -> None:
        now = time.monotonic()
        with self.lock:
            times.append(now)

    def _count_frame(self, name: str) -> None:
        with self.lock:
            self.frames[name] += 1

    def _on_program(self, msg: Any) -> None:
        with self.lock:
            self.program.append((time.monotonic(), bool(msg.data)))

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == "policy_runtime: executor":
                with self.lock:
                    self.executor_status = {kv.key: kv.value for kv in status.values}

    def _on_episode(self, msg: Any) -> None:
        values = {kv.key: kv.value for kv in msg.status[0].values} if msg.status else {}
        if values.get("done") == "true" and values.get("episode") != self._done_seen:
            self._done_seen = values.get("episode", "")
            self.episodes += 1
            # The next episode: the operator's reset (the program is off), then the bridge's.
            from std_srvs.srv import Trigger

            self.executor_reset.call_async(Trigger.Request())
            self.bridge_reset.call_async(Trigger.Request())

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, list[tuple[float, bool]]]:
        with self.lock:
            return np.array(self.commands), np.array(self.joint_states), list(self.program)


def gaps_while_running(arrivals: np.ndarray, program: list[tuple[float, bool]]) -> np.ndarray:
    """Gaps between consecutive arrivals, leaving out those that span any time the robot
    program was off (the executor then stops streaming on purpose)."""
    gaps = np.diff(arrivals)
    keep = np.ones(len(gaps), dtype=bool)
    running, since = True, -np.inf
    periods_off: list[tuple[float, float]] = []
    for t, value in program:
        if running and not value:
            since = t
        elif not running and value:
            periods_off.append((since, t))
        running = value
    if not running:
        periods_off.append((since, np.inf))
    for start, end in periods_off:
        # A gap from a to b overlaps [start, end] when a < end and b > start.
        keep &= ~((arrivals[:-1] < end) & (arrivals[1:] > start))
    return gaps[keep]


def _cpu_times() -> np.ndarray:
    """The machine's CPU time counters (/proc/stat: user ... steal): on a virtual machine,
    ``steal`` is time the host ran something else while this machine wanted a CPU."""
    with open("/proc/stat") as stat:
        return np.array(stat.readline().split()[1:9], dtype=np.float64)


def _start(executable: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FASTRTPS_DEFAULT_PROFILES_FILE": str(PROFILE)}
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / executable), *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )


def _cameras(rate: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    cameras = []
    for name in CAMERAS:
        params = {"camera_name": name, "device": "test_pattern", "width": 640, "height": 480}
        params.update({"fps": 30, "enable_depth": "true"})
        args = ["--ros-args", "-r", f"__node:={name}_camera"]
        for key, value in params.items():
            args += ["-p", f"{key}:={value}"]
        cameras.append(_start("prt-camera", args, log_dir / f"camera_{name}_{rate}.log"))
    return cameras


def _policy_nodes(
    rate: int, composed: bool, priority: int, log_dir: Path
) -> list[subprocess.Popen[bytes]]:
    """The policy server and the executor, as the real launch file runs them."""
    server = {"bundle": BUNDLE, "config": ROOT / "config" / "server_sim.yaml"}
    executor = {"executor_config": ROOT / "config" / EXECUTOR_CONFIG[rate]}
    executor["realtime_priority"] = priority

    def args(params: dict[str, Any]) -> list[str]:
        return ["--ros-args", *[a for k, v in params.items() for a in ("-p", f"{k}:={v}")]]

    if composed:
        return [_start("prt-policy-node", args({**server, **executor}), log_dir / "policy.log")]
    return [
        _start("prt-policy-server", args(server), log_dir / f"server_{rate}.log"),
        _start("prt-executor", args(executor), log_dir / f"executor_{rate}.log"),
    ]


def run(
    rate: int, seconds: float, log_dir: Path, composed: bool, priority: int, driver: str
) -> dict[str, Any]:
    processes = _cameras(rate, log_dir)
    gaps_file = log_dir / f"standin_{rate}.npz"
    if driver == "sim":
        launch = [str(LAUNCH), "realtime:=true", "cameras:=[]", f"controller_hz:={float(rate)}"]
        launch += [f"executor_config:={ROOT / 'config' / EXECUTOR_CONFIG[rate]}"]
        launch += [f"composed:={str(composed).lower()}", f"realtime_priority:={priority}"]
        processes.append(_start("prt", ["launch", *launch], log_dir / f"graph_{rate}.log"))
    else:
        gaps_file.unlink(missing_ok=True)
        with (log_dir / f"standin_{rate}.log").open("wb") as out:
            standin = subprocess.Popen(
                [sys.executable, "-m", "bench.driver_standin", "--rate", str(rate),
                 "--seconds", str(seconds), "--out", str(gaps_file)],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "FASTRTPS_DEFAULT_PROFILES_FILE": str(PROFILE)},
            )  # fmt: skip
        processes += [standin, *_policy_nodes(rate, composed, priority, log_dir)]
    recorder = Recorder(streams=driver == "sim")

    def streaming() -> bool:
        if driver == "sim":
            return len(recorder.snapshot()[0]) >= 1000
        return int(recorder.executor_status.get("commands_sent", "0")) >= 1000

    try:
        deadline = time.monotonic() + 120
        while not streaming():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no commands at {rate} Hz: see {log_dir}")
            time.sleep(0.5)
        start = time.monotonic()
        cpu_before = _cpu_times()
        frames_before = dict(recorder.frames)
        chunks_before = int(recorder.executor_status.get("engine.chunks_accepted", "0"))
        time.sleep(seconds)
        end = time.monotonic()
        cpu = _cpu_times() - cpu_before
        commands, joint_states, program = recorder.snapshot()
        frames = {k: (recorder.frames[k] - frames_before[k]) / (end - start) for k in CAMERAS}
        status = dict(recorder.executor_status)
        chunks = int(status.get("engine.chunks_accepted", "0")) - chunks_before
        episodes = recorder.episodes
        if driver == "standin":
            standin.wait(timeout=120)
    finally:
        recorder.close()
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    if driver == "standin":
        # Measured where the driver receives them, on its real-time thread.
        measured = np.load(gaps_file)
        command_gaps = np.diff(measured["commands"])
        joint_state_gaps = np.diff(measured["joint_states"])
    else:
        window = (commands >= start) & (commands <= end)
        command_gaps = gaps_while_running(commands[window], program)
        js = joint_states[(joint_states >= start) & (joint_states <= end)]
        joint_state_gaps = gaps_while_running(js, program)
    return {
        "command_gaps": command_gaps,
        "joint_state_gaps": joint_state_gaps,
        "frames": frames,
        "episodes": episodes,
        "chunks_per_s": chunks / (end - start),
        "steal": cpu[7] / cpu.sum(),
        "costs": {
            key: status.get(key, "-")
            for key in (
                "tick_cost_p99_ms",
                "tick_cost_max_ms",
                "chunk_cost_p99_ms",
                "chunk_cost_max_ms",
            )
        },
    }


def _row(name: str, gaps: np.ndarray) -> list[str]:
    ms = gaps * 1e3
    return [
        name,
        str(gaps.size),
        f"{np.median(ms):.2f}",
        f"{np.quantile(ms, 0.999):.2f}",
        f"{ms.max():.2f}",
        str(int(np.sum(gaps > GOAL_S))),
        str(int(np.sum(gaps > 0.040))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rates", type=int, nargs="+", default=[125, 500], choices=[125, 500])
    parser.add_argument("--logs", type=Path, default=Path("/tmp/bench_command_gaps"))
    parser.add_argument(
        "--priority",
        type=int,
        default=80,
        help="SCHED_FIFO priority of the executor's and the driver stand-in's tick threads "
        "(0: normal scheduling)",
    )
    parser.add_argument(
        "--composed", action="store_true", help="server and executor in one process"
    )
    parser.add_argument(
        "--driver",
        choices=["standin", "sim"],
        default="standin",
        help="the driver: its timing without physics (standin) or the sim bridge (sim)",
    )
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    table = Table(
        "stream", "gaps", "p50 ms", "p99.9 ms", "worst ms", "> 20 ms", "> 40 ms",
        title=f"gaps between consecutive messages, {args.minutes:g} min per rate, "
        "inference + 2 cameras 640x480 + depth at 30 Hz; "
        f"{'composed' if args.composed else 'executor in its own process'}, "
        f"SCHED_FIFO {args.priority or 'off'}, driver: {args.driver}",
    )  # fmt: skip
    verdicts = []
    for rate in args.rates:
        result = run(
            rate, args.minutes * 60.0, args.logs, args.composed, args.priority, args.driver
        )
        table.add_row(*_row(f"{rate} Hz: executor commands", result["command_gaps"]))
        table.add_row(*_row(f"{rate} Hz: the driver's joint states", result["joint_state_gaps"]))
        worst = result["command_gaps"].max()
        fps = ", ".join(f"{k} {v:.1f} fps" for k, v in result["frames"].items())
        verdicts.append(
            f"{rate} Hz: worst command gap {worst * 1e3:.1f} ms -> goal (< 20 ms) "
            f"{'met' if worst < GOAL_S else 'MISSED'}; cameras {fps}; "
            f"{result['chunks_per_s']:.1f} chunks/s accepted; {result['episodes']} episodes; "
            f"CPU time stolen by the VM's host {result['steal']:.1%}; "
            "executor (last 1000, ms): "
            + ", ".join(f"{k.removesuffix('_ms')} {v}" for k, v in result["costs"].items())
        )
    Console().print(table)
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()
