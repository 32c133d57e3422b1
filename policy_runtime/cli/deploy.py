"""``prt launch`` and ``prt serve``: the ROS 2 graph without the ``ros2`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

LAUNCH_EPILOG = (
    "Examples:\n\n"
    "  prt launch launch/sim.launch.yaml\n\n"
    "  prt launch launch/sim.launch.yaml realtime:=false cameras:=[] composed:=false\n\n"
    "  prt launch launch/sim_episodes.launch.yaml episodes:=10 out:=runs/sim\n\n"
    "  prt launch --show-args launch/sim.launch.yaml"
)
SERVE_EPILOG = (
    "Examples:\n\n"
    "  prt serve --bundle bundles/push_t_drifting --config config/server_sim.yaml\n\n"
    "  prt serve --bundle bundle.zip --config server.yaml --ros-args -p seed:=7\n\n"
    "  prt serve --deployment config/deploy_ur5.yaml"
)


def launch(
    file: Annotated[Path, typer.Argument(help="A launch/*.launch.yaml file.")],
    arguments: Annotated[
        list[str] | None, typer.Argument(help="Launch arguments, name:=value.", show_default=False)
    ] = None,
    show_args: Annotated[
        bool, typer.Option("--show-args", help="List the file's arguments and exit.")
    ] = False,
    grace: Annotated[
        float, typer.Option(help="Seconds the nodes get to exit after Ctrl-C.", min=0.0)
    ] = 10.0,
) -> None:
    """Bring up a ROS 2 YAML launch file's graph with only the pip wheels (no ``ros2``): each
    node a process with its parameters and remappings; Ctrl-C shuts all down, a node that dies
    is reported."""
    from policy_runtime.bringup.launch_file import (
        LaunchFileError,
        load_launch_file,
        parse_cli_arguments,
    )
    from policy_runtime.bringup.processes import ProcessGroup

    try:
        description = load_launch_file(file, parse_cli_arguments(arguments or []))
    except LaunchFileError as exc:
        typer.echo(f"prt launch: error: {exc}", err=True)
        raise typer.Exit(2) from None
    if show_args:
        for name, value in description.arguments.items():
            typer.echo(f"{name}:={value}\n    {description.descriptions[name]}")
        return
    group = ProcessGroup(description, grace_s=grace)
    try:
        group.start()
    except LaunchFileError as exc:
        group.shutdown()
        typer.echo(f"prt launch: error: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(group.wait())


def serve(
    bundle: Annotated[
        Path | None, typer.Option(help="The policy bundle (directory or .zip).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="The observation mapping (YAML).")] = None,
    deployment: Annotated[
        Path | None,
        typer.Option(help="A deployment (YAML): its bundle and observations replace the two."),
    ] = None,
    ros_args: Annotated[
        list[str] | None,
        typer.Argument(help="More ROS arguments, after --ros-args.", show_default=False),
    ] = None,
) -> None:
    """Run the policy server alone: observation topics in, action chunks out (pair it with
    ``prt-executor`` on the robot PC)."""
    given = {"--bundle": bundle, "--config": config, "--deployment": deployment}
    for name, path in given.items():
        if path is not None and not path.exists():
            typer.echo(f"prt serve: error: {name} {path} does not exist", err=True)
            raise typer.Exit(2)
    if deployment is None and (bundle is None or config is None):
        typer.echo("prt serve: error: give --bundle and --config, or --deployment", err=True)
        raise typer.Exit(2)
    if deployment is not None:
        from policy_runtime.deployment.config import DeploymentConfig

        try:
            DeploymentConfig.load(deployment)
        except ValueError as exc:
            typer.echo(f"prt serve: error: {exc}", err=True)
            raise typer.Exit(2) from None
    from policy_runtime.ros.params import run_nodes
    from policy_runtime.ros.policy_server import PolicyServer

    extra = [a for a in (ros_args or []) if a != "--ros-args"]
    args = ["prt", "--ros-args"]
    parameters = {"bundle": bundle, "config": config, "deployment": deployment}
    for name, path in parameters.items():
        if path is not None:
            args += ["-p", f"{name}:={path.resolve()}"]
    raise typer.Exit(run_nodes(lambda: [PolicyServer()], args=[*args, *extra]))
