"""``prt import dp``: Diffusion Policy's own checkpoint fixture (written by DP's code) imported
into our checkpoint, exported to a bundle, and both reproduce DP's own actions; its
``oa_step_convention: false`` and ``pred_action_steps_only`` variants (derived from the fixture)
reproduce a transcription of DP's ``predict_action`` and are stamped where their data places
them; without ``--trust`` nothing is unpickled; unsupported variants are refused by name."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("dill", reason="the trusted DP load needs dill")
pytest.importorskip("omegaconf", reason="the trusted DP load needs omegaconf")

from policy_runtime.importers.diffusion_policy import (  # noqa: E402
    ImportRefused,
    _unpickle_in_child,
    convert,
)
from tests.ros_graph import BIN  # noqa: E402
from tests.test_dp_golden import CHECKPOINT, GOLDEN, TOLERANCE  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (CHECKPOINT.is_file() and GOLDEN.is_file()),
    reason=f"Diffusion Policy fixture not found ({CHECKPOINT})",
)


def prt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "prt"), *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("import") / "dp"
    done = prt("import", "dp", str(CHECKPOINT), "--out", str(out), "--trust")
    assert done.returncode == 0, done.stderr
    assert "horizon 16, ddim 10 steps" in done.stdout
    return out


def _normalised_error(actions: dict[str, np.ndarray], golden: dict, scale: np.ndarray) -> float:
    """Largest |ours - DP| over action_pred and action, in the normalised action space the
    network works in ([-1, 1]; PushT actions are pixels up to ~512)."""
    errors = [
        float((np.abs(actions[key] - np.asarray(golden[key], np.float32)) * scale).max())
        for key in ("action_pred", "action")
    ]
    return max(errors)


def test_the_imported_checkpoint_reproduces_dps_actions(imported: Path, golden: dict) -> None:
    from policy_runtime.training.checkpoint import load_policy, read_header

    header = read_header(imported)
    assert header["imported_from"]["format"] == "diffusion_policy.ckpt"
    assert header["imported_from"]["ema"] is True
    policy = load_policy(imported)  # the EMA weights, as DP's golden outputs used
    out = policy.predict_action(
        {"obs": torch.tensor(golden["obs"])}, noise=torch.tensor(golden["initial_noise"])
    )
    scale = policy.normalizer.maps["action"].scale
    error = _normalised_error({k: v.numpy() for k, v in out.items()}, golden, scale)
    print(f"imported checkpoint: max |ours - DP| = {error:.2e} (normalised)")
    assert error < TOLERANCE


def test_its_bundle_reproduces_dps_actions_without_torch(
    imported: Path, golden: dict, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    done = prt("export", "--checkpoint", str(imported), "--out", str(bundle))
    assert done.returncode == 0, done.stderr
    script = f"""
import json, sys
import numpy as np
from policy_runtime.inference import load_policy
golden = json.loads(open({str(GOLDEN)!r}).read())
runtime = load_policy({str(bundle)!r})
chunk = runtime.predict({{"obs": np.asarray(golden["obs"], np.float32)}},
                        noise=np.asarray(golden["initial_noise"], np.float32))
