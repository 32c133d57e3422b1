"""The QoS profiles of this package's topics, chosen on purpose and in one place.

- ``SENSOR``: subscriptions to camera images and other high-rate sensor streams. Best effort
  matches every publisher (reliable ones included), which is why REP 2003 asks for it;
  realsense-ros publishes images with the SYSTEM_DEFAULT profile (reliable).
- ``SENSOR_PUBLISH``: our image publishers, reliable like realsense-ros's: best-effort frames of
  640x480 across processes are mostly lost with Fast DDS's default transports (measured: 81 of
  150), and a reliable publisher still serves best-effort subscribers.
- ``STREAM``: joint states, commands, chunks, requests: reliable, shallow (the newest matters;
  the UR driver's controllers subscribe with the system default, reliable, depth 10).
- ``NEWEST``: the executor's ``/joint_states``: reliable, depth 1. Each sample is a tick; when a
  tick runs late, the samples that arrived meanwhile are stale, and ticking through a backlog
  of them would send each command later still: only the newest is kept.
- ``LATCHED``: state that a late subscriber must still get (``robot_program_running``, the
  policy description, the episode status): reliable + transient local, depth 1.
- ``LOCKSTEP``: the policy server's observation subscriptions in a lockstep simulation:
  reliable, keep all. A lockstep window waits for every sample up to its time, so the server's
  side drops none however far its callbacks fall behind; the lockstep bounds that backlog (the
  executor does not step on while the server is more than a policy period behind). The
  simulator's announcements of what it published are ``LATCHED``: only the newest counts.
- ``CLOCK``: ``/clock`` as rosgraph publishes it (best effort would drop ticks a lockstep
  simulation depends on, so reliable, depth 1: only the newest time matters).
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

SENSOR = qos_profile_sensor_data
SENSOR_PUBLISH = QoSProfile(
    depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
)
STREAM = QoSProfile(
    depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
)
NEWEST = QoSProfile(
    depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
)
LATCHED = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
LOCKSTEP = QoSProfile(
    depth=1, history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE
)
CLOCK = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
