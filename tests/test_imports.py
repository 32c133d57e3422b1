"""The dependency rule of the architecture: cores import neither rclpy nor torch."""

from __future__ import annotations

import json
import subprocess
import sys

# Modules allowed to import rclpy (ROS 2 adapters) or torch (training, export, importers, the
# torch backend).
ROS_PARTS = (".ros",)
TORCH_PARTS = (
    "policy_runtime.policies",
    "policy_runtime.training",
    "policy_runtime.export",
    "policy_runtime.importers",
    "policy_runtime.inference.torch_backend",
)

PROBE = f"""
import importlib, json, pkgutil, sys
import policy_runtime, sim_bridge, calibration
skip = {ROS_PARTS!r} + {TORCH_PARTS!r}
imported = []
for package in (policy_runtime, sim_bridge, calibration):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        name = info.name
        if any(part in name for part in skip) or name.endswith(".__main__"):
            continue  # __main__ runs the CLI when imported, by design
        importlib.import_module(name)
        imported.append(name)
print(json.dumps({{"imported": imported, "modules": sorted(sys.modules)}}))
"""


def test_cores_import_neither_rclpy_nor_torch():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(out)
    assert "policy_runtime.data.writer" in result["imported"]
    assert "policy_runtime.cli.main" in result["imported"]
    heavy = [m for m in result["modules"] if m.split(".")[0] in ("rclpy", "torch", "diffusers")]
    assert heavy == [], f"a core module imported {sorted({m.split('.')[0] for m in heavy})}"


def test_deploy_packages_import_in_a_bare_interpreter():
    code = "import policy_runtime, sim_bridge, calibration; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
