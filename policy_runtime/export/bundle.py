"""Checkpoint -> policy bundle: trace the graphs, check parity, write manifest and files.

Parity is measured, not assumed: every graph is run on onnxruntime (CPU) against the torch
module it came from on random observations, and the whole runtime (numpy sampler included) is
run against the torch policy's ``predict_action`` with the same initial noise (a BeT policy:
the same uniforms choosing its bins). An export whose
largest difference exceeds the tolerance fails and writes nothing; the figures go into the
manifest.
"""

from __future__ import annotations

import datetime
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch

import policy_runtime
from policy_runtime.export.graphs import (
    DenoiserGraph,
    ExportablePolicy,
    FusedDDIMGraph,
    GeneratorGraph,
    HalfPrecision,
    ObsEncoderGraph,
    TransformerGraph,
    obs_input_keys,
    obs_input_name,
    to_onnx,
)
from policy_runtime.inference.manifest import (
    FORMAT_VERSION,
    GraphRole,
    GraphSpec,
    Manifest,
    ParitySpec,
    TensorSpec,
    sha256_bytes,
    write_bundle,
)
from policy_runtime.inference.providers import RuntimeOptions
from policy_runtime.inference.runtime import load_policy as load_bundle
from policy_runtime.inference.specs import PolicySpecs, random_observations, specs_from_config
from policy_runtime.policies.bet import BeTPolicy
from policy_runtime.policies.diffusion import DiffusionPolicy
from policy_runtime.policies.drifting import DriftingPolicy
from policy_runtime.training.checkpoint import load_policy, read_header, resolve

#: Largest |torch - onnxruntime| accepted on normalised actions / network outputs.
FP32_TOLERANCE = 1e-4
#: A half-precision graph against the same module run in half precision by torch (the export
#: is faithful); its distance from float32 is recorded, not checked (it depends on the weights).
FP16_TOLERANCE = 1e-2
DEFAULT_OPSET = 18
PARITY_BATCH = 3


class ExportError(RuntimeError):
    """Export stopped (parity beyond tolerance, an invalid graph); nothing was written."""


@dataclass(frozen=True)
class ExportOptions:
    #: DDIM step counts to fuse into one graph each (diffusion only).
    fuse_steps: tuple[int, ...] = ()
    fp16: bool = False
    opset: int = DEFAULT_OPSET
    #: Leave out the encoder + step graphs (only fused graphs: a fixed-step deployment).
    fused_only: bool = False
    seed: int = 0


@dataclass
class _Graph:
    spec: GraphSpec
    data: bytes
    #: The torch module it was traced from (the parity reference: half precision in an fp16
    #: bundle), and the policy's own float32 module (what half precision is measured against).
    module: torch.nn.Module
    fp32_module: torch.nn.Module


def _tensor(name: str, shape: tuple[int, ...], dtype: str) -> TensorSpec:
    return TensorSpec(name=name, shape=(-1, *shape), dtype=dtype)  # type: ignore[arg-type]


def _obs_tensors(specs: PolicySpecs, policy: ExportablePolicy) -> list[TensorSpec]:
    by_key = {k.key: k for k in specs.obs.keys}
    return [
        _tensor(obs_input_name(key), (specs.obs.n_obs_steps, *by_key[key].shape), by_key[key].dtype)
        for key in obs_input_keys(policy)
    ]


