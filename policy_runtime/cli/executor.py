"""``prt executor arm | disarm | reset``: the operator's calls to a running executor, where only
the pip wheels of ROS 2 exist (no ``ros2 service call``)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

executor_app = typer.Typer(
    help="Arm, disarm or reset the running executor (its ~/arm and ~/reset services).",
    epilog="Examples:\n\n  prt executor arm\n\n  prt executor reset\n\n  prt executor disarm",
    no_args_is_help=True,
)
TimeoutOption = Annotated[
    float, typer.Option(help="Seconds to wait for the executor's service.", min=0.1)
]
NodeOption = Annotated[str, typer.Option(help="The executor node's name.")]


def _call(service: str, service_type: Any, request: Any, timeout: float) -> None:
    from policy_runtime.ros.probe import GraphProbe

    probe = GraphProbe("prt_executor_cli")
    try:
        client = probe.node.create_client(service_type, service)
        if not client.wait_for_service(timeout_sec=timeout):
            typer.echo(f"prt executor: {service} is not available (is the executor up?)", err=True)
            raise typer.Exit(1)
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done():
            typer.echo(f"prt executor: {service} did not answer in {timeout:g} s", err=True)
            raise typer.Exit(1)
        answer = future.result()
    finally:
        probe.close()
    typer.echo(answer.message)
    if not answer.success:
        raise typer.Exit(1)


def _set_bool(service: str, value: bool, timeout: float) -> None:
    from std_srvs.srv import SetBool

    _call(service, SetBool, SetBool.Request(data=value), timeout)


@executor_app.command()
def arm(timeout: TimeoutOption = 10.0, node: NodeOption = "executor") -> None:
    """Arm: the executor's commands go to the arm (refused with the reason while nothing
    subscribes to the controller's topic, the program is off or a stop is latched)."""
    _set_bool(f"/{node}/arm", True, timeout)


@executor_app.command()
def disarm(timeout: TimeoutOption = 10.0, node: NodeOption = "executor") -> None:
    """Back to shadow mode (refused while the arm moves)."""
    _set_bool(f"/{node}/arm", False, timeout)


@executor_app.command()
def reset(timeout: TimeoutOption = 10.0, node: NodeOption = "executor") -> None:
    """The operator's reset after a stop (e-stop released, the robot program running)."""
    from std_srvs.srv import Trigger

    _call(f"/{node}/reset", Trigger, Trigger.Request(), timeout)
