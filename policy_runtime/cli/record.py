"""``prt record`` and ``prt teleop``: the recorder and the teleop node without ``ros2 run``.

``prt record`` runs the recorder's nodes in this process and adds the terminal's keys and a live
status line; the same operations are the recorder's services (for a pedal, a GUI, a script).
"""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Annotated

import typer

RECORD_EPILOG = (
    "Examples:\n\n"
    "  prt record --config config/record_sim_push_t.yaml --out demos.zarr\n\n"
    "  prt record --config config/record_sim_push_t.yaml --out demos.zarr --resume\n\n"
    "  prt record --config record_ur5.yaml --out ur5_demos.zarr --episodes 20\n\n"
    "Keys: space start / stop and save, d discard, r re-record (drop the current or last "
    "episode), s / f label success / failure, n note, q quit."
)
TELEOP_EPILOG = (
    "Examples:\n\n"
    "  prt teleop --input spacemouse\n\n"
    "  prt teleop --input keyboard --ros-args -p max_speed_m_s:=0.1\n\n"
    "  prt teleop --input joy --ros-args -r ~/joy:=/spacenav/joy\n\n"
    "Modes (Diffusion Policy's): translation in the table plane; hold button 0 (keyboard: t "
    "toggles) to rotate instead; hold button 1 (keyboard: z) to move in z; button 2 (keyboard: "
    "space) opens / closes the gripper. No input for input_timeout_s: the target holds."
)


def record(
    config: Annotated[Path, typer.Option(help="The recording config (config/record_*.yaml).")],
    out: Annotated[Path, typer.Option(help="The dataset store to write (.zarr).")],
    resume: Annotated[
        bool, typer.Option("--resume", help="Append to an existing store (same schema).")
    ] = False,
    episodes: Annotated[int, typer.Option(help="Quit after this many saved (0: on q).")] = 0,
    ros_args: Annotated[
        list[str] | None,
        typer.Argument(help="More ROS arguments, after --ros-args.", show_default=False),
    ] = None,
) -> None:
    """Record demonstrations from ROS 2 topics into a dataset store, one episode at a time:
    aligned to the policy's grid, each saved before the next starts."""
    from policy_runtime.recording.config import RecordingConfig
    from policy_runtime.recording.resume import check_resume
    from policy_runtime.ros.params import run_nodes
    from policy_runtime.ros.recorder_node import Recorder

    try:
        loaded = RecordingConfig.load(config)
        if resume:
            check_resume(out, loaded)
        elif out.exists():
            raise ValueError(f"{out} exists: pass --resume to append to it")
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    args = ["prt", "--ros-args", "-p", f"config:={config}", "-p", f"output:={out}"]
    args += ["-p", f"resume:={str(resume).lower()}", "-p", f"episodes:={episodes}"]
    args += [a for a in (ros_args or []) if a != "--ros-args"]
    nodes: list[Recorder] = []

    def make() -> list:
        recorder = Recorder()
        nodes.append(recorder)
        return [recorder, recorder.streams]

    stop = threading.Event()
    keys = threading.Thread(target=_operator, args=(nodes, stop), daemon=True)
    keys.start()
    try:
        code = run_nodes(make, args=args)
    finally:
        stop.set()
        keys.join(timeout=1.0)
    raise typer.Exit(code)


def _operator(nodes: list, stop: threading.Event) -> None:
    """Keys to commands and the live status line, while the recorder runs."""
    interactive = sys.stdin is not None and sys.stdin.isatty()
    saved = termios.tcgetattr(sys.stdin) if interactive else None
    if interactive:
        tty.setcbreak(sys.stdin.fileno())
    try:
        while not stop.is_set():
            session = nodes[0].session if nodes else None
            if session is None:
                time.sleep(0.2)
                continue
            sys.stderr.write("\r\033[K" + session.status().line())
            sys.stderr.flush()
            if not interactive or not select.select([sys.stdin], [], [], 0.25)[0]:
                time.sleep(0 if interactive else 0.25)
                continue
            key = os.read(sys.stdin.fileno(), 1).decode(errors="ignore").lower()
            if key == "n" and saved is not None:  # a line, typed with echo and editing
                termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)
                sys.stderr.write("\nnote: ")
                session.command("note", sys.stdin.readline())
                tty.setcbreak(sys.stdin.fileno())
                continue
            _apply(nodes[0], session, key)
    finally:
        if saved is not None:
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)


def _apply(node: object, session: object, key: str) -> None:
    from policy_runtime.recording.session import RecordingSession

    assert isinstance(session, RecordingSession)
    if key == " ":
        session.command("stop" if session.status().state == "recording" else "start")
    elif key in ("d", "r"):
        session.command({"d": "discard", "r": "rerecord"}[key])
    elif key in ("s", "f"):
        session.command("label", key == "s")
    elif key == "q":
        node.quit.set()  # type: ignore[attr-defined]


def teleop(
    input_device: Annotated[
        str, typer.Option("--input", help="joy (~/joy topic) | spacemouse | keyboard.")
    ] = "spacemouse",
    ros_args: Annotated[
        list[str] | None,
        typer.Argument(help="More ROS arguments, after --ros-args.", show_default=False),
    ] = None,
) -> None:
    """Teleoperate the arm through the executor (start it with the cell's launch file, without
    a policy server): the operator's device stands in for the policy, so every safety limit of
    a policy run holds."""
    from policy_runtime.ros.params import run_nodes
    from policy_runtime.ros.teleop_node import TeleopNode

    args = ["prt", "--ros-args", "-p", f"input:={input_device}"]
    args += [a for a in (ros_args or []) if a != "--ros-args"]
    raise typer.Exit(run_nodes(lambda: [TeleopNode()], args=args))
