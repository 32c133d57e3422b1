"""``prt``: the single entry point for simulation, data, training, export, deployment,
recording and calibration."""

from __future__ import annotations

import typer

from policy_runtime.cli.bench import bench_app
from policy_runtime.cli.calibrate import calibrate_app
from policy_runtime.cli.camera import CAMERA_EPILOG, camera
from policy_runtime.cli.data import data_app
from policy_runtime.cli.deploy import LAUNCH_EPILOG, SERVE_EPILOG, launch, serve
from policy_runtime.cli.doctor import doctor
from policy_runtime.cli.eval import EPILOG as EVAL_EPILOG
from policy_runtime.cli.eval import eval_policy
from policy_runtime.cli.executor import executor_app
from policy_runtime.cli.export import EPILOG as EXPORT_EPILOG
from policy_runtime.cli.export import export
from policy_runtime.cli.imports import import_app
from policy_runtime.cli.precision import EPILOG as PRECISION_EPILOG
from policy_runtime.cli.precision import QUANTIZE_EPILOG, calibrate_precision, quantize
from policy_runtime.cli.record import RECORD_EPILOG, TELEOP_EPILOG, record, teleop
from policy_runtime.cli.shadow import EPILOG as SHADOW_EPILOG
from policy_runtime.cli.shadow import shadow_report_command
from policy_runtime.cli.sim import datagen, sim
from policy_runtime.cli.train import train
from sim_bridge.gl import configure_headless_rendering

app = typer.Typer(
    name="prt",
    help=(
        "Run learned visuomotor policies on a simulated or real UR5 through ROS 2.\n\n"
        "Examples:\n\n"
        "  prt doctor                      check ROS 2, MuJoCo, onnxruntime, RealSense, zarr\n\n"
        "  prt data info demos.zarr        episodes, keys, shapes, compression of a dataset\n\n"
        "  prt <command> --help            usage and examples of a command"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command(
    "doctor",
    epilog="Examples:\n\n  prt doctor\n\n  prt doctor --skip ros --skip realsense\n\n"
    "  prt doctor --robot --deployment config/deploy_ur5.yaml",
)(doctor)
app.command(
    "sim",
    epilog="Examples:\n\n  prt sim --task pick_place --episodes 5\n\n"
    "  prt sim --task drawer --variant middle --domain-rand all",
)(sim)
app.command(
    "datagen",
    epilog="Examples:\n\n"
    "  prt datagen --task push_t --episodes 200 --out demos.zarr --workers 2\n\n"
    "  prt datagen --task drawer --variant all --episodes 90 --out drawer.zarr "
    "--domain-rand all --image-size 96x96\n\n"
    "  prt datagen --task pick_place --episodes 1000 --out pp.zarr --ray-address auto "
    "--workers 16",
)(datagen)
app.command(
    "train",
    epilog="Examples:\n\n"
    "  prt train --data push_t.zarr --out runs/dp --policy diffusion steps=20000\n\n"
    "  prt train --data push_t.zarr --out runs/drift --policy drifting model.drift_samples=16\n\n"
    "  prt train --config train.yaml --resume runs/dp eval_every=2000 eval_task=push_t",
)(train)
app.command("eval", epilog=EVAL_EPILOG)(eval_policy)
app.command("export", epilog=EXPORT_EPILOG)(export)
app.command("quantize", epilog=QUANTIZE_EPILOG)(quantize)
app.command("calibrate-precision", epilog=PRECISION_EPILOG)(calibrate_precision)
app.command("launch", epilog=LAUNCH_EPILOG)(launch)
app.command("record", epilog=RECORD_EPILOG)(record)
app.command("teleop", epilog=TELEOP_EPILOG)(teleop)
app.command(
    "serve",
    epilog=SERVE_EPILOG,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)(serve)
app.command("shadow-report", epilog=SHADOW_EPILOG)(shadow_report_command)
app.command(
    "camera",
    epilog=CAMERA_EPILOG,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)(camera)
app.add_typer(data_app, name="data")
app.add_typer(calibrate_app, name="calibrate")
app.add_typer(executor_app, name="executor")
app.add_typer(bench_app, name="bench")
app.add_typer(import_app, name="import")


def main() -> None:
    # Every command that touches MuJoCo (sim, datagen, eval, doctor) needs the headless OpenGL
    # backend chosen before the first ``import mujoco``; choose it once, up front.
    configure_headless_rendering()
    app()
