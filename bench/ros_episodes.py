"""The bundled policy through ROS 2 against ``prt eval``, on the same seeds.

    python -m bench.ros_episodes [--episodes 200] [--realtime-episodes 20] [--workdir DIR]
        [--bundle bundles/push_t_drifting]

Runs, each only when its result is not already in ``--workdir`` (a rerun reports; an
interrupted ROS 2 run resumes after its last finished episode):

1. ``prt eval`` of the bundle: the deployed stack inside the simulation, no ROS;
2. the sim graph through ROS 2 in fast mode (lockstep: sim time, results independent of the
   machine's speed), ``--episodes`` episodes, cameras off (the policy reads no image), split
   over ``--shards`` graphs side by side;
3. the same graph in real time (the wall clock, like the robot), ``--realtime-episodes``.

All from seed 100000 (test seeds). Prints each success rate with its 95% (Wilson) interval and
whether the ROS 2 rates' intervals overlap ``prt eval``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from policy_runtime.evaluation.stats import wilson_interval
from policy_runtime.ros.episode_runner import RECORDS_FILE

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SEED = 100_000


def run_eval(bundle: Path, episodes: int, out: Path) -> tuple[int, int]:
    log = out / "eval_log.json"
    if not log.is_file():
        subprocess.run(
            [str(BIN / "prt"), "eval", "--policy", str(bundle), "--task", "push_t",
             "--episodes", str(episodes), "--start-seed", str(SEED), "--out", str(out)],
            check=True,
        )  # fmt: skip
    episodes_run = json.loads(log.read_text())["episodes"]
    return sum(e["success"] for e in episodes_run), len(episodes_run)


def _records(out: Path) -> list[dict]:
    log = out / RECORDS_FILE
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def _launch_remaining(
    bundle: Path, first: int, episodes: int, realtime: bool, out: Path, domain: int
) -> subprocess.Popen[bytes] | None:
    """Start the episodes of seeds ``first ..`` not yet in ``out`` (None: all are there)."""
    done = len(_records(out))
    if done >= episodes:
        return None
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [str(BIN / "prt"), "launch", str(ROOT / "launch" / "sim_episodes.launch.yaml"),
         f"episodes:={episodes - done}", f"seed:={first + done}",
         f"realtime:={str(realtime).lower()}", f"bundle:={bundle}", "cameras:=[]",
         "video_topic:=''", f"out:={out}"],
        env={**os.environ, "ROS_DOMAIN_ID": str(domain)},
        stdout=(out / "launch.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def run_ros(
    bundle: Path, episodes: int, realtime: bool, out: Path, shards: int = 1
) -> tuple[int, int]:
    """Episodes through the ROS 2 graph, ``shards`` graphs side by side (each in a DDS domain of
    its own, on its share of the seeds, in ``out/shard_<k>``); each resumes after the episodes it
    already logged (the runner appends each finished one to episodes.jsonl), so a long run may
    span sessions. Lockstep makes every episode independent of the others' load."""
    per = -(-episodes // shards)
    parts = [
        (SEED + k * per, min(per, episodes - k * per), out / f"shard_{k}") for k in range(shards)
    ]
    running = [
        _launch_remaining(bundle, first, n, realtime, path, domain=60 + k)
        for k, (first, n, path) in enumerate(parts)
    ]
    for process in running:
        if process is not None and process.wait() != 0:
            raise RuntimeError(f"a ROS 2 run failed (see {out}/shard_*/launch.log)")
    records: list[dict] = []
    for first, n, path in parts:
        shard = _records(path)[:n]
        seeds = [r["seed"] for r in shard]
        assert seeds == list(range(first, first + n)), f"{path}: seeds {seeds[:3]}... not in order"
        records += shard
    return sum(r["success"] for r in records), len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--realtime-episodes", type=int, default=20)
    parser.add_argument(
        "--shards",
        type=int,
        default=2,
        help="fast-mode graphs side by side (lockstep: the "
        "results do not depend on it; a DDS round trip per tick leaves cores idle)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("bench_runs/ros_episodes"))
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "push_t_drifting")
    args = parser.parse_args()
    work = args.workdir.resolve()
    bundle = args.bundle.resolve()
    results = {
        "prt eval": run_eval(bundle, args.episodes, work / "eval"),
        "ROS 2, fast (lockstep)": run_ros(
            bundle, args.episodes, False, work / "ros_fast", shards=args.shards
        ),
        "ROS 2, real time": run_ros(bundle, args.realtime_episodes, True, work / "ros_realtime"),
    }
    table = Table(title=f"{bundle.name} on push_t, seeds from {SEED}")
    for column in ("run", "episodes", "success", "95% interval", "overlaps prt eval's"):
        table.add_column(column)
    low0, high0 = wilson_interval(*results["prt eval"])
    for name, (successes, n) in results.items():
        low, high = wilson_interval(successes, n)
        overlap = "-" if name == "prt eval" else ("yes" if low <= high0 and low0 <= high else "NO")
        table.add_row(name, str(n), f"{successes / n:.1%}", f"[{low:.1%}, {high:.1%}]", overlap)
    Console().print(table)


if __name__ == "__main__":
    main()
