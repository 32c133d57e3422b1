"""Diffusion Policy (Chi et al.): DDPM training, DDPM or DDIM sampling, global FiLM conditioning.

Training noises the normalised action chunk at a random step of a ``num_train_timesteps`` DDPM
schedule and regresses the noise (epsilon prediction; MSE). Sampling starts from Gaussian noise
and denoises with diffusers' DDPMScheduler or DDIMScheduler (DDIM with ``set_alpha_to_one`` and
``steps_offset`` 0, DP's real-time settings); both use the training betas, so one set of weights
serves either sampler at any step count. DDIM (eta 0) is deterministic given the initial noise;
DDPM draws fresh noise every step, reproducible only with a ``generator``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import torch
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from torch.nn import functional as F

from policy_runtime.normalization import Normalizer
from policy_runtime.policies.base import Policy
from policy_runtime.policies.config import BETA_END, BETA_START, PolicyConfig, PolicyKind
from policy_runtime.policies.obs_encoder import ObservationEncoder
from policy_runtime.policies.unet1d import ConditionalUnet1D

Sampler = Literal["ddpm", "ddim"]
#: ``hook(model_output, t, sample, alpha_prod_t) -> model_output`` before each sampler step.
OutputHook = Callable[[torch.Tensor, int, torch.Tensor, float], torch.Tensor]


def build_unet(config: PolicyConfig, global_cond_dim: int) -> ConditionalUnet1D:
    """The chunk network both policy kinds share, sized by ``config``."""
    return ConditionalUnet1D(
        input_dim=config.action_dim,
        global_cond_dim=global_cond_dim,
        diffusion_step_embed_dim=config.step_embed_dim,
        down_dims=config.down_dims,
        kernel_size=config.kernel_size,
        n_groups=config.n_groups,
        cond_predict_scale=config.cond_predict_scale,
    )


def normalized_action_chunk(
    config: PolicyConfig, normalizer: Normalizer, batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """The batch's ``(B, horizon, action_dim)`` action chunk, normalised; shape errors named.

    The training target is the whole window, laid out from the oldest observation's step (the
    sampler's windows), so the executed chunk starts at index ``n_obs_steps - 1``: a config
    whose ``action_start`` places it elsewhere (an imported layout) is refused.
    """
    if config.action_start is not None:
        raise ValueError(
            f"action_start {config.action_start}: training windows put the newest observation's "
            f"action at index n_obs_steps - 1 ({config.n_obs_steps - 1}); a policy whose chunk "
            "starts elsewhere (an imported layout) is not trained here"
        )
    key = config.action_key
    if key not in batch:
        raise ValueError(f"the batch has no action key {key!r} (got {sorted(batch)})")
    action = batch[key]
    if action.ndim != 3 or tuple(action.shape[1:]) != (config.horizon, config.action_dim):
        raise ValueError(
            f"action {key!r} must be (B, {config.horizon}, {config.action_dim}),"
            f" got {tuple(action.shape)}"
        )
    return normalizer.normalize(key, action.to(torch.float32))


def initial_noise(
    config: PolicyConfig,
    noise: torch.Tensor | None,
    cond: torch.Tensor,
    dtype: torch.dtype,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The sampler's starting chunk on ``cond``'s device: the caller's ``noise`` (shape
    checked) or fresh Gaussian noise drawn with ``generator`` (on the generator's device)."""
    expected = (cond.shape[0], config.horizon, config.action_dim)
    if noise is None:
        device = cond.device if generator is None else generator.device
        noise = torch.randn(expected, generator=generator, device=device, dtype=dtype)
    elif tuple(noise.shape) != expected:
        raise ValueError(f"noise must be {expected}, got {tuple(noise.shape)}")
    return noise.to(device=cond.device, dtype=dtype)


