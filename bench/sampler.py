"""Training-window sampler: ours vs Diffusion Policy's indexing written the obvious way.

Prints, in one run and on the same in-memory data, the time to enumerate windows and to draw
batches (Diffusion Policy's shapes: horizon 16, To 2, Ta 8, batch 64), as medians over repeats,
with the speed-up ratio. Goal: >= 2x on batch sampling.

    python -m bench.sampler [--episodes 100] [--length 200] [--repeats 7] [--cameras 1]

``--episodes 200 --length 300 --cameras 2`` is an image policy's buffer (two 96x96 cameras,
observations read for their first 2 steps): ours batched against ours one by one is the
windows/s column.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.naive_sampler import NaiveSequenceSampler
from policy_runtime.data import SequenceSampler

HORIZON, N_OBS, N_ACTION, BATCH = 16, 2, 8, 64
Row = tuple[str, float, float]


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_data(episodes: int, length: int, cameras: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = episodes * length
    data = {
        "action": rng.normal(size=(n, 7)).astype(np.float32),
        "state": rng.normal(size=(n, 20)).astype(np.float32),
    }
    for camera in range(cameras):
        data[f"camera{camera}_rgb"] = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    return data


def compare(label: str, data: dict[str, np.ndarray], ends: np.ndarray, repeats: int) -> list[Row]:
    """Time both samplers on ``data``: enumeration, one-by-one access, batched access."""
    obs_keys = [k for k in data if k != "action"]

    def build_ours() -> SequenceSampler:
        return SequenceSampler.for_policy(data, ends, HORIZON, N_OBS, N_ACTION, obs_keys)

    def build_naive() -> NaiveSequenceSampler:
        first_k = dict.fromkeys(obs_keys, N_OBS)
        return NaiveSequenceSampler(data, ends, HORIZON, N_OBS - 1, N_ACTION - 1, first_k)

    ours, naive = build_ours(), build_naive()
    assert len(ours) == len(naive)
    ids = np.random.default_rng(1).integers(len(ours), size=BATCH)
    return [
        (
            f"{label}: enumerate {len(ours)} windows",
            median_seconds(build_naive, repeats),
            median_seconds(build_ours, repeats),
        ),
        (
            f"{label}: {BATCH} windows one by one (__getitem__)",
            median_seconds(lambda: [naive[int(i)] for i in ids], repeats),
            median_seconds(lambda: [ours[int(i)] for i in ids], repeats),
        ),
        (
            f"{label}: batch of {BATCH}",
            median_seconds(lambda: naive.sample_batch(ids), repeats),
            median_seconds(lambda: ours.sample_batch(ids), repeats),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cameras", type=int, default=1, help="96x96 cameras in the image rows")
    args = parser.parse_args()
    table = Table(
        "operation",
        "obvious (ms)",
        "ours (ms)",
        "speed-up",
        "ours (windows/s)",
        title=f"SequenceSampler, {args.episodes} episodes x {args.length} steps, "
        f"horizon {HORIZON}, To {N_OBS}, Ta {N_ACTION} (median of {args.repeats})",
    )
    ends = np.full(args.episodes, args.length).cumsum()
    rows = compare("low-dim", make_data(args.episodes, args.length, 0), ends, args.repeats)
    images = make_data(args.episodes, args.length, args.cameras)
    rows += compare(f"low-dim + {args.cameras} x 96x96 image", images, ends, args.repeats)
    for name, naive_s, ours_s in rows:
        rate = "-" if "enumerate" in name else f"{BATCH / ours_s:,.0f}"
        table.add_row(
            name, f"{naive_s * 1e3:.2f}", f"{ours_s * 1e3:.2f}", f"{naive_s / ours_s:.1f}x", rate
        )
    Console().print(table)


if __name__ == "__main__":
    main()
