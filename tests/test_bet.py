"""Behavior Transformers: bins, focal loss, multimodal sampling, the numpy sampler, training.

Values come from hand computation (the focal loss), from the data's construction (the toy modes
and their proportions), and from torch's own cross-entropy; the bundle side (export, a
torch-free runtime) is in ``tests/test_inference_runtime.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from policy_runtime.data import EpisodeDataset, split_episodes  # noqa: E402
from policy_runtime.inference import categorical  # noqa: E402
from policy_runtime.normalization import AffineMap, Normalizer  # noqa: E402
from policy_runtime.policies import PolicyConfig, make_policy  # noqa: E402
from policy_runtime.policies.action_bins import fit_bin_centers, nearest_bins  # noqa: E402
from policy_runtime.policies.bet import BeTPolicy, sample_bins  # noqa: E402
from policy_runtime.policies.focal_loss import focal_loss  # noqa: E402
from policy_runtime.training.checkpoint import load_policy  # noqa: E402
from policy_runtime.training.config import load_config  # noqa: E402
from policy_runtime.training.trainer import Trainer  # noqa: E402
from sim_bridge.datagen import DatagenConfig, generate  # noqa: E402

#: Four separated modes of a 2-D action, and how often the toy data chooses each.
MODES = np.array([[0.7, 0.7], [-0.7, 0.7], [-0.7, -0.7], [0.7, -0.7]], np.float32)
WEIGHTS = np.array([0.4, 0.3, 0.2, 0.1])


def _draw_modes(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """``(n, length, 2)`` actions, each step an independent draw of a mode plus 0.03 noise."""
    mode = rng.choice(len(MODES), size=(n, length), p=WEIGHTS)
    return (MODES[mode] + rng.normal(0, 0.03, (n, length, 2))).astype(np.float32)


def _toy_policy(bins: int, **fields: object) -> BeTPolicy:
    """A BeT policy on a 1-D observation and 2-D actions already in [-1, 1] (To 3, one action
    per step unless ``fields`` say otherwise)."""
    settings: dict[str, object] = {"horizon": 3, "n_obs_steps": 3, "n_action_steps": 1}
    config = PolicyConfig(
        kind="bet",
        obs_keys=["obs"],
        obs_shapes={"obs": (1,)},
        action_dim=2,
        bet_bins=bins,
        bet_dropout=0.0,
        **{**settings, **fields},  # type: ignore[arg-type]
    )
    unit = AffineMap.min_max(np.full(2, -1.0), np.full(2, 1.0))
    normalizer = Normalizer(
        {"obs": AffineMap.min_max(np.array([-1.0]), np.array([1.0])), "action": unit}
    )
    policy = make_policy(config, normalizer)
    assert isinstance(policy, BeTPolicy)
    return policy


def test_bins_reconstruct_every_training_action_exactly():
    rng = np.random.default_rng(0)
    actions = _draw_modes(rng, 500, 1).reshape(-1, 2)
    centers = fit_bin_centers(actions, 4, seed=0)
    # Four well-separated clusters: one centre on each mode (k-means finds the means).
    nearest_mode = np.linalg.norm(centers[:, None] - MODES[None], axis=-1).min(axis=1)
    assert nearest_mode.max() < 0.01
    bins, offsets = nearest_bins(torch.from_numpy(actions), torch.from_numpy(centers))
    decoded = torch.from_numpy(centers)[bins] + offsets
    np.testing.assert_allclose(decoded.numpy(), actions, atol=1e-7, rtol=0)
    # Each action's bin is its nearest centre.
    distances = np.linalg.norm(actions[:, None] - centers[None], axis=-1)
    assert np.array_equal(bins.numpy(), distances.argmin(axis=1))
    assert np.array_equal(fit_bin_centers(actions, 4, seed=0), centers)  # deterministic
    with pytest.raises(ValueError, match="8 bins need at least 8 distinct actions, the data has 3"):
        fit_bin_centers(np.repeat(MODES[:3], 10, axis=0), 8)


def test_focal_loss_matches_hand_computed_values():
    # softmax([0, ln 3]) = [1/4, 3/4].
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    target = torch.tensor([1, 0])
    # -(1 - 3/4)^2 ln(3/4) = 0.0179801, -(1 - 1/4)^2 ln(1/4) = 0.7797905; their mean:
    assert float(focal_loss(logits, target, 2.0)) == pytest.approx(
        (0.0625 * math.log(4 / 3) + 0.5625 * math.log(4)) / 2, rel=1e-6
    )
    assert float(focal_loss(logits[:1], target[:1], 2.0)) == pytest.approx(0.0179801, rel=1e-5)
    # gamma 0 is cross-entropy (torch's own).
    rng = torch.Generator().manual_seed(0)
    many = torch.randn(64, 7, generator=rng)
    classes = torch.randint(0, 7, (64,), generator=rng)
    assert float(focal_loss(many, classes, 0.0)) == pytest.approx(
        float(F.cross_entropy(many, classes)), rel=1e-6
    )


def test_numpy_sampler_chooses_the_torch_samplers_bins_and_follows_the_softmax():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (5, 4, 9)).astype(np.float32)
    uniforms = rng.random((5, 4), dtype=np.float32)
    for temperature in (1.0, 0.5, 2.0):
        ours = categorical.sample_bins(logits, uniforms, temperature)
        theirs = sample_bins(torch.from_numpy(logits), torch.from_numpy(uniforms), temperature)
        assert np.array_equal(ours, theirs.numpy())
    # Frequencies of many draws are the tempered softmax's probabilities.
    row = np.array([0.0, 1.0, 2.0], np.float32)
    draws = categorical.sample_bins(np.tile(row, (200_000, 1)), rng.random(200_000), 0.5)
    expected = np.exp(row / 0.5) / np.exp(row / 0.5).sum()
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 200_000, expected, atol=0.005)


def test_bet_samples_all_four_modes_in_proportion_where_an_mse_regressor_collapses():
    """Same data, same observation (a constant): BeT reproduces the modes' frequencies within
    0.04 and lands on a mode every time; a regressor trained with MSE answers the mean of the
    modes, which is none of them."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    policy = _toy_policy(bins=8)
    policy.fit_data({"action": _draw_modes(rng, 2000, 1).reshape(-1, 2)}, seed=0)
    regressor = nn.Sequential(nn.Linear(1, 64), nn.ReLU(), nn.Linear(64, 2))
    bet_opt = torch.optim.AdamW(policy.parameter_groups(0.1), lr=1e-3, betas=(0.9, 0.95))
    mse_opt = torch.optim.AdamW(regressor.parameters(), lr=1e-3)
    obs = torch.zeros(256, 3, 1)
    for _ in range(200):
        actions = torch.from_numpy(_draw_modes(rng, 256, 3))
        for optimizer, loss in (
            (bet_opt, policy.compute_loss({"obs": obs, "action": actions})),
            (mse_opt, F.mse_loss(regressor(obs[:, -1]), actions[:, -1])),
        ):
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    policy.eval()
    generator = torch.Generator().manual_seed(1)
    sampled = policy.predict_action({"obs": torch.zeros(4000, 3, 1)}, generator=generator)
    actions = sampled["action"][:, 0].numpy()
    distance = np.linalg.norm(actions[:, None] - MODES[None], axis=-1)
    assert distance.min(axis=1).max() < 0.2  # every sample on a mode
    share = np.bincount(distance.argmin(axis=1), minlength=4) / len(actions)
    np.testing.assert_allclose(share, WEIGHTS, atol=0.04)

    with torch.no_grad():
        regressed = regressor(torch.zeros(1, 1)).numpy()[0]
    np.testing.assert_allclose(regressed, WEIGHTS @ MODES, atol=0.08)
    assert np.linalg.norm(MODES - regressed, axis=-1).min() > 0.5  # on no mode


