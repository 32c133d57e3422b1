"""Torch policies: U-Net, encoders, diffusion and drifting policies (shapes, samplers, errors)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers.schedulers.scheduling_ddim import DDIMScheduler  # noqa: E402
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler  # noqa: E402

from policy_runtime.normalization import AffineMap, Normalizer  # noqa: E402
from policy_runtime.policies import PolicyConfig, make_policy  # noqa: E402
from policy_runtime.policies.diffusion import DiffusionPolicy  # noqa: E402
from policy_runtime.policies.drifting import DriftingPolicy  # noqa: E402
from policy_runtime.policies.obs_encoder import ObservationEncoder  # noqa: E402
from policy_runtime.policies.unet1d import ConditionalUnet1D  # noqa: E402
from policy_runtime.policies.vision import (  # noqa: E402
    ImageEncoder,
    ResNet18Trunk,
    SpatialSoftmax,
    crop_images,
)

B, TO, H, DA, TA = 3, 2, 16, 3, 8
IMAGE = (48, 64, 3)  # > 32 px: the trunk's feature map is at least 2 x 2
TINY = {"down_dims": (16, 32, 64), "step_embed_dim": 16}


@pytest.fixture(scope="module")
def normalizer() -> Normalizer:
    return Normalizer(
        {
            "qpos": AffineMap.min_max(-np.ones(6), np.ones(6)),
            "action": AffineMap.min_max(np.array([-2.0, 0.0, 1.0]), np.array([2.0, 1.0, 3.0])),
            "cam": AffineMap.image(),
        }
    )


def _config(kind: str = "diffusion", image: bool = True, **overrides) -> PolicyConfig:
    fields = {
        "kind": kind,
        "obs_keys": ["qpos"],
        "image_keys": ["cam"] if image else [],
        "obs_shapes": {"qpos": (6,), "cam": IMAGE},
        "action_dim": DA,
        "crop_shape": (40, 56) if image else None,
        **TINY,
        **overrides,
    }
    return PolicyConfig(**fields)


def _obs(batch: int = B, steps: int = TO, image: bool = True, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    obs = {"qpos": torch.rand(batch, steps, 6, generator=g) * 2 - 1}
    if image:
        obs["cam"] = torch.randint(0, 256, (batch, steps, *IMAGE), generator=g, dtype=torch.uint8)
    return obs


def _batch(image: bool = True) -> dict:
    return {**_obs(image=image), "action": torch.rand(B, H, DA) * 2}


# --- U-Net -------------------------------------------------------------------------------


def test_unet_maps_a_chunk_to_a_chunk_for_scalar_or_batched_steps():
    torch.manual_seed(0)
    net = ConditionalUnet1D(DA, 10, 16, (16, 32, 64), kernel_size=5, cond_predict_scale=True)
    sample, cond = torch.randn(B, H, DA), torch.randn(B, 10)
    out = net(sample, torch.full((B,), 7), cond)
    assert out.shape == (B, H, DA)
    torch.testing.assert_close(net(sample, 7, cond), out)
    torch.testing.assert_close(net(sample, torch.tensor(7), cond), out)
    with pytest.raises(ValueError, match="global_cond is missing"):
        net(sample, 7)


def test_unet_module_names_are_diffusion_policys():
    net = ConditionalUnet1D(2, 40, 32, (32, 64, 128), kernel_size=5, cond_predict_scale=True)
    names = set(net.state_dict())
    for name in (
        "diffusion_step_encoder.1.weight",
        "diffusion_step_encoder.3.bias",
        "down_modules.0.0.blocks.0.block.0.weight",
        "down_modules.0.0.blocks.1.block.1.bias",
        "down_modules.0.0.cond_encoder.1.weight",
        "down_modules.0.0.residual_conv.weight",
        "down_modules.1.2.conv.weight",
        "mid_modules.1.blocks.1.block.0.weight",
        "up_modules.0.0.residual_conv.weight",
        "up_modules.1.2.conv.weight",
        "final_conv.0.block.0.weight",
        "final_conv.1.bias",
    ):
        assert name in names, name
    assert not any(n.startswith("down_modules.2.2") for n in names)  # no downsample at the bottom
    assert isinstance(net.up_modules[1][2].conv, torch.nn.ConvTranspose1d)


def test_unet_has_about_65m_parameters_at_diffusion_policys_low_dim_pusht_size():
    with torch.device("meta"):  # counts without allocating
        net = ConditionalUnet1D(
            2, 20 * 2, 128, (256, 512, 1024), kernel_size=5, n_groups=8, cond_predict_scale=True
        )
    n = sum(p.numel() for p in net.parameters())
    print(f"ConditionalUnet1D (obs 20 x To 2, action 2, 256/512/1024, k5, dsed 128): {n} params")
    assert 60e6 < n < 70e6


# --- image and observation encoders ------------------------------------------------------


def test_trunk_output_size_and_spatial_softmax_keypoints():
    trunk = ResNet18Trunk()
    for hw in ((84, 84), (20, 28), (96, 96)):
        assert trunk(torch.zeros(1, 3, *hw)).shape[2:] == ResNet18Trunk.output_size(*hw)
    pool = SpatialSoftmax(512, 3, 3, num_kp=32)
    kp = pool(torch.randn(2, 512, 3, 3))
    assert kp.shape == (2, 64) and kp.abs().max() <= 1
    assert "pos_x" not in pool.state_dict()  # derived grid, not state
    # every trunk norm is GroupNorm with channels // 16 groups
    norms = [m for m in trunk.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == m.num_channels // 16 for m in norms)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in trunk.modules())


def test_crop_is_random_per_image_in_training_and_central_in_eval():
    images = torch.arange(4 * 2 * 10 * 12, dtype=torch.float32).reshape(4, 2, 10, 12)
    torch.manual_seed(0)
    a, b = crop_images(images, (6, 8), random=True), crop_images(images, (6, 8), random=True)
    assert a.shape == (4, 2, 6, 8) and not torch.equal(a, b)
    centre = crop_images(images, (6, 8), random=False)
    torch.testing.assert_close(centre, images[:, :, 2:8, 2:10])
    for n, crop in enumerate(a):  # each random crop is a window of its own image
        top, left = divmod(int(crop[0, 0, 0].item()) - n * 240, 12)
        torch.testing.assert_close(crop, images[n, :, top : top + 6, left : left + 8])


def test_image_encoder_train_crops_vary_and_eval_is_deterministic(normalizer):
    torch.manual_seed(0)
    enc = ImageEncoder("cam", normalizer, IMAGE, feature_dim=64, crop_shape=(40, 56))
    images = torch.randint(0, 256, (5, *IMAGE), dtype=torch.uint8)
    enc.train()
    assert enc(images).shape == (5, 64)
    assert not torch.allclose(enc(images), enc(images))
    enc.eval()
    torch.testing.assert_close(enc(images), enc(images))
    with pytest.raises(ValueError, match="'cam'"):
        enc(torch.zeros(5, 48, 60, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="does not fit"):
        ImageEncoder("cam", normalizer, IMAGE, crop_shape=(50, 28))


def test_observation_encoder_flattens_steps_images_first_then_normalised_low_dim(normalizer):
    enc = ObservationEncoder(_config(), normalizer).eval()
    obs = _obs()
    out = enc(obs)
    per_step = 64 + 6
    assert enc.output_dim == TO * per_step and out.shape == (B, TO * per_step)
    steps = out.reshape(B, TO, per_step)
    torch.testing.assert_close(steps[..., 64:], normalizer.normalize("qpos", obs["qpos"]))
    torch.testing.assert_close(steps[:, 1, :64], enc.image_encoders["cam"](obs["cam"][:, 1]))


def test_a_wrong_observation_shape_or_missing_key_is_named(normalizer):
    enc = ObservationEncoder(_config(), normalizer)
    obs = _obs()
    with pytest.raises(ValueError, match=r"'qpos' must be \(3, 2, 6\), got \(3, 3, 6\)"):
        enc({**obs, "qpos": torch.zeros(B, 3, 6)})
    with pytest.raises(ValueError, match=r"'qpos'.*got \(2, 2, 6\)"):
        enc({**obs, "qpos": torch.zeros(2, TO, 6)})  # batch differs from the camera's
    with pytest.raises(ValueError, match="'cam'"):
        enc({**obs, "cam": obs["cam"][:, :1]})
    with pytest.raises(ValueError, match="'cam' is missing"):
        enc({"qpos": obs["qpos"]})


# --- policies ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["diffusion", "drifting"])
def test_loss_is_a_finite_scalar_with_gradient_and_predictions_have_the_right_shapes(
    kind, normalizer
):
    torch.manual_seed(0)
    policy = make_policy(_config(kind), normalizer)
    assert isinstance(policy, DiffusionPolicy if kind == "diffusion" else DriftingPolicy)
    loss = policy.compute_loss(_batch())
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads if g is not None)

    policy.eval()
    out = policy.predict_action(_obs())
    assert out["action_pred"].shape == (B, H, DA)
    assert out["action"].shape == (B, TA, DA)
    torch.testing.assert_close(out["action"], out["action_pred"][:, TO - 1 : TO - 1 + TA])


@pytest.mark.parametrize("kind", ["diffusion", "drifting"])
def test_fixed_noise_makes_predictions_reproducible(kind, normalizer):
    torch.manual_seed(0)
    policy = make_policy(_config(kind, image=False), normalizer).eval()
    obs, noise = _obs(image=False), torch.randn(B, H, DA)
    first = policy.predict_action(obs, noise=noise)["action_pred"]
    torch.testing.assert_close(policy.predict_action(obs, noise=noise)["action_pred"], first)
    other = policy.predict_action(obs, noise=torch.randn(B, H, DA))["action_pred"]
    assert not torch.allclose(other, first)
    with pytest.raises(ValueError, match="noise must be"):
        policy.predict_action(obs, noise=torch.randn(B, H + 1, DA))


def test_ddim_and_ddpm_both_sample_through_diffusers_at_any_step_count(normalizer):
    torch.manual_seed(0)
    policy = make_policy(_config(image=False), normalizer).eval()
    assert isinstance(policy, DiffusionPolicy)
    assert isinstance(policy.noise_scheduler, DDPMScheduler)  # training
    ddim = policy.make_scheduler("ddim")
    assert isinstance(ddim, DDIMScheduler)
    assert ddim.config.set_alpha_to_one and ddim.config.steps_offset == 0
    assert ddim.config.beta_schedule == "squaredcos_cap_v2" and ddim.config.clip_sample
    assert isinstance(policy.make_scheduler("ddpm"), DDPMScheduler)
    assert isinstance(policy.make_scheduler(), DDIMScheduler)  # config default

    obs, noise = _obs(image=False), torch.randn(B, H, DA)
    outs = {}
    for sampler in ("ddim", "ddpm"):
        for steps in (1, 100):
            g = torch.Generator().manual_seed(1)
            out = policy.predict_action(
                obs, noise=noise, num_inference_steps=steps, sampler=sampler, generator=g
            )["action_pred"]
            assert out.shape == (B, H, DA) and torch.isfinite(out).all()
            outs[sampler, steps] = out
    assert not torch.allclose(outs["ddim", 1], outs["ddim", 100])
    assert not torch.allclose(outs["ddim", 100], outs["ddpm", 100])
    # DDPM draws noise every step: reproducible with the same generator seed only.
    g = torch.Generator().manual_seed(1)
    again = policy.predict_action(
        obs, noise=noise, num_inference_steps=100, sampler="ddpm", generator=g
    )
    torch.testing.assert_close(again["action_pred"], outs["ddpm", 100])


def test_drifting_per_timestep_loss_and_state_dict_round_trip(normalizer):
    torch.manual_seed(0)
    config = _config("drifting", image=False, drift_per_timestep=True, drift_samples=4)
    policy = make_policy(config, normalizer)
    loss = policy.compute_loss(_batch(image=False))
    assert torch.isfinite(loss) and loss.requires_grad
    forces = {f"force_rms/{t:g}" for t in config.drift_temperatures}
    assert forces == {"force_rms/0.02", "force_rms/0.05", "force_rms/0.2", "force_rms/4"}
    assert set(policy.last_info) == {"distance_scale", *forces}
    clone = make_policy(config, normalizer)
    clone.load_state_dict(policy.state_dict(), strict=True)
    noise = torch.randn(B, H, DA)
    torch.testing.assert_close(
        clone.eval().predict_action(_obs(image=False), noise=noise)["action"],
        policy.eval().predict_action(_obs(image=False), noise=noise)["action"],
    )


def test_a_config_for_the_other_kind_or_a_bad_batch_raises(normalizer):
    with pytest.raises(ValueError, match="not 'diffusion'"):
        DiffusionPolicy(_config("drifting", image=False), normalizer)
    with pytest.raises(ValueError, match="not 'drifting'"):
        DriftingPolicy(_config("diffusion", image=False), normalizer)
    policy = make_policy(_config(image=False), normalizer)
    batch = _batch(image=False)
    with pytest.raises(ValueError, match=r"action 'action' must be \(B, 16, 3\)"):
        policy.compute_loss({**batch, "action": batch["action"][:, :8]})
    with pytest.raises(ValueError, match="no action key 'action'"):
        policy.compute_loss({"qpos": batch["qpos"]})


def test_action_start_moves_the_executed_window_and_is_left_out_while_default(normalizer):
    """``action_start`` (an imported layout): the executed actions start there; the default
    (None, or ``n_obs_steps - 1`` written out) is left out of the serialised config, so a
    default config dumps as before the field; training refuses a moved layout."""
    default = _config(image=False)
    assert default.chunk_start == TO - 1 and "action_start" not in default.model_dump()
    explicit = _config(image=False, action_start=TO - 1)
    assert explicit.action_start is None and explicit.fields_in_use() == default.fields_in_use()
    moved = _config(image=False, action_start=TO, action_offset_steps=1)
    assert moved.model_dump(mode="json")["action_start"] == TO
    assert PolicyConfig.model_validate(moved.model_dump(mode="json")) == moved
    with pytest.raises(ValueError, match=r"action_start \+ n_action_steps \(17\) must fit"):
        _config(image=False, action_start=9)
    policy = make_policy(moved, normalizer).eval()
    noise = torch.randn(B, H, DA, generator=torch.Generator().manual_seed(0))
    out = policy.predict_action(_obs(image=False), noise=noise)
    torch.testing.assert_close(out["action"], out["action_pred"][:, TO : TO + TA])
    with pytest.raises(ValueError, match="action_start 2: training windows"):
        policy.compute_loss(_batch(image=False))
