"""Export to bundles and the torch-free runtime: round trips, refusals, providers, ``prt export``.

Real checkpoints (a few training steps on a generated dataset), real ONNX export, real
onnxruntime sessions; the runtime side runs in a subprocess that must never import torch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from policy_runtime.cli.main import app  # noqa: E402
from policy_runtime.export import bundle as bundle_module  # noqa: E402
from policy_runtime.export.bundle import ExportError, ExportOptions, export_bundle  # noqa: E402
from policy_runtime.inference import (  # noqa: E402
    BundleError,
    ObservationError,
    choose_providers,
    load_policy,
)
from policy_runtime.inference.torch_backend import load_torch_policy  # noqa: E402
from policy_runtime.training.config import load_config  # noqa: E402
from policy_runtime.training.trainer import Trainer  # noqa: E402
from sim_bridge.datagen import DatagenConfig, generate  # noqa: E402

OBS = ("joint_pos", "cube_pose", "bin_pos")
TOLERANCE = 1e-4
runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    data = root / "pp.zarr"
    generate(DatagenConfig(task="pick_place", episodes=3, out=data, obs=OBS))
    out = {}
    for kind in ("diffusion", "drifting", "bet"):
        overrides = [
            "model.down_dims=[16,32,64]",
            "model.step_embed_dim=16",
            "model.bet_bins=6",
            "model.bet_embed_dim=16",
            "batch_size=8",
            "steps=3",
            "checkpoint_every=3",
            "model.num_inference_steps=6",
        ]
        if kind == "bet":  # actions relative to the cube: the graph adds the observation back
            overrides.append("model.bet_relative_to=cube_pose")
        config = load_config(None, overrides, data=data, out=root / f"run_{kind}", policy=kind)
        Trainer(config).train()
        out[kind] = root / f"run_{kind}"
    return out


@pytest.fixture(scope="module")
def bundles(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    export_bundle(runs["diffusion"], root / "diffusion", ExportOptions(fuse_steps=(4,)))
    export_bundle(runs["drifting"], root / "drifting")
    export_bundle(runs["bet"], root / "bet")
    return {kind: root / kind for kind in ("diffusion", "drifting", "bet")}


def _obs(batch: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    shapes = {"joint_pos": (6,), "cube_pose": (7,), "bin_pos": (3,)}
    return {
        k: (rng.uniform(-0.5, 0.5, (*lead, 2, *s)) + 0.3).astype(np.float32)
        for k, s in shapes.items()
    }


# A deploy machine's view: only the runtime, and torch must stay out of the process.
RUNTIME_PROBE = """
import sys, numpy as np
from policy_runtime.inference import RuntimeOptions, load_policy
bundle, obs_file, noise_file, steps, out_file, backend = sys.argv[1:7]
policy = load_policy(bundle, options=RuntimeOptions(backend=backend))
obs = dict(np.load(obs_file))
chunk = policy.predict(obs, noise=np.load(noise_file), num_inference_steps=int(steps) or None)
np.save(out_file, chunk.actions)
assert "torch" not in sys.modules, "the runtime imported torch"
print("providers", policy.providers)
"""


@pytest.mark.parametrize(
    ("kind", "steps", "graph"),
    [
        ("diffusion", 6, "numpy loop"),
        ("diffusion", 4, "fused"),
        ("drifting", 0, "generator"),
        ("bet", 0, "transformer"),
    ],
)
@pytest.mark.parametrize(
    ("backend", "provider"), [("onnxruntime", "CPUExecutionProvider"), ("openvino", "OpenVINO:CPU")]
)
def test_bundle_runs_without_torch_and_matches_the_torch_policy(
    runs, bundles, tmp_path, kind, steps, graph, backend, provider
):
    """Same observations and noise (a BeT policy's: the uniforms choosing its bins), same
    actions: the bundle on onnxruntime or OpenVINO (fp32) + numpy in a process without torch,
    and the checkpoint."""
    obs = _obs(batch=2)
    rng = np.random.default_rng(1)
    if kind == "bet":
        noise = rng.random((2, 16), dtype=np.float32)
    else:
        noise = rng.standard_normal((2, 16, 10)).astype(np.float32)
    np.savez(tmp_path / "obs.npz", **obs)
    np.save(tmp_path / "noise.npy", noise)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNTIME_PROBE,
            str(bundles[kind]),
            str(tmp_path / "obs.npz"),
            str(tmp_path / "noise.npy"),
            str(steps),
            str(tmp_path / "out.npy"),
            backend,
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert provider in out.stdout
    ours = np.load(tmp_path / "out.npy")
    reference = load_torch_policy(runs[kind]).predict(
        obs, noise=noise, num_inference_steps=steps or None, sampler="ddim" if steps else None
    )
    assert ours.shape == reference.actions.shape == (2, 15, 10)  # H - To + 1 steps from t_obs
    policy = load_policy(bundles[kind])
    if steps:
        assert (policy.graph_for(steps, None) is not None) == (graph == "fused")
    scale = np.asarray(policy.manifest.action.normalization.scale, np.float32)
    assert np.max(np.abs((ours - reference.actions) * scale)) < TOLERANCE


def test_manifest_records_parity_hashes_and_what_the_runtime_needs(bundles):
    manifest = json.loads((bundles["diffusion"] / "manifest.json").read_text())
    assert manifest["format"] == "policy_runtime.bundle" and manifest["version"] == 1
    assert sorted(manifest["files"]) == ["ddim4.onnx", "denoiser.onnx", "obs_encoder.onnx"]
    assert [g["role"] for g in manifest["graphs"]] == ["obs_encoder", "denoiser", "fused"]
    assert manifest["control_hz"] == 10.0
    assert manifest["obs"]["n_obs_steps"] == 2
    assert [k["key"] for k in manifest["obs"]["keys"]] == sorted(OBS)
    assert manifest["action"]["representation"] == "ee" and manifest["action"]["horizon"] == 16
    assert "start" not in manifest["action"]  # the default layout: as before the field existed
    assert manifest["sampler"]["kind"] == "ddim" and manifest["sampler"]["num_inference_steps"] == 6
    assert manifest["provenance"]["checkpoint_step"] == 3
    parity = manifest["parity"]
    assert len(parity) == 5  # three graphs, the runtime's loop and its fused graph
    assert all(p["max_abs_error"] <= p["tolerance"] == TOLERANCE for p in parity)
    assert manifest["parity"][-1]["compared"].startswith("runtime DDIM 4 steps (fused graph)")


def test_a_bet_bundle_records_its_sampler_and_samples_the_bins_in_numpy(runs, bundles):
    manifest = json.loads((bundles["bet"] / "manifest.json").read_text())
    assert manifest["kind"] == "bet" and sorted(manifest["files"]) == ["transformer.onnx"]
    (graph,) = manifest["graphs"]
    assert graph["role"] == "transformer"
    assert [(o["name"], o["shape"]) for o in graph["outputs"]] == [
        ("logits", [-1, 16, 6]),
        ("bin_actions", [-1, 16, 6, 10]),
    ]
    assert manifest["sampler"] == {**manifest["sampler"], "kind": "categorical", "temperature": 1.0}
    assert all(p["max_abs_error"] <= p["tolerance"] == TOLERANCE for p in manifest["parity"])
    # The same rng state, the same chunk; the chunk is one of each step's bin actions.
    policy = load_policy(bundles["bet"])
    obs = _obs()
    first = policy.predict(obs, np.random.default_rng(5)).actions
    np.testing.assert_array_equal(first, policy.predict(obs, np.random.default_rng(5)).actions)
    assert not np.array_equal(first, policy.predict(obs, np.random.default_rng(6)).actions)
    out = policy._runners["transformer.onnx"].run_all({f"obs.{k}": v[None] for k, v in obs.items()})
    logits, bin_actions = out["logits"], out["bin_actions"]
    scale, offset = (np.asarray(a, np.float32) for a in policy.specs.action.normalization.arrays())
    normalized = first * scale + offset
    distance = np.abs(bin_actions[0, 1:] - normalized[:, None]).max(axis=-1).min(axis=-1)
    assert distance.max() < 1e-5
    # A temperature near 0 is argmax: each step takes its most likely bin, in both backends.
    policy.set_temperature(1e-6)
    greedy = policy.predict(obs, np.random.default_rng(0)).actions * scale + offset
    best = np.take_along_axis(bin_actions[0], logits[0].argmax(-1)[:, None, None], axis=1)[:, 0]
    np.testing.assert_allclose(greedy, best[1:], atol=1e-6)
    reference = load_torch_policy(runs["bet"])
    reference.set_temperature(1e-6)
    torch_greedy = reference.predict(obs, np.random.default_rng(1)).actions * scale + offset
    np.testing.assert_allclose(torch_greedy, best[1:], atol=1e-5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        policy.set_temperature(0.0)
    with pytest.raises(ValueError, match="a diffusion policy has no bins to sample"):
        load_policy(bundles["diffusion"]).set_temperature(0.5)


def test_one_d_convolutions_are_exported_as_two_d_with_the_same_result(bundles):
    import onnx

    from policy_runtime.export.graphs import conv1d_as_conv2d

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv1d(6, 8, 5, padding=2),
        torch.nn.Conv1d(8, 8, 3, stride=2, padding=1, bias=False),
        torch.nn.Conv1d(8, 4, 1, groups=2),
    )
    converted = conv1d_as_conv2d(module)
    x = torch.randn(3, 6, 16)
    assert isinstance(module[0], torch.nn.Conv1d)  # the original is left alone
    assert all(isinstance(m.conv, torch.nn.Conv2d) for m in converted)
    torch.testing.assert_close(converted(x), module(x), rtol=0, atol=1e-6)
    graph = onnx.load(bundles["diffusion"] / "denoiser.onnx").graph
    weights = {i.name: len(i.dims) for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(weights[n.input[1]] == 4 for n in convs)


def test_chunks_are_stamped_from_the_newest_observation_and_batches_match_singles(bundles):
    policy = load_policy(bundles["diffusion"])
    obs = _obs(batch=3)
    noise = np.random.default_rng(2).standard_normal((3, 16, 10)).astype(np.float32)
    batch = policy.predict(obs, noise=noise)
    assert batch.actions.shape == (3, 15, 10) and batch.n_action_steps == 8
    # Simulated demonstrations record the target reached at the end of each step, and the
    # bundle carries that timing: the action aligned with the newest observation is due 0.1 s
    # after it.
    assert policy.specs.action.offset_steps == 1
    np.testing.assert_allclose(batch.stamps, np.arange(1, 16) * 0.1)
    for i in range(3):
        single = policy.predict({k: v[i] for k, v in obs.items()}, noise=noise[i])
        np.testing.assert_allclose(single.actions, batch.actions[i], atol=1e-5)
    a = policy.predict(_obs(), np.random.default_rng(7), sampler="ddpm", num_inference_steps=5)
    b = policy.predict(_obs(), np.random.default_rng(7), sampler="ddpm", num_inference_steps=5)
    c = policy.predict(_obs(), np.random.default_rng(8), sampler="ddpm", num_inference_steps=5)
    np.testing.assert_array_equal(a.actions, b.actions)  # DDPM: reproducible from the rng
    assert not np.allclose(a.actions, c.actions)


def test_a_manifest_start_moves_the_chunk_and_older_manifests_read_as_before(bundles, tmp_path):
    """``action.start`` (an imported layout) cuts the predicted horizon there instead of at
    ``n_obs_steps - 1``; the stamps still count from the chunk's first action."""
    noise = np.random.default_rng(3).standard_normal((16, 10)).astype(np.float32)
    default = load_policy(bundles["diffusion"])
    assert (default.chunk_start, default.chunk_length) == (1, 15)
    bundle = _copy(bundles, "diffusion", tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["action"]["start"] = 4
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    moved = load_policy(bundle)
    assert (moved.chunk_start, moved.chunk_length) == (4, 12)
    chunk = moved.predict(_obs(), noise=noise)
    reference = default.predict(_obs(), noise=noise)
    np.testing.assert_allclose(chunk.actions, reference.actions[3:], atol=1e-6)
    np.testing.assert_allclose(chunk.stamps, np.arange(1, 13) * 0.1)  # offset_steps 1
    manifest["action"]["start"] = 1  # the default, written out: the same policy
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert load_policy(bundle).chunk_length == 15


def test_zip_bundle_loads(bundles, tmp_path):
    archive = tmp_path / "drifting.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in bundles["drifting"].iterdir():
            z.write(path, path.name)
    policy = load_policy(archive)
    assert policy.predict(_obs(), np.random.default_rng(0)).actions.shape == (15, 10)


def _copy(bundles: dict[str, Path], kind: str, tmp_path: Path) -> Path:
    target = tmp_path / kind
    shutil.copytree(bundles[kind], target)
    return target


def test_tampered_graph_is_refused_naming_the_file(bundles, tmp_path):
    bundle = _copy(bundles, "diffusion", tmp_path)
    graph = bundle / "denoiser.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"denoiser\.onnx: sha256 .* field 'files\.denoiser"):
        load_policy(bundle)


def test_missing_graph_is_refused_naming_the_file(bundles, tmp_path):
    bundle = _copy(bundles, "drifting", tmp_path)
    (bundle / "generator.onnx").unlink()
    with pytest.raises(BundleError, match=r"file 'generator\.onnx' is missing"):
        load_policy(bundle)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(version=2), "field 'version' is 2"),
        (lambda m: m.update(format="other"), "field 'format'"),
        (lambda m: m["action"].update(dim=7), "action.dim"),
        (
            lambda m: m["action"].update(start=9),
            r"action.start \+ n_action_steps \(17\) exceeds horizon 16",
        ),
        (lambda m: m["obs"]["keys"][0].update(shape="x"), "field 'obs.keys.0.shape'"),
        (lambda m: m.update(surprise=1), "field 'surprise'"),
        (lambda m: m["files"].pop("denoiser.onnx"), "denoiser.onnx' has no sha256"),
    ],
)
def test_bad_manifest_is_refused_naming_the_field(bundles, tmp_path, edit, message):
    bundle = _copy(bundles, "diffusion", tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        load_policy(bundle)


def test_a_graph_that_does_not_match_the_manifest_is_refused(bundles, tmp_path):
    bundle = _copy(bundles, "diffusion", tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["graphs"][1]["inputs"][1]["dtype"] = "float32"  # the timestep is int64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"denoiser\.onnx: the graph's inputs"):
        load_policy(bundle)


def test_wrong_observations_are_refused_naming_the_key(bundles):
    policy = load_policy(bundles["drifting"])
    obs = _obs()
    with pytest.raises(ObservationError, match=r"'cube_pose' must be \(2, 7\)"):
        policy.predict({**obs, "cube_pose": np.zeros((2, 6), np.float32)})
    with pytest.raises(ObservationError, match="'bin_pos' is missing"):
        policy.predict({k: v for k, v in obs.items() if k != "bin_pos"})
    with pytest.raises(ObservationError, match="'joint_pos' holds NaN"):
        policy.predict({**obs, "joint_pos": np.full((2, 6), np.nan, np.float32)})
    with pytest.raises(ObservationError, match="'joint_pos' must be floating point"):
        policy.predict({**obs, "joint_pos": np.zeros((2, 6), np.int32)})
    with pytest.raises(ValueError, match="noise must be"):
        policy.predict(obs, noise=np.zeros((16, 9), np.float32))


def test_provider_choice_falls_back_with_reasons_and_refuses_a_missing_explicit_one():
    chosen, reasons = choose_providers(None, ["CPUExecutionProvider"])
    assert chosen == ["CPUExecutionProvider"]
    assert reasons == [
        "TensorrtExecutionProvider: not in this onnxruntime build",
        "CUDAExecutionProvider: not in this onnxruntime build",
    ]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, gpu) == (gpu, [])
    assert choose_providers(["cuda", "cpu"], gpu)[0] == gpu[1:]
    with pytest.raises(ValueError, match=r"\['CUDAExecutionProvider'\] not available"):
        choose_providers(["cuda"], ["CPUExecutionProvider"])


def test_export_refuses_beyond_tolerance_and_writes_nothing(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_module, "FP32_TOLERANCE", 0.0)
    with pytest.raises(ExportError, match="exceeds the tolerance 0; nothing was written"):
        export_bundle(runs["drifting"], tmp_path / "b")
    assert not (tmp_path / "b").exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ExportError, match="only a diffusion policy"):
        export_bundle(runs["drifting"], tmp_path / "b", ExportOptions(fuse_steps=(4,)))


