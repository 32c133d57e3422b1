"""One way for the nodes to report on ``/diagnostics``: a status of key-value strings, and
quantiles of wall-clock samples in milliseconds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


def millisecond_quantiles(name: str, samples_s: Iterable[float]) -> dict[str, str]:
    """``{name}_p50_ms``, ``{name}_p99_ms`` and ``{name}_max_ms`` of samples in seconds
    (nothing without any)."""
    values = np.asarray(list(samples_s), dtype=np.float64)
    if values.size == 0:
        return {}
    p50, p99 = np.quantile(values, (0.5, 0.99)) * 1e3
    worst = values.max() * 1e3
    return {
        f"{name}_p50_ms": f"{p50:.3f}",
        f"{name}_p99_ms": f"{p99:.3f}",
        f"{name}_max_ms": f"{worst:.3f}",
    }


def diagnostic_array(
    name: str,
    level: bytes,
    message: str,
    hardware_id: str,
    values: Mapping[str, str],
    stamp: Time,
) -> DiagnosticArray:
    """A DiagnosticArray of one status."""
    status = DiagnosticStatus(
        name=name,
        level=level,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array
