"""`ros2_ws/build.sh` builds the repository as the ROS 2 package `policy_runtime` with colcon.

Needs colcon (ROS 2 Jazzy's python3-colcon-common-extensions, or `pip install
colcon-common-extensions`), not a ROS install; skipped when colcon is not found. The build, install
and log bases go to tmp_path, so the only trace in the repository is the git-ignored
ros2_ws/src/policy_runtime link.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD_SH = REPO / "ros2_ws" / "build.sh"
INSTALLED = (
    "lib/policy_runtime/prt",
    # the nodes, where `ros2 run` and the launch files look for them
    "lib/policy_runtime/prt-sim-bridge",
    "lib/policy_runtime/prt-policy-server",
    "lib/policy_runtime/prt-executor",
    "lib/policy_runtime/prt-policy-node",
    "lib/policy_runtime/prt-episodes",
    "share/ament_index/resource_index/packages/policy_runtime",
    "share/policy_runtime/package.xml",
    "share/policy_runtime/launch/sim.launch.yaml",
    "share/policy_runtime/config/fastdds_shm.xml",
    "share/policy_runtime/bundles/push_t_drifting/manifest.json",
)


def _find_colcon() -> Path | None:
    """colcon on PATH, or beside this interpreter (a venv that is not activated)."""
    found = shutil.which("colcon")
    if found:
        return Path(found)
    beside = Path(sys.executable).parent / "colcon"
    return beside if beside.is_file() and os.access(beside, os.X_OK) else None


COLCON = _find_colcon()


@pytest.mark.skipif(
    COLCON is None,
    reason="colcon not found on PATH: install ROS 2 Jazzy + python3-colcon-common-extensions "
    "(apt) or `pip install colcon-common-extensions`",
)
def test_build_sh_installs_the_ament_python_package(tmp_path: Path) -> None:
    assert COLCON is not None
    env = dict(os.environ)
    env["PATH"] = f"{COLCON.parent}{os.pathsep}{env.get('PATH', '')}"
    install = tmp_path / "install"
    proc = subprocess.run(
        [
            str(BUILD_SH),
            "--build-base",
            str(tmp_path / "build"),
            "--install-base",
            str(install),
            "--log-base",
            str(tmp_path / "log"),
            "--event-handlers",
            "console_direct+",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output

    package = install / "policy_runtime"
    missing = [rel for rel in INSTALLED if not (package / rel).exists()]
    assert not missing, f"not installed under {package}: {missing}\n{output}"
    prt = package / "lib/policy_runtime/prt"
    assert os.access(prt, os.X_OK), f"{prt} is not executable"
    assert prt.read_text().startswith("#!"), prt.read_text()
    assert (REPO / "ros2_ws" / "src" / "policy_runtime").resolve() == REPO
