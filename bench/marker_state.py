"""The bundled push_t policy driven by its block's state from markers, beside the same policy
on the simulator's exact state, over the same seeds, in one run.

    python -m bench.marker_state [--episodes 50] [--start-seed 100000] [--workers 1]

Both runs are ``prt eval`` of ``bundles/push_t_drifting`` through the deployed execution stack;
they differ only in ``object_state``: ``sim`` (the exact block keypoints) or ``marker`` (the
keypoints :class:`calibration.tracking.MarkerTracker` reads off the block's four ArUco markers
in a 640x480 render of the front camera, else of the side camera, each period; a period in
which neither sees the block is stale and the stack holds, as on the robot). Printed: success
with the Wilson 95% interval for each, the difference, the periods lost, and the wall time.
The tracking cameras are at their true poses (``prt eval --camera-calibration`` adds a
calibration's error). No timed assertions; 50 episodes take about 25 minutes on one core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from policy_runtime.evaluation.evaluate import EvalConfig, EvalReport, evaluate

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "push_t_drifting"


def run(episodes: int, start_seed: int, workers: int) -> list[tuple[str, EvalReport, float]]:
    rows = []
    for source in ("sim", "marker"):
        config = EvalConfig(
            policy=BUNDLE,
            task="push_t",
            episodes=episodes,
            start_seed=start_seed,
            workers=workers,
            object_state=source,  # type: ignore[arg-type]
        )
        start = time.perf_counter()
        report = evaluate(config)
        rows.append((source, report, time.perf_counter() - start))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--start-seed", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    rows = run(args.episodes, args.start_seed, args.workers)
    table = Table(
        title=f"push_t_drifting, {args.episodes} episodes from seed {args.start_seed}: "
        "block state from the simulator vs from markers"
    )
    for column in ("object state", "success", "95% interval", "periods lost", "wall (s)"):
        table.add_column(column, justify="right")
    for source, report, wall in rows:
        low, high = report.interval
        lost = report.summary()["observations_lost"]
        steps = sum(record.steps for record in report.records)
        table.add_row(
            source,
            f"{report.success_rate:.1%} ({report.successes}/{report.episodes})",
            f"[{low:.1%}, {high:.1%}]",
            f"{lost} of {steps}",
            f"{wall:.0f}",
        )
    console = Console()
    console.print(table)
    difference = rows[1][1].success_rate - rows[0][1].success_rate
    console.print(f"marker - sim: {difference * 100:+.1f} points")


if __name__ == "__main__":
    main()
