"""DDPM and DDIM sampling steps in numpy: the deploy path's copy of diffusers' schedulers.

Training and the torch backend use ``diffusers.DDPMScheduler`` / ``DDIMScheduler``; a deploy
machine has neither torch nor diffusers, so the same arithmetic lives here, in float32 like
diffusers' tensors, and the test suite checks both against diffusers step by step (within 1e-6).
Covered: the ``linear``, ``scaled_linear`` and ``squaredcos_cap_v2`` beta schedules,
``epsilon`` and ``sample`` prediction, sample clipping, ``leading`` timestep spacing with
``steps_offset``, DDIM with ``eta = 0`` (deterministic) and ``set_alpha_to_one``, DDPM with the
``fixed_small`` variance. Every step also returns its estimate of the clean chunk
(``pred_original_sample``), which real-time chunking guides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from policy_runtime.inference.manifest import SamplerSpec


def betas(spec: SamplerSpec) -> np.ndarray:
    """The training betas, float32 ``(num_train_timesteps,)``, as diffusers builds them."""
    n = spec.num_train_timesteps
    if spec.beta_schedule == "linear":
        return np.linspace(spec.beta_start, spec.beta_end, n, dtype=np.float32)
    if spec.beta_schedule == "scaled_linear":
        root = np.linspace(spec.beta_start**0.5, spec.beta_end**0.5, n, dtype=np.float32)
        return root**2

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    values = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)]
    return np.asarray(values, dtype=np.float32)


@dataclass(frozen=True)
class StepOutput:
    prev_sample: np.ndarray
    #: The step's estimate of the clean (normalised) chunk.
    pred_original_sample: np.ndarray


class _Scheduler:
    def __init__(self, spec: SamplerSpec) -> None:
        if spec.kind == "one_step":
            raise ValueError("sampler.kind 'one_step' has no noise schedule")
        self.spec = spec
        # torch's float32 cumprod accumulates in double: so does this one, or the last alphas
        # differ from diffusers' by a few ulps.
        alphas = (np.float32(1) - betas(spec)).astype(np.float64)
        self.alphas_cumprod = np.cumprod(alphas).astype(np.float32)
        self.timesteps = np.zeros(0, np.int64)
        self.num_inference_steps = 0

    def set_timesteps(self, num_inference_steps: int) -> np.ndarray:
        """diffusers' ``leading`` spacing: ``0, r, 2r, ...`` reversed, plus ``steps_offset``."""
        n_train = self.spec.num_train_timesteps
        if not 1 <= num_inference_steps <= n_train:
            raise ValueError(
                f"num_inference_steps must be in [1, {n_train}], got {num_inference_steps}"
            )
        ratio = n_train // num_inference_steps
        steps = (np.arange(num_inference_steps) * ratio).round()[::-1].astype(np.int64)
        self.timesteps = steps + self.spec.steps_offset
        self.num_inference_steps = num_inference_steps
        return self.timesteps

    def _prev_timestep(self, t: int) -> int:
        return t - self.spec.num_train_timesteps // self.num_inference_steps

    def _split(
        self, model_output: np.ndarray, sample: np.ndarray, alpha_prod_t: np.float32
    ) -> tuple[np.ndarray, np.ndarray]:
        """(clean estimate, noise estimate) from the network output, the clean one clipped."""
        beta_prod_t = np.float32(1) - alpha_prod_t
        if self.spec.prediction_type == "epsilon":
            pred_x0 = (sample - np.sqrt(beta_prod_t) * model_output) / np.sqrt(alpha_prod_t)
            pred_eps = model_output
        else:
            pred_x0 = model_output
            pred_eps = (sample - np.sqrt(alpha_prod_t) * pred_x0) / np.sqrt(beta_prod_t)
        if self.spec.clip_sample:
            limit = np.float32(self.spec.clip_sample_range)
            pred_x0 = np.clip(pred_x0, -limit, limit)
        return pred_x0.astype(np.float32, copy=False), pred_eps.astype(np.float32, copy=False)

    def _check(self, t: int) -> None:
        if self.num_inference_steps == 0:
            raise RuntimeError("call set_timesteps() before step()")
        if not 0 <= t < self.spec.num_train_timesteps:
            raise ValueError(f"timestep {t} outside [0, {self.spec.num_train_timesteps})")


