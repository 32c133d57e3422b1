"""int8 twins of a bundle's graphs: post-training static quantisation calibrated on what the
float graphs see while the policy runs on the training set's observations and noise.

A DP-sized denoiser pass on a CPU is bound by reading its weights (~250 MB in float32), so
int8 weights and activations (a quarter of the bytes, VNNI/AMX int8 products) are the next step
after bf16. The activation ranges come from running the float32 bundle itself: for each
calibration observation a full chunk is predicted (the DDIM loop from fresh noise, so the
denoiser sees every timestep's ``sample`` and the encoder the real ``cond``), and every graph's
inputs are recorded. NNCF (the ``quantize`` extra) turns each graph into a QDQ ONNX graph
(QuantizeLinear/DequantizeLinear pairs) that OpenVINO and onnxruntime both run, written beside
the float graph and hashed in the manifest (``QuantizedGraph``).

Quantising changes the actions, so the result is not trusted until ``prt calibrate-precision
--precision int8`` accepts it in closed loop; the runtime refuses int8 until then unless forced.
Fused graphs are not quantised (at int8 the runtime runs the quantised step loop instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from policy_runtime.data.reader import EpisodeDataset
from policy_runtime.data.sampler import SequenceSampler
from policy_runtime.inference import RuntimeOptions, load_policy
from policy_runtime.inference.manifest import (
    BundleError,
    BundleFiles,
    GraphSpec,
    Manifest,
    QuantizedGraph,
    read_manifest,
    require_directory,
    rewrite_manifest,
    sha256_bytes,
    verified_file,
)
from policy_runtime.inference.runtime import OnnxPolicy

log = logging.getLogger(__name__)

#: Roles quantised: the step graphs (a fused graph repeats the denoiser; it stays float).
QUANTIZED_ROLES = ("obs_encoder", "denoiser", "generator", "transformer")
INT8_SUFFIX = ".int8.onnx"
#: Operators left in float from the start (see :func:`quantize_graph`).
FLOAT_OPS = ("Gemm",)
#: The accuracy control's bound: mean |int8 - float| output over mean |float| output on
#: held-out calls. Chosen on validation seeds: the push_t drifting policy quantised to 0.01
#: (19 of 47 layers in int8) succeeded in 84% of episodes 50000-50099, fp32 in 86%.
MAX_RELATIVE_ERROR = 0.01
#: The operators that carry the weights (what int8 is for).
LAYERS = ("Conv", "MatMul", "Gemm")
#: Operators that move int8 values without computing on them.
SHAPE_OPS = ("Unsqueeze", "Squeeze", "Reshape", "Transpose", "Identity", "Flatten")
#: Observation histories held out of calibration to judge it.
HELD_OUT_OBSERVATIONS = 16
#: Held-out calls NNCF ranks the operators on (each ranking runs the graph on all of them).
RANKING_CALLS = 64
#: Operators accuracy control may return to float before giving up (each costs a pass over
#: the held-out calls; the drifting generator needed about 30 for 0.01).
MAX_REVERSIONS = 64

Observations = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class QuantizeReport:
    manifest: Manifest


def dataset_observations(
    dataset: Path, keys: list[str], n_obs_steps: int, count: int, seed: int = 0
) -> tuple[dict[str, np.ndarray], str]:
    """``count`` observation histories ``(count, n_obs_steps, ...)`` drawn at random from a
    dataset's episodes (windows padded at an episode's start, as training reads them), and a
    description for the manifest."""
    ds = EpisodeDataset.open(dataset)
    missing = [k for k in keys if k not in ds.keys]
    if missing:
        raise BundleError(
            f"{dataset}: has no key {', '.join(map(repr, missing))} the bundle observes "
            f"(it has {', '.join(ds.keys)})"
        )
    sampler = SequenceSampler(
        ds.load(keys), ds.episode_ends, n_obs_steps, pad_before=n_obs_steps - 1
    )
    rng = np.random.default_rng(seed)
    ids = rng.choice(len(sampler), size=min(count, len(sampler)), replace=False)
    return sampler.sample_batch(np.sort(ids)), f"{dataset} ({len(ids)} observations, seed {seed})"


def record_graph_inputs(
    policy: OnnxPolicy, observations: Observations, seed: int = 0
) -> dict[str, list[dict[str, np.ndarray]]]:
    """Every graph call's inputs (by graph file) while ``policy`` predicts a chunk for each
    observation history, one at a time, with noise from ``seed``."""
    rng = np.random.default_rng(seed)
    count = len(next(iter(observations.values())))
    with policy.recording_inputs() as calls:
        for i in range(count):
            policy.predict({k: v[i] for k, v in observations.items()}, rng)
    return {name: feeds for name, feeds in calls.items() if feeds}


def float32_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """An fp16 graph (``prt export --fp16``) computed in float32: weights, constants, casts and
    value types widened (exact), so the quantiser sees the float graph it expects."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT16:
            wide = numpy_helper.to_array(tensor).astype(np.float32)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(wide, tensor.name))
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
                attr.i = TensorProto.FLOAT
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
                wide = numpy_helper.to_array(attr.t).astype(np.float32)
                attr.t.CopyFrom(numpy_helper.from_array(wide, attr.t.name))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    # A cast between float32 tensors is now a no-op: an Identity (NNCF's own clean-up of such
    # casts fails where one produces a graph output).
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info]}
    types.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        widened = to == TensorProto.FLOAT and types.get(node.input[0]) == TensorProto.FLOAT
        if node.op_type == "Cast" and widened:
            node.op_type = "Identity"
            del node.attribute[:]
    return model