def _build_graphs(
    policy: ExportablePolicy,
    specs: PolicySpecs,
    options: ExportOptions,
    example: dict[str, np.ndarray],
) -> list[_Graph]:
    precision: Literal["fp16", "fp32"] = "fp16" if options.fp16 else "fp32"
    obs_args = [torch.from_numpy(example[k]) for k in obs_input_keys(policy)]
    obs_tensors = _obs_tensors(specs, policy)
    h, da = specs.action.horizon, specs.action.dim
    chunk = _tensor("noise", (h, da), "float32")
    action = _tensor("action", (h, da), "float32")
    noise = torch.zeros(obs_args[0].shape[0], h, da)
    graphs: list[_Graph] = []

    def add(
        module: torch.nn.Module,
        args: list[torch.Tensor],
        inputs: list[TensorSpec],
        output: TensorSpec | list[TensorSpec],
        file: str,
        role: GraphRole,
        fused: int | None = None,
    ) -> None:
        outputs = output if isinstance(output, list) else [output]
        traced = HalfPrecision(module) if options.fp16 else module
        data = to_onnx(
            traced, args, [t.name for t in inputs], [t.name for t in outputs], options.opset
        )
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
        spec = GraphSpec(
            file=file,
            role=role,
            inputs=inputs,
            outputs=outputs,
            fused_steps=fused,
            precision=precision,
        )
        graphs.append(_Graph(spec, data, traced, module))

    if isinstance(policy, DiffusionPolicy):
        cond_dim = policy.obs_encoder.output_dim
        cond = _tensor("cond", (cond_dim,), "float32")
        if not options.fused_only:
            add(
                ObsEncoderGraph(policy),
                obs_args,
                obs_tensors,
                cond,
                "obs_encoder.onnx",
                "obs_encoder",
            )
            args = [
                noise,
                torch.zeros(noise.shape[0], dtype=torch.int64),
                torch.zeros(noise.shape[0], cond_dim),
            ]
            inputs = [_tensor("sample", (h, da), "float32"), _tensor("timestep", (), "int64"), cond]
            add(
                DenoiserGraph(policy),
                args,
                inputs,
                _tensor("model_output", (h, da), "float32"),
                "denoiser.onnx",
                "denoiser",
            )
        for steps in options.fuse_steps:
            add(
                FusedDDIMGraph(policy, steps),
                [*obs_args, noise],
                [*obs_tensors, chunk],
                action,
                f"ddim{steps}.onnx",
                "fused",
                steps,
            )
    elif isinstance(policy, BeTPolicy):
        k = policy.config.bet_bins
        add(
            TransformerGraph(policy),
            obs_args,
            obs_tensors,
            [_tensor("logits", (h, k), "float32"), _tensor("bin_actions", (h, k, da), "float32")],
            "transformer.onnx",
            "transformer",
        )
    else:
        add(
            GeneratorGraph(policy),
            [*obs_args, noise],
            [*obs_tensors, chunk],
            action,
            "generator.onnx",
            "generator",
        )
    return graphs


