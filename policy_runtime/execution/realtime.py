"""Real-time scheduling for the thread that streams commands.

The UR driver stops the robot program when position commands pause longer than its
``robot_receive_timeout`` (0.04 s). On a robot PC that also runs inference and cameras, a
normally scheduled thread waits behind them; the driver's own control thread runs under
``SCHED_FIFO`` for this reason, and the executor's tick thread (and the sim bridge's, standing
in for the driver) can do the same. Linux applies the policy per thread: call this from the
thread to raise. It needs root, ``CAP_SYS_NICE`` or an ``rtprio`` limit (``ulimit -r``,
``/etc/security/limits.conf``), as the UR driver's real-time set-up describes.
"""

from __future__ import annotations

import os

__all__ = ["raise_process_priority", "raise_thread_priority"]


def raise_thread_priority(priority: int) -> str | None:
    """Run the calling thread under ``SCHED_FIFO`` at ``priority`` (1-99); 0 leaves it as it
    is. Returns why it could not (None when it did)."""
    return _raise([0], priority)


def raise_process_priority(priority: int) -> str | None:
    """Every thread of this process under ``SCHED_FIFO`` at ``priority``: the calling one and
    those the middleware runs (DDS's receive threads deliver each sample the tick thread waits
    for; left at normal priority, a busy machine delays them and with them every tick)."""
    return _raise([int(task) for task in os.listdir("/proc/self/task")], priority)


def _raise(threads: list[int], priority: int) -> str | None:
    if priority == 0:
        return None
    if not 1 <= priority <= 99:
        return f"priority {priority} is outside SCHED_FIFO's 1..99"
    if not hasattr(os, "sched_setscheduler"):
        return "this platform has no SCHED_FIFO"
    try:
        for thread in threads:
            os.sched_setscheduler(thread, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        return (
            f"SCHED_FIFO priority {priority} refused: needs root, CAP_SYS_NICE or an rtprio "
            "limit (ulimit -r)"
        )
    except ProcessLookupError:
        pass  # a thread that ended meanwhile
    return None