assert "torch" not in sys.modules, "the runtime imported torch"
print(json.dumps(chunk.actions.tolist()))
"""
    run = subprocess.run(
        [str(BIN / "python"), "-c", script], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    action = np.asarray(json.loads(run.stdout), np.float32)
    from policy_runtime.training.checkpoint import load_normalizer

    scale = load_normalizer(imported).maps["action"].scale
    # The runtime returns the chunk from the newest observation to the horizon's end: DP's
    # action_pred from index n_obs_steps - 1, whose first n_action_steps are DP's ``action``.
    expected = np.asarray(golden["action_pred"], np.float32)[:, 1:]
    error = float((np.abs(action - expected) * scale).max())
    print(f"bundle on onnxruntime: max |ours - DP| = {error:.2e} (normalised)")
    assert action.shape == expected.shape and error < TOLERANCE


def test_without_trust_nothing_is_unpickled(tmp_path: Path) -> None:
    """A pickle that would leave a file behind when unpickled: refused without --trust, the
    file never appears, nothing is written."""
    marker = tmp_path / "pickle_ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    malicious = tmp_path / "evil.ckpt"
    malicious.write_bytes(pickle.dumps(Payload()))
    out = tmp_path / "out"
    done = prt("import", "dp", str(malicious), "--out", str(out))
    assert done.returncode == 1
    assert "refused: a Diffusion Policy checkpoint is a pickle" in done.stderr
    assert "--trust" in done.stderr
    assert not marker.exists() and not out.exists()


def test_a_file_that_is_not_a_dp_checkpoint_is_named(tmp_path: Path) -> None:
    other = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}}, other)
    done = prt("import", "dp", str(other), "--out", str(tmp_path / "out"), "--trust")
    assert done.returncode == 1
    assert "not a Diffusion Policy workspace checkpoint" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def unpickled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    cfg, states, _ = _unpickle_in_child(CHECKPOINT, tmp_path_factory.mktemp("staging"))
    return cfg, states


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("policy", "_target_"),
            "diffusion_policy.policy.diffusion_transformer_hybrid_image_policy."
            "DiffusionTransformerHybridImagePolicy",
            r"policy._target_ .*DiffusionTransformerHybridImagePolicy: only .*LowdimPolicy",
        ),
        (("n_latency_steps",), 2, r"n_latency_steps: 2 is not supported"),
        (("policy", "obs_as_global_cond"), False, r"policy.obs_as_global_cond: False"),
        (("policy", "noise_scheduler", "steps_offset"), 1, r"noise_scheduler.steps_offset: 1"),
        (
            ("policy", "noise_scheduler", "_target_"),
            "diffusers.schedulers.scheduling_dpmsolver_multistep.DPMSolverMultistepScheduler",
            r"noise_scheduler._target_ .*DPMSolverMultistepScheduler: only",
        ),
    ],
)
def test_unsupported_variants_are_refused_by_name(
    unpickled: tuple[dict, dict], path: tuple[str, ...], value: Any, message: str
) -> None:
    cfg, states = unpickled
    changed = copy.deepcopy(cfg)
    node = changed
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    with pytest.raises(ImportRefused, match=message):
        convert(changed, states)


def test_ddpm_is_imported_with_its_settings(unpickled: tuple[dict, dict]) -> None:
    cfg, states = unpickled
    changed = copy.deepcopy(cfg)
    scheduler = changed["policy"]["noise_scheduler"]
    scheduler["_target_"] = "diffusers.schedulers.scheduling_ddpm.DDPMScheduler"
    for name in ("set_alpha_to_one", "steps_offset"):  # DDIM's own settings
        scheduler.pop(name, None)
    scheduler["variance_type"] = "fixed_small"
    changed["policy"]["num_inference_steps"] = 100
    config, _, weights = convert(changed, states)
    assert (config.sampler, config.num_inference_steps) == ("ddpm", 100)
    assert set(weights) == {"model", "ema_model"}
    scheduler["variance_type"] = "fixed_large"
    with pytest.raises(ImportRefused, match=r"noise_scheduler\.variance_type: .fixed_large."):
        convert(changed, states)


# --- DP's other layouts of the executed actions, derived from the fixture -------------------
#: name -> (policy settings changed, our horizon, chunk_start, action_offset_steps). The
#: fixture is oa_step_convention: true, horizon 16, n_obs_steps 2, n_action_steps 8.
VARIANTS: dict[str, tuple[dict[str, bool], int, int, int]] = {
    "oa_step_convention": ({}, 16, 1, 0),
    "no_oa_step_convention": ({"oa_step_convention": False}, 16, 2, 1),
    "pred_action_steps_only": ({"pred_action_steps_only": True}, 8, 0, 0),
    "pred_action_steps_only_no_oa": (
        {"pred_action_steps_only": True, "oa_step_convention": False},
        8,
        0,
        1,
    ),
}


def dp_predict_action(
    cfg: dict[str, Any], state: dict[str, Any], obs: Any, noise: Any
) -> dict[str, Any]:
    """Diffusion Policy's ``DiffusionUnetLowdimPolicy.predict_action`` for global conditioning
    (``diffusion_policy/policy/diffusion_unet_lowdim_policy.py`` at upstream 548a52b: lines
    99-177, with ``conditional_sample``, lines 59-96), transcribed: DP's normaliser
    arithmetic, a diffusers scheduler built from the checkpoint's own settings, and DP's
    slicing for ``pred_action_steps_only`` / ``oa_step_convention``. The network is our
    ConditionalUnet1D with the checkpoint's ``model.*`` EMA weights (the U-Net is fully
    convolutional, so the fixture's weights serve the ``n_action_steps``-long sample of
    ``pred_action_steps_only`` as they do the horizon). ``noise`` replaces the
    ``torch.randn(size=condition_data.shape)`` draw."""
    import diffusers

    from policy_runtime.policies.unet1d import ConditionalUnet1D

    policy, model_cfg = cfg["policy"], cfg["policy"]["model"]
    model = ConditionalUnet1D(
        input_dim=model_cfg["input_dim"],
        global_cond_dim=model_cfg["global_cond_dim"],
        diffusion_step_embed_dim=model_cfg["diffusion_step_embed_dim"],
        down_dims=model_cfg["down_dims"],
        kernel_size=model_cfg["kernel_size"],
        n_groups=model_cfg["n_groups"],
        cond_predict_scale=model_cfg["cond_predict_scale"],
    )
    model.load_state_dict(
        {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")},
        strict=True,
    )
    model.eval()
    settings = dict(policy["noise_scheduler"])
    scheduler_class = getattr(diffusers, settings.pop("_target_").rsplit(".", 1)[1])
    scheduler = scheduler_class(**settings)
    norm = "normalizer.params_dict"
    pred_action_steps_only = policy.get("pred_action_steps_only", False)
    oa_step_convention = policy.get("oa_step_convention", False)
    n_action_steps = policy["n_action_steps"]
    num_inference_steps = policy.get("num_inference_steps")
    if num_inference_steps is None:
        num_inference_steps = scheduler.config.num_train_timesteps

    with torch.no_grad():
        # nobs = self.normalizer['obs'].normalize(obs_dict['obs'])  (x * scale + offset)
        nobs = obs * state[f"{norm}.obs.scale"] + state[f"{norm}.obs.offset"]
        B, _, Do = nobs.shape
        To = policy["n_obs_steps"]
        assert Do == policy["obs_dim"]
        T = policy["horizon"]
        Da = policy["action_dim"]
        # elif self.obs_as_global_cond:
        global_cond = nobs[:, :To].reshape(nobs.shape[0], -1)
        shape = (B, T, Da)
        if pred_action_steps_only:
            shape = (B, n_action_steps, Da)
        cond_data = torch.zeros(size=shape)
        cond_mask = torch.zeros_like(cond_data, dtype=torch.bool)
        # conditional_sample
        trajectory = noise.clone()
        assert trajectory.shape == cond_data.shape
        scheduler.set_timesteps(num_inference_steps)
        for t in scheduler.timesteps:
            trajectory[cond_mask] = cond_data[cond_mask]
            model_output = model(trajectory, t, global_cond=global_cond)  # local_cond=None
            trajectory = scheduler.step(model_output, t, trajectory).prev_sample
        trajectory[cond_mask] = cond_data[cond_mask]
        nsample = trajectory
        # unnormalize prediction
        naction_pred = nsample[..., :Da]
        action_pred = (naction_pred - state[f"{norm}.action.offset"]) / state[
            f"{norm}.action.scale"
        ]
        # get action
        if pred_action_steps_only:
            action = action_pred
        else:
            start = To
            if oa_step_convention:
                start = To - 1
            end = start + n_action_steps
            action = action_pred[:, start:end]
    return {"action": action, "action_pred": action_pred}


def _variant_cfg(cfg: dict[str, Any], changes: dict[str, bool]) -> dict[str, Any]:
    changed = copy.deepcopy(cfg)
    changed["policy"].update(changes)
    return changed


def _variant_noise(golden: dict[str, Any], horizon: int) -> Any:
    """The golden initial noise, its first ``horizon`` steps (the U-Net's sample length)."""
    return torch.tensor(golden["initial_noise"], dtype=torch.float32)[:, :horizon]


@pytest.fixture(scope="module")
def variant_bundles(
    unpickled: tuple[dict, dict], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Each changed variant through ``import_checkpoint`` (its config in place of what the
    child process unpickled) and ``export_bundle``; name -> bundle. (The fixture's own layout
    has its bundle test above.)"""
    from policy_runtime.export.bundle import export_bundle
    from policy_runtime.importers import diffusion_policy as dp_import

    cfg, states = unpickled
    root = tmp_path_factory.mktemp("variants")
    bundles = {}
    for name, (changes, *_) in VARIANTS.items():
        if not changes:
            continue
        changed = _variant_cfg(cfg, changes)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                dp_import, "_unpickle_in_child", lambda *_, cfg=changed: (cfg, states, {"epoch": 0})
            )
            dp_import.import_checkpoint(CHECKPOINT, root / name, trust=True)
        export_bundle(root / name, root / f"{name}.bundle")
        bundles[name] = root / f"{name}.bundle"
    return bundles


@pytest.mark.parametrize("name", list(VARIANTS))
def test_dp_layout_variants_reproduce_dps_predict_action(
    unpickled: tuple[dict, dict], golden: dict, name: str
) -> None:
    """Our policy, converted from the variant's config, against the transcription of DP's
    ``predict_action``: the same executed actions (and whole prediction), in the layout and
    timing DP's data gives them. The unchanged fixture also checks the transcription against
    DP's own golden outputs."""
    from policy_runtime.policies import make_policy

    cfg, states = unpickled
    changes, horizon, chunk_start, offset = VARIANTS[name]
    changed = _variant_cfg(cfg, changes)
    config, normalizer, weights = convert(changed, states)
    assert (config.horizon, config.chunk_start, config.action_offset_steps) == (
        horizon,
        chunk_start,
        offset,
    )
    assert config.n_action_steps == 8 and config.n_obs_steps == 2
    policy = make_policy(config, normalizer)
    policy.load_state_dict(weights["ema_model"], strict=True)
    policy.eval()
    obs = torch.tensor(golden["obs"], dtype=torch.float32)
    noise = _variant_noise(golden, horizon)
    ours = policy.predict_action({"obs": obs}, noise=noise)
    theirs = dp_predict_action(changed, states["ema_model"], obs, noise)
    scale = normalizer.maps["action"].scale
    for key in ("action", "action_pred"):
        assert ours[key].shape == theirs[key].shape, key
        error = float((np.abs(ours[key].numpy() - theirs[key].numpy()) * scale).max())
        print(f"{name} {key}: max |ours - DP| = {error:.2e} (normalised)")
        assert error < TOLERANCE, (key, error)
    assert ours["action"].shape == (2, 8, 2)
    if not changes:  # the transcription is DP's code: it reproduces DP's own outputs
        error = _normalised_error({k: v.numpy() for k, v in theirs.items()}, golden, scale)
        assert error < TOLERANCE
    # The executed actions are the prediction's from chunk_start (all of it where DP predicts
    # only those).
    torch.testing.assert_close(
        ours["action"], ours["action_pred"][:, chunk_start : chunk_start + 8]
    )


def test_dp_layout_variants_bundles_run_without_torch(
    unpickled: tuple[dict, dict], golden: dict, variant_bundles: dict[str, Path]
) -> None:
    """Each variant's bundle on onnxruntime (no torch): the chunk from DP's first executed
    action on, whose first ``n_action_steps`` are DP's ``action``, action ``i`` stamped
    ``(i + offset) / control_hz`` (a step later without ``oa_step_convention``)."""
    cfg, states = unpickled
    requests = {
        name: (str(bundle), _variant_noise(golden, VARIANTS[name][1]).tolist())
        for name, bundle in variant_bundles.items()
    }
    script = f"""
import json, sys
import numpy as np
from policy_runtime.inference import load_policy
obs = np.asarray(json.loads({json.dumps(golden["obs"])!r}), np.float32)
out = {{}}
for name, (bundle, noise) in json.loads({json.dumps(requests)!r}).items():
    runtime = load_policy(bundle)
    chunk = runtime.predict({{"obs": obs}}, noise=np.asarray(noise, np.float32))
    out[name] = {{"actions": chunk.actions.tolist(), "stamps": chunk.stamps.tolist(),
                 "n_action_steps": chunk.n_action_steps, "start": runtime.chunk_start}}
assert "torch" not in sys.modules, "the runtime imported torch"
print(json.dumps(out))
"""
    run = subprocess.run(
        [str(BIN / "python"), "-c", script], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    obs = torch.tensor(golden["obs"], dtype=torch.float32)
    scale = states["ema_model"]["normalizer.params_dict.action.scale"].numpy()
    for name, got in results.items():
        changes, horizon, chunk_start, offset = VARIANTS[name]
        theirs = dp_predict_action(
            _variant_cfg(cfg, changes), states["ema_model"], obs, _variant_noise(golden, horizon)
        )
        actions = np.asarray(got["actions"], np.float32)
        # The chunk runs from DP's first executed action to the prediction's end.
        expected = theirs["action_pred"].numpy()[:, chunk_start:]
        assert actions.shape == expected.shape, name
        assert got["start"] == chunk_start and got["n_action_steps"] == 8, name
        error = float((np.abs(actions[:, :8] - theirs["action"].numpy()) * scale).max())
        print(f"{name} bundle: max |ours - DP| = {error:.2e} (normalised)")
        assert error < TOLERANCE, (name, error)
        assert float((np.abs(actions - expected) * scale).max()) < TOLERANCE, name
        np.testing.assert_allclose(got["stamps"], (np.arange(horizon - chunk_start) + offset) / 10)


def test_a_dp_checkpoint_without_oa_step_convention_imports_from_the_command_line(
    tmp_path: Path,
) -> None:
    """A real ``.ckpt`` of the variant (the fixture re-saved by DP's pickling with the
    setting changed) through ``prt import dp``: the child process's unpickling, the layout in
    its summary and in the checkpoint's config."""
    import dill

    from policy_runtime.training.checkpoint import read_header

    # weights_only=False executes pickle: allowed only for this explicitly trusted fixture.
    payload = torch.load(CHECKPOINT, map_location="cpu", weights_only=False, pickle_module=dill)
    payload["cfg"].policy.oa_step_convention = False
    variant = tmp_path / "no_oa.ckpt"
    torch.save(payload, variant, pickle_module=dill)
    out = tmp_path / "dp"
    done = prt("import", "dp", str(variant), "--out", str(out), "--trust")
    assert done.returncode == 0, done.stderr
    assert "horizon 16, ddim 10 steps, chunk from index 2 due 1 step(s) after" in done.stdout
    policy = read_header(out)["policy"]
    assert (policy["action_start"], policy["action_offset_steps"]) == (2, 1)
