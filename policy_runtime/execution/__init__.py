"""Action-chunk execution: from stamped chunks to a target at every controller tick (numpy only).

- :class:`ExecutionEngine` merges chunks (replace, temporal ensemble, aggregate, real-time
  chunking), drops stale actions, times the next request and interpolates at the controller rate.
- :class:`Trajectory` interpolates stamped waypoints (linear / cubic joints, SLERP poses).
- :class:`Clock` is injected: :class:`MonotonicClock` in a process, :class:`FakeClock` in tests.
- :class:`ControlLoop` turns the engine's target into a joint command every tick and takes the
  chunks, the e-stop input and the operator's reset: :class:`Supervisor` (running, holding,
  stopped, resuming), :class:`Watchdog`, :class:`JointFeed` (which measured samples to trust),
  :class:`TickTiming` (limits per second of real time),
  end-effector limits, inverse kinematics (:class:`EeToJoint`), joint limits
  (:class:`SafetyFilter` with :class:`SafetyLimits`); on doubt it decelerates to a hold.
- :class:`ExecutorConfig` is all of it as one deployment loads it (YAML, pydantic).

Imports neither onnxruntime nor zarr: the chunks it consumes are :class:`ActionChunk`, a plain
type.
"""

from policy_runtime.chunk import ActionChunk
from policy_runtime.execution.clock import Clock, FakeClock, MonotonicClock
from policy_runtime.execution.config import ExecutorConfig
from policy_runtime.execution.control_loop import (
    ControlLoop,
    HoldReason,
    JointCommand,
    LoopConfig,
)
from policy_runtime.execution.engine import (
    ExecutionConfig,
    ExecutionEngine,
    ExecutionMode,
    ExecutionStats,
    RtcPrefix,
    SubmitReport,
    rtc_prefix_weights,
)
from policy_runtime.execution.interpolation import (
    JOINT_ACTION_DIM,
    ActionSpace,
    Interpolation,
    Trajectory,
    blend_actions,
    matrix_from_quaternion,
    mean_rotation,
    quaternion_from_matrix,
    slerp,
)
from policy_runtime.execution.joint_feed import JointFeed
from policy_runtime.execution.kinematics import (
    DEFAULT_TOOL0_TO_TCP,
    EeToJoint,
    IkFailure,
    IkSolution,
)
from policy_runtime.execution.safety import (
    Intervention,
    Refusal,
    SafeEeCommand,
    SafeJointCommand,
    SafetyFilter,
    SafetyLimits,
)
from policy_runtime.execution.supervisor import ResetReport, Supervisor, SupervisorState
from policy_runtime.execution.timing import TickStats, TickTiming
from policy_runtime.execution.watchdog import Watchdog, WatchdogConfig, WatchdogStatus

__all__ = [
    "DEFAULT_TOOL0_TO_TCP",
    "JOINT_ACTION_DIM",
    "ActionChunk",
    "ActionSpace",
    "Clock",
    "ControlLoop",
    "EeToJoint",
    "ExecutionConfig",
    "ExecutionEngine",
    "ExecutionMode",
    "ExecutionStats",
    "ExecutorConfig",
    "FakeClock",
    "HoldReason",
    "IkFailure",
    "IkSolution",
    "Interpolation",
    "Intervention",
    "JointCommand",
    "JointFeed",
    "LoopConfig",
    "MonotonicClock",
    "Refusal",
    "ResetReport",
    "RtcPrefix",
    "SafeEeCommand",
    "SafeJointCommand",
    "SafetyFilter",
    "SafetyLimits",
    "SubmitReport",
    "Supervisor",
    "SupervisorState",
    "TickStats",
    "TickTiming",
    "Trajectory",
    "Watchdog",
    "WatchdogConfig",
    "WatchdogStatus",
    "blend_actions",
    "matrix_from_quaternion",
    "mean_rotation",
    "quaternion_from_matrix",
    "rtc_prefix_weights",
    "slerp",
]
