"""``prt doctor``: exercise every real part this machine needs, and say what is missing.

Each check does the real thing (a DDS round trip, an EGL render, an onnxruntime session, a
RealSense software device, a zarr write/read), so a green table means the stack works here, not
merely that modules import.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from sim_bridge.gl import configure_headless_rendering


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


def _check_dataset() -> CheckResult:
    from policy_runtime.data import DatasetSchema, DatasetWriter, EpisodeDataset, FieldSpec

    schema = DatasetSchema(
        keys={
            "action": FieldSpec(shape=(7,), dtype="float32"),
            "timestamp": FieldSpec(shape=(), dtype="float64", unit="s"),
        },
        control_hz=10.0,
    )
    actions = np.arange(70, dtype=np.float32).reshape(10, 7)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "check.zarr"
        with DatasetWriter(path, schema) as writer:
            writer.add_episode({"action": actions, "timestamp": np.arange(10) / 10.0})
        back = EpisodeDataset.open(path).episode(0)["action"]
    if not np.array_equal(back, actions):
        return CheckResult(False, "zarr round trip returned different values")
    import zarr

    return CheckResult(True, f"zarr {zarr.__version__}: episode written atomically and read back")


def _check_ros() -> CheckResult:
    from policy_runtime.ros.selfcheck import pubsub_roundtrip

    trip = pubsub_roundtrip(count=5, timeout_s=10.0)
    if len(trip.received) != trip.sent:
        return CheckResult(False, f"{trip.rmw}: {len(trip.received)}/{trip.sent} messages arrived")
    worst = max(trip.latencies_s) * 1e3
    return CheckResult(True, f"{trip.rmw}: {trip.sent}/{trip.sent} JointStates, max {worst:.1f} ms")


def _check_mujoco() -> CheckResult:
    backend = configure_headless_rendering()
    import mujoco

    xml = """
    <mujoco><worldbody>
      <light pos="0 0 2"/>
      <geom type="plane" size="1 1 0.1" rgba="0.2 0.3 0.4 1"/>
      <body pos="0 0 0.2"><freejoint/><geom type="box" size="0.05 0.05 0.05" rgba="1 0 0 1"/></body>
      <camera name="front" pos="0 -0.6 0.4" xyaxes="1 0 0 0 0.6 0.8"/>
    </worldbody></mujoco>"""
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    for _ in range(100):
        mujoco.mj_step(model, data)
    n_frames = 20
    with mujoco.Renderer(model, 96, 96) as renderer:
        start = time.perf_counter()
        for _ in range(n_frames):
            renderer.update_scene(data, camera="front")
            image = renderer.render()
        fps = n_frames / (time.perf_counter() - start)
    if image.std() == 0:
        return CheckResult(False, f"MUJOCO_GL={backend}: rendered a blank image")
    return CheckResult(
        True, f"mujoco {mujoco.__version__}, MUJOCO_GL={backend}: 96x96 renders at {fps:.0f} fps"
    )


def _check_onnxruntime() -> CheckResult:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    return CheckResult(True, f"onnxruntime {ort.__version__}: {', '.join(providers)}")


def _check_openvino() -> CheckResult:
    """OpenVINO's CPU device and the precisions it computes natively (the runtime's second
    backend; bf16 is what makes a DP-sized chunk ~2x faster on AVX512-BF16/AMX CPUs)."""
    from policy_runtime.inference.backends import cpu_info, openvino_installed

    cpu = cpu_info()
    if not openvino_installed():
        return CheckResult(
            True,
            f"not installed (pip install 'policy_runtime[openvino]'); onnxruntime runs bundles; "
            f"CPU {cpu.describe()}",
        )
    import openvino as ov

    from policy_runtime.inference.openvino_runner import device_name, device_precisions

    precisions = ", ".join(sorted(device_precisions()))
    return CheckResult(
        True, f"openvino {ov.__version__}: {device_name()} computes {precisions}; {cpu.describe()}"
    )


def _check_torch() -> CheckResult:
    import torch

    cuda = f"CUDA {torch.version.cuda}" if torch.cuda.is_available() else "CPU only"
    return CheckResult(True, f"torch {torch.__version__} ({cuda})")


def _check_realsense() -> CheckResult:
    """Inject one RGB frame through librealsense's software device and read it back."""
    import pyrealsense2 as rs

    width, height = 64, 48
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = rs.stream.color, 0, 1
    stream.width, stream.height, stream.fps, stream.bpp = width, height, 30, 3
    stream.fmt = rs.format.rgb8
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = width, height
    intrinsics.fx = intrinsics.fy = 50.0
    intrinsics.ppx, intrinsics.ppy = width / 2, height / 2
    stream.intrinsics = intrinsics

    device = rs.software_device()
    sensor = device.add_sensor("Color")
    profile = sensor.add_video_stream(stream)
    syncer = rs.syncer()
    sensor.open(profile)
    sensor.start(syncer)
    try:
        image = (np.arange(width * height * 3) % 251).astype(np.uint8).reshape(height, width, 3)
        frame = rs.software_video_frame()
        frame.pixels, frame.bpp, frame.stride = image, 3, width * 3
        frame.timestamp, frame.frame_number = 1000.0, 1
        frame.domain = rs.timestamp_domain.hardware_clock
        frame.profile = profile.as_video_stream_profile()
        sensor.on_video_frame(frame)
        color = syncer.wait_for_frames(2000).get_color_frame()
        back = np.asanyarray(color.get_data())
    finally:
        sensor.stop()
        sensor.close()
    if not np.array_equal(back, image):
        return CheckResult(False, "a frame injected into the software device came back changed")
    n_cameras = len(rs.context().query_devices())
    return CheckResult(
        True,
        f"librealsense {rs.__version__}: software-device frame round trip ok, "
        f"{n_cameras} camera(s) attached",
    )


