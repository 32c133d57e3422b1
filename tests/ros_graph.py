"""Helpers for tests that run ROS 2 nodes as real processes and watch them from a test node."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from policy_runtime.bringup.launch_file import NodeAction
from policy_runtime.ros.probe import GraphProbe

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUNDLE = ROOT / "bundles" / "push_t_drifting"
SERVER_CONFIG = ROOT / "config" / "server_sim.yaml"
PROFILE = ROOT / "config" / "fastdds_shm.xml"


class NodeProcess:
    """One node executable in its own process, its output in a file (read on failure)."""

    def __init__(self, executable: str, params: dict[str, Any], log_dir: Path) -> None:
        parameters = tuple(
            (name, str(value).lower() if isinstance(value, bool) else str(value))
            for name, value in params.items()
        )
        node = NodeAction("policy_runtime", executable, parameters=parameters)
        args = [str(BIN / executable), *node.ros_arguments()]
        self.name = executable
        self.log = log_dir / f"{executable}-{time.monotonic_ns()}.log"
        env = {**os.environ, "FASTRTPS_DEFAULT_PROFILES_FILE": str(PROFILE)}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Watcher(GraphProbe):
    """A test node spinning in a thread (a :class:`GraphProbe`); ``keep(topic, type, qos)``
    records every message with its arrival time."""

    def __init__(self, name: str = "test_watcher") -> None:
        os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(PROFILE))
        super().__init__(name)
        self.messages: dict[str, list[tuple[float, Any]]] = {}

    def keep(self, topic: str, msg_type: Any, qos: Any, key: str | None = None) -> str:
        key = key or topic
        with self.lock:
            self.messages[key] = []

        def on_message(msg: Any) -> None:
            with self.lock:
                self.messages[key].append((time.monotonic(), msg))

        self.node.create_subscription(msg_type, topic, on_message, qos)
        return key

    def received(self, key: str) -> list[Any]:
        with self.lock:
            return [m for _, m in self.messages[key]]

    def timed(self, key: str) -> list[tuple[float, Any]]:
        with self.lock:
            return list(self.messages[key])


MOVING = 0.05  # rad/s: the arm is moving when a joint is faster
AT_REST = 0.01  # rad/s: at rest when every joint is slower


def moving(watcher: Watcher, window_s: float = 0.5) -> bool:
    now = time.monotonic()
    recent = [m for t, m in watcher.timed("/joint_states") if t > now - window_s]
    return any(np.max(np.abs(m.velocity)) > MOVING for m in recent)


def rest_time_after(watcher: Watcher, since: float, hold_s: float = 0.3) -> float | None:
    """Seconds from ``since`` until the arm came to rest and stayed there ``hold_s``."""
    samples = [(t, np.max(np.abs(m.velocity))) for t, m in watcher.timed("/joint_states")]
    after = [(t, v) for t, v in samples if t >= since]
    for i, (t, _) in enumerate(after):
        window = [v for u, v in after[i:] if u <= t + hold_s]
        if after[-1][0] >= t + hold_s and all(v < AT_REST for v in window):
            return t - since
    return None


def executor_status(watcher: Watcher) -> dict[str, str]:
    for msg in reversed(watcher.received("/diagnostics")):
        for status in msg.status:
            if status.name == "policy_runtime: executor":
                return {"state": status.message, **{kv.key: kv.value for kv in status.values}}
    return {}


@contextlib.contextmanager
def policy_graph(
    tmp_path: Path, executor: dict[str, Any] | None = None, bridge: dict[str, Any] | None = None
) -> Iterator[tuple[dict[str, NodeProcess], Watcher, Path]]:
    """Sim bridge (no cameras), policy server and executor in real time, as processes, and a
    watcher keeping /joint_states and /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState

    from policy_runtime.ros import qos

    nodes = {
        "bridge": NodeProcess("prt-sim-bridge", {"cameras": "[]", **(bridge or {})}, tmp_path),
        "server": NodeProcess(
            "prt-policy-server", {"bundle": BUNDLE, "config": SERVER_CONFIG}, tmp_path
        ),
        "executor": NodeProcess("prt-executor", executor or {}, tmp_path),
    }
    watcher = Watcher()
    watcher.keep("/joint_states", JointState, qos.STREAM)
    watcher.keep("/diagnostics", DiagnosticArray, qos.STREAM)
    try:
        yield nodes, watcher, tmp_path
    finally:
        watcher.close()
        for node in nodes.values():
            node.stop()


def call(watcher: Watcher, client: Any, request: Any, timeout: float = 10.0) -> Any:
    """A service's answer (the watcher's node spins in its thread)."""
    assert client.wait_for_service(timeout_sec=timeout), client.srv_name
    future = client.call_async(request)
    wait_for(future.done, timeout, f"{client.srv_name} to answer")
    return future.result()
