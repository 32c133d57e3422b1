"""The recorder's throughput, its drops at 30 Hz and its memory over a long episode, in one run.

    python -m bench.recording [--minutes 10] [--video]

Both parts drive the recorder's session (:class:`RecordingSession`: the queue, the worker
thread, alignment, image decoding, compressed writes; what ``prt record`` runs behind its
subscriptions) with two 640x480 rgb8 cameras at 30 Hz and the arm's state at 125 Hz, stored at
full size on a 10 Hz grid:

1. throughput: one minute of data fed as fast as the queue takes it; frames per second of
   wall time the recorder keeps up with (camera frames in; grid rows of both cameras written);
2. real time: ``--minutes`` of data fed at its real rates: the share of camera frames the
   recorder dropped (its queue full), and the process's peak resident memory against its
   memory before the episode (ru_maxrss), sampled each second.

DDS delivery to the recorder is not part of this: ``bench.camera_latency`` measures it.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from policy_runtime.data import DatasetWriter
from policy_runtime.recording.config import RecordingConfig
from policy_runtime.recording.session import RecordingSession

CAMERAS = ("front_rgb", "wrist_rgb")
HEIGHT, WIDTH = 480, 640


def make_config(video: bool) -> RecordingConfig:
    image = {"type": "image", "rate_hz": 30, "shape": [HEIGHT, WIDTH, 3]}
    return RecordingConfig.model_validate(
        {
            "control_hz": 10,
            "video": video,
            "observations": {
                "ee_pose": {"topic": "/pose", "type": "pose", "rate_hz": 125},
                "front_rgb": {"topic": "/front", **image},
                "wrist_rgb": {"topic": "/wrist", **image},
            },
            "action": [{"topic": "/target", "type": "pose"}],
        }
    )


def frames(n: int) -> list[np.ndarray]:
    """Camera-like frames (a gradient with noise: compresses like a real scene, not like 0s)."""
    rng = np.random.default_rng(0)
    base = np.linspace(0, 200, WIDTH, dtype=np.float32)[None, :, None]
    return [
        np.clip(base + rng.normal(0, 6, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)
        for _ in range(n)
    ]


def feed(session: RecordingSession, seconds: float, realtime: bool, images: list[np.ndarray]):
    """Stamped samples of ``seconds`` of a cell, at real rates or as fast as possible."""
    pose = np.zeros(9, np.float32)
    events = []
    for i in range(int(seconds * 125)):
        events.append((i / 125, "ee_pose"))
    for i in range(int(seconds * 30)):
        events += [(i / 30 + 0.001, "front_rgb"), (i / 30 + 0.002, "wrist_rgb")]
    for i in range(int(seconds * 10)):
        events.append((i / 10 + 0.0005, "action.0"))
    events.sort()
    start = time.monotonic()
    offered = 0
    for t, key in events:
        if realtime:
            delay = start + t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        else:
            while session.backlog() > 256:  # as fast as the recorder takes them
                time.sleep(0.001)
        if key in CAMERAS:
            offered += 1
            image = images[offered % len(images)]
            session.sample(key, 1000.0 + t, lambda image=image: image)
            session.frame(f"/{key.split('_')[0]}", 1000.0 + t, image)
        else:
            session.sample(key, 1000.0 + t, pose)
    return offered, time.monotonic() - start


def run(seconds: float, realtime: bool, video: bool, out: Path) -> dict[str, float]:
    config = make_config(video)
    writer = DatasetWriter(out, config.dataset_schema())
    clock = {"t": 1000.0}
    session = RecordingSession(writer, config, lambda: clock["t"], queue_size=512)
    images = frames(8)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    session.command("start").result(10)
    offered, fed_s = feed(session, seconds, realtime, images)
    clock["t"] = 1000.0 + seconds
    wall = time.monotonic()
    report = session.command("stop").result(600)
    drain_s = time.monotonic() - wall
    dropped = sum(session.dropped.values())
    rows = session.status().last.length if session.status().last else 0
    session.close()
    writer.close()
    total_s = fed_s + drain_s
    return {
        "camera frames offered": offered,
        "camera frames dropped": dropped,
        "dropped share %": 100.0 * dropped / max(offered, 1),
        "grid rows written": rows,
        "frames in / s (wall)": (offered - dropped) / total_s,
        "image rows written / s (wall)": 2 * rows / total_s,
        "seconds of data / s of wall": seconds / total_s,
        "peak RSS MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "RSS before MB": rss_before,
        "store MB": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6,
        "report": report,  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--video", action="store_true", help="also an mp4 per camera")
    parser.add_argument("--fast-seconds", type=float, default=60.0)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        # Real time first: its peak memory is then the process's, not the fast run's.
        live = run(60.0 * args.minutes, realtime=True, video=args.video, out=Path(tmp) / "rt.zarr")
        fast = run(args.fast_seconds, realtime=False, video=args.video, out=Path(tmp) / "fast.zarr")
    table = Table(title=f"recorder: 2 x {WIDTH}x{HEIGHT} @ 30 Hz + state @ 125 Hz, 10 Hz grid")
    table.add_column("figure")
    table.add_column(f"as fast as possible ({args.fast_seconds:g} s of data)", justify="right")
    table.add_column(f"real time ({args.minutes:g} min)", justify="right")
    for key in fast:
        if key == "report":
            continue
        table.add_row(key, f"{fast[key]:.1f}", f"{live[key]:.1f}")
    console.print(table)
    console.print(f"real-time episode: {live['report']}")


if __name__ == "__main__":
    main()
