"""``prt camera``: the RealSense camera node (``prt-camera``) without the ``ros2`` command."""

from __future__ import annotations

from typing import Annotated

import typer

CAMERA_EPILOG = (
    "Examples:\n\n"
    "  prt camera --serial 123456789012 --name front\n\n"
    "  prt camera --test-pattern --name front\n\n"
    "  prt camera --deployment config/deploy_ur5.yaml --name front\n\n"
    "  prt camera --serial 123456789012 --name wrist --ros-args -p exposure_us:=20000.0 "
    "-p white_balance_k:=4600.0 -p enable_depth:=false"
)


def camera(
    serial: Annotated[
        str, typer.Option(help="The device's serial number ('': the only one connected).")
    ] = "",
    name: Annotated[
        str, typer.Option(help="The camera's name: topics /camera/<name>/..., frames <name>_*.")
    ] = "camera",
    test_pattern: Annotated[
        bool,
        typer.Option(
            "--test-pattern", help="Stream a librealsense software device's test pattern."
        ),
    ] = False,
    deployment: Annotated[
        str,
        typer.Option(help="A deployment YAML: its cameras.<name> replaces the settings."),
    ] = "",
    ros_args: Annotated[
        list[str] | None,
        typer.Argument(help="More ROS arguments, after --ros-args.", show_default=False),
    ] = None,
) -> None:
    """Run a RealSense camera node: colour and depth aligned to it on realsense-ros's topics,
    stamped with the capture time, reopened when the camera stalls or comes back."""
    from policy_runtime.ros.camera_node import CameraNode
    from policy_runtime.ros.params import run_nodes

    extra = [a for a in (ros_args or []) if a != "--ros-args"]
    device = "test_pattern" if test_pattern else "realsense"
    args = ["prt", "--ros-args", "-p", f"camera_name:={name}", "-p", f"device:={device}"]
    if deployment:
        args += ["-p", f"deployment:={deployment}"]
    if serial:
        # Quoted: the parameter parser would read a numeric serial as an integer.
        args += ["-p", f"serial_no:='{serial}'"]
    raise typer.Exit(run_nodes(lambda: [CameraNode()], args=[*args, *extra]))
