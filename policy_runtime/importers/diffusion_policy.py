"""Diffusion Policy checkpoints (``.ckpt``) as our checkpoints: ``prt import dp CKPT --out RUN
--trust``.

A DP checkpoint is ``torch.save(payload, pickle_module=dill)`` with the workspace's OmegaConf
config (``cfg``) and state dicts (``model``, ``ema_model``, ``optimizer``). Loading it executes
pickle, so nothing happens without ``trust=True``, and even then the unpickling runs in a child
process (:mod:`policy_runtime.importers.dp_unpickle`) that hands back plain JSON and
safetensors; this process never unpickles.

What is imported (everything else is refused by name, before anything is written):

* ``DiffusionUnetLowdimPolicy`` with the observations as global conditioning
  (``obs_as_global_cond``: the ``n_obs_steps`` observations flattened into the U-Net's
  condition), in each of its layouts of the executed actions (``predict_action`` and
  ``compute_loss`` of ``diffusion_policy/policy/diffusion_unet_lowdim_policy.py``, upstream
  548a52b). DP's data windows put the newest observation at index ``n_obs_steps - 1`` and
  store at each step the action commanded at its observation (our data's
  ``action_offset_steps`` 0), so the index of an action in the window is its step:

  - ``oa_step_convention: true`` (DP's configs): the U-Net denoises the whole ``horizon`` and
    ``action = action_pred[n_obs_steps - 1 : ... + n_action_steps]``, due from the newest
    observation's step on: our own layout (``action_start`` None, ``action_offset_steps`` 0).
  - ``oa_step_convention: false`` (the constructor's default): the same network and training,
    but ``action = action_pred[n_obs_steps : ...]``, one step later in the data: our
    ``action_start = n_obs_steps``, and the first action is due a step after the newest
    observation, ``action_offset_steps`` 1 (DP's own rollouts execute it at once, a step
    before its data placed it; the runtime stamps it where the data places it).
  - ``pred_action_steps_only``: the U-Net denoises only ``(B, n_action_steps, Da)``, trained on
    ``action[start : start + n_action_steps]`` of the window (``start`` ``n_obs_steps - 1``
    with ``oa_step_convention``, else ``n_obs_steps``), and the whole sample is the action:
    our ``horizon = n_action_steps`` (DP's ``horizon`` is only its data window),
    ``action_start = 0`` and ``action_offset_steps`` 0 or 1 as above.
* The U-Net (``ConditionalUnet1D``): our network keeps DP's parameter names, so the weights load
  strictly by name and shape.
* DP's ``LinearNormalizer`` (``x * scale + offset`` per key, as ours) for ``obs`` and ``action``.
* DDPM and DDIM schedulers whose every setting our scheduler reproduces (each is compared).
* ``DiffusionUnetHybridImagePolicy`` (robomimic's ResNet-18 / GroupNorm / spatial-softmax image
  encoder): see :mod:`policy_runtime.importers.dp_hybrid` for what it maps and refuses.

The EMA weights (``ema_model``) are what inference uses, as in DP; without them (a run with
``use_ema: false``), the raw weights. The result is one of our checkpoints (``config.json``,
``model.safetensors``, ``ema.safetensors``, ``normalizer.safetensors``) recording where it came
from; it is not resumable (DP's optimiser state is not carried over).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from policy_runtime.normalization import AffineMap, Normalizer
from policy_runtime.policies import PolicyConfig, make_policy
from policy_runtime.policies.diffusion import DiffusionPolicy, Sampler
from policy_runtime.training.checkpoint import save_imported_checkpoint

__all__ = ["TRUST_REQUIRED", "ImportRefused", "convert", "import_checkpoint"]

TRUST_REQUIRED = (
    "a Diffusion Policy checkpoint is a pickle (torch.save with dill): loading it runs whatever "
    "code the file holds. Import only files you trust, with --trust (the file is then loaded in "
    "a separate process that hands back plain weights)"
)
LOWDIM_POLICY = "diffusion_policy.policy.diffusion_unet_lowdim_policy.DiffusionUnetLowdimPolicy"
HYBRID_POLICY = (
    "diffusion_policy.policy.diffusion_unet_hybrid_image_policy.DiffusionUnetHybridImagePolicy"
)
UNET = "diffusion_policy.model.diffusion.conditional_unet1d.ConditionalUnet1D"
SCHEDULERS: dict[str, Sampler] = {
    "diffusers.schedulers.scheduling_ddpm.DDPMScheduler": "ddpm",
    "diffusers.schedulers.scheduling_ddim.DDIMScheduler": "ddim",
}
#: The child process that unpickles may take this long (a large image checkpoint: seconds).
UNPICKLE_TIMEOUT_S = 600.0


class ImportRefused(ValueError):
    """The checkpoint holds something this importer does not support; the message names it."""


def import_checkpoint(
    checkpoint: Path,
    out: Path,
    *,
    trust: bool,
    obs_key: str = "obs",
    control_hz: float = 10.0,
    key_map: Mapping[str, str] | None = None,
) -> DiffusionPolicy:
    """Import ``checkpoint`` into the checkpoint directory ``out`` and return the policy (EMA
    weights). ``obs_key`` names DP's single observation vector in our config; ``control_hz``
    is the rate its actions were recorded at (DP's PushT: 10 Hz), which DP's config does not
    hold; ``key_map`` renames a hybrid image policy's observation keys (DP's -> ours).
    Raises PermissionError without ``trust`` (nothing is read), ImportRefused naming what is
    unsupported (nothing is written), ValueError for a file that is not a DP checkpoint."""
    checkpoint = Path(checkpoint)
    if not trust:
        raise PermissionError(f"{checkpoint}: refused: {TRUST_REQUIRED}")
    if not checkpoint.is_file():
        raise ValueError(f"{checkpoint}: no such file")
    with tempfile.TemporaryDirectory(prefix="prt-import-dp-") as staging:
        cfg, states, meta = _unpickle_in_child(checkpoint, Path(staging))
    config, normalizer, weights = convert(
        cfg, states, obs_key=obs_key, control_hz=control_hz, key_map=key_map
    )
    raw = make_policy(config, normalizer)
    ema = make_policy(config, normalizer)
    assert isinstance(ema, DiffusionPolicy)
    raw.load_state_dict(weights["model"], strict=True)
    ema.load_state_dict(weights["ema_model"], strict=True)
    source = {
        "format": "diffusion_policy.ckpt",
        "file": str(checkpoint.resolve()),
        "policy": cfg["policy"]["_target_"],
        "task": cfg.get("task_name") or cfg.get("name"),
        "global_step": meta.get("global_step"),
        "epoch": meta.get("epoch"),
        "ema": "ema_model" in states,
    }
    save_imported_checkpoint(Path(out), policy=raw, ema_policy=ema, source=source)
    return ema.eval()


def convert(
    cfg: dict[str, Any],
    states: dict[str, dict[str, torch.Tensor]],
    *,
    obs_key: str = "obs",
    control_hz: float = 10.0,
    key_map: Mapping[str, str] | None = None,
) -> tuple[PolicyConfig, Normalizer, dict[str, dict[str, torch.Tensor]]]:
    """Our policy config, normaliser and state dicts (``model``, ``ema_model``) for a DP
    workspace config and its state dicts; ImportRefused naming the first unsupported setting.
    ``obs_key`` names a low-dim policy's observation vector; ``key_map`` renames a hybrid image
    policy's observation keys (DP's name -> ours; unnamed keys keep DP's name)."""
    policy = _section(cfg, "policy")
    target = policy.get("_target_")
    if target == HYBRID_POLICY:
        from policy_runtime.importers.dp_hybrid import convert_hybrid

        return convert_hybrid(cfg, states, key_map=key_map or {}, control_hz=control_hz)
    if target != LOWDIM_POLICY:
        raise ImportRefused(
            f"policy._target_ {target}: only {LOWDIM_POLICY} and {HYBRID_POLICY} are supported "
            "(other image policies, transformer and BET variants are not)"
        )
    for name, wanted in (("obs_as_global_cond", True), ("obs_as_local_cond", False)):
        if bool(policy.get(name, False)) != wanted:
            raise ImportRefused(f"policy.{name}: {policy.get(name)!r} is not supported ({wanted})")
    if cfg.get("n_latency_steps", 0):
        # DP adds them to the policy's n_action_steps and its runner drops the first ones.
        raise ImportRefused(
            f"n_latency_steps: {cfg['n_latency_steps']} is not supported (0): the execution "
            "engine handles latency itself (prt eval --latency-ms)"
        )
    model = _section(policy, "model", "policy.")
    if model.get("_target_") != UNET:
        raise ImportRefused(f"policy.model._target_ {model.get('_target_')}: only {UNET}")
    obs_dim, n_obs_steps = int(policy["obs_dim"]), int(policy["n_obs_steps"])
    if model.get("local_cond_dim") is not None:
        raise ImportRefused("policy.model.local_cond_dim: local conditioning is not supported")
    if model.get("global_cond_dim") != obs_dim * n_obs_steps:
        raise ImportRefused(
            f"policy.model.global_cond_dim {model.get('global_cond_dim')}: expected obs_dim x "
            f"n_obs_steps = {obs_dim * n_obs_steps}"
        )
    scheduler, sampler = _scheduler(policy)
    if "ema_model" not in states and "model" not in states:
        raise ValueError("the checkpoint has neither ema_model nor model weights")
    n_action_steps = int(policy["n_action_steps"])
    # Where DP's executed actions lie (see the module docstring): the first one ``later`` steps
    # after the newest observation (DP's constructor defaults oa_step_convention to false), at
    # ``action_start`` in the U-Net's sample.
    later = 0 if policy.get("oa_step_convention", False) else 1
    if policy.get("pred_action_steps_only", False):
        horizon, action_start = n_action_steps, 0
    else:
        horizon, action_start = int(policy["horizon"]), n_obs_steps - 1 + later
    config = PolicyConfig(
        kind="diffusion",
        obs_keys=[obs_key],
        obs_shapes={obs_key: (obs_dim,)},
        action_dim=int(policy["action_dim"]),
        horizon=horizon,
        n_obs_steps=n_obs_steps,
        n_action_steps=n_action_steps,
        control_hz=control_hz,
        action_offset_steps=later,
        action_start=action_start,
        down_dims=tuple(model["down_dims"]),
        kernel_size=int(model["kernel_size"]),
        step_embed_dim=int(model["diffusion_step_embed_dim"]),
        n_groups=int(model["n_groups"]),
        cond_predict_scale=bool(model["cond_predict_scale"]),
        **sampler_fields(policy, scheduler, sampler),
    )
    ema_state = states.get("ema_model", states.get("model"))
    assert ema_state is not None
    normalizer = _normalizer(ema_state, obs_key)
    _check_scheduler(config, normalizer, scheduler)
    weights = {
        name: {k: v for k, v in state.items() if k.startswith("model.")}
        for name, state in states.items()
    }
    if "ema_model" not in weights:  # trained with use_ema: false
        weights["ema_model"] = weights["model"]
    weights.setdefault("model", weights["ema_model"])
    return config, normalizer, weights