CHECKS: dict[str, tuple[str, Callable[[], CheckResult]]] = {
    "dataset": ("zarr dataset", _check_dataset),
    "ros": ("ROS 2 (rclpy + DDS)", _check_ros),
    "mujoco": ("MuJoCo headless render", _check_mujoco),
    "onnxruntime": ("onnxruntime", _check_onnxruntime),
    "openvino": ("OpenVINO (Intel CPUs)", _check_openvino),
    "torch": ("torch (training)", _check_torch),
    "realsense": ("pyrealsense2", _check_realsense),
}


def doctor(
    skip: Annotated[
        list[str] | None,
        typer.Option("--skip", help=f"Checks to skip: {', '.join(CHECKS)}", show_default=False),
    ] = None,
    robot: Annotated[
        bool,
        typer.Option(
            "--robot",
            help="Pre-flight a live robot graph against --deployment instead (one line a "
            "check; exit 1 on any failure).",
        ),
    ] = False,
    deployment: Annotated[
        Path | None, typer.Option(help="--robot: the cell's deployment YAML.")
    ] = None,
    duration: Annotated[
        float, typer.Option(help="--robot: seconds to watch the graph.", min=0.5)
    ] = 3.0,
) -> None:
    """Check this machine end to end: DDS round trip, EGL render, onnxruntime, RealSense, zarr.
    With --robot: check a live robot graph before the first motion."""
    if robot:
        _preflight(deployment, duration)
        return
    skip = skip or []
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        typer.echo(f"prt doctor: unknown check(s) {unknown}; known: {list(CHECKS)}", err=True)
        raise typer.Exit(2)
    table = Table("check", "status", "detail")
    failed = []
    for key, (title, check) in CHECKS.items():
        if key in skip:
            table.add_row(title, "[yellow]skipped[/yellow]", "")
            continue
        try:
            result = check()
        except ImportError as exc:
            result = CheckResult(False, f"not installed ({exc}); run scripts/setup")
        except Exception as exc:
            result = CheckResult(False, f"{type(exc).__name__}: {exc}")
        if not result.ok:
            failed.append(title)
        status = "[green]ok[/green]" if result.ok else "[red]FAILED[/red]"
        table.add_row(title, status, result.detail)
    Console().print(table)
    if failed:
        typer.echo(f"prt doctor: failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)
    typer.echo("all checks passed")


def _preflight(deployment: Path | None, duration: float) -> None:
    if deployment is None:
        typer.echo("prt doctor --robot: error: give --deployment (the cell's YAML)", err=True)
        raise typer.Exit(2)
    from policy_runtime.ros.preflight import run_preflight

    checks = run_preflight(deployment, duration_s=duration)
    for check in checks:
        typer.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        typer.echo(f"prt doctor --robot: failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)
    typer.echo("pre-flight passed")
