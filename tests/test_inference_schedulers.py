"""The runtime's numpy DDPM/DDIM steps against diffusers' schedulers, step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

from policy_runtime.inference.manifest import SamplerSpec
from policy_runtime.inference.schedulers import DDIMSampler, DDPMSampler, betas

TOL = 1e-6


def _tol(sampler, t: int) -> float:
    """1e-6, widened where the step divides by sqrt(alpha_bar_t) (the noisiest steps).

    torch's float32 ``x ** 0.5`` is not always the correctly rounded square root (1 ulp off for
    about a fifth of this schedule's coefficients); numpy's is. The clean-chunk estimate divides
    by sqrt(alpha_bar_t) (0.06 at t = 95 of 100), which turns a few such ulps (6e-8 each) into a
    few 1e-6: the bound is 1e-6 or 4e-7 / sqrt(alpha_bar_t), whichever is larger.
    """
    return max(TOL, 4e-7 / float(np.sqrt(sampler.alphas_cumprod[t])))


SHAPE = (3, 16, 10)


def _kwargs(spec: SamplerSpec) -> dict:
    return {
        "num_train_timesteps": spec.num_train_timesteps,
        "beta_start": spec.beta_start,
        "beta_end": spec.beta_end,
        "beta_schedule": spec.beta_schedule,
        "prediction_type": spec.prediction_type,
        "clip_sample": spec.clip_sample,
        "clip_sample_range": spec.clip_sample_range,
        "steps_offset": spec.steps_offset,
    }


def _fake_model(sample: np.ndarray, t: int) -> np.ndarray:
    """A deterministic stand-in for the network: any smooth function of (sample, t) will do."""
    return np.tanh(0.7 * sample + 0.01 * t).astype(np.float32) * 1.3


@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear", "scaled_linear"])
def test_betas_match_diffusers(schedule):
    spec = SamplerSpec(kind="ddim", num_inference_steps=10, beta_schedule=schedule)
    ref = DDPMScheduler(**_kwargs(spec)).betas.numpy()
    np.testing.assert_allclose(betas(spec), ref, rtol=0, atol=1e-7)


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("steps", [1, 10, 16, 100])
@pytest.mark.parametrize("alpha_to_one", [True, False])
def test_ddim_matches_diffusers(prediction, steps, alpha_to_one):
    spec = SamplerSpec(
        kind="ddim",
        num_inference_steps=steps,
        prediction_type=prediction,
        set_alpha_to_one=alpha_to_one,
    )
    ref = DDIMScheduler(**_kwargs(spec), set_alpha_to_one=alpha_to_one)
    ours = DDIMSampler(spec)
    ref.set_timesteps(steps)
    np.testing.assert_array_equal(ours.set_timesteps(steps), ref.timesteps.numpy())
    # Every step gets the same inputs on both sides (diffusers' running sample), so each step's
    # arithmetic is compared, not a drift accumulated over 100 steps.
    sample = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    for t in ours.timesteps:
        model_output = _fake_model(sample, int(t))
        out = ours.step(model_output, int(t), sample)
        step = ref.step(torch.from_numpy(model_output), int(t), torch.from_numpy(sample))
        tol = _tol(ours, int(t))
        np.testing.assert_allclose(
            out.pred_original_sample, step.pred_original_sample.numpy(), rtol=0, atol=tol
        )
        np.testing.assert_allclose(out.prev_sample, step.prev_sample.numpy(), rtol=0, atol=tol)
        assert out.prev_sample.dtype == np.float32
        sample = step.prev_sample.numpy()


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("steps", [10, 100])
def test_ddpm_matches_diffusers_with_the_same_variance_noise(prediction, steps):
    spec = SamplerSpec(kind="ddpm", num_inference_steps=steps, prediction_type=prediction)
    ref = DDPMScheduler(**_kwargs(spec))
    ours = DDPMSampler(spec)
    ref.set_timesteps(steps)
    np.testing.assert_array_equal(ours.set_timesteps(steps), ref.timesteps.numpy())
    sample = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    for i, t in enumerate(ours.timesteps):
        # diffusers draws the variance noise with torch.randn from the generator it is given:
        # draw the same numbers first and hand them to the numpy step.
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(i)).numpy()
        model_output = _fake_model(sample, int(t))
        out = ours.step(model_output, int(t), sample, noise)
        step = ref.step(
            torch.from_numpy(model_output),
            int(t),
            torch.from_numpy(sample),
            generator=torch.Generator().manual_seed(i),
        )
        tol = _tol(ours, int(t))
        np.testing.assert_allclose(
            out.pred_original_sample, step.pred_original_sample.numpy(), rtol=0, atol=tol
        )
        np.testing.assert_allclose(out.prev_sample, step.prev_sample.numpy(), rtol=0, atol=tol)
        sample = step.prev_sample.numpy()


def test_misuse_is_refused_with_a_reason():
    spec = SamplerSpec(kind="ddpm", num_inference_steps=10)
    sampler = DDPMSampler(spec)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        sampler.step(np.zeros(SHAPE, np.float32), 50, np.zeros(SHAPE, np.float32), None)
    with pytest.raises(ValueError, match="num_inference_steps"):
        sampler.set_timesteps(101)
    sampler.set_timesteps(10)
    with pytest.raises(ValueError, match="variance noise"):
        sampler.step(np.zeros(SHAPE, np.float32), 90, np.zeros(SHAPE, np.float32), None)
    with pytest.raises(ValueError, match="one_step"):
        DDIMSampler(SamplerSpec(kind="one_step", num_inference_steps=1))