@dataclass(frozen=True)
class QuantizedData:
    data: bytes
    method: str
    #: Mean over the held-out calls of mean |int8 - float| / mean |float| (the worst output).
    held_out_error: float
    #: Layers (:data:`LAYERS`) computing on int8 inputs and weights, of ``layers``.
    int8_layers: int
    layers: int


def relative_error(
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    calls: list[dict[str, np.ndarray]],
    expected: list[list[np.ndarray]],
) -> float:
    """mean |run(call) - expected| / mean |expected| over ``calls``, the worst output: a
    scale-free figure for a denoiser's noise, a generator's actions or an encoder's features."""
    got = [run(call) for call in calls]
    errors = []
    for i in range(len(expected[0])):
        diff = np.mean([np.abs(g[i] - e[i]).mean() for g, e in zip(got, expected, strict=True)])
        size = np.mean([np.abs(e[i]).mean() for e in expected])
        errors.append(float(diff / max(size, 1e-12)))
    return max(errors)


def _call_errors(
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    items: list[tuple[dict[str, np.ndarray], list[np.ndarray]]],
) -> list[float]:
    """Each held-out call's :func:`relative_error`: what accuracy control bounds on average."""
    return [relative_error(run, [call], [expected]) for call, expected in items]


def _runner(model: Any) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """A callable over an ONNX model or an onnxruntime session (what NNCF hands validation)."""
    import onnxruntime as ort

    session = (
        model
        if isinstance(model, ort.InferenceSession)
        else ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    )
    return lambda feeds: list(session.run(None, feeds))


def _int8_layers(graph: onnx.GraphProto) -> tuple[int, int]:
    """How many :data:`LAYERS` take both input and weight from DequantizeLinear (through
    shape-only operators such as the Unsqueeze of a Conv1d exported as Conv2d): int8 products;
    and how many layers there are."""
    producer = {out: node for node in graph.node for out in node.output}

    def dequantized(name: str) -> bool:
        node = producer.get(name)
        while node is not None and node.op_type in SHAPE_OPS:
            node = producer.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    layers = [n for n in graph.node if n.op_type in LAYERS]
    int8 = sum(1 for n in layers if all(dequantized(name) for name in n.input[:2]))
    return int8, len(layers)