def _scheduler(policy: dict[str, Any]) -> tuple[dict[str, Any], Sampler]:
    scheduler = _section(policy, "noise_scheduler", "policy.")
    sampler = SCHEDULERS.get(str(scheduler.get("_target_")))
    if sampler is None:
        raise ImportRefused(
            f"policy.noise_scheduler._target_ {scheduler.get('_target_')}: only "
            f"{sorted(SCHEDULERS)}"
        )
    return scheduler, sampler


def _check_scheduler(
    config: PolicyConfig, normalizer: Normalizer, scheduler: dict[str, Any]
) -> None:
    """Every setting of DP's scheduler must be what ours uses."""
    probe = make_policy(config, normalizer)
    assert isinstance(probe, DiffusionPolicy)
    ours = probe.make_scheduler(config.sampler).config
    for name, value in scheduler.items():
        if name != "_target_" and ours.get(name) != value:
            raise ImportRefused(
                f"policy.noise_scheduler.{name}: {value!r}, where ours is {ours.get(name)!r}"
            )


def sampler_fields(
    policy: dict[str, Any], scheduler: dict[str, Any], sampler: Sampler
) -> dict[str, Any]:
    """Our PolicyConfig's sampler settings from DP's policy and noise scheduler configs
    (``num_inference_steps`` unset: as many as the training steps, as DP does)."""
    return {
        "num_train_timesteps": int(scheduler["num_train_timesteps"]),
        "beta_schedule": str(scheduler["beta_schedule"]),
        "prediction_type": scheduler["prediction_type"],
        "clip_sample": bool(scheduler["clip_sample"]),
        "sampler": sampler,
        "num_inference_steps": int(
            policy.get("num_inference_steps") or scheduler["num_train_timesteps"]
        ),
    }


