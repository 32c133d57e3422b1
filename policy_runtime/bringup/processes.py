"""Start a launch description's nodes as processes, watch them, and shut them down together.

Each node runs as its own process (its executable with ``--ros-args``), in its own process
group, with the launch file's environment; its output is prefixed with its name. A node that
exits is reported with its status; the others keep running (the executor then holds the robot
on its watchdog) unless the node is marked ``on_exit: shutdown``, whose exit ends the launch
with that node's status. Ctrl-C (SIGINT) or SIGTERM reaches every node as SIGINT, as
``ros2 launch`` does; a node still running after ``grace_s`` gets SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from policy_runtime.bringup.launch_file import LaunchDescription, LaunchFileError, NodeAction


def find_executable(node: NodeAction) -> str:
    """The path of a node's executable: ``lib/<pkg>/<exec>`` on ``AMENT_PREFIX_PATH`` (as
    ``ros2 run`` finds it), else beside this Python (the pip-installed console scripts), else
    on ``PATH``; a missing one raises naming the node."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        candidate = Path(prefix) / "lib" / node.package / node.executable
        if prefix and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    beside = Path(sys.executable).parent / node.executable
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(node.executable)
    if found is None:
        raise LaunchFileError(
            f"node {node.label}: executable {node.executable!r} of package {node.package!r} "
            "not found (a package of a full ROS 2 install? then source its setup.bash)"
        )
    return found


@dataclass
class Running:
    node: NodeAction
    process: subprocess.Popen[bytes]
    reader: threading.Thread


class ProcessGroup:
    """The processes of one launch (see the module docs)."""

    def __init__(self, description: LaunchDescription, grace_s: float = 10.0) -> None:
        self.description = description
        self.grace_s = grace_s
        self.running: list[Running] = []
        self._print_lock = threading.Lock()
        self._stopping = False

    def start(self) -> None:
        commands = [(node, find_executable(node)) for node in self.description.nodes]
        env = {**os.environ, **self.description.environment, "PYTHONUNBUFFERED": "1"}
        for node, executable in commands:
            process = subprocess.Popen(
                [executable, *node.ros_arguments()],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C in the terminal reaches us, not the nodes
            )
            assert process.stdout is not None
            reader = threading.Thread(
                target=self._relay, args=(node.label, process.stdout), daemon=True
            )
            reader.start()
            self.running.append(Running(node, process, reader))
            self._say(f"started {node.label} [{executable}] pid {process.pid}")

    def _relay(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self._print_lock:
                print(f"[{name}] {line}", flush=True)

    def _say(self, message: str) -> None:
        with self._print_lock:
            print(f"[prt launch] {message}", flush=True)

    def wait(self) -> int:
        """Watch the nodes until a shutdown-on-exit node exits, every node has exited, or a
        signal; then stop the rest. Returns the launch's exit status."""
        stop = threading.Event()
        status = {"code": 0}

        def on_signal(signum: int, frame: object) -> None:
            self._say(f"{signal.Signals(signum).name}: shutting down")
            status["code"] = 130 if signum == signal.SIGINT else 143
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        reported: set[int] = set()
        try:
            while not stop.is_set():
                alive = 0
                for entry in self.running:
                    code = entry.process.poll()
                    if code is None:
                        alive += 1
                        continue
                    if entry.process.pid in reported:
                        continue
                    reported.add(entry.process.pid)
                    entry.reader.join(timeout=1.0)
                    if entry.node.shutdown_on_exit:
                        self._say(f"{entry.node.label} exited with status {code}: shutting down")
                        status["code"] = code
                        stop.set()
                    elif code != 0:
                        self._say(
                            f"{entry.node.label} DIED with status {code}; the other nodes keep "
                            "running (the executor holds the arm without it)"
                        )
                        status["code"] = status["code"] or 1
                    else:
                        self._say(f"{entry.node.label} exited")
                if alive == 0:
                    break
                stop.wait(0.1)
        finally:
            self.shutdown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return status["code"]

    def shutdown(self) -> None:
        """SIGINT to every node still running, then SIGTERM and SIGKILL after the grace time."""
        if self._stopping:
            return
        self._stopping = True
        for sig, wait_s in (
            (signal.SIGINT, self.grace_s),
            (signal.SIGTERM, 3.0),
            (signal.SIGKILL, 3.0),
        ):
            alive = [r for r in self.running if r.process.poll() is None]
            if not alive:
                break
            if sig != signal.SIGINT:
                names = [r.node.label for r in alive]
                self._say(f"{names} still running: sending {signal.Signals(sig).name}")
            for entry in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(entry.process.pid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(r.process.poll() is None for r in alive):
                time.sleep(0.05)
        for entry in self.running:
            entry.reader.join(timeout=1.0)
