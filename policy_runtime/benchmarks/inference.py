"""Inference latency per action chunk: torch eager vs the bundle runtime vs bare onnxruntime.

Two uses:

* ``prt bench inference`` (no bundle): a Diffusion-Policy-sized U-Net (down_dims 256/512/1024,
  horizon 16, batch 1) with random weights is exported to a bundle (step graphs plus fused DDIM
  graphs) and timed at DDIM 1/10/16/100 steps, and a drifting policy of the same size at one
  step. Per chunk: p50/p99 of torch eager (the training code: diffusers' scheduler, torch
  modules), of our runtime (``OnnxPolicy.predict``: checks, noise, numpy sampler), of the same
  onnxruntime sessions called bare (only ``session.run``), and of the fused graph.
* ``prt bench inference --bundle B``: the same runtime figures for an exported bundle on this
  machine (a robot PC, a Jetson): needs only onnxruntime and numpy.

Goals on CPU: runtime >= 3x faster than torch eager per chunk; runtime overhead <= 5% over the
bare sessions; fused graph no slower than the step loop. Timings are medians and 99th
percentiles of ``repeats`` chunks, the variants of a row timed in alternating blocks (machines
are noisy: read ratios).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from policy_runtime.inference.manifest import (
    MANIFEST_FILE,
    BundleFiles,
    GraphRole,
    read_manifest,
    verified_file,
)
from policy_runtime.inference.providers import RuntimeOptions, choose_providers, make_session
from policy_runtime.inference.runtime import (
    OnnxPolicy,
    PolicyRuntime,
    SamplerKind,
    load_policy,
)
from policy_runtime.inference.specs import random_observations

DP_DOWN_DIMS = (256, 512, 1024)
#: Observations the benchmark's int8 twins are calibrated and judged on (random: a timing only).
CALIBRATION_OBSERVATIONS = 16
HELD_OUT = 4
STEPS = (1, 10, 16, 100)
FUSED = (10, 16)
#: A low-dim observation like push_t's (16 keypoints + a 9-D end-effector pose) and the 10-D
#: end-effector action.
OBS_DIM, ACTION_DIM = 25, 10


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p99_ms: float

    @classmethod
    def interleaved(
        cls, fns: dict[str, Callable[[], object]], repeats: int, rounds: int = 3
    ) -> dict[str, Timing]:
        """Time each function ``repeats`` times in ``rounds`` blocks taken in turns, so a
        machine that gets busier or quieter during the run shifts all of them alike.

        Calls of one function run back to back inside a block, after one untimed call: torch's
        OpenMP threads and onnxruntime's pools spin-wait after work, and a call made right
        after another library's would pay for that spinning, not for its own work.
        """
        samples: dict[str, list[float]] = {name: [] for name in fns}
        per_round = max(1, -(-repeats // rounds))
        for _ in range(rounds):
            for name, fn in fns.items():
                fn()
                for _ in range(per_round):
                    start = time.perf_counter()
                    fn()
                    samples[name].append((time.perf_counter() - start) * 1e3)
        return {
            name: cls(statistics.median(s), float(np.percentile(s, 99)))
            for name, s in samples.items()
        }


@dataclass(frozen=True)
class Row:
    policy: str
    steps: int
    torch: Timing | None
    runtime: Timing
    bare: Timing
    fused: Timing | None

    @property
    def speedup(self) -> float | None:
        return None if self.torch is None else self.torch.p50_ms / self.runtime.p50_ms

    @property
    def overhead(self) -> float:
        return self.runtime.p50_ms / self.bare.p50_ms - 1.0


#: The policy kinds whose chunk is one pass of one graph (no denoising loop), and that graph.
ONE_PASS: dict[str, GraphRole] = {"drifting": "generator", "bet": "transformer"}


class BareSessions:
    """The bundle's graphs as plain sessions: exactly the ``session.run`` calls the runtime
    makes for a chunk, with inputs prepared in advance and nothing in between."""

    def __init__(self, bundle: Path, options: RuntimeOptions) -> None:
        files = BundleFiles(bundle)
        self.manifest = read_manifest(files)
        self.sessions = {
            g.file: make_session(verified_file(files, self.manifest, g.file), options, g.file)
            for g in self.manifest.graphs
        }

    def chunk_fn(self, obs: dict[str, np.ndarray], steps: int, fused: bool) -> Callable[[], object]:
        m = self.manifest
        feeds = {f"obs.{k}": v for k, v in obs.items()}
        batch = next(iter(obs.values())).shape[0]
        noise = np.zeros((batch, m.action.horizon, m.action.dim), np.float32)
        if m.kind in ONE_PASS or fused:
            graph = m.graph(ONE_PASS[m.kind]) if m.kind in ONE_PASS else m.graph("fused", steps)
            assert graph is not None
            session = self.sessions[graph.file]
            full = feeds if m.kind == "bet" else {**feeds, "noise": noise}
            return lambda: session.run(None, full)
        encoder, denoiser = m.graph("obs_encoder"), m.graph("denoiser")
        assert encoder is not None and denoiser is not None
        enc, den = self.sessions[encoder.file], self.sessions[denoiser.file]
        cond = enc.run(None, feeds)[0]
        step_feeds = {"sample": noise, "timestep": np.zeros(batch, np.int64), "cond": cond}

        def run() -> None:
            enc.run(None, feeds)
            for _ in range(steps):
                den.run(None, step_feeds)

        return run


def bench_bundle(
    bundle: Path,
    steps: Sequence[int],
    options: RuntimeOptions,
    repeats: int,
    torch_policy: PolicyRuntime | None = None,
    label: str | None = None,
) -> list[Row]:
    """Rows for one bundle (and, given the torch backend of the same policy, torch eager).

    ``runtime`` is the step loop (encoder + one denoiser call per step, numpy sampler) where the
    bundle has one, else its fused graph; ``fused`` times the fused graph where both exist.
    """
    loop = load_policy(bundle, options=dataclasses.replace(options, fused_graphs=False))
    fused = load_policy(bundle, options=options)
    bare = BareSessions(bundle, options)
    rng = np.random.default_rng(0)
    obs = random_observations(loop.specs.obs, 1, rng)
    manifest = loop.manifest
    one_pass = manifest.kind in ONE_PASS
    has_loop = one_pass or manifest.graph("denoiser") is not None
    rows = []
    for n in [1] if one_pass else steps:
        count = max(3, repeats // 4) if n >= 100 else repeats
        sampler: SamplerKind | None = None if one_pass else "ddim"

        has_fused = fused.graph_for(n, sampler) is not None
        if not has_loop and not has_fused:
            continue  # a fused-only bundle runs only its own step counts
        fns = {
            "runtime": _chunk_call(loop if has_loop else fused, obs, rng, n, sampler),
            "bare": bare.chunk_fn(obs, n, fused=not has_loop),
        }
        if torch_policy is not None:
            fns["torch"] = _chunk_call(torch_policy, obs, rng, n, sampler)
        if has_fused and has_loop:
            fns["fused"] = _chunk_call(fused, obs, rng, n, sampler)
        timings = Timing.interleaved(fns, count)
        rows.append(
            Row(
                policy=label or manifest.kind,
                steps=n,
                torch=timings.get("torch"),
                runtime=timings["runtime"],
                bare=timings["bare"],
                fused=timings.get("fused"),
            )
        )
    return rows


def build_dp_sized_bundles(
    workdir: Path,
    fuse_steps: Sequence[int] = FUSED,
    seed: int = 0,
    image: bool = False,
    quantize: bool = False,
) -> dict[str, tuple[Path, PolicyRuntime]]:
    """Random-weight DP-sized diffusion and drifting policies, exported (or reused from
    ``workdir``); with their torch backends. ``image`` adds ``diffusion_image``: Diffusion
    Policy's image policy, two 84x84 cameras (ResNet-18 encoders, 76x76 centre crop) and the
    9-D pose, whose encoders run once per chunk (the ``obs_encoder`` graph, or inside the fused
    one), not once per denoising step. ``quantize`` adds int8 twins (the ``quantize`` extra).
    Needs torch (the ``train`` extra)."""
    import torch

    from policy_runtime.export.bundle import ExportOptions, export_policy
    from policy_runtime.inference.torch_backend import TorchPolicy
    from policy_runtime.normalization import AffineMap, Normalizer
    from policy_runtime.policies import PolicyConfig, PolicyKind, make_policy
    from policy_runtime.policies.diffusion import DiffusionPolicy
    from policy_runtime.policies.drifting import DriftingPolicy

    normalizer = Normalizer(
        {
            "state": AffineMap.min_max(-np.ones(OBS_DIM), np.ones(OBS_DIM)),
            "action": AffineMap.min_max(-np.ones(ACTION_DIM), np.ones(ACTION_DIM)),
        }
    )
    cameras = {"front": (84, 84, 3), "wrist": (84, 84, 3)}
    image_normalizer = Normalizer(
        {
            "ee_pose": AffineMap.min_max(-np.ones(9), np.ones(9)),
            "action": AffineMap.min_max(-np.ones(ACTION_DIM), np.ones(ACTION_DIM)),
            **{camera: AffineMap.image() for camera in cameras},
        }
    )
    out: dict[str, tuple[Path, PolicyRuntime]] = {}
    kinds: list[tuple[str, PolicyKind]] = [("diffusion", "diffusion"), ("drifting", "drifting")]
    if image:
        kinds.append(("diffusion_image", "diffusion"))
    for name, kind in kinds:
        torch.manual_seed(seed)
        with_images = name == "diffusion_image"
        config = PolicyConfig(
            kind=kind,
            obs_keys=["ee_pose"] if with_images else ["state"],
            image_keys=list(cameras) if with_images else [],
            obs_shapes={"ee_pose": (9,), **cameras} if with_images else {"state": (OBS_DIM,)},
            action_dim=ACTION_DIM,
            down_dims=DP_DOWN_DIMS,
            crop_shape=(76, 76) if with_images else None,
        )
        policy = make_policy(config, image_normalizer if with_images else normalizer).eval()
        assert isinstance(policy, DiffusionPolicy | DriftingPolicy)
        options = ExportOptions(fuse_steps=tuple(fuse_steps) if kind == "diffusion" else ())
        bundle = workdir / name
        if not (bundle / MANIFEST_FILE).is_file():  # the same seed gives the same weights
            export_policy(policy, bundle, options, {"source": "random weights (benchmark)"})
        if quantize and not read_manifest(BundleFiles(bundle)).quantized:
            _quantize_on_random_observations(bundle, seed)
        out[name] = (bundle, TorchPolicy(policy))
    return out


def quantize_installed() -> bool:
    return importlib.util.find_spec("nncf") is not None


def _quantize_on_random_observations(bundle: Path, seed: int) -> None:
    """int8 twins calibrated on random observations with every layer left in int8 (no accuracy
    control: random weights have no accuracy to keep): int8's speed at its fastest, a timing,
    not a deployable policy (a real bundle is calibrated on its dataset, ``prt quantize``,
    where accuracy control may return layers to float)."""
    from policy_runtime.export.quantize import quantize_bundle

    specs = read_manifest(BundleFiles(bundle)).obs
    count = CALIBRATION_OBSERVATIONS + HELD_OUT
    obs = random_observations(specs, count, np.random.default_rng(seed))
    quantize_bundle(
        bundle, obs, f"{count} random observations (benchmark)", HELD_OUT, max_error=1.0
    )


def _cell(timing: Timing | None) -> str:
    return "-" if timing is None else f"{timing.p50_ms:.2f} / {timing.p99_ms:.2f}"


def run(
    console: Console,
    bundle: Path | None = None,
    steps: Sequence[int] = STEPS,
    repeats: int = 20,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    workdir: Path | None = None,
    image: bool = False,
) -> list[Row]:
    """Measure and print the table; returns its rows."""
    threads = threads or os.cpu_count() or 1
    # The runtime against bare onnxruntime sessions: both on onnxruntime.
    options = RuntimeOptions(
        providers=None if providers is None else tuple(providers),
        intra_op_threads=threads,
        backend="onnxruntime",
    )
    rows: list[Row] = []
    backend_rows: list[BackendRow] = []
    if bundle is not None:
        rows += bench_bundle(bundle, steps, options, repeats)
        backend_rows += bench_backends(bundle, steps, threads, repeats, providers=options.providers)
        title = f"{bundle}"
    else:
        import torch

        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory() as tmp:
            root = workdir or Path(tmp)
            with console.status("exporting (and quantising) DP-sized diffusion and drifting"):
                built = build_dp_sized_bundles(root, image=image, quantize=quantize_installed())
            for name, (path, torch_policy) in built.items():
                rows += bench_bundle(path, steps, options, repeats, torch_policy, name)
                backend_rows += bench_backends(
                    path, steps, threads, repeats, torch_policy, name, options.providers
                )
        title = f"DP-sized U-Net (down_dims {DP_DOWN_DIMS}, horizon 16, batch 1)"
    provider = choose_providers(options.providers)[0][0]
    table = Table(
        "policy",
        "steps",
        "torch eager p50 / p99 (ms)",
        "runtime p50 / p99 (ms)",
        "speed-up",
        "bare onnxruntime p50 (ms)",
        "runtime overhead",
        "fused graph p50 / p99 (ms)",
        "fused / loop",
        title=f"{title}: per action chunk, {provider}, {threads} thread(s)",
    )
    for row in rows:
        table.add_row(
            row.policy,
            "1 (one pass)" if row.policy in ONE_PASS else f"DDIM {row.steps}",
            _cell(row.torch),
            _cell(row.runtime),
            "-" if row.speedup is None else f"{row.speedup:.2f}x",
            f"{row.bare.p50_ms:.2f}",
            f"{row.overhead:+.1%}",
            _cell(row.fused),
            "-" if row.fused is None else f"{row.fused.p50_ms / row.runtime.p50_ms:.2f}",
        )
    console.print(table)
    console.print(
        "goals (CPU): runtime >= 3x faster than torch eager; overhead <= 5% over bare "
        "onnxruntime; fused graph no slower than the step loop (fused / loop <= 1)"
    )
    print_backends(console, backend_rows, threads)
    return rows


@dataclass
class BackendRow:
    policy: str
    steps: int
    #: "torch eager" or "<backend> <precision>".
    setting: str
    timing: Timing


def runtime_settings(quantized: bool) -> list[tuple[str, str]]:
    """Every (backend, precision) this machine can run a bundle at: onnxruntime fp32 (and int8
    for a ``quantized`` bundle), and OpenVINO at each precision its CPU plugin computes
    natively, where OpenVINO is installed."""
    from policy_runtime.inference.backends import PRECISIONS, openvino_installed

    usable: list[str] = [p for p in PRECISIONS if quantized or p != "int8"]
    settings: list[tuple[str, str]] = [("onnxruntime", p) for p in ("fp32", "int8") if p in usable]
    if openvino_installed():
        from policy_runtime.inference.openvino_runner import device_precisions

        available = device_precisions()
        settings += [("openvino", p) for p in usable if p in available]
    return settings


def bench_backends(
    bundle: Path,
    steps: Sequence[int],
    threads: int,
    repeats: int,
    torch_policy: PolicyRuntime | None = None,
    label: str | None = None,
    providers: tuple[str, ...] | None = None,
) -> list[BackendRow]:
    """The runtime's chunk latency on every backend x precision of :func:`runtime_settings`
    (precisions forced: a timing, not a deployment), beside torch eager, timed interleaved."""
    policies: dict[str, PolicyRuntime] = {}
    quantized = read_manifest(BundleFiles(bundle)).quantized
    for backend, precision in runtime_settings(quantized):
        options = RuntimeOptions(
            providers=providers if backend == "onnxruntime" else None,
            intra_op_threads=threads,
            backend=backend,
            precision=precision,
            force_precision=precision != "fp32",
        )
        policies[f"{backend} {precision}"] = load_policy(bundle, options=options)
    if torch_policy is not None:
        policies["torch eager"] = torch_policy
    reference = next(iter(policies.values()))
    assert isinstance(reference, OnnxPolicy)
    rng = np.random.default_rng(0)
    obs = random_observations(reference.specs.obs, 1, rng)
    one_pass = reference.manifest.kind in ONE_PASS
    rows = []
    for n in [1] if one_pass else [s for s in steps if s < 100]:
        sampler: SamplerKind | None = None if one_pass else "ddim"
        fns = {name: _chunk_call(policy, obs, rng, n, sampler) for name, policy in policies.items()}
        for name, timing in Timing.interleaved(fns, repeats).items():
            rows.append(BackendRow(label or reference.manifest.kind, n, name, timing))
    return rows


def _chunk_call(
    policy: PolicyRuntime,
    obs: dict[str, np.ndarray],
    rng: np.random.Generator,
    steps: int,
    sampler: SamplerKind | None,
) -> Callable[[], object]:
    return lambda: policy.predict(obs, rng, num_inference_steps=steps, sampler=sampler)


def print_backends(console: Console, rows: list[BackendRow], threads: int) -> None:
    """The backend x precision table, and the fastest setting per row with its ratio to torch."""
    from policy_runtime.inference.backends import cpu_info

    if not rows:
        return
    cpu = cpu_info()
    table = Table(
        "policy",
        "steps",
        "setting",
        "p50 / p99 (ms)",
        "vs torch eager",
        title=f"backends x precisions: {cpu.describe()}, {threads} thread(s)",
    )
    torch_p50 = {(r.policy, r.steps): r.timing.p50_ms for r in rows if r.setting == "torch eager"}
    for row in rows:
        ref = torch_p50.get((row.policy, row.steps))
        table.add_row(
            row.policy,
            "1 (one pass)" if row.policy in ONE_PASS else f"DDIM {row.steps}",
            row.setting,
            _cell(row.timing),
            "-"
            if ref is None or row.setting == "torch eager"
            else f"{ref / row.timing.p50_ms:.2f}x",
        )
    console.print(table)
    runtime_rows = [r for r in rows if r.setting != "torch eager"]
    totals: dict[str, float] = {}
    for row in runtime_rows:
        totals[row.setting] = totals.get(row.setting, 0.0) + row.timing.p50_ms
    best = min(totals, key=totals.__getitem__)
    backend, precision = best.split()
    console.print(
        f"recommended here: --backend {backend} --precision {precision} (fastest over these "
        "rows); a precision other than fp32 runs by default only after "
        "prt calibrate-precision accepts it for the bundle (int8: made by prt quantize)"
    )