class DDIMSampler(_Scheduler):
    """Deterministic DDIM (``eta = 0``), matching ``diffusers.DDIMScheduler.step``."""

    def __init__(self, spec: SamplerSpec) -> None:
        super().__init__(spec)
        self.final_alpha_cumprod = (
            np.float32(1.0) if spec.set_alpha_to_one else self.alphas_cumprod[0]
        )

    def step(self, model_output: np.ndarray, t: int, sample: np.ndarray) -> StepOutput:
        self._check(t)
        prev_t = self._prev_timestep(t)
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        pred_x0, pred_eps = self._split(model_output, sample, alpha_prod_t)
        direction = np.sqrt(np.float32(1) - alpha_prod_prev) * pred_eps
        prev = np.sqrt(alpha_prod_prev) * pred_x0 + direction
        return StepOutput(prev.astype(np.float32, copy=False), pred_x0)


class DDPMSampler(_Scheduler):
    """Ancestral DDPM with the ``fixed_small`` variance, matching ``diffusers.DDPMScheduler``.

    ``noise`` (standard normal, the sample's shape) is the step's variance noise; it is unused
    at ``t = 0``, where DDPM adds none.
    """

    def step(
        self, model_output: np.ndarray, t: int, sample: np.ndarray, noise: np.ndarray | None
    ) -> StepOutput:
        self._check(t)
        prev_t = self._prev_timestep(t)
        one = np.float32(1)
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else one
        beta_prod_t, beta_prod_prev = one - alpha_prod_t, one - alpha_prod_prev
        current_alpha = alpha_prod_t / alpha_prod_prev
        current_beta = one - current_alpha
        pred_x0, _ = self._split(model_output, sample, alpha_prod_t)
        x0_coeff = np.sqrt(alpha_prod_prev) * current_beta / beta_prod_t
        sample_coeff = np.sqrt(current_alpha) * beta_prod_prev / beta_prod_t
        prev = x0_coeff * pred_x0 + sample_coeff * sample
        if t > 0:
            if noise is None or noise.shape != sample.shape:
                raise ValueError(
                    f"DDPM step {t} needs variance noise of shape {sample.shape}, got "
                    f"{None if noise is None else noise.shape}"
                )
            variance = max(beta_prod_prev / beta_prod_t * current_beta, np.float32(1e-20))
            prev = prev + np.sqrt(np.float32(variance)) * noise.astype(np.float32)
        return StepOutput(prev.astype(np.float32, copy=False), pred_x0)


def inpaint_model_output(
    model_output: np.ndarray,
    sample: np.ndarray,
    alpha_prod_t: float,
    prediction_type: str,
    target: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """Real-time chunking's guidance in the predicted-clean space, as a network output.

    The step's clean-chunk estimate ``x0`` is pulled toward the committed prefix ``target``
    with the soft mask: ``x0' = x0 + W (Y - x0)`` (``weights`` broadcast over the action axis),
    and the output that implies ``x0'`` is returned (``x0'`` itself for ``sample`` prediction,
    the matching noise for ``epsilon``), so any DDIM/DDPM step continues from the guided
    estimate. Where ``W = 1`` the chunk is inpainted with the prefix; where ``W = 0`` it is left
    alone. Unlike the gradient (vector-Jacobian) form of Black et al., this needs no network
    Jacobian, so it runs on onnxruntime graphs; it is the x0-space guidance POLICY_NOTES names
    for DDIM.
    """
    root_alpha = np.sqrt(np.float32(alpha_prod_t))
    root_beta = np.sqrt(np.float32(1) - np.float32(alpha_prod_t))
    if prediction_type == "epsilon":
        x0 = (sample - root_beta * model_output) / root_alpha
    else:
        x0 = model_output
    w = np.asarray(weights, np.float32)[..., None]
    guided = x0 + w * (np.asarray(target, np.float32) - x0)
    if prediction_type == "epsilon":
        return ((sample - root_alpha * guided) / root_beta).astype(np.float32)
    return guided.astype(np.float32)


def make_sampler(spec: SamplerSpec) -> DDIMSampler | DDPMSampler:
    if spec.kind == "ddim":
        return DDIMSampler(spec)
    if spec.kind == "ddpm":
        return DDPMSampler(spec)
    raise ValueError(f"sampler.kind {spec.kind!r} has no noise schedule")
