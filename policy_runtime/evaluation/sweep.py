"""One evaluation per value of a setting, on the same seeds: ``inference_steps=1,2,4,8,16,100``,
``execution_horizon=1,2,4,8,15`` or a BeT policy's ``temperature=0.1,0.3,1``.

Like the studies of Diffusion Policy's rollout experiments (denoising steps; action horizon, the
actions executed per chunk): success rate (with its Wilson interval) and mean score against the
value. Each value's run lives in ``<out>/<name>_<value>/`` (its own ``eval_log.json`` and
videos); the sweep writes ``sweep.csv``, ``sweep.json`` and ``sweep.png`` (success vs value,
log-x) into ``<out>``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policy_runtime.evaluation.evaluate import EpisodeRecord, EvalConfig, EvalReport, evaluate

#: Settings a sweep can vary (EvalConfig fields), and their value type.
SWEEPABLE: dict[str, type] = {
    "inference_steps": int,
    "execution_horizon": int,
    "temperature": float,
}
CSV_FILE, JSON_FILE, PLOT_FILE = "sweep.csv", "sweep.json", "sweep.png"


@dataclass(frozen=True)
class Sweep:
    name: str
    values: tuple[int, ...] | tuple[float, ...]


def parse_sweep(text: str) -> Sweep:
    """``"inference_steps=1,2,4"`` -> ``Sweep("inference_steps", (1, 2, 4))``; integers >= 1,
    except a temperature's positive numbers."""
    name, sep, values_text = text.partition("=")
    name = name.strip()
    if not sep or name not in SWEEPABLE:
        raise ValueError(
            f"--sweep {text!r}: expected NAME=V1,V2,... with NAME one of {sorted(SWEEPABLE)}, "
            "e.g. inference_steps=1,2,4,8,16,100"
        )
    kind = SWEEPABLE[name]
    try:
        values = tuple(kind(v) for v in values_text.split(","))
    except ValueError:
        example = "0.1,0.3,1" if kind is float else "1,2,4"
        what = "numbers" if kind is float else "integers"
        raise ValueError(
            f"--sweep {text!r}: values must be {what}, e.g. {name}={example}"
        ) from None
    if kind is float and not min(values) > 0:
        raise ValueError(f"--sweep {text!r}: values must be > 0")
    if kind is int and min(values) < 1:
        raise ValueError(f"--sweep {text!r}: values must be >= 1")
    if len(set(values)) != len(values):
        raise ValueError(f"--sweep {text!r}: a value is repeated")
    return Sweep(name, values)


@dataclass
class SweepReport:
    sweep: Sweep
    reports: list[EvalReport] = field(default_factory=list)
    csv_path: Path | None = None
    json_path: Path | None = None
    plot_path: Path | None = None

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for value, report in zip(self.sweep.values, self.reports, strict=False):
            low, high = report.interval
            rows.append(
                {
                    self.sweep.name: value,
                    "episodes": report.episodes,
                    "successes": report.successes,
                    "success_rate": report.success_rate,
                    "interval_low": low,
                    "interval_high": high,
                    "mean_score": report.mean_score,
                }
            )
        return rows


def check_plotting() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            "--sweep plots with matplotlib: pip install 'policy_runtime[train]'"
        ) from exc


def run_sweep(
    config: EvalConfig,
    sweep: Sweep,
    on_episode: Callable[[float, EpisodeRecord, int], None] | None = None,
) -> SweepReport:
    """Evaluate ``config`` once per value of ``sweep`` (same seeds); write the sweep's files.

    ``config.out`` is required. ``on_episode(value, record, done)`` follows progress.
    """
    if config.out is None:
        raise ValueError("a sweep needs an output directory (--out)")
    check_plotting()
    out = config.out
    result = SweepReport(sweep)
    for value in sweep.values:
        setting: dict[str, Any] = {sweep.name: value}
        run = dataclasses.replace(config, out=out / f"{sweep.name}_{value}", **setting)

        def progress(record: EpisodeRecord, done: int, value: float = value) -> None:
            if on_episode is not None:
                on_episode(value, record, done)

        result.reports.append(evaluate(run, progress))
    rows = result.rows()
    result.csv_path = out / CSV_FILE
    with result.csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result.json_path = out / JSON_FILE
    summary = {"sweep": sweep.name, "config": config.summary(), "results": rows}
    result.json_path.write_text(json.dumps(summary, indent=2) + "\n")
    result.plot_path = out / PLOT_FILE
    plot_sweep(rows, sweep.name, result.plot_path, title=f"{config.task}: {config.policy.name}")
    return result


def plot_sweep(rows: list[dict[str, Any]], name: str, path: Path, title: str = "") -> None:
    """Success rate against the swept value with Wilson-interval error bars, log-x."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, renders with Agg

    x = [row[name] for row in rows]
    rate = [row["success_rate"] for row in rows]
    below = [row["success_rate"] - row["interval_low"] for row in rows]
    above = [row["interval_high"] - row["success_rate"] for row in rows]
    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.add_subplot()
    axes.errorbar(x, rate, yerr=[below, above], marker="o", capsize=4, label="success (95% CI)")
    axes.plot(x, [row["mean_score"] for row in rows], "s--", alpha=0.7, label="mean score")
    axes.set_xscale("log")
    axes.set_xticks(x, [str(v) for v in x])
    axes.minorticks_off()
    axes.set_ylim(-0.05, 1.05)
    axes.set_xlabel(name.replace("_", " "))
    axes.set_ylabel("success rate")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path)