def test_each_step_predicts_its_own_and_later_actions_laid_out_on_the_horizon():
    """horizon 5, To 3: each step predicts 3 actions (its own, two after); the sequence is step
    0's own, step 1's own, then the newest step's 3, and the chunk starts at the newest."""
    policy = _toy_policy(4, horizon=5, n_action_steps=2)
    assert policy.config.bet_predicted_steps == 3
    per_step = torch.arange(3 * 3).reshape(1, 3, 3)  # value = 3 * step + predicted index
    assert policy.on_horizon(per_step).tolist() == [[0, 3, 6, 7, 8]]
    policy.eval()
    out = policy.predict_action({"obs": torch.zeros(2, 3, 1)}, torch.full((2, 5), 0.5))
    assert out["action_pred"].shape == (2, 5, 2)
    assert torch.equal(out["action"], out["action_pred"][:, 2:4])
    with pytest.raises(ValueError, match=r"must be \(2, 5\)"):
        policy.predict_action({"obs": torch.zeros(2, 3, 1)}, torch.zeros(2, 5, 2))


def test_without_the_offset_head_an_action_is_its_bins_centre():
    no_offsets = _toy_policy(bins=4, bet_offsets=False)
    no_offsets.fit_data(
        {"action": _draw_modes(np.random.default_rng(0), 400, 1).reshape(-1, 2)}, seed=0
    )
    no_offsets.eval()
    actions = no_offsets.predict_action({"obs": torch.zeros(50, 3, 1)})["action"][:, 0]
    on_centre = (actions[:, None] - no_offsets.bin_centers[None]).abs().amax(-1).amin(-1)
    assert float(on_centre.max()) < 1e-6
    assert no_offsets.head.out_features == 4  # logits only


