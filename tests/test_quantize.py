"""int8 twins (``prt quantize``): hashed like every bundle file, refused until checked or forced,
run by both backends close to the float graph, and chosen by default once accepted.

The bundle is a copy of the shipped ``push_t_drifting`` (fp16 graph: it also exercises the
widening to float32 before quantising); calibration observations are random in the policy's
trained range, or windows of a small dataset written here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from policy_runtime.cli.main import app
from policy_runtime.data import DatasetSchema, DatasetWriter, FieldSpec
from policy_runtime.evaluation.precision_check import open_loop_error, record_check
from policy_runtime.export.quantize import (
    dataset_observations,
    float32_graph,
    quantize_bundle,
    relative_error,
)
from policy_runtime.inference import RuntimeOptions, load_policy
from policy_runtime.inference.backends import PrecisionError
from policy_runtime.inference.manifest import (
    BundleError,
    BundleFiles,
    PrecisionCheck,
    read_manifest,
    sha256_bytes,
)
from policy_runtime.inference.specs import random_observations

pytest.importorskip("nncf")

SHIPPED = Path(__file__).resolve().parents[1] / "bundles" / "push_t_drifting"


def _accepted(backend: str, bound: float) -> PrecisionCheck:
    return PrecisionCheck(
        backend=backend,  # type: ignore[arg-type]
        precision="int8",
        accepted=True,
        task="push_t",
        episodes=200,
        start_seed=100_000,
        success_rate=0.86,
        fp32_success_rate=0.87,
        tolerance_points=2.0,
        open_loop_max_abs_error=bound,
        open_loop_mean_abs_error=bound / 10,
        device="test",
    )


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = tmp_path_factory.mktemp("int8") / "bundle"
    shutil.copytree(SHIPPED, bundle)
    manifest = read_manifest(BundleFiles(bundle))
    (bundle / "manifest.json").write_text(
        manifest.model_copy(update={"precision_checks": []}).model_dump_json(indent=2)
    )
    obs = random_observations(manifest.obs, 40, np.random.default_rng(0))
    quantize_bundle(bundle, obs, "40 random observations (test)", held_out=8, max_error=0.05)
    return bundle


def test_widening_an_fp16_graph_leaves_no_half_precision_and_computes_the_same():
    model = onnx.load(SHIPPED / "generator.onnx")
    wide = float32_graph(model)
    types = [t.data_type for t in wide.graph.initializer]
    assert onnx.TensorProto.FLOAT16 not in types
    casts = [n for n in wide.graph.node if n.op_type == "Cast"]
    assert all(a.i != onnx.TensorProto.FLOAT16 for n in casts for a in n.attribute)
    manifest = read_manifest(BundleFiles(SHIPPED))
    obs = random_observations(manifest.obs, 8, np.random.default_rng(1))
    feeds = {f"obs.{k}": v for k, v in obs.items()}
    feeds["noise"] = np.random.default_rng(2).standard_normal((8, 16, 10), dtype=np.float32)
    half = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    full = ort.InferenceSession(wide.SerializeToString()).run(None, feeds)[0]
    # The fp16 graph rounds every activation to 11 bits; float32 does not: a few 1e-3 apart.
    assert 0 < np.abs(half - full).max() < 2e-2


def test_relative_error_is_the_worst_outputs_mean_difference_over_its_mean_size():
    expected = [
        [np.array([1.0, -1.0]), np.array([10.0])],
        [np.array([3.0, -3.0]), np.array([-10.0])],
    ]
    calls: list[dict[str, np.ndarray]] = [{}, {}]
    shifted = iter(
        [[np.array([1.5, -1.0]), np.array([10.0])], [np.array([3.0, -2.5]), np.array([-9.0])]]
    )
    # Output 0: mean |diff| (0.25 + 0.25) / 2 = 0.25 over mean size 2: 0.125; output 1: 0.5 / 10.
    assert relative_error(lambda _: next(shifted), calls, expected) == pytest.approx(0.125)


def test_the_int8_twin_is_a_hashed_qdq_graph_beside_the_untouched_float_one(quantized: Path):
    before = read_manifest(BundleFiles(SHIPPED))
    after = read_manifest(BundleFiles(quantized))
    graph = after.graphs[0]
    assert graph.int8 is not None and graph.int8.file == "generator.int8.onnx"
    assert graph.int8.samples == 32 and graph.int8.held_out_samples == 8
    assert graph.int8.calibration.startswith("40 random")
    # Accuracy control held the output within its bound on the held-out calls, some layers
    # still in int8: at most the 33 convolutions (the 14 Gemm layers start in float).
    assert graph.int8.held_out_error <= 0.05
    assert graph.int8.layers == 47 and 0 < graph.int8.int8_layers <= 33
    data = (quantized / graph.int8.file).read_bytes()
    assert after.files[graph.int8.file] == sha256_bytes(data)
    assert after.files["generator.onnx"] == before.files["generator.onnx"]
    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "int8" in json.loads((quantized / "manifest.json").read_text())["graphs"][0]
    # A bundle without twins writes no int8 field (older runtimes read it).
    assert "int8" not in json.loads((SHIPPED / "manifest.json").read_text())["graphs"][0]


def test_a_changed_int8_file_is_refused_by_name_and_the_float_graph_still_loads(
    quantized: Path, tmp_path: Path
):
    copy = tmp_path / "bundle"
    shutil.copytree(quantized, copy)
    twin = copy / "generator.int8.onnx"
    twin.write_bytes(twin.read_bytes()[:-1] + b"\0")
    forced = RuntimeOptions(backend="onnxruntime", precision="int8", force_precision=True)
    with pytest.raises(BundleError, match=r"generator\.int8\.onnx: sha256 .* changed after export"):
        load_policy(copy, options=forced)
    assert load_policy(copy, options=RuntimeOptions(backend="onnxruntime")).precision == "fp32"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_runs_only_when_checked_or_forced_and_stays_near_fp32(
    quantized: Path, backend: str, tmp_path: Path
):
    with pytest.raises(PrecisionError, match="not checked at int8"):
        load_policy(quantized, options=RuntimeOptions(backend=backend, precision="int8"))
    reference = load_policy(quantized, options=RuntimeOptions(backend=backend, precision="fp32"))
    forced = load_policy(
        quantized,
        options=RuntimeOptions(backend=backend, precision="int8", force_precision=True),
    )
    assert forced.precision == "int8"
    error = open_loop_error(reference, forced)
    # Changed (int8 is a different graph), by a small fraction of the normalised range on
    # average; the closed-loop check, not this bound, decides whether it is deployable.
    assert error.max() > 1e-3 and error.mean() < 0.1
    copy = tmp_path / "checked"
    shutil.copytree(quantized, copy)
    record_check(copy, _accepted(backend, float(error.max())))
    default = load_policy(copy, options=RuntimeOptions(backend=backend))
    if backend == "openvino":  # the fastest checked precision there
        assert default.precision == "int8"
        assert np.array_equal(open_loop_error(reference, default), error)
    else:  # onnxruntime's int8 kernels are no faster here: int8 only when asked
        assert default.precision == "fp32"
        asked = load_policy(copy, options=RuntimeOptions(backend=backend, precision="int8"))
        assert open_loop_error(reference, asked).max() <= error.max()


def test_both_backends_compute_the_same_int8_graph(quantized: Path):
    options = {"precision": "int8", "force_precision": True}
    ort_policy = load_policy(quantized, options=RuntimeOptions(backend="onnxruntime", **options))
    ov_policy = load_policy(quantized, options=RuntimeOptions(backend="openvino", **options))
    assert open_loop_error(ort_policy, ov_policy).mean() < 0.02


def test_requantising_replaces_the_twin_and_drops_its_int8_checks(quantized: Path, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(quantized, copy)
    record_check(copy, _accepted("openvino", 0.5))
    old_hash = read_manifest(BundleFiles(copy)).files["generator.int8.onnx"]
    obs = random_observations(read_manifest(BundleFiles(copy)).obs, 12, np.random.default_rng(5))
    report = quantize_bundle(copy, obs, "12 random observations (test)", held_out=4, max_error=0.5)
    twin = report.manifest.graphs[0].int8
    assert twin is not None and (twin.samples, twin.held_out_samples) == (8, 4)
    manifest = read_manifest(BundleFiles(copy))
    assert manifest.precision_checks == []
    assert manifest.files["generator.int8.onnx"] != old_hash
    assert sorted(p.name for p in copy.iterdir()) == [
        "generator.int8.onnx",
        "generator.onnx",
        "manifest.json",
    ]


def test_an_unquantised_bundle_refuses_int8_by_name():
    with pytest.raises(PrecisionError, match=r"int8 graphs, and it has none \(prt quantize\)"):
        load_policy(SHIPPED, options=RuntimeOptions(precision="int8", force_precision=True))


def _dataset(path: Path, episodes: list[int]) -> Path:
    schema = DatasetSchema(
        keys={
            "block_keypoints": FieldSpec(shape=(16,), dtype="float32", unit="m"),
            "ee_pose": FieldSpec(shape=(9,), dtype="float32", unit="m"),
            "action": FieldSpec(shape=(10,), dtype="float32", unit="m"),
            "timestamp": FieldSpec(shape=(), dtype="float64", unit="s"),
        },
        control_hz=10.0,
        robot="ur5",
        task="push_t",
        source="test",
    )
    with DatasetWriter(path, schema) as writer:
        for index, length in enumerate(episodes):
            step = np.arange(length, dtype=np.float32)[:, None]
            writer.add_episode(
                {
                    "block_keypoints": np.full((length, 16), 100 * index, np.float32) + step,
                    "ee_pose": np.zeros((length, 9), np.float32) + index,
                    "action": np.zeros((length, 10), np.float32),
                    "timestamp": step[:, 0].astype(np.float64) / 10.0,
                }
            )
    return path


def test_dataset_observations_are_windows_of_one_episode_padded_at_its_start(tmp_path: Path):
    path = _dataset(tmp_path / "d.zarr", [3, 5])
    obs, source = dataset_observations(path, ["block_keypoints", "ee_pose"], 2, 100, seed=0)
    keypoints = obs["block_keypoints"]
    assert keypoints.shape == (8, 2, 16) and obs["ee_pose"].shape == (8, 2, 9)
    # Every window: two consecutive steps of one episode, or its first step twice (padding).
    first, second = keypoints[:, 0, 0], keypoints[:, 1, 0]
    assert np.all(first // 100 == second // 100)
    assert np.all((second - first == 1) | ((first == second) & (first % 100 == 0)))
    assert str(path) in source and "8 observations" in source
    with pytest.raises(BundleError, match="no key 'wrist_rgb'"):
        dataset_observations(path, ["wrist_rgb"], 2, 4)


def test_prt_quantize_names_what_it_wrote_and_refuses_a_zip(tmp_path: Path):
    bundle = tmp_path / "bundle"
    shutil.copytree(SHIPPED, bundle)
    dataset = _dataset(tmp_path / "d.zarr", [20, 30])
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            *["quantize", str(bundle), "--dataset", str(dataset)],
            *["--observations", "16", "--held-out", "4", "--max-error", "0.5"],
        ],
    )
    assert result.exit_code == 0, result.output
    assert "generator.onnx -> generator.int8.onnx" in result.output
    assert "calibrated on 16)" in result.output and "prt calibrate-precision" in result.output
    archive = shutil.make_archive(str(tmp_path / "zipped"), "zip", bundle)
    result = runner.invoke(app, ["quantize", archive, "--dataset", str(dataset)])
    assert result.exit_code == 1
    assert "a zipped bundle cannot be changed" in result.output


def test_a_bound_no_int8_graph_meets_is_refused_by_name_and_nothing_is_written(quantized: Path):
    before = {p.name: p.read_bytes() for p in quantized.iterdir()}
    obs = random_observations(
        read_manifest(BundleFiles(quantized)).obs, 6, np.random.default_rng(3)
    )
    with pytest.raises(BundleError, match=r"generator\.onnx: held-out error .* exceeds"):
        quantize_bundle(quantized, obs, "test", held_out=2, max_error=0.0, max_reversions=2)
    assert {p.name: p.read_bytes() for p in quantized.iterdir()} == before
