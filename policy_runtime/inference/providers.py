"""onnxruntime sessions: which execution provider runs a bundle, and how.

Automatic choice tries TensorRT, then CUDA, then CPU, and logs why each faster one was passed
over (not in this onnxruntime build, or it failed to start and onnxruntime fell back). An
explicit list is honoured as given, and refused when a named provider is not in the build: a
deployment that asked for the GPU should not quietly run on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Fastest first.
PREFERENCE = (TENSORRT, CUDA, CPU)
SHORT_NAMES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}


@dataclass(frozen=True)
class RuntimeOptions:
    """How sessions are made. ``providers`` None picks automatically (TensorRT -> CUDA -> CPU);
    names may be onnxruntime's or short (``tensorrt``, ``cuda``, ``cpu``); naming providers
    chooses onnxruntime."""

    providers: tuple[str, ...] | None = None
    #: ``auto``, ``onnxruntime`` or ``openvino`` (:mod:`~policy_runtime.inference.backends`).
    backend: str = "auto"
    #: ``auto`` (bf16 where the hardware has it and the bundle passed a closed-loop check at
    #: it on this backend, else fp32; fp16 only when asked for), ``fp32``, ``bf16`` or ``fp16``.
    precision: str = "auto"
    #: Run a precision the bundle's manifest has no passed check for (a measurement, not a
    #: deployment).
    force_precision: bool = False
    #: Threads inside one operator (0: onnxruntime's default, one per physical core).
    intra_op_threads: int = 0
    #: Threads across independent operators (only used by the parallel execution mode).
    inter_op_threads: int = 0
    #: Run one prediction on load, so the first real one does not pay for allocation and
    #: provider start-up (TensorRT builds its engines then).
    warmup: bool = True
    #: Bind inputs and outputs to the provider's device (CUDA / TensorRT): no per-call copies
    #: of outputs that stay on the device.
    io_binding: bool = True
    #: Run a request in one call when the bundle has a fused graph for its DDIM step count.
    fused_graphs: bool = True
    #: Where TensorRT may cache built engines (None: rebuilt every start).
    trt_cache_dir: str | None = None
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)


def resolve_provider_name(name: str) -> str:
    return SHORT_NAMES.get(name.lower(), name)


def choose_providers(
    requested: Sequence[str] | None, available: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """(providers to use, fastest first; reasons for every preferred provider skipped)."""
    available = list(ort.get_available_providers() if available is None else available)
    if requested is not None:
        names = [resolve_provider_name(n) for n in requested]
        missing = [n for n in names if n not in available]
        if missing:
            raise ValueError(
                f"providers: {missing} not available in this onnxruntime build (it has "
                f"{available}); install onnxruntime-gpu for CUDA/TensorRT, or choose another"
            )
        if not names:
            raise ValueError("providers: the explicit list is empty")
        return names, []
    chosen, reasons = [], []
    for name in PREFERENCE:
        if name in available:
            chosen.append(name)
        else:
            reasons.append(f"{name}: not in this onnxruntime build")
    return chosen, reasons


def make_session(model: bytes, options: RuntimeOptions, label: str) -> ort.InferenceSession:
    """A session for one graph on the chosen providers, fallbacks logged with their reason."""
    providers, reasons = choose_providers(options.providers)
    for reason in reasons:
        log.info("%s: skipping %s", label, reason)
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.log_severity_level = 3
    provider_args: list[tuple[str, dict[str, str]]] = []
    for name in providers:
        extra = dict(options.provider_options.get(name, {}))
        if name == TENSORRT and options.trt_cache_dir:
            extra.setdefault("trt_engine_cache_enable", "True")
            extra.setdefault("trt_engine_cache_path", options.trt_cache_dir)
        provider_args.append((name, extra))
    session = ort.InferenceSession(model, sess_options=session_options, providers=provider_args)
    active = session.get_providers()
    for name in providers:
        if name == active[0]:
            break
        log.warning(
            "%s: %s failed to start (onnxruntime fell back; see its log), running on %s",
            label,
            name,
            active[0],
        )
    return session


class GraphRunner:
    """One graph's session with its input/output names; numpy in, numpy out.

    On a device provider (CUDA, TensorRT) with ``io_binding``, inputs are bound and outputs
    allocated on the device through an IO binding and copied back once; on the CPU a plain
    ``run`` is already zero-copy.
    """

    def __init__(self, session: ort.InferenceSession, io_binding: bool) -> None:
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.provider = session.get_providers()[0]
        self._device = "cuda" if self.provider in (CUDA, TENSORRT) else "cpu"
        self._bind = io_binding and self._device != "cpu"

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's first (for most graphs, only) output."""
        return next(iter(self.run_all(feeds).values()))

    def run_all(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output of the graph by name, in the graph's order."""
        if not self._bind:
            values = self.session.run(self.output_names, feeds)
        else:
            binding = self.session.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            for name in self.output_names:
                binding.bind_output(name, self._device)
            self.session.run_with_iobinding(binding)
            values = binding.copy_outputs_to_cpu()
        return {name: np.asarray(v) for name, v in zip(self.output_names, values, strict=True)}
