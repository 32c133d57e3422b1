"""A bundle graph on OpenVINO (Intel CPUs and iGPUs), numpy in and numpy out like
:class:`~policy_runtime.inference.providers.GraphRunner`.

The graphs are the bundle's ONNX files, read from memory after their hashes were checked. A
low precision here is an *inference precision hint*, not a different graph: the weights stay as
exported and OpenVINO's CPU plugin runs the matrix products and convolutions in bf16 (or fp16)
where the processor has them (AVX512-BF16, AMX), accumulating in float32. What limits a DP-sized
denoiser pass on a CPU is reading its ~250 MB of float32 weights, so halving the bytes roughly
halves the time; whether the changed actions still do the task is for
``prt calibrate-precision`` to say, not a tolerance.

``openvino`` is an optional dependency (the ``openvino`` extra), imported only here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: OpenVINO element types -> the manifest's dtype names.
_TYPES = {"f32": "float32", "f16": "float16", "u8": "uint8", "i64": "int64"}
#: Our precision names -> OpenVINO's ``INFERENCE_PRECISION_HINT``. An int8 graph carries its
#: own precision in its QuantizeLinear/DequantizeLinear pairs; what is left runs in float32
#: (the CPU plugin found no kernels for such a graph under the bf16 hint).
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
#: OpenVINO's ``OPTIMIZATION_CAPABILITIES`` entry a precision needs on the device.
CAPABILITIES = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16", "int8": "INT8"}


def _core() -> Any:
    import openvino as ov

    return ov.Core()


def device_precisions(device: str = "CPU") -> set[str]:
    """The precisions (``fp32``/``bf16``/``fp16``/``int8``) the OpenVINO device computes
    natively."""
    capabilities = set(_core().get_property(device, "OPTIMIZATION_CAPABILITIES"))
    return {name for name, cap in CAPABILITIES.items() if cap in capabilities}


def device_name(device: str = "CPU") -> str:
    return str(_core().get_property(device, "FULL_DEVICE_NAME"))


def _onnx_name(port: Any) -> str:
    return str(min(port.get_names()))


def _dtype(port: Any) -> str:
    name = port.get_element_type().get_type_name()
    return _TYPES.get(name, name)


class OpenVinoRunner:
    """One graph compiled for ``device`` at ``precision``, latency-tuned, ``threads`` threads
    (0: OpenVINO's default)."""

    def __init__(self, model: bytes, precision: str, threads: int, device: str = "CPU") -> None:
        core = _core()
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        graph = core.read_model(model)
        # The ONNX tensor names, from the graph as read (compiling may add aliases to a port).
        self.input_names = [_onnx_name(p) for p in graph.inputs]
        self.output_names = [_onnx_name(p) for p in graph.outputs]
        self._signature = {
            side: [
                (_onnx_name(p), len(p.get_partial_shape()), _dtype(p))
                for p in (graph.inputs if side == "inputs" else graph.outputs)
            ]
            for side in ("inputs", "outputs")
        }
        self.compiled = core.compile_model(graph, device, config)
        self.request = self.compiled.create_infer_request()
        self.provider = f"OpenVINO:{device}"

    def signature(self, side: str) -> list[tuple[str, int, str]]:
        """(name, rank, dtype) of each input or output, as the manifest describes them."""
        return self._signature[side]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's first (for most graphs, only) output."""
        return next(iter(self.run_all(feeds).values()))

    def run_all(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name, in the graph's order (copied: the request reuses its
        buffers on the next call)."""
        results = self.request.infer(feeds)
        return {
            name: np.array(results[port])
            for name, port in zip(self.output_names, self.compiled.outputs, strict=True)
        }