class DiffusionPolicy(Policy):
    """``obs_encoder`` -> global conditioning; ``model`` (ConditionalUnet1D) predicts the noise.

    State-dict layout follows DP (``model.*`` is DP's U-Net; ``obs_encoder.*`` the cameras).
    ``predict_action`` does not change train/eval mode: call ``.eval()`` first for the centre
    crop.
    """

    kind: ClassVar[PolicyKind] = "diffusion"

    def __init__(self, config: PolicyConfig, normalizer: Normalizer) -> None:
        super().__init__(config, normalizer)
        self.obs_encoder = ObservationEncoder(config, normalizer)
        self.model = build_unet(config, self.obs_encoder.output_dim)
        self.noise_scheduler = DDPMScheduler(**self._schedule_kwargs())

    def _schedule_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {
            "num_train_timesteps": c.num_train_timesteps,
            "beta_start": BETA_START,
            "beta_end": BETA_END,
            "beta_schedule": c.beta_schedule,
            "prediction_type": c.prediction_type,
            "clip_sample": c.clip_sample,
        }

    def make_scheduler(self, sampler: Sampler | None = None) -> DDPMScheduler | DDIMScheduler:
        """A fresh inference scheduler (schedulers keep per-run state in ``set_timesteps``)."""
        sampler = sampler or self.config.sampler
        if sampler == "ddim":
            return DDIMScheduler(**self._schedule_kwargs(), set_alpha_to_one=True, steps_offset=0)
        if sampler == "ddpm":
            return DDPMScheduler(**self._schedule_kwargs())
        raise ValueError(f"unknown sampler {sampler!r} (ddpm or ddim)")

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _condition(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        device = self._device()
        obs = {k: v.to(device) for k, v in obs.items()}
        return self.obs_encoder(obs)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """MSE between the network's output and the noise (or the clean chunk) at random steps."""
        cond = self._condition(batch)
        trajectory = normalized_action_chunk(self.config, self.normalizer, batch)
        trajectory = trajectory.to(device=cond.device, dtype=cond.dtype)
        noise = torch.randn_like(trajectory)
        timesteps = torch.randint(
            0, self.config.num_train_timesteps, (trajectory.shape[0],), device=cond.device
        )
        noisy = self.noise_scheduler.add_noise(trajectory, noise, timesteps)
        pred = self.model(noisy, timesteps, global_cond=cond)
        target = noise if self.config.prediction_type == "epsilon" else trajectory
        return F.mse_loss(pred, target)

    @torch.no_grad()
    def predict_action(
        self,
        obs: dict[str, torch.Tensor],
        noise: torch.Tensor | None = None,
        *,
        num_inference_steps: int | None = None,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        output_hook: OutputHook | None = None,
    ) -> dict[str, torch.Tensor]:
        """Denoise ``noise`` (or fresh noise) in ``num_inference_steps`` (default: config's).

        ``sampler`` overrides ``config.sampler``; ``generator`` drives the initial noise (when
        ``noise`` is None) and DDPM's per-step noise. ``output_hook(model_output, t, sample,
        alpha_prod_t)`` may replace the network's output before each step (guidance).
        """
        cond = self._condition(obs)
        dtype = next(self.model.parameters()).dtype
        trajectory = initial_noise(self.config, noise, cond, dtype, generator)
        scheduler = self.make_scheduler(sampler)
        scheduler.set_timesteps(num_inference_steps or self.config.num_inference_steps)
        for t in scheduler.timesteps:
            model_output = self.model(trajectory, t, global_cond=cond)
            if output_hook is not None:
                alpha_prod_t = float(scheduler.alphas_cumprod[int(t)])
                model_output = output_hook(model_output, int(t), trajectory, alpha_prod_t)
            trajectory = scheduler.step(
                model_output, t, trajectory, generator=generator
            ).prev_sample  # type: ignore[union-attr]
        action_pred = self.normalizer.unnormalize(self.config.action_key, trajectory)
        return {"action_pred": action_pred, "action": self.action_window(action_pred)}