def test_training_fits_bins_on_the_training_episodes_saves_them_and_resumes(tmp_path: Path):
    data = tmp_path / "pp.zarr"
    generate(
        DatagenConfig(
            task="pick_place", episodes=4, out=data, obs=("joint_pos", "cube_pose", "bin_pos")
        )
    )

    def config(out: str, steps: int):
        overrides = [
            "horizon=3",
            "n_obs_steps=3",
            "n_action_steps=1",
            "model.bet_bins=8",
            "model.bet_embed_dim=32",
            "batch_size=16",
            f"steps={steps}",
            "checkpoint_every=3",
            "val_ratio=0.25",
            "grad_clip_norm=1.0",
            "weight_decay=0.1",
        ]
        return load_config(None, overrides, data=data, out=tmp_path / out, policy="bet")

    trainer = Trainer(config("a", 6))
    policy = trainer.policy
    assert isinstance(policy, BeTPolicy)
    # Every step of the training episodes (one of the four is held out for validation).
    dataset = EpisodeDataset.open(data)
    held_out = split_episodes(dataset.n_episodes, 0.25, trainer.config.seed)
    rows = np.repeat(~held_out, np.diff(dataset.episode_ends, prepend=0))
    assert held_out.sum() == 1
    train_actions = trainer.data.train_steps["action"]
    np.testing.assert_array_equal(train_actions, dataset.load(["action"])["action"][rows])
    normalized = policy.normalizer.normalize("action", train_actions)
    expected = fit_bin_centers(normalized, 8, seed=trainer.config.seed)
    np.testing.assert_array_equal(policy.bin_centers.numpy(), expected)
    decay = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert decay[id(policy.gpt.pos_emb)] == 0.0 and decay[id(policy.head.weight)] == 0.1
    straight = trainer.train().losses
    assert len(straight) == 6 and np.isfinite(straight).all()

    loaded = load_policy(tmp_path / "a")
    assert isinstance(loaded, BeTPolicy)
    np.testing.assert_array_equal(loaded.bin_centers.numpy(), expected)
    header = json.loads(
        (tmp_path / "a" / "checkpoints" / "step_00000006" / "config.json").read_text()
    )
    saved = header["policy"]
    assert saved["bet_bins"] == 8 and "down_dims" not in saved and "drift_samples" not in saved

    # Stopped at 3 and resumed: the same losses (bins, weights and data draws restored).
    first = Trainer(config("b", 3)).train().losses
    resumed = Trainer(config("b", 6), resume=tmp_path / "b").train().losses
    assert first + resumed == straight


