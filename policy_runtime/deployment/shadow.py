"""What a disarmed executor would have done: the shadow-mode report's figures and plot.

In shadow mode the executor drives a virtual arm from where the real one stands and publishes
its commands on ``/executor/shadow/joint_commands`` while the arm holds. Set against the
measured joints over the same time, they say how far the policy would have moved the arm
(per joint, and the TCP through the deployment's kinematics); the executor's ``/diagnostics``
counts say which holds and safety interventions it would have triggered, and its latency
quantiles how long observations took to become chunks. Plain numpy (matplotlib for the plot).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy_runtime.execution.kinematics import EeToJoint
from policy_runtime.robots.ur5 import JOINT_NAMES

__all__ = ["ShadowReport", "shadow_report"]


@dataclass(frozen=True)
class ShadowReport:
    seconds: float
    commands: int
    #: Per joint, the largest |would-be command - measured joint| (rad).
    max_joint_displacement_rad: dict[str, float]
    #: The largest distance from the measured TCP to the would-be one (m).
    max_tcp_displacement_m: float
    #: Largest |measured joint - its first value| (rad): the arm itself stood still.
    real_arm_motion_rad: float
    #: Commands by the executor's state (running, resuming, holding, stopped).
    states: dict[str, int]
    #: The executor's counters over the window: holds by reason, safety interventions.
    holds: dict[str, int]
    interventions: dict[str, int]
    #: The executor's newest latency quantiles (ms).
    latencies_ms: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _counter_deltas(
    before: Mapping[str, str], after: Mapping[str, str], prefix: str
) -> dict[str, int]:
    deltas = {}
    for key, value in after.items():
        if key.startswith(prefix):
            delta = int(value) - int(before.get(key, "0"))
            if delta:
                deltas[key[len(prefix) :]] = delta
    return deltas


def shadow_report(
    real_t: np.ndarray,
    real_q: np.ndarray,
    shadow_t: np.ndarray,
    shadow_q: np.ndarray,
    shadow_states: list[str],
    kinematics: EeToJoint,
    diagnostics_first: Mapping[str, str],
    diagnostics_last: Mapping[str, str],
) -> ShadowReport:
    """The report of a window: measured joints ``real_q`` (n, 6) at stamps ``real_t``, shadow
    commands ``shadow_q`` (m, 6) at ``shadow_t`` with the executor's state of each, and the
    executor's first and last diagnostics values of the window."""
    if len(real_t) == 0 or len(shadow_t) == 0:
        raise ValueError(
            "no joint states or no shadow commands were received: is the executor disarmed "
            "(require_arming) and the driver publishing?"
        )
    # The measured joints at each command's stamp: the newest sample not after it.
    index = np.clip(np.searchsorted(real_t, shadow_t, side="right") - 1, 0, len(real_t) - 1)
    measured = real_q[index]
    gap = np.abs(shadow_q - measured)
    tcp_gap = [
        float(np.linalg.norm(kinematics.tcp_position(s) - kinematics.tcp_position(m)))
        for s, m in zip(shadow_q, measured, strict=True)
    ]
    states: dict[str, int] = {}
    for state in shadow_states:
        states[state] = states.get(state, 0) + 1
    latencies = {
        key.removesuffix("_ms"): float(value)
        for key, value in diagnostics_last.items()
        if key.endswith("_ms")
    }
    return ShadowReport(
        seconds=float(shadow_t[-1] - shadow_t[0]),
        commands=len(shadow_t),
        max_joint_displacement_rad={
            name: float(v) for name, v in zip(JOINT_NAMES, gap.max(axis=0), strict=True)
        },
        max_tcp_displacement_m=max(tcp_gap),
        real_arm_motion_rad=float(np.abs(real_q - real_q[0]).max()),
        states=states,
        holds=_counter_deltas(diagnostics_first, diagnostics_last, "hold."),
        interventions=_counter_deltas(diagnostics_first, diagnostics_last, "intervention."),
        latencies_ms=latencies,
    )


def plot_shadow(
    path: Path,
    real_t: np.ndarray,
    real_q: np.ndarray,
    shadow_t: np.ndarray,
    shadow_q: np.ndarray,
    report: ShadowReport,
) -> None:
    """Per joint: the measured arm and the would-be commands over time; the counts in the
    title. Needs matplotlib (the ``train`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min(real_t[0], shadow_t[0])
    figure, axes = plt.subplots(6, 1, figsize=(10, 12), sharex=True)
    for j, axis in enumerate(axes):
        axis.plot(real_t - t0, real_q[:, j], label="measured arm", color="black")
        axis.plot(shadow_t - t0, shadow_q[:, j], label="would-be command", color="tab:orange")
        axis.set_ylabel(f"{JOINT_NAMES[j]}\n(rad)", fontsize=8)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    interventions = ", ".join(f"{k} {v}" for k, v in report.interventions.items()) or "none"
    holds = ", ".join(f"{k} {v}" for k, v in report.holds.items()) or "none"
    figure.suptitle(
        f"shadow mode, {report.seconds:.1f} s: TCP would have moved up to "
        f"{report.max_tcp_displacement_m * 100:.1f} cm\ninterventions: {interventions}; "
        f"holds: {holds}",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
