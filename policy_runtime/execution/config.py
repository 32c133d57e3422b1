"""The deployed execution stack as one configuration: what a robot PC and a sim evaluation load.

``config/executor_ur5.yaml`` (CB3, 125 Hz) and ``config/executor_ur5e.yaml`` (e-series,
500 Hz) in the repository state every setting with its default; the ROS 2 executor and
``prt eval --executor-config`` read such a file, and :meth:`ExecutorConfig.build` makes the
engine and the control loop from it, so simulation runs exactly the limits the robot runs::

    execution: {mode: replace, interpolation: linear, latency_margin_s: 0.01}
    loop: {controller_hz: 125.0, max_tracking_error_rad: 0.2}
    limits: {velocity_fraction: 0.5, joint_acceleration_limits: [10, 10, 10, 10, 10, 10]}
    watchdog: {max_observation_age_s: 0.25}

The action space is the policy's (its bundle says it), so :meth:`ExecutorConfig.build` takes
it rather than the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from policy_runtime.execution.clock import Clock
from policy_runtime.execution.control_loop import ControlLoop, LoopConfig
from policy_runtime.execution.engine import ExecutionConfig, ExecutionEngine
from policy_runtime.execution.interpolation import ActionSpace
from policy_runtime.execution.kinematics import EeToJoint
from policy_runtime.execution.safety import SafetyFilter, SafetyLimits
from policy_runtime.execution.watchdog import Watchdog, WatchdogConfig
from policy_runtime.validation import load_yaml_model

__all__ = ["ExecutorConfig"]


class ExecutorConfig(BaseModel):
    """Engine, loop, safety limits and watchdog settings of one deployment; UR5 CB3 defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    limits: SafetyLimits = Field(default_factory=SafetyLimits)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)

    @classmethod
    def load(cls, path: Path | str) -> ExecutorConfig:
        """The configuration in the YAML file ``path``; a bad file raises ValueError naming the
        file and the field."""
        return load_yaml_model(cls, path, "executor config")

    def build(
        self,
        clock: Clock,
        action_space: ActionSpace,
        *,
        execution: ExecutionConfig | None = None,
        kinematics: EeToJoint | None = None,
    ) -> ControlLoop:
        """The engine and control loop of this deployment for a policy acting in
        ``action_space``, on ``clock``. ``execution`` replaces the file's engine settings (a
        run's mode, say: :meth:`execution_for` makes one)."""
        execution = execution or self.execution_for(action_space)
        return ControlLoop(
            ExecutionEngine(execution, clock),
            action_space,
            config=self.loop,
            safety=SafetyFilter(self.limits),
            watchdog=Watchdog(self.watchdog),
            kinematics=kinematics,
        )

    def execution_for(self, action_space: ActionSpace, **changes: Any) -> ExecutionConfig:
        """The file's engine settings for ``action_space``, with ``changes`` (validated)."""
        settings = {**self.execution.model_dump(), **changes, "action_space": action_space}
        return ExecutionConfig.model_validate(settings)
