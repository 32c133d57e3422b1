"""Helpers for tests that run ROS 2 nodes as real processes and watch them from a test node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policy_runtime.bringup.launch_file import NodeAction

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


class Watcher:
    """A test node spinning in a thread; ``keep(topic, type, qos)`` records every message."""

    def __init__(self, name: str = "test_watcher") -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(PROFILE))
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.messages: dict[str, list[tuple[float, Any]]] = {}
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # the context went away during shutdown
                return

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

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
