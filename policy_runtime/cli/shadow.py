"""``prt shadow-report``: watch a disarmed executor and report what it would have done."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

EPILOG = (
    "Examples:\n\n"
    "  prt shadow-report --duration 60 --out runs/shadow\n\n"
    "  prt shadow-report --deployment config/deploy_ur5.yaml --duration 30 --out runs/shadow"
)
SHADOW_TOPIC = "/executor/shadow/joint_commands"
#: Seconds to wait for the first shadow command before the window starts.
DISCOVERY_S = 10.0
EXECUTOR_STATUS = "policy_runtime: executor"


def shadow_report_command(
    out: Annotated[Path, typer.Option(help="Folder for shadow.png and shadow.json.")],
    duration: Annotated[float, typer.Option(help="Seconds to watch.", min=1.0)] = 30.0,
    deployment: Annotated[
        Path | None, typer.Option(help="The cell's deployment YAML (its TCP offset).")
    ] = None,
) -> None:
    """Watch the live graph while the executor is disarmed (shadow mode: the arm holds) and
    report how far its commands would have moved the arm, the holds and interventions they
    would have triggered, and the latencies, with a plot."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState

    from policy_runtime.deployment.shadow import plot_shadow, shadow_report
    from policy_runtime.execution.kinematics import EeToJoint
    from policy_runtime.robots.ur5 import JOINT_NAMES
    from policy_runtime.ros import qos
    from policy_runtime.ros.probe import GraphProbe
    from policy_runtime.serving.decode import NamePicker

    kinematics = EeToJoint()
    if deployment is not None:
        from policy_runtime.deployment.config import DeploymentConfig

        try:
            kinematics = DeploymentConfig.load(deployment).kinematics()
        except ValueError as exc:
            typer.echo(f"prt shadow-report: error: {exc}", err=True)
            raise typer.Exit(2) from None
    probe = GraphProbe("prt_shadow_report")
    try:
        probe.listen("/joint_states", JointState, qos.STREAM, keep=True)
        probe.listen(SHADOW_TOPIC, JointState, qos.STREAM, keep=True)
        probe.listen("/diagnostics", DiagnosticArray, qos.STREAM, keep=True)
        deadline = time.monotonic() + DISCOVERY_S
        while not probe.stream(SHADOW_TOPIC).arrivals and time.monotonic() < deadline:
            time.sleep(0.05)  # DDS discovery: the window starts with the first command
        typer.echo(f"prt shadow-report: watching {SHADOW_TOPIC} for {duration:g} s ...")
        time.sleep(duration)
        real, shadow = probe.stream("/joint_states"), probe.stream(SHADOW_TOPIC)
        diagnostics = probe.stream("/diagnostics").messages or []
    finally:
        probe.close()
    pick = NamePicker(JOINT_NAMES)
    real_q = np.array([pick(m.name, m.position) for m in real.messages or []]).reshape(-1, 6)
    shadow_q = np.array([pick(m.name, m.position) for m in shadow.messages or []]).reshape(-1, 6)
    states = [m.header.frame_id for m in shadow.messages or []]
    executor = [v for v in map(_values, diagnostics) if v is not None]
    try:
        report = shadow_report(
            np.asarray(real.stamps),
            real_q,
            np.asarray(shadow.stamps),
            shadow_q,
            states,
            kinematics,
            executor[0] if executor else {},
            executor[-1] if executor else {},
        )
    except ValueError as exc:
        typer.echo(f"prt shadow-report: error: {exc}", err=True)
        raise typer.Exit(1) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "shadow.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    plot_shadow(
        out / "shadow.png",
        np.asarray(real.stamps),
        real_q,
        np.asarray(shadow.stamps),
        shadow_q,
        report,
    )
    worst = max(report.max_joint_displacement_rad.items(), key=lambda kv: kv[1])
    typer.echo(
        f"{report.commands} shadow commands over {report.seconds:.1f} s; the arm moved "
        f"{report.real_arm_motion_rad:.2e} rad\n"
        f"would have moved: TCP up to {report.max_tcp_displacement_m * 100:.1f} cm, "
        f"{worst[0]} up to {worst[1]:.3f} rad\n"
        f"states: {report.states}\nholds: {report.holds}\ninterventions: {report.interventions}"
        f"\nlatencies (ms): {report.latencies_ms}\nwrote {out / 'shadow.png'} and "
        f"{out / 'shadow.json'}"
    )


def _values(array: Any) -> dict[str, str] | None:
    """The executor's key-values in a DiagnosticArray (None: not the executor's)."""
    for status in array.status:
        if status.name == EXECUTOR_STATUS:
            return {kv.key: kv.value for kv in status.values}
    return None
