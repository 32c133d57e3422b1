"""``prt record`` at a terminal: its keys start, save and quit, over real DDS, in a real process
on a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.ros_graph import PROFILE, Watcher, wait_for

pytestmark = pytest.mark.ros

CONFIG = {
    "control_hz": 10,
    "observations": {"ee_pose": {"topic": "/cli_test/pose", "type": "pose", "rate_hz": 50}},
    "action": [{"topic": "/cli_test/target", "type": "pose"}],
}


def test_keys_record_an_episode_and_quit(tmp_path: Path) -> None:
    from geometry_msgs.msg import PoseStamped

    from policy_runtime.data import EpisodeDataset
    from policy_runtime.ros import qos

    config = tmp_path / "record.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    store = tmp_path / "cli.zarr"
    watcher = Watcher()
    publishers = [
        watcher.node.create_publisher(PoseStamped, topic, qos.STREAM)
        for topic in ("/cli_test/pose", "/cli_test/target")
    ]
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            msg = PoseStamped()
            msg.header.stamp = watcher.node.get_clock().now().to_msg()
            msg.pose.position.x, msg.pose.orientation.w = 0.4, 1.0
            for publisher in publishers:
                publisher.publish(msg)
            time.sleep(0.02)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    master, slave = pty.openpty()
    prt = Path(sys.executable).parent / "prt"
    env = {**os.environ, "FASTRTPS_DEFAULT_PROFILES_FILE": str(PROFILE)}
    process = subprocess.Popen(
        [str(prt), "record", "--config", str(config), "--out", str(store)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    output = bytearray()

    def read() -> str:
        while True:
            try:
                chunk = os.read(master, 65536) if _readable(master) else b""
            except OSError:
                chunk = b""
            if not chunk:
                return output.decode(errors="replace")
            output.extend(chunk)

    try:
        wait_for(lambda: "ready: start an episode" in read(), 30.0, "the recorder's status line")
        os.write(master, b" ")
        # Rows count once every stream has a sample (DDS discovery can take seconds when cold).
        wait_for(lambda: rows(read()) >= 1, 10.0, "rows being recorded")
        time.sleep(1.5)
        os.write(master, b" ")
        try:
            wait_for(lambda: "saved episode 0" in read(), 15.0, "the save")
        except AssertionError:
            print(read()[-3000:].replace("\r", "\n"))
            raise
        os.write(master, b"q")
        process.wait(timeout=20)
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
            process.wait()
        watcher.close()
        os.close(master)
        os.close(slave)
    assert process.returncode == 0, read()[-2000:]
    data = EpisodeDataset.open(store)
    # 1.5 s at 10 Hz after the first row, plus the status line's and the keys' delays.
    assert data.n_episodes == 1 and 15 <= len(data.episode(0)["action"]) <= 25


def rows(output: str) -> int:
    """The row count on the newest status line that is recording."""
    found = re.findall(r"recording\s+episode\s+\d+\s+[\d.]+ s\s+(\d+) rows", output)
    return int(found[-1]) if found else 0


def _readable(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0.05)[0])