def test_a_camera_policy_reads_each_steps_image_features():
    """Images go through the same ResNet-18 encoders as the other kinds, one token per step:
    changing only the newest image changes the newest step's prediction and no older one's."""
    config = PolicyConfig(
        kind="bet",
        obs_keys=["obs"],
        image_keys=["front_rgb"],
        obs_shapes={"obs": (1,), "front_rgb": (64, 64, 3)},
        action_dim=2,
        horizon=3,
        n_obs_steps=3,
        n_action_steps=1,
        bet_bins=4,
        image_feature_dim=8,
    )
    policy = make_policy(config, _toy_policy(4).normalizer)
    assert isinstance(policy, BeTPolicy)
    policy.normalizer.maps["front_rgb"] = AffineMap.image()
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (2, 3, 64, 64, 3), dtype=np.uint8))
    batch = {"obs": torch.zeros(2, 3, 1), "front_rgb": images, "action": torch.zeros(2, 3, 2)}
    policy.compute_loss(batch).backward()
    encoder = policy.obs_encoder.image_encoders["front_rgb"]
    assert all(p.grad is not None for p in encoder.parameters())  # trained through the loss
    policy.eval()
    logits, _ = policy.heads(batch)
    changed = images.clone()
    changed[:, -1] = 255 - changed[:, -1]
    logits_changed, _ = policy.heads({**batch, "front_rgb": changed})
    assert torch.allclose(logits[:, :2], logits_changed[:, :2], atol=1e-6)  # causal
    assert not torch.allclose(logits[:, 2], logits_changed[:, 2], atol=1e-6)


def test_relative_actions_are_binned_from_the_observation_and_decoded_back_onto_it():
    """``bet_relative_to``: the bins are k-means of (action - observation), normalised; a sampled
    action is the observation plus a bin's motion, in raw units (no offsets here, so exactly a
    centre). The action's third dim, past the observation's two, stays absolute."""
    config = PolicyConfig(
        kind="bet",
        obs_keys=["pos"],
        obs_shapes={"pos": (2,)},
        action_dim=3,
        horizon=3,
        n_obs_steps=3,
        n_action_steps=1,
        bet_bins=4,
        bet_offsets=False,
        bet_relative_to="pos",
    )
    # Actions span [-2, 2] (normalised x 0.5), positions [-1, 1] (unchanged).
    normalizer = Normalizer(
        {
            "pos": AffineMap.min_max(np.full(2, -1.0), np.full(2, 1.0)),
            "action": AffineMap.min_max(np.full(3, -2.0), np.full(3, 2.0)),
        }
    )
    policy = make_policy(config, normalizer)
    assert isinstance(policy, BeTPolicy)
    rng = np.random.default_rng(0)
    pos = rng.uniform(-1, 1, (2000, 2)).astype(np.float32)
    motion = 0.1 * MODES[rng.choice(4, 2000)] / 0.7  # (+-0.1, +-0.1)
    actions = np.concatenate([pos + motion, np.full((2000, 1), 0.3, np.float32)], axis=1)
    policy.fit_data({"pos": pos, "action": actions}, seed=0)
    # One centre per motion, normalised: (+-0.05, +-0.05, 0.15).
    expected = np.concatenate([0.5 * 0.1 * MODES / 0.7, np.full((4, 1), 0.15)], axis=1)
    distance = np.abs(policy.bin_centers.numpy()[:, None] - expected[None]).max(-1)
    assert distance.min(axis=1).max() < 1e-5 and len(set(distance.argmin(axis=1))) == 4

    obs = torch.from_numpy(rng.uniform(-1, 1, (64, 3, 2)).astype(np.float32))
    sampled = policy.predict_action({"pos": obs})["action"][:, 0]
    moved = (sampled[:, :2] - obs[:, -1]).numpy()
    off_mode = np.abs(moved[:, None] - 0.1 * MODES[None] / 0.7).max(-1).min(-1)
    assert off_mode.max() < 1e-5
    np.testing.assert_allclose(sampled[:, 2].numpy(), 0.3, atol=1e-5)

    with pytest.raises(ValueError, match="bet_relative_to 'ee' must be one of obs_keys"):
        PolicyConfig(**{**config.model_dump(), "bet_relative_to": "ee"})
