"""Which engine runs a bundle's graphs, at which precision, and why.

Backends: ``onnxruntime`` (CPU, CUDA, TensorRT; :mod:`~policy_runtime.inference.providers`) and
``openvino`` (Intel CPUs and iGPUs; :mod:`~policy_runtime.inference.openvino_runner`). The
automatic choice: onnxruntime when it has a GPU provider; else OpenVINO on an Intel CPU when it
is installed; else onnxruntime on the CPU. Every choice comes with its reasons, logged on load.

Precisions: ``fp32`` always; ``bf16`` / ``fp16`` on OpenVINO where the device computes them (a
hint: the same graph); ``int8`` on both backends where the bundle has int8 graphs
(``prt quantize``: a different graph). A low precision changes the actions, so the export
parity bound cannot judge it: a bundle runs one only when its manifest records a passed
closed-loop check for that backend and precision (``prt calibrate-precision``), unless the
caller forces it. The automatic precision is the checked one the backend runs fastest here
(OpenVINO: int8, then bf16 where the CPU has it), else fp32.
"""

from __future__ import annotations

import importlib.util
import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from policy_runtime.inference.manifest import Manifest
from policy_runtime.inference.providers import CPU, CUDA, TENSORRT, RuntimeOptions

log = logging.getLogger(__name__)

Backend = Literal["onnxruntime", "openvino"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
#: The automatic precision's preference per backend, fastest first on a CPU (a DP-sized
#: DDIM-10 chunk, 2 threads, Xeon with AMX, ``prt bench inference``: OpenVINO int8 37.4 ms, bf16
#: 51.1, fp32 105.8; onnxruntime fp32 120.2, int8 275 (its QDQ kernels are slower than its fp32
#: here), so onnxruntime runs int8 only when asked). fp16 is never chosen automatically:
#: OpenVINO's CPU plugin ran the same chunk ~10x slower at fp16 than at fp32 on this
#: AVX512-FP16 Xeon; it stays an explicit setting.
_AUTO_ORDER: dict[Backend, tuple[Precision, ...]] = {
    "openvino": ("int8", "bf16", "fp32"),
    "onnxruntime": ("fp32",),
}
#: The CPU flags worth naming for inference (Linux ``/proc/cpuinfo`` names).
INFERENCE_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "avx_vnni",
)


class PrecisionError(ValueError):
    """A precision this bundle was not checked for, or this hardware/backend cannot run."""


@dataclass(frozen=True)
class CpuInfo:
    model: str
    vendor: str
    #: The :data:`INFERENCE_FLAGS` the processor has.
    flags: tuple[str, ...]

    @property
    def intel(self) -> bool:
        return self.vendor == "GenuineIntel"

    def describe(self) -> str:
        return f"{self.model} ({', '.join(self.flags) or 'no AVX2'})"


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """The processor's model, vendor and inference-relevant flags (Linux; elsewhere what
    :mod:`platform` says, without flags)."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip() and fields:
                break  # the first processor describes them all
    except OSError:
        return CpuInfo(platform.processor() or platform.machine(), "", ())
    flags = set(fields.get("flags", "").split())
    return CpuInfo(
        fields.get("model name", platform.machine()),
        fields.get("vendor_id", ""),
        tuple(f for f in INFERENCE_FLAGS if f in flags),
    )


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


@dataclass(frozen=True)
class BackendChoice:
    backend: Backend
    precision: Precision
    #: onnxruntime's providers, fastest first (empty for OpenVINO).
    providers: tuple[str, ...]
    #: Why this backend and precision (one line each), logged on load.
    reasons: tuple[str, ...]


def checked_precisions(manifest: Manifest, backend: Backend) -> set[str]:
    """The precisions the bundle's closed-loop checks accepted on ``backend`` (fp32 always)."""
    return {"fp32"} | {
        c.precision for c in manifest.precision_checks if c.backend == backend and c.accepted
    }


