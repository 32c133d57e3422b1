"""The torch backend: a training checkpoint behind the runtime's interface.

For debugging and parity checks: the same ``predict(obs_history, rng)`` as
:class:`~policy_runtime.inference.runtime.OnnxPolicy`, the same observation checks and the same
numpy noise, but the network and the sampler are the training code's (torch, diffusers). Given
the same ``rng`` state, a bundle and the checkpoint it was exported from return the same DDIM
and drifting chunks up to float error; DDPM draws its per-step noise from a torch generator
seeded from ``rng``, so it matches only in distribution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from policy_runtime.inference.runtime import Guide, PolicyRuntime, SamplerKind
from policy_runtime.inference.schedulers import inpaint_model_output
from policy_runtime.inference.specs import specs_from_config
from policy_runtime.policies.base import Policy
from policy_runtime.policies.diffusion import DiffusionPolicy, OutputHook


class TorchPolicy(PolicyRuntime):
    def __init__(self, policy: Policy, device: str | torch.device = "cpu") -> None:
        super().__init__(specs_from_config(policy.config, policy.normalizer))
        self.device = torch.device(device)
        self.policy = policy.to(self.device).eval()

    def _predict_normalized(
        self,
        obs: dict[str, np.ndarray],
        noise: np.ndarray,
        steps: int,
        sampler: SamplerKind | None,
        rng: np.random.Generator,
        guide: Guide | None = None,
    ) -> np.ndarray:
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in obs.items()}
        start = torch.from_numpy(noise).to(self.device)
        with torch.no_grad():
            if isinstance(self.policy, DiffusionPolicy):
                generator = torch.Generator(self.device).manual_seed(int(rng.integers(2**63)))
                out = self.policy.predict_action(
                    tensors,
                    start,
                    num_inference_steps=steps,
                    sampler=sampler,
                    generator=generator,
                    output_hook=None if guide is None else self._guidance(guide),
                )
            else:
                out = self.policy.predict_action(tensors, start)
        key = self.policy.config.action_key
        return np.asarray(
            self.policy.normalizer.normalize(key, out["action_pred"]).cpu().numpy(), np.float32
        )

    def set_temperature(self, temperature: float) -> None:
        super().set_temperature(temperature)
        config = self.policy.config.model_copy(update={"bet_temperature": float(temperature)})
        self.policy.config = config

    def _guidance(self, guide: Guide) -> OutputHook:
        """The runtime's own x0-space inpainting (numpy), applied between torch steps."""
        prediction_type = self.specs.sampler.prediction_type

        def hook(output: torch.Tensor, t: int, sample: torch.Tensor, alpha: float) -> torch.Tensor:
            guided = inpaint_model_output(
                output.cpu().numpy(),
                sample.cpu().numpy(),
                alpha,
                prediction_type,
                guide.target,
                guide.weights,
            )
            return torch.from_numpy(guided).to(output.device)

        return hook


def load_torch_policy(checkpoint: Path | str, device: str = "cpu") -> TorchPolicy:
    """A checkpoint (or a training run directory: its best, else latest) as a runtime policy."""
    from policy_runtime.training.checkpoint import load_policy

    return TorchPolicy(load_policy(Path(checkpoint)), device)