def test_fp16_export_keeps_float32_io_within_its_tolerance(runs, tmp_path):
    manifest = export_bundle(runs["drifting"], tmp_path / "b16", ExportOptions(fp16=True))
    assert manifest.graphs[0].precision == "fp16"
    checked, recorded = manifest.parity[0], manifest.parity[1:]
    assert checked.compared.endswith("in half precision")
    assert checked.max_abs_error <= checked.tolerance == 1e-2
    assert [p.tolerance for p in recorded] == [None, None]  # vs float32: a figure, not a check
    chunk = load_policy(tmp_path / "b16").predict(_obs(), np.random.default_rng(0))
    assert chunk.actions.dtype == np.float32 and np.isfinite(chunk.actions).all()


def test_cli_export_prints_parity_and_fails_cleanly(runs, tmp_path):
    result = runner.invoke(
        app,
        ["export", "--checkpoint", str(runs["drifting"]), "--out", str(tmp_path / "b")],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "generator.onnx" in result.output and "max |torch - onnxruntime|" in result.output
    assert (tmp_path / "b" / "manifest.json").is_file()
    fused = ["--fuse-steps", "4"]
    bad = runner.invoke(
        app, ["export", "--checkpoint", str(runs["drifting"]), "--out", str(tmp_path / "c"), *fused]
    )
    assert bad.exit_code == 1 and "only a diffusion policy" in bad.output
    assert not (tmp_path / "c").exists()
    missing = runner.invoke(
        app, ["export", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "d")]
    )
    assert missing.exit_code == 1 and "neither a checkpoint" in missing.output