def choose_backend(
    options: RuntimeOptions,
    manifest: Manifest,
    *,
    cpu: CpuInfo | None = None,
    ort_providers: Sequence[str] | None = None,
    openvino: bool | None = None,
    device_precisions: set[str] | None = None,
) -> BackendChoice:
    """The backend and precision for ``manifest`` under ``options`` (keyword arguments stand in
    for this machine in tests). Raises :class:`PrecisionError` / ``ValueError`` naming the
    setting that cannot be honoured."""
    from policy_runtime.inference.providers import choose_providers

    cpu = cpu or cpu_info()
    has_openvino = openvino_installed() if openvino is None else openvino
    reasons: list[str] = []
    requested = options.backend
    if requested not in ("auto", *BACKENDS):
        raise ValueError(f"backend: {requested!r} is not one of auto, {', '.join(BACKENDS)}")
    if requested == "openvino" and options.providers is not None:
        raise ValueError("backend: openvino takes no onnxruntime providers; leave providers unset")
    if requested == "openvino" and not has_openvino:
        raise ValueError(
            "backend: openvino is not installed (pip install 'policy_runtime[openvino]')"
        )
    providers: list[str] = []
    if requested != "openvino":
        providers, skipped = choose_providers(options.providers, ort_providers)
        reasons += skipped
    backend: Backend
    if requested != "auto":
        backend = "openvino" if requested == "openvino" else "onnxruntime"
        reasons.append(f"backend {backend}: asked for")
    elif options.providers is not None or providers[0] in (TENSORRT, CUDA):
        backend = "onnxruntime"
        reasons.append(f"backend onnxruntime: {providers[0]} (a GPU or an explicit provider)")
    elif has_openvino and cpu.intel:
        backend = "openvino"
        reasons.append(f"backend openvino: an Intel CPU, {cpu.describe()}")
    else:
        backend = "onnxruntime"
        why = "not an Intel CPU" if has_openvino else "OpenVINO is not installed"
        reasons.append(f"backend onnxruntime on {CPU}: {why} ({cpu.describe()})")

    hardware = {"fp32", "int8"}  # onnxruntime's CPU provider runs QDQ graphs everywhere
    if backend == "openvino":
        from policy_runtime.inference import openvino_runner

        hardware = set(device_precisions or openvino_runner.device_precisions())
    if not manifest.quantized:
        hardware.discard("int8")
    checked = checked_precisions(manifest, backend)
    precision: Precision
    if options.precision == "auto":
        usable = [p for p in _AUTO_ORDER[backend] if p in hardware and p in checked]
        precision = usable[0]
        unchecked = sorted((hardware - checked) & set(PRECISIONS))
        note = f"; unchecked here: {', '.join(unchecked)}" if unchecked else ""
        reasons.append(f"precision {precision}: the fastest this bundle passed on {backend}{note}")
    else:
        if options.precision not in PRECISIONS:
            raise PrecisionError(
                f"precision: {options.precision!r} is not one of auto, {', '.join(PRECISIONS)}"
            )
        precision = next(p for p in PRECISIONS if p == options.precision)
        if precision == "int8" and not manifest.quantized:
            raise PrecisionError(
                "precision: int8 needs the bundle's int8 graphs, and it has none (prt quantize)"
            )
        if precision not in hardware:
            raise PrecisionError(
                f"precision: {precision} does not run on {backend} here (it has "
                f"{', '.join(sorted(hardware))})"
            )
        if precision not in checked:
            if not options.force_precision:
                raise PrecisionError(
                    f"precision: this bundle was not checked at {precision} on {backend} "
                    f"(its manifest's precision_checks accept {', '.join(sorted(checked))}); run "
                    "prt calibrate-precision, or force it"
                )
            reasons.append(f"precision {precision}: FORCED, not checked for this bundle")
        else:
            reasons.append(f"precision {precision}: asked for")
    return BackendChoice(backend, precision, tuple(providers), tuple(reasons))


def log_choice(label: str, choice: BackendChoice) -> None:
    for reason in choice.reasons:
        log.info("%s: %s", label, reason)