def _unpickle_in_child(
    checkpoint: Path, staging: Path
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Run :mod:`policy_runtime.importers.dp_unpickle` and read back its JSON and tensors."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "policy_runtime.importers.dp_unpickle",
            str(checkpoint),
            str(staging),
        ],
        capture_output=True,
        text=True,
        timeout=UNPICKLE_TIMEOUT_S,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ValueError(
            f"{checkpoint}: could not be loaded as a Diffusion Policy checkpoint: {reason}"
        )
    cfg = json.loads((staging / "cfg.json").read_text())
    meta = json.loads((staging / "meta.json").read_text())
    states = {
        name: load_file(staging / f"{name}.safetensors")
        for name in ("model", "ema_model")
        if (staging / f"{name}.safetensors").is_file()
    }
    return cfg, states, meta


def _section(parent: dict[str, Any], name: str, where: str = "") -> dict[str, Any]:
    value = parent.get(name)
    if not isinstance(value, dict):
        raise ValueError(f"{where}{name}: missing from the checkpoint's config")
    return value


def _normalizer(state: dict[str, torch.Tensor], obs_key: str) -> Normalizer:
    """DP's LinearNormalizer (``x * scale + offset`` per key, like ours) for obs and action."""
    prefix = "normalizer.params_dict"
    maps = {}
    for theirs, ours in (("obs", obs_key), ("action", "action")):
        scale, offset = f"{prefix}.{theirs}.scale", f"{prefix}.{theirs}.offset"
        if scale not in state or offset not in state:
            raise ImportRefused(
                f"state dict: no {scale} / {offset}: the policy's normalizer must hold 'obs' and "
                "'action' (a LinearNormalizer)"
            )
        maps[ours] = AffineMap(state[scale].numpy(), state[offset].numpy())
    return Normalizer(maps)
