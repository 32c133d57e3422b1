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


@calibrate_app.command("markers")
def markers(
    model: Annotated[Path, typer.Argument(help="An object model YAML (its markers).")],
    out: Annotated[Path, typer.Option(help="The folder to write one PNG per marker to.")],
    pixels: Annotated[int, typer.Option(min=48, help="The black square's width, pixels.")] = 480,
) -> None:
    """Draw an object's markers to print (e.g. config/push_t_block_markers.yaml): one PNG per
    marker, its white card edge to edge, with the size to print it at."""
    from calibration.tracking import load_object_model

    try:
        object_model = load_object_model(model)
        drawings = [(placed.marker, placed.marker.png(pixels)) for placed in object_model.markers]
    except ValueError as exc:
        typer.echo(f"prt calibrate markers: {exc}", err=True)
        raise typer.Exit(1) from exc
    out.mkdir(parents=True, exist_ok=True)
    for spec, png in drawings:
        path = out / f"{spec.dictionary.lower()}_{spec.marker_id}.png"
        path.write_bytes(png)
        typer.echo(
            f"{path}: print {spec.plate_size_m * 1e3:g} mm wide (black square "
            f"{spec.size_m * 1e3:g} mm)"
        )
