"""``prt import dp``: Diffusion Policy's own checkpoint fixture (written by DP's code) imported
into our checkpoint, exported to a bundle, and both reproduce DP's own actions; without
``--trust`` nothing is unpickled; unsupported variants are refused by name."""

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
            "diffusion_policy.policy.diffusion_unet_hybrid_image_policy.DiffusionUnetHybridImagePolicy",
            r"policy._target_ .*DiffusionUnetHybridImagePolicy: only .*LowdimPolicy",
        ),
        (("policy", "pred_action_steps_only"), True, r"policy.pred_action_steps_only: True"),
        (("policy", "oa_step_convention"), False, r"policy.oa_step_convention: False"),
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