def quantize_graph(
    data: bytes,
    calls: list[dict[str, np.ndarray]],
    held_out: list[dict[str, np.ndarray]],
    max_error: float = MAX_RELATIVE_ERROR,
    max_reversions: int = MAX_REVERSIONS,
) -> QuantizedData:
    """The QDQ int8 graph of ONNX ``data``: activation ranges from ``calls``, then NNCF's
    accuracy control returns the operators that move the output most to float, one at a time,
    until the held-out error is at most ``max_error``: the mean over ``held_out`` of each call's
    mean |int8 - float| output over its mean |float| output (:func:`relative_error`).

    NNCF's default (``performance``) preset: symmetric int8 weights per channel, activations per
    tensor, bias correction (on a DP-sized denoiser faster on OpenVINO than ``mixed`` and no
    closer to float). Measured on the push_t drifting policy's generator, on held-out dataset
    observations: every convolution in int8, the mean |action - float action| was 0.016
    (normalised; bf16: 0.001) and closed-loop success fell from 86.5% to 34.5% (seeds
    100000-100199); at the default bound 19 of its 47 layers stay in int8 and success was
    86.0%. ``Gemm`` layers (FiLM conditioning, observation MLPs: a small share of the weights)
    start in float: they cut that error by a quarter on their own."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    model = float32_graph(onnx.load_from_string(data))
    reference = _runner(model)
    expected = [reference(call) for call in held_out]
    items = list(zip(held_out, expected, strict=True))

    def validate(candidate: object, batch: Iterable[tuple[Any, Any]]) -> tuple[float, list[float]]:
        errors = _call_errors(_runner(candidate), list(batch))
        return 1.0 - float(np.mean(errors)), [1.0 - e for e in errors]

    quantized = nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(calls),
        nncf.Dataset(items),
        validate,
        max_drop=max_error,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(calls),
        ignored_scope=nncf.IgnoredScope(types=list(FLOAT_OPS), validate=False),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            ranking_subset_size=min(len(items), RANKING_CALLS),
            max_num_iterations=max_reversions,
        ),
    )
    int8, layers = _int8_layers(quantized.graph)
    error = float(np.mean(_call_errors(_runner(quantized), items)))
    if error > max_error:
        raise BundleError(
            f"held-out error {error:.4f} still exceeds --max-error {max_error:g} after "
            f"{max_reversions} operators returned to float: int8 does not suit this graph at this "
            "bound (nothing written)"
        )
    method = (
        f"nncf {nncf.__version__} post-training, preset performance, {'/'.join(FLOAT_OPS)} float, "
        f"accuracy control to {max_error:g} relative error"
    )
    return QuantizedData(quantized.SerializeToString(), method, error, int8, layers)


def quantize_bundle(
    bundle: Path,
    observations: Observations,
    calibration: str,
    held_out: int = HELD_OUT_OBSERVATIONS,
    max_error: float = MAX_RELATIVE_ERROR,
    seed: int = 0,
    max_reversions: int = MAX_REVERSIONS,
) -> QuantizeReport:
    """Give ``bundle`` (a directory) int8 twins of its step graphs: calibrated on
    ``observations`` (``(N, n_obs_steps, ...)`` per key, raw units) but the last ``held_out``,
    which judge the accuracy control (:func:`quantize_graph`). Replaces earlier twins and drops
    any int8 check recorded for them; the float graphs and their hashes are untouched."""
    bundle = Path(bundle)
    require_directory(bundle)  # before the quantising, not after
    files = BundleFiles(bundle)
    manifest = read_manifest(files)
    if not any(g.role in QUANTIZED_ROLES for g in manifest.graphs):
        raise BundleError(
            f"{bundle}: only fused graphs; re-export without --fused-only to quantise the steps"
        )
    count = len(next(iter(observations.values())))
    if not 0 < held_out < count:
        raise ValueError(
            f"held_out: {held_out} of {count} observations; keep some for each of calibration "
            "and the held-out check"
        )
    options = RuntimeOptions(backend="onnxruntime", precision="fp32", fused_graphs=False)
    policy = load_policy(bundle, options=options)
    split = count - held_out
    recorded = record_graph_inputs(policy, {k: v[:split] for k, v in observations.items()}, seed)
    judged = record_graph_inputs(policy, {k: v[split:] for k, v in observations.items()}, seed + 1)
    graphs: list[GraphSpec] = []
    new_files: dict[str, bytes] = {}
    for graph in manifest.graphs:
        calls = recorded.get(graph.file)
        if graph.role not in QUANTIZED_ROLES or not calls:
            graphs.append(graph.model_copy(update={"int8": None}))
            continue
        log.info("quantising %s on %d recorded calls", graph.file, len(calls))
        try:
            result = quantize_graph(
                verified_file(files, manifest, graph.file),
                calls,
                judged[graph.file],
                max_error,
                max_reversions,
            )
        except BundleError as exc:
            raise BundleError(f"{bundle}/{graph.file}: {exc}") from None
        name = graph.file.removesuffix(".onnx") + INT8_SUFFIX
        new_files[name] = result.data
        twin = QuantizedGraph(
            file=name,
            method=result.method,
            calibration=calibration,
            samples=len(calls),
            held_out_samples=len(judged[graph.file]),
            held_out_error=result.held_out_error,
            int8_layers=result.int8_layers,
            layers=result.layers,
        )
        graphs.append(graph.model_copy(update={"int8": twin}))
    stale = {g.int8.file for g in manifest.graphs if g.int8} - set(new_files)
    hashes = {k: v for k, v in manifest.files.items() if k not in stale}
    hashes.update({name: sha256_bytes(data) for name, data in new_files.items()})
    updated = manifest.model_copy(
        update={
            "graphs": graphs,
            "files": hashes,
            "precision_checks": [c for c in manifest.precision_checks if c.precision != "int8"],
        }
    )
    updated = Manifest.model_validate(updated.model_dump())  # the cross-field checks
    rewrite_manifest(bundle, updated, new_files)
    for name in stale:
        (bundle / name).unlink(missing_ok=True)
    return QuantizeReport(updated)
