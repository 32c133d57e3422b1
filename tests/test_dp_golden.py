"""Golden parity with Diffusion Policy: its own checkpoint and outputs, reproduced by our code.

The fixture (``shared/fixtures/diffusion_policy``) is DP's low-dim PushT workspace checkpoint,
written by DP itself, and DP's ``predict_action`` outputs for two observation windows from a fixed
initial noise (DDIM, 10 steps). The importer (:mod:`policy_runtime.importers.diffusion_policy`)
maps its EMA weights onto our policy with a strict load, its LinearNormalizer onto our
Normalizer, and must reproduce its actions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from policy_runtime.importers.diffusion_policy import convert  # noqa: E402
from policy_runtime.normalization import Normalizer  # noqa: E402
from policy_runtime.policies import make_policy  # noqa: E402
from policy_runtime.policies.diffusion import DiffusionPolicy  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "diffusion_policy"
CHECKPOINT = FIXTURES / "dp_lowdim_pusht_small.ckpt"
GOLDEN = FIXTURES / "dp_lowdim_pusht_small.golden.json"
TOLERANCE = 1e-4

pytestmark = pytest.mark.skipif(
    not (CHECKPOINT.is_file() and GOLDEN.is_file()),
    reason=f"Diffusion Policy fixture not found under {FIXTURES} (the shared checkout is absent)",
)


@pytest.fixture(scope="module")
def dp_checkpoint() -> dict:
    dill = pytest.importorskip("dill", reason="reading DP's checkpoint needs dill (interop extra)")
    pytest.importorskip(
        "omegaconf", reason="reading DP's checkpoint needs omegaconf (interop extra)"
    )
    # weights_only=False executes pickle: allowed only for this explicitly trusted test fixture.
    return torch.load(CHECKPOINT, map_location="cpu", weights_only=False, pickle_module=dill)


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def _imported(ckpt: dict) -> tuple[DiffusionPolicy, Normalizer]:
    """DP's EMA policy through the importer's conversion (``prt import dp`` runs the same on
    what its child process unpickles): a strict load of every U-Net weight by name and shape."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(ckpt["cfg"], resolve=True)
    states = {
        name: {k: v for k, v in state.items() if torch.is_tensor(v)}
        for name, state in ckpt["state_dicts"].items()
        if name in ("model", "ema_model")
    }
    config, normalizer, weights = convert(cfg, states)
    policy = make_policy(config, normalizer)
    assert isinstance(policy, DiffusionPolicy)
    policy.load_state_dict(weights["ema_model"], strict=True)
    return policy.eval(), normalizer


def _policy_from_dp(ckpt: dict) -> DiffusionPolicy:
    return _imported(ckpt)[0]


def test_dp_normaliser_convention_matches_ours(dp_checkpoint):
    state = dp_checkpoint["state_dicts"]["ema_model"]
    norm = _imported(dp_checkpoint)[1]
    for key in ("obs", "action"):
        stats = f"normalizer.params_dict.{key}.input_stats"
        lo, hi = state[f"{stats}.min"], state[f"{stats}.max"]
        # DP fits limits to [-1, 1] and applies x * scale + offset: min -> -1, max -> 1.
        torch.testing.assert_close(norm.normalize(key, lo), -torch.ones_like(lo))
        torch.testing.assert_close(norm.normalize(key, hi), torch.ones_like(hi))
        torch.testing.assert_close(norm.unnormalize(key, norm.normalize(key, hi)), hi)


def test_our_ddim_scheduler_is_dps(dp_checkpoint):
    policy = _policy_from_dp(dp_checkpoint)
    ours = policy.make_scheduler("ddim").config
    for name, value in dp_checkpoint["cfg"].policy.noise_scheduler.items():
        if name != "_target_":
            assert ours[name] == value, name


def test_we_reproduce_dps_actions_from_its_checkpoint(dp_checkpoint, golden):
    policy = _policy_from_dp(dp_checkpoint)
    obs = torch.tensor(golden["obs"], dtype=torch.float32)
    noise = torch.tensor(golden["initial_noise"], dtype=torch.float32)
    out = policy.predict_action({"obs": obs}, noise=noise)
    # Compared in the normalised action space the network works in ([-1, 1]): PushT actions
    # are pixels up to ~512, where float32 round-off alone (e.g. another torch thread count)
    # reaches 1e-3 absolute.
    scale = policy.normalizer.maps["action"].scale
    errors = {}
    for key in ("action_pred", "action"):
        expected = np.asarray(golden[key], dtype=np.float32)
        assert out[key].shape == expected.shape, key
        errors[key] = float((np.abs(out[key].numpy() - expected) * scale).max())
    print(f"max |ours - Diffusion Policy| (normalised units): {errors}")
    assert max(errors.values()) < TOLERANCE, errors
