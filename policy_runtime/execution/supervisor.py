"""The one owner of the execution state, and of every transition between its four states.

::

    resuming --(a fresh chunk that starts near the arm)--> running
    running  --(an input goes stale or missing)----------> holding   (plan cleared)
    running  --(plan stale, chunk invalid, arm lagging)---> resuming  (plan cleared)
    holding  --(the inputs are fresh again)---------------> resuming
    any      --(e-stop, arm not following, program off)---> stopped   (plan cleared, latched)
    stopped  --(reset(), e-stop input released)-----------> resuming

* ``running``: the loop follows the plan.
* ``holding``: an input the policy or the loop depends on (observations, joint states, the
  clocks' agreement) is stale or missing. The arm decelerates to rest and stays there. The plan
  is dropped on entry: a plan made before the gap must not resume as if nothing happened.
* ``stopped``: a fault latched: the e-stop input was active, the arm stopped following its
  commands, or the robot program stopped (a protective stop, the pendant). Only an explicit
  :meth:`Supervisor.reset`, refused while the e-stop input is still active, leaves it;
  releasing a button or restarting the program alone never restarts the arm.
* ``resuming``: the state at start-up and after every hold or stop: at rest, waiting for a chunk
  observed after the resume began (``resume_since``) whose first action is near the arm; the
  control loop checks the distance and approaches that action within the limits.

The supervisor decides; the control loop (:class:`~policy_runtime.execution.ControlLoop`)
carries out the side effects it is told about (dropping the plan, re-anchoring to the measured
joints). numpy-free and clock-free: ``t`` is whatever clock the loop runs on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["ResetReport", "Supervisor", "SupervisorState", "Transition"]

SupervisorState = Literal["running", "holding", "stopped", "resuming"]
SUPERVISOR_STATES: tuple[SupervisorState, ...] = get_args(SupervisorState)


@dataclass(frozen=True)
class Transition:
    t: float
    before: SupervisorState
    after: SupervisorState
    #: What caused it (hold or fault reasons, ``reset``, ``chunk``).
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ResetReport:
    """The answer to a reset request."""

    ok: bool
    #: Why it was refused ("" when it was not).
    reason: str = ""


class Supervisor:
    """The state machine of the module docs."""

    def __init__(self) -> None:
        self.state: SupervisorState = "resuming"
        #: A resume takes only chunks observed at or after this time.
        self.resume_since = -math.inf
        #: Times each state was entered.
        self.entries: dict[SupervisorState, int] = dict.fromkeys(SUPERVISOR_STATES, 0)
        self.last_transition: Transition | None = None

    def update(
        self,
        t: float,
        faults: tuple[str, ...],
        input_holds: tuple[str, ...],
        plan_stale: tuple[str, ...],
    ) -> bool:
        """Move on from this tick's conditions; True when the plan must be dropped now.

        ``faults`` latch a stop (e-stop input, tracking error, program stopped);
        ``input_holds`` hold until they clear (stale or missing observations or joint states);
        ``plan_stale`` (no chunk, or the newest too old) sends a running loop back to waiting
        for a fresh chunk.
        """
        state = self.state
        if faults:
            if state != "stopped":
                self._enter(t, "stopped", faults)
                return True
            return False
        if state == "stopped":
            return False
        if input_holds:
            if state != "holding":
                self._enter(t, "holding", input_holds)
                return True
            return False
        if state == "holding":
            self._enter(t, "resuming", ("inputs_fresh",))
            return False
        if state == "running" and plan_stale:
            self._enter(t, "resuming", plan_stale)
            return True
        return False

    def reset(self, t: float, estop_active: bool) -> ResetReport:
        """The operator's reset: out of ``stopped`` into ``resuming`` (refused while the e-stop
        input is active). In any other state there is nothing to reset, and it says so."""
        if estop_active:
            return ResetReport(False, "the e-stop input is still active: release it first")
        if self.state != "stopped":
            return ResetReport(False, f"nothing to reset: the loop is {self.state}")
        self._enter(t, "resuming", ("reset",))
        return ResetReport(True)

    def drop_plan(self, t: float, reason: str) -> bool:
        """The plan is no good any more (an invalid chunk, a lag the servo cannot explain, the
        clock went back): a running or resuming loop waits for a chunk observed from ``t`` on.
        True when the plan must be dropped."""
        if self.state not in ("running", "resuming"):
            return False
        self._enter(t, "resuming", (reason,))
        return True

    @property
    def accepts_chunks(self) -> bool:
        return self.state in ("running", "resuming")

    def resumed(self, t: float) -> None:
        """A fresh chunk near the arm was accepted: follow it."""
        if self.state == "resuming":
            self._enter(t, "running", ("chunk",))

    def _enter(self, t: float, state: SupervisorState, reasons: tuple[str, ...]) -> None:
        self.last_transition = Transition(t, self.state, state, reasons)
        self.state = state
        self.entries[state] += 1
        if state == "resuming":
            self.resume_since = t
