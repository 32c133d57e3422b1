"""``prt calibrate``: camera calibration on a live graph (``prt-calibrate`` without ``ros2``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

calibrate_app = typer.Typer(
    help="Camera calibration: hand-eye (eye-in-hand, eye-to-base) through the executor.",
    no_args_is_help=True,
)

HANDEYE_EPILOG = (
    "Examples:\n\n"
    "  prt calibrate handeye --config config/calibrate_sim_eye_to_base.yaml --out front.yaml\n\n"
    "  prt calibrate handeye --config my_cell.yaml --out wrist.yaml --ros-args "
    "-p camera_namespace:=camera\n\n"
    "Start the cell first without a policy server (the sim bridge with calibration_board:=tool "
    "or table and the executor; on the robot ur5_real.launch.yaml policy:=false, then "
    "prt executor arm). The result places the sim's camera: prt-sim-bridge -p "
    "camera_calibrations:=\\[front.yaml]."
)


@calibrate_app.command("handeye", epilog=HANDEYE_EPILOG)
def handeye(
    config: Annotated[Path, typer.Option(help="The calibration config (config/calibrate_*.yaml).")],
    out: Annotated[Path, typer.Option(help="The calibration YAML to write.")],
    ros_args: Annotated[
        list[str] | None,
        typer.Argument(help="More ROS arguments, after --ros-args.", show_default=False),
    ] = None,
) -> None:
    """Move the arm through generated poses (through the executor and its safety stack),
    capture the board at each, solve the hand-eye problem and write the camera's calibration;
    exits 1 with what to capture when the poses cannot determine it."""
    from calibration.ros.calibrate_node import run

    args = ["prt", "--ros-args", "-p", f"config:={config}", "-p", f"output:={out}"]
    args += [a for a in (ros_args or []) if a != "--ros-args"]
    raise typer.Exit(run(args))