def _graph_parity(
    graph: _Graph, example: dict[str, np.ndarray], rng: np.random.Generator, timesteps: int
) -> list[ParitySpec]:
    """max |torch - onnxruntime| of one graph on random inputs: against the module it was
    traced from (checked), and for half precision also against float32 (informational)."""
    session = ort.InferenceSession(graph.data, providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {}
    for t in graph.spec.inputs:
        if t.name.startswith("obs."):
            feeds[t.name] = example[t.name.removeprefix("obs.")]
        elif t.name == "timestep":
            feeds[t.name] = rng.integers(0, timesteps, PARITY_BATCH).astype(np.int64)
        else:
            feeds[t.name] = rng.standard_normal((PARITY_BATCH, *t.shape[1:])).astype(np.float32)
    got = session.run(None, feeds)
    inputs = [torch.from_numpy(feeds[t.name]) for t in graph.spec.inputs]
    half = graph.spec.precision == "fp16"
    checks = [
        ParitySpec(
            max_abs_error=_max_error(got, graph.module, inputs),
            tolerance=FP16_TOLERANCE if half else FP32_TOLERANCE,
            compared=f"{graph.spec.file}: graph output vs its torch module"
            + (" in half precision" if half else ""),
            batch=PARITY_BATCH,
        )
    ]
    if half:
        checks.append(
            ParitySpec(
                max_abs_error=_max_error(got, graph.fp32_module, inputs),
                tolerance=None,
                compared=f"{graph.spec.file}: half-precision graph vs the float32 module",
                batch=PARITY_BATCH,
            )
        )
    return checks


def _max_error(got: list[np.ndarray], module: torch.nn.Module, inputs: list[torch.Tensor]) -> float:
    """The largest difference over every output of the graph."""
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    return max(float(np.max(np.abs(g - e.numpy()))) for g, e in zip(got, expected, strict=True))


def export_bundle(checkpoint: Path, out: Path, options: ExportOptions | None = None) -> Manifest:
    """Export ``checkpoint`` (or a run directory's best/latest) to the bundle ``out``."""
    directory = resolve(Path(checkpoint))
    header = read_header(directory)
    policy = load_policy(directory)
    if not isinstance(policy, DiffusionPolicy | DriftingPolicy | BeTPolicy):
        raise ExportError(f"{directory}: no exporter for a {policy.kind!r} policy")
    provenance = {
        "checkpoint": str(directory.resolve()),
        "checkpoint_step": header.get("step"),
        "train_data": (header.get("train") or {}).get("data"),
    }
    return export_policy(policy, out, options, provenance)


def export_policy(
    policy: ExportablePolicy,
    out: Path,
    options: ExportOptions | None = None,
    provenance: dict[str, object] | None = None,
) -> Manifest:
    """Export a torch policy (in memory) to the bundle ``out``; ``provenance`` goes into the
    manifest with the exporter's own (versions, time, host)."""
    options = options or ExportOptions()
    if options.fuse_steps and not isinstance(policy, DiffusionPolicy):
        raise ExportError("--fuse-steps: only a diffusion policy has a denoising loop to fuse")
    if options.fused_only and not options.fuse_steps:
        raise ExportError("fused_only needs at least one --fuse-steps count")
    if any(s < 1 or s > policy.config.num_train_timesteps for s in options.fuse_steps):
        limit = policy.config.num_train_timesteps
        raise ExportError(f"--fuse-steps must be in [1, {limit}], got {options.fuse_steps}")
    specs = specs_from_config(policy.config, policy.normalizer)
    rng = np.random.default_rng(options.seed)
    example = random_observations(specs.obs, PARITY_BATCH, rng)
    graphs = _build_graphs(policy, specs, options, example)
    timesteps = policy.config.num_train_timesteps
    parity = [p for g in graphs for p in _graph_parity(g, example, rng, timesteps)]
    files = {g.spec.file: g.data for g in graphs}
    provenance = {
        **(provenance or {}),
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "exporter": f"policy_runtime {policy_runtime.__version__}",
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "opset": options.opset,
        "host": platform.node(),
    }
    manifest = Manifest(
        version=FORMAT_VERSION,
        kind=specs.kind,  # type: ignore[arg-type]
        control_hz=specs.control_hz,
        obs=specs.obs,
        action=specs.action,
        sampler=specs.sampler,
        graphs=[g.spec for g in graphs],
        parity=parity,
        provenance=provenance,
        files={name: sha256_bytes(data) for name, data in files.items()},
    )
    # End to end against the float32 torch policy: checked in fp32, a figure in fp16.
    tolerance = None if options.fp16 else FP32_TOLERANCE
    parity.extend(_runtime_parity(policy, manifest, files, example, rng, tolerance))
    manifest = manifest.model_copy(update={"parity": parity})
    for check in parity:
        if check.tolerance is not None and check.max_abs_error > check.tolerance:
            raise ExportError(
                f"parity: {check.compared}: max |torch - onnxruntime| = "
                f"{check.max_abs_error:.3g} exceeds the tolerance {check.tolerance:g}; "
                "nothing was written"
            )
    write_bundle(Path(out), manifest, files)
    return manifest


def _runtime_parity(
    policy: ExportablePolicy,
    manifest: Manifest,
    files: dict[str, bytes],
    example: dict[str, np.ndarray],
    rng: np.random.Generator,
    tolerance: float | None,
) -> list[ParitySpec]:
    """The runtime end to end (numpy sampler included) vs the torch policy, same noise."""
    import tempfile

    from policy_runtime.inference.torch_backend import TorchPolicy

    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        write_bundle(bundle, manifest, files)
        runtime = load_bundle(bundle, options=RuntimeOptions(providers=("cpu",), warmup=False))
        reference = TorchPolicy(policy)
        shape = runtime.noise_shape(PARITY_BATCH)
        if manifest.sampler.kind == "categorical":
            noise = runtime.draw_noise(rng, shape)
        else:  # drawn as before BeT, so a re-export records the same parity figures
            noise = rng.standard_normal(shape).astype(np.float32)
        requests: list[int | None] = []
        if manifest.kind in ("drifting", "bet"):
            requests.append(None)
        else:
            if manifest.graph("denoiser") is not None:
                requests.append(manifest.sampler.num_inference_steps)
            requests += sorted({g.fused_steps for g in manifest.graphs if g.fused_steps})
        out = []
        for steps in requests:
            # DDIM: deterministic given the noise, so both sides must agree to float error.
            sampler: Literal["ddim"] | None = None if steps is None else "ddim"
            ours = runtime.predict(example, noise=noise, num_inference_steps=steps, sampler=sampler)
            theirs = reference.predict(
                example, noise=noise, num_inference_steps=steps, sampler=sampler
            )
            scale = np.asarray(manifest.action.normalization.scale, np.float32)
            error = float(np.max(np.abs((ours.actions - theirs.actions) * scale)))
            what = (
                ("one pass, bins sampled in numpy" if manifest.kind == "bet" else "one step")
                if steps is None
                else f"DDIM {steps} steps"
                + (" (fused graph)" if runtime.graph_for(steps, None) else " (numpy loop)")
            )
            out.append(
                ParitySpec(
                    max_abs_error=error,
                    tolerance=tolerance,
                    compared=f"runtime {what} vs torch predict_action, normalised actions",
                    batch=PARITY_BATCH,
                )
            )
    return out
