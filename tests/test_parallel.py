"""Local worker processes of ``policy_runtime.parallel`` end with the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

PARENT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from policy_runtime.parallel import ordered_results

    class Stuck:
        def __init__(self, out):
            (Path(out) / str(os.getpid())).touch()

        def run(self, seed):
            time.sleep(600)
            return seed

    if __name__ == "__main__":
        for result in ordered_results(Stuck, sys.argv[1], iter(range(4)), 2, None, None):
            print(result)
    """
)


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie lingers where PID 1 does not reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    pids_dir = tmp_path / "pids"
    pids_dir.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(pids_dir)])
    try:
        deadline = time.monotonic() + 60
        while len(list(pids_dir.iterdir())) < 2:
            assert time.monotonic() < deadline, "the two worker processes never started"
            time.sleep(0.1)
        workers = [int(p.name) for p in pids_dir.iterdir()]
        assert all(_alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived their parent"
    finally:
        parent.kill()
        for p in pids_dir.iterdir():
            if _alive(int(p.name)):
                os.kill(int(p.name), signal.SIGKILL)