def test_prt_eval_runs_a_bundle_through_the_deployed_stack_and_reports_it(bundles, tmp_path):
    """Three training steps make a policy whose actions fall anywhere in the demos' range:
    the stack refuses to start toward a first action that far from the arm, and the log and
    the table say so, per episode and in total; without the stack there is nothing to report."""
    result = runner.invoke(
        app,
        [
            *["eval", "--policy", str(bundles["drifting"]), "--task", "pick_place"],
            *["--episodes", "1", "--max-steps", "8", "--out", str(tmp_path / "eval")],
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "interventions/ep" in result.output
    log = json.loads((tmp_path / "eval" / "eval_log.json").read_text())
    assert log["policy"]["kind"] == "drifting" and log["episodes"][0]["steps"] == 8
    assert log["config"]["safety"] is True
    assert log["config"]["executor"]["loop"]["controller_hz"] == 125.0
    episode = log["episodes"][0]
    assert set(episode) >= {"interventions", "holds"}
    assert episode["holds"] == log["summary"]["holds"] and episode["holds"]["resuming"] > 0
    assert episode["holds"]["chunk_far_from_arm"] > 0
    off = runner.invoke(
        app,
        [
            *["eval", "--policy", str(bundles["drifting"]), "--task", "pick_place", "--no-safety"],
            *["--episodes", "1", "--max-steps", "8", "--out", str(tmp_path / "off")],
        ],
        env={"COLUMNS": "200"},
    )
    assert off.exit_code == 0, off.output
    off_log = json.loads((tmp_path / "off" / "eval_log.json").read_text())
    assert off_log["config"]["safety"] is False
    assert off_log["episodes"][0]["holds"] == {} and off_log["summary"]["interventions"] == {}


def test_prt_eval_samples_a_bet_policy_at_the_temperature_asked_and_refuses_it_elsewhere(
    bundles, tmp_path
):
    args = ["eval", "--task", "pick_place", "--episodes", "1", "--max-steps", "4"]
    result = runner.invoke(
        app,
        [*args, "--policy", str(bundles["bet"]), "--temperature", "0.3", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    log = json.loads((tmp_path / "eval_log.json").read_text())
    assert log["policy"]["kind"] == "bet" and log["config"]["temperature"] == 0.3
    refused = runner.invoke(
        app,
        [
            *args,
            "--policy",
            str(bundles["diffusion"]),
            "--temperature",
            "0.3",
            "--out",
            str(tmp_path / "d"),
        ],
    )
    assert refused.exit_code == 1
    assert "a diffusion policy has no bins to sample" in refused.output


class _Prefix:
    def __init__(self, actions: np.ndarray, weights: np.ndarray) -> None:
        self.actions, self.weights = actions, weights


def test_rtc_guidance_inpaints_the_committed_prefix_in_both_backends(runs, bundles):
    policy = load_policy(bundles["diffusion"])
    reference = load_torch_policy(runs["diffusion"])
    obs = _obs()
    noise = np.random.default_rng(3).standard_normal((16, 10)).astype(np.float32)
    free = policy.predict(obs, noise=noise)
    spec = policy.manifest.action
    low, high = np.asarray(spec.low, np.float32), np.asarray(spec.high, np.float32)
    committed = low + (high - low) * np.linspace(0.2, 0.8, 15, dtype=np.float32)[:, None]
    weights = np.r_[np.ones(4), np.linspace(1, 0, 6)[1:], np.zeros(6)].astype(np.float32)
    guided = policy.predict(obs, noise=noise, prefix=_Prefix(committed, weights))
    # Fully weighted steps continue the committed plan exactly; unweighted steps stay free
    # to differ, and the unguided chunk is untouched by a zero mask.
    np.testing.assert_allclose(guided.actions[:4], committed[:4], atol=1e-5)
    assert not np.allclose(free.actions[:4], committed[:4], atol=1e-2)
    zero = policy.predict(obs, noise=noise, prefix=_Prefix(committed, np.zeros(15, np.float32)))
    np.testing.assert_allclose(zero.actions, free.actions, atol=1e-6)
    # The torch backend applies the same guidance between diffusers' steps.
    torch_guided = reference.predict(obs, noise=noise, prefix=_Prefix(committed, weights))
    scale = np.asarray(spec.normalization.scale, np.float32)
    assert np.max(np.abs((torch_guided.actions - guided.actions) * scale)) < TOLERANCE
    # A fused graph cannot be guided: with a prefix the runtime takes the step loop.
    fused = policy.predict(
        obs, noise=noise, num_inference_steps=4, prefix=_Prefix(committed, weights)
    )
    np.testing.assert_allclose(fused.actions[:4], committed[:4], atol=1e-5)


@pytest.mark.parametrize("kind", ["drifting", "bet"])
def test_one_step_policy_picks_the_candidate_that_best_continues_the_prefix(bundles, kind):
    policy = load_policy(bundles[kind])
    obs = _obs()
    committed = policy.predict(obs, np.random.default_rng(9)).actions
    weights = np.r_[np.ones(5), np.zeros(10)].astype(np.float32)
    best = policy.predict(
        obs, np.random.default_rng(4), prefix=_Prefix(committed, weights), candidates=6
    )
    # The same six candidates, drawn by hand: the chosen one has the smallest weighted cost.
    noise = policy.draw_noise(np.random.default_rng(4), policy.noise_shape(6))
    options = [policy.predict(obs, noise=n).actions for n in noise]
    scale = np.asarray(policy.manifest.action.normalization.scale, np.float32)
    costs = [float((weights[:, None] * ((o - committed) * scale) ** 2).sum()) for o in options]
    np.testing.assert_allclose(best.actions, options[int(np.argmin(costs))], atol=1e-5)
    assert min(costs) < float(np.median(costs))


def test_prt_bench_inference_times_a_bundle(bundles):
    result = runner.invoke(
        app,
        [
            *["bench", "inference", "--bundle", str(bundles["diffusion"]), "--steps", "4"],
            *["--repeats", "3", "--threads", "1"],
        ],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "DDIM 4" in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[0] == "diffusion" and cells[2] == "-"  # no torch column for a bundle
    assert float(cells[3].split("/")[0]) > 0 and cells[7] != "-"  # loop and fused graph timed
    # Then every backend x precision here (OpenVINO is installed by scripts/setup).
    settings = {
        cell.strip()
        for line in result.output.splitlines()
        if "DDIM 4" in line
        for cell in line.split("│")
        if cell.strip().startswith(("onnxruntime ", "openvino "))
    }
    assert {"onnxruntime fp32", "openvino fp32"} <= settings
    assert "recommended here: --backend" in result.output
