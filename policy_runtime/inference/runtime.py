"""The deploy-side policy: observation history in, stamped action chunk out. No torch.

:class:`PolicyRuntime` is the interface both backends implement (ONNX here, torch in
:mod:`policy_runtime.inference.torch_backend`): it checks the observations against the policy's
spec, draws the sampler noise from a numpy ``Generator`` (so two backends given the same ``rng``
start from the same noise), and cuts the predicted horizon at the newest observation (or where
the manifest's ``action.start`` says).
:class:`OnnxPolicy` runs a bundle's ONNX graphs on onnxruntime or OpenVINO (chosen by
:mod:`~policy_runtime.inference.backends`): the observation encoder once and the
denoiser once per step with the numpy DDIM/DDPM step in between, or one fused graph, or a
drifting generator, or a BeT transformer with its bins sampled in numpy.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import numpy as np
import onnxruntime as ort

from policy_runtime.chunk import ActionChunk, ChunkPrefix
from policy_runtime.inference.backends import choose_backend, log_choice
from policy_runtime.inference.categorical import sample_actions
from policy_runtime.inference.manifest import (
    BundleError,
    BundleFiles,
    GraphSpec,
    Manifest,
    read_manifest,
    verified_file,
)
from policy_runtime.inference.openvino_runner import OpenVinoRunner
from policy_runtime.inference.providers import GraphRunner, RuntimeOptions, make_session
from policy_runtime.inference.schedulers import DDPMSampler, inpaint_model_output, make_sampler
from policy_runtime.inference.specs import PolicySpecs

log = logging.getLogger(__name__)

SamplerKind = Literal["ddpm", "ddim"]
_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int64)": "int64",
}


class Guide(NamedTuple):
    """A committed prefix on the horizon, normalised (see :meth:`PolicyRuntime.predict`)."""

    target: np.ndarray
    weights: np.ndarray


class ObservationError(ValueError):
    """Observations that do not fit the policy; the message names the key."""


class PolicyRuntime(abc.ABC):
    """``predict(obs_history, rng) -> ActionChunk`` for one policy, whatever runs it."""

    def __init__(self, specs: PolicySpecs) -> None:
        self.specs = specs
        scale, offset = specs.action.normalization.arrays()
        self._action_scale, self._action_offset = scale, offset

    @property
    def n_obs_steps(self) -> int:
        return self.specs.obs.n_obs_steps

    @property
    def chunk_start(self) -> int:
        """Index of the chunk's first action in the predicted horizon: the newest
        observation's, ``n_obs_steps - 1``, unless the manifest's ``action.start`` says
        otherwise (an imported layout)."""
        return self.specs.action.chunk_start(self.n_obs_steps)

    @property
    def chunk_length(self) -> int:
        """Actions ``predict`` returns: the predicted horizon from :attr:`chunk_start` on."""
        return self.specs.action.horizon - self.chunk_start

    @property
    def obs_keys(self) -> list[str]:
        return [k.key for k in self.specs.obs.keys]

    def predict(
        self,
        obs: Mapping[str, np.ndarray],
        rng: np.random.Generator | None = None,
        *,
        noise: np.ndarray | None = None,
        num_inference_steps: int | None = None,
        sampler: SamplerKind | None = None,
        prefix: ChunkPrefix | None = None,
        candidates: int = 8,
    ) -> ActionChunk:
        """The chunk for an observation history.

        ``obs[key]`` is ``(n_obs_steps, *shape)`` (oldest first) or ``(B, n_obs_steps, *shape)``
        for a batch; keys beyond the policy's are ignored. Low-dim keys may be any float dtype
        (computed in float32), images must be uint8. ``noise`` fixes the sampler's random input
        (:meth:`noise_shape`: Gaussian ``([B,] H, Da)``, a BeT policy's uniforms ``([B,] H)``);
        otherwise it is drawn from ``rng`` (a fresh default generator if None), as is DDPM's
        per-step noise. Returns unnormalised actions from :attr:`chunk_start`
        (the newest observation's step, unless the manifest says otherwise) to the end of the
        horizon, action ``i`` stamped ``(i + offset_steps) / control_hz`` after the newest
        observation (the manifest's ``action.offset_steps``).

        ``prefix`` (real-time chunking, e.g. the engine's ``rtc_prefix``): a diffusion sampler
        is guided toward the committed actions at every step (x0-space inpainting with the
        prefix's soft mask; the step loop, never a fused graph); a one-step policy (drifting,
        BeT) draws ``candidates`` chunks and returns the one closest to the prefix
        (mask-weighted).
        """
        batch, unbatched = self._check_obs(obs)
        guide = None if prefix is None else self._normalized_prefix(prefix)
        rng = rng if rng is not None else np.random.default_rng()
        spec = self.specs.action
        shape = self.noise_shape(next(iter(batch.values())).shape[0])
        steps = num_inference_steps or self.specs.sampler.num_inference_steps
        if steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {steps}")
        if guide is not None and self.specs.sampler.kind in ("one_step", "categorical"):
            if noise is not None:
                raise ValueError("a one-step policy with a prefix draws its candidates' noise")
            normalized = self._best_continuation(batch, guide, candidates, rng)
        else:
            if noise is None:
                start = self.draw_noise(rng, shape)
            else:
                start = np.asarray(noise, dtype=np.float32)
                start = start[None] if unbatched and start.ndim == len(shape) - 1 else start
                if start.shape != shape:
                    expected = shape[1:] if unbatched else shape
                    raise ValueError(f"noise must be {expected}, got {noise.shape}")
            normalized = self._predict_normalized(batch, start, steps, sampler, rng, guide)
        actions = (normalized - self._action_offset) / self._action_scale
        actions = actions[:, self.chunk_start :].astype(np.float32, copy=False)
        return ActionChunk.from_actions(
            actions[0] if unbatched else actions,
            spec.n_action_steps,
            1.0 / self.specs.control_hz,
            spec.offset_steps,
        )

    def set_temperature(self, temperature: float) -> None:
        """Sample a BeT policy's bins at ``temperature`` from now on (the manifest's is the
        default; lower is greedier, 1 is the trained softmax). Other kinds have no bins: refused,
        as is a temperature that is not positive."""
        if self.specs.sampler.kind != "categorical":
            raise ValueError(
                f"temperature: a {self.specs.kind} policy has no bins to sample (BeT only)"
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        sampler = self.specs.sampler.model_copy(update={"temperature": float(temperature)})
        self.specs = dataclasses.replace(self.specs, sampler=sampler)

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        """The sampler's random input for ``batch`` observations: a BeT policy's uniforms
        ``(B, H)`` choosing its bins, else Gaussian noise ``(B, H, Da)``."""
        spec = self.specs.action
        if self.specs.sampler.kind == "categorical":
            return (batch, spec.horizon)
        return (batch, spec.horizon, spec.dim)

    def draw_noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Noise of :meth:`noise_shape` drawn from ``rng`` (uniform [0, 1) or Gaussian)."""
        if self.specs.sampler.kind == "categorical":
            return rng.random(shape, dtype=np.float32)
        return rng.standard_normal(shape, dtype=np.float32)

    @abc.abstractmethod
    def _predict_normalized(
        self,
        obs: dict[str, np.ndarray],
        noise: np.ndarray,
        steps: int,
        sampler: SamplerKind | None,
        rng: np.random.Generator,
        guide: Guide | None = None,
    ) -> np.ndarray:
        """The normalised chunk ``(B, H, Da)`` from checked, batched observations; ``guide``
        (diffusion only) steers every denoising step toward a committed prefix."""

    def _normalized_prefix(self, prefix: ChunkPrefix) -> Guide:
        """The prefix on the predicted horizon, normalised: (target (H, Da), weights (H,))."""
        spec = self.specs.action
        start = self.chunk_start
        n = self.chunk_length
        actions = np.asarray(prefix.actions, np.float32)
        weights = np.asarray(prefix.weights, np.float32)
        if actions.ndim != 2 or actions.shape[1] != spec.dim or weights.shape != actions.shape[:1]:
            raise ValueError(
                f"prefix: actions must be (n, {spec.dim}) with weights (n,), got "
                f"{actions.shape} and {weights.shape}"
            )
        if not (np.all(np.isfinite(actions)) and np.all((weights >= 0) & (weights <= 1))):
            raise ValueError("prefix: actions must be finite and weights in [0, 1]")
        target = np.zeros((spec.horizon, spec.dim), np.float32)
        mask = np.zeros(spec.horizon, np.float32)
        k = min(n, len(actions))
        target[start : start + k] = actions[:k] * self._action_scale + self._action_offset
        mask[start : start + k] = weights[:k]
        return Guide(target, mask)

    def _best_continuation(
        self, obs: dict[str, np.ndarray], guide: Guide, candidates: int, rng: np.random.Generator
    ) -> np.ndarray:
        """One-step policies: of ``candidates`` samples per observation, the one nearest the
        prefix in the mask-weighted squared distance."""
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        spec = self.specs.action
        b = next(iter(obs.values())).shape[0]
        repeated = {k: np.repeat(v, candidates, axis=0) for k, v in obs.items()}
        noise = self.draw_noise(rng, self.noise_shape(b * candidates))
        chunks = self._predict_normalized(repeated, noise, 1, None, rng).reshape(
            b, candidates, spec.horizon, spec.dim
        )
        cost = np.einsum("h,bkh->bk", guide.weights, ((chunks - guide.target) ** 2).sum(-1))
        return chunks[np.arange(b), np.argmin(cost, axis=1)]

    def _check_obs(self, obs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bool]:
        """Observations as batched arrays of the graph dtypes; whether the input was unbatched."""
        to = self.n_obs_steps
        out: dict[str, np.ndarray] = {}
        unbatched: bool | None = None
        size: int | None = None
        for spec in self.specs.obs.keys:
            if spec.key not in obs:
                raise ObservationError(
                    f"observation {spec.key!r} is missing (the policy reads {self.obs_keys}; "
                    f"got {sorted(obs)})"
                )
            value = np.asarray(obs[spec.key])
            expected = (to, *spec.shape)
            this_unbatched = value.shape == expected
            if not this_unbatched and value.shape[1:] != expected:
                batched = "(B, " + ", ".join(map(str, expected)) + ")"
                raise ObservationError(
                    f"observation {spec.key!r} must be {expected} or {batched}, got {value.shape}"
                )
            if unbatched is not None and this_unbatched != unbatched:
                raise ObservationError(
                    f"observation {spec.key!r} is {'un' if this_unbatched else ''}batched "
                    "unlike the keys before it"
                )
            unbatched = this_unbatched
            value = value[None] if this_unbatched else value
            if size is not None and value.shape[0] != size:
                raise ObservationError(
                    f"observation {spec.key!r} has batch {value.shape[0]}, the others {size}"
                )
            size = value.shape[0]
            if spec.dtype == "uint8":
                if value.dtype != np.uint8:
                    raise ObservationError(
                        f"observation {spec.key!r} is an image and must be uint8, got {value.dtype}"
                    )
            else:
                if not np.issubdtype(value.dtype, np.floating):
                    raise ObservationError(
                        f"observation {spec.key!r} must be floating point, got {value.dtype}"
                    )
                if not np.all(np.isfinite(value)):
                    raise ObservationError(f"observation {spec.key!r} holds NaN or inf")
                value = value.astype(np.float32, copy=False)
            out[spec.key] = np.ascontiguousarray(value)
        assert unbatched is not None  # the spec has at least one key
        return out, unbatched

    def warmup(self) -> None:
        """One prediction on zero observations, discarded."""
        zeros = {
            k.key: np.zeros(
                (self.n_obs_steps, *k.shape), np.uint8 if k.dtype == "uint8" else np.float32
            )
            for k in self.specs.obs.keys
        }
        self.predict(zeros, np.random.default_rng(0))


class OnnxPolicy(PolicyRuntime):
    """A policy bundle on onnxruntime. Build with :func:`load_policy`."""

    def __init__(
        self, path: Path, manifest: Manifest, files: BundleFiles, options: RuntimeOptions
    ) -> None:
        super().__init__(
            PolicySpecs(
                kind=manifest.kind,
                control_hz=manifest.control_hz,
                obs=manifest.obs,
                action=manifest.action,
                sampler=manifest.sampler,
            )
        )
        self.path = path
        self.manifest = manifest
        self.options = options
        self.choice = choose_backend(options, manifest)
        log_choice(path.name, self.choice)
        self._runners: dict[str, _Runner] = {}
        for graph in manifest.graphs:
            # At int8 a graph runs its int8 twin where it has one (prt quantize quantises the
            # step graphs; a fused graph keeps float, and graph_for then runs the step loop).
            twin = graph.int8 if self.choice.precision == "int8" else None
            data = verified_file(files, manifest, twin.file if twin else graph.file)
            runner: GraphRunner | OpenVinoRunner
            if self.choice.backend == "openvino":
                runner = OpenVinoRunner(data, self.choice.precision, options.intra_op_threads)
                self._check_graph_io(runner.signature, graph)
            else:
                session = make_session(data, options, f"{path.name}/{graph.file}")
                self._check_graph_io(partial(_session_signature, session), graph)
                runner = GraphRunner(session, options.io_binding)
            self._runners[graph.file] = runner
        self.providers = (
            runner.session.get_providers() if isinstance(runner, GraphRunner) else [runner.provider]
        )
        self._obs_names = {k.key: f"obs.{k.key}" for k in manifest.obs.keys}

    @property
    def backend(self) -> str:
        return self.choice.backend

    @property
    def precision(self) -> str:
        return self.choice.precision

    def _check_graph_io(
        self, signature: Callable[[str], list[tuple[str, int, str]]], graph: GraphSpec
    ) -> None:
        """The graph's real inputs/outputs must be what the manifest says (name, rank, dtype)."""
        for side, specs in (("inputs", graph.inputs), ("outputs", graph.outputs)):
            got = signature(side)
            want = [(s.name, len(s.shape), s.dtype) for s in specs]
            if got != want:
                raise BundleError(
                    f"{self.path}/{graph.file}: the graph's {side} {got} do not match the "
                    f"manifest's field 'graphs[{graph.file}].{side}' {want}"
                )

    def graph_for(self, steps: int, sampler: SamplerKind | None) -> GraphSpec | None:
        """The fused graph that runs this request in one call, if the bundle has one."""
        kind = sampler or self.specs.sampler.kind
        if kind != "ddim" or not self.options.fused_graphs:
            return None
        fused = self.manifest.graph("fused", fused_steps=steps)
        if fused is not None and self.precision == "int8" and fused.int8 is None:
            return None  # the quantised step loop, not the float fused graph
        return fused

    def _obs_feeds(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {self._obs_names[k]: v for k, v in obs.items()}

    def _predict_normalized(
        self,
        obs: dict[str, np.ndarray],
        noise: np.ndarray,
        steps: int,
        sampler: SamplerKind | None,
        rng: np.random.Generator,
        guide: Guide | None = None,
    ) -> np.ndarray:
        feeds = self._obs_feeds(obs)
        if self.manifest.kind == "bet":
            graph = self.manifest.graph("transformer")
            assert graph is not None
            out = self._runners[graph.file].run_all(feeds)
            return sample_actions(
                out["logits"], out["bin_actions"], noise, self.specs.sampler.temperature
            )
        if self.manifest.kind == "drifting":
            graph = self.manifest.graph("generator")
            assert graph is not None
            return self._runners[graph.file].run({**feeds, "noise": noise})
        fused = None if guide is not None else self.graph_for(steps, sampler)
        if fused is not None:
            return self._runners[fused.file].run({**feeds, "noise": noise})
        encoder, denoiser = self.manifest.graph("obs_encoder"), self.manifest.graph("denoiser")
        if encoder is None or denoiser is None:
            raise ValueError(
                f"{self.path}: the bundle has only fused graphs ({self.fused_steps()} DDIM steps); "
                f"{steps} {sampler or self.specs.sampler.kind} steps need obs_encoder + denoiser"
            )
        cond = self._runners[encoder.file].run(feeds)
        spec = self.specs.sampler.model_copy(update={"kind": sampler} if sampler else {})
        scheduler = make_sampler(spec)
        scheduler.set_timesteps(steps)
        step_graph = self._runners[denoiser.file]
        sample = noise
        batch = sample.shape[0]
        for t in scheduler.timesteps:
            timestep = np.full(batch, t, dtype=np.int64)
            output = step_graph.run({"sample": sample, "timestep": timestep, "cond": cond})
            if guide is not None:
                output = inpaint_model_output(
                    output,
                    sample,
                    scheduler.alphas_cumprod[t],
                    self.specs.sampler.prediction_type,
                    guide.target,
                    guide.weights,
                )
            if isinstance(scheduler, DDPMSampler):
                variance_noise = rng.standard_normal(sample.shape, dtype=np.float32)
                sample = scheduler.step(output, int(t), sample, variance_noise).prev_sample
            else:
                sample = scheduler.step(output, int(t), sample).prev_sample
        return sample

    @contextlib.contextmanager
    def recording_inputs(self) -> Iterator[dict[str, list[dict[str, np.ndarray]]]]:
        """Within the block, a copy of every graph call's inputs, by graph file: what the float
        graphs see on real observations, which ``prt quantize`` calibrates on."""
        calls: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in self._runners}
        runners = dict(self._runners)
        try:
            for name, runner in runners.items():
                self._runners[name] = _Recording(runner, calls[name])
            yield calls
        finally:
            self._runners.update(runners)

    def fused_steps(self) -> list[int]:
        return [g.fused_steps for g in self.manifest.graphs if g.role == "fused" and g.fused_steps]


class _Runner(Protocol):
    """What runs one graph: :class:`GraphRunner`, :class:`OpenVinoRunner`, or a recording."""

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...

    def run_all(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class _Recording:
    """A graph runner that keeps a copy of each call's inputs (``recording_inputs``)."""

    def __init__(self, runner: _Runner, calls: list[dict[str, np.ndarray]]) -> None:
        self.runner = runner
        self.calls = calls

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.calls.append({k: np.array(v) for k, v in feeds.items()})
        return self.runner.run(feeds)

    def run_all(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append({k: np.array(v) for k, v in feeds.items()})
        return self.runner.run_all(feeds)


def _session_signature(session: ort.InferenceSession, side: str) -> list[tuple[str, int, str]]:
    ports = session.get_inputs() if side == "inputs" else session.get_outputs()
    return [(a.name, len(a.shape), _ONNX_TYPES.get(a.type, a.type)) for a in ports]


def load_policy(
    path: Path | str,
    providers: tuple[str, ...] | list[str] | None = None,
    options: RuntimeOptions | None = None,
) -> OnnxPolicy:
    """Load and verify a bundle (directory or ``.zip``): manifest fields, format version, every
    file's sha256, every graph's inputs and outputs; then warm up (unless disabled).

    ``providers`` overrides ``options.providers`` (e.g. ``["cuda"]``; None: TensorRT -> CUDA ->
    CPU, whichever this onnxruntime has). The backend (onnxruntime or OpenVINO) and precision
    follow ``options`` (:func:`~policy_runtime.inference.backends.choose_backend`); a precision
    the bundle has no passed closed-loop check for raises
    :class:`~policy_runtime.inference.backends.PrecisionError` unless forced. A bad bundle raises
    :class:`~policy_runtime.inference.manifest.BundleError` naming the file or field.
    """
    path = Path(path)
    options = options or RuntimeOptions()
    if providers is not None:
        options = RuntimeOptions(**{**options.__dict__, "providers": tuple(providers)})
    files = BundleFiles(path)
    manifest = read_manifest(files)
    start = time.perf_counter()
    policy = OnnxPolicy(path, manifest, files, options)
    if options.warmup:
        policy.warmup()
    log.info(
        "%s: %s policy on %s at %s, loaded in %.2f s",
        path,
        manifest.kind,
        policy.providers[0],
        policy.precision,
        time.perf_counter() - start,
    )
    return policy
