"""Diffusion Policy's ``DiffusionUnetHybridImagePolicy`` (robomimic image encoder + U-Net) as our
image diffusion policy; called by :func:`policy_runtime.importers.diffusion_policy.convert`.

What DP builds (``diffusion_policy/policy/diffusion_unet_hybrid_image_policy.py``, upstream
5ba07ac; robomimic 0.2.0, the version DP pins, ``robomimic/models/obs_nets.py`` and
``base_nets.py`` at 62ed2de), and where it lands here:

* ``shape_meta.obs``: ``rgb`` keys ``(3, H, W)`` (DP feeds ``uint8 / 255`` channels first) and
  ``low_dim`` keys. robomimic's ``ObservationEncoder`` concatenates them in ``shape_meta``
  order; ours puts every camera first, then the low-dim keys, so the rgb keys must come first
  (refused otherwise). Names are kept, or renamed with ``key_map`` (``prt eval`` wants cameras
  named ``<camera>_rgb``).
* Each camera's ``VisualCore``: ``ResNet18Conv`` (torchvision's ResNet-18 children without
  avgpool and fc: ``backbone.nets.{0: conv1, 1: bn1, 4-7: layer1-4}``) with every BatchNorm
  replaced by ``GroupNorm(C // 16, C)`` (``obs_encoder_group_norm: true``), ``SpatialSoftmax``
  (``pool.nets`` a 1x1 conv to 32 keypoints, ``pool.temperature``, fixed ``pool.pos_x/pos_y``
  grids), flatten and ``Linear`` (``nets.3``) to the feature dimension; VisualCore also lists
  the same modules as ``nets.0`` / ``nets.1`` (aliases in the state dict). A temperature ``T``
  is folded into the keypoint conv (``softmax(conv(x) / T)`` = ``softmax((conv / T)(x))``).
  robomimic's encoder applies its ``feature_activation`` (ReLU) to each camera's features: our
  ``image_feature_relu``.
* DP's image normaliser ``x * scale + offset`` on ``uint8 / 255`` (its range normaliser: 2, -1)
  is ours on uint8 with ``scale / 255``.
* ``crop_shape``: DP's own ``CropRandomizer`` (``eval_fixed_crop: true``) takes torchvision's
  centre crop at inference, as ours does where both round the offset alike (refused where
  not); robomimic's (``eval_fixed_crop: false``) crops at random even at inference: refused.
* Per step ``[camera features..., low-dim...]``, flattened over the ``n_obs_steps`` steps into
  the U-Net's global condition (``obs_as_global_cond: true``; inpainting is refused), and
  ``action = action_pred[:, n_obs_steps - 1 : ... + n_action_steps]``: our default layout.

Not checkable from a checkpoint (robomimic's config is built in DP's code, not saved):
``num_crops`` 1 and ``pos_enc`` false of the crop randomiser, the defaults of the
``bc_rnn`` image config DP uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from policy_runtime.importers.diffusion_policy import (
    ImportRefused,
    _check_scheduler,
    _scheduler,
    _section,
    sampler_fields,
)
from policy_runtime.normalization import AffineMap, Normalizer
from policy_runtime.policies import PolicyConfig, make_policy
from policy_runtime.policies.vision import NUM_KP, RESNET18_CHILDREN, ResNet18Trunk

__all__ = ["convert_hybrid"]

#: The hybrid policy's constructor arguments (anything else goes to ``scheduler.step``).
KNOWN_SETTINGS = frozenset(
    {
        "_target_",
        "shape_meta",
        "noise_scheduler",
        "horizon",
        "n_action_steps",
        "n_obs_steps",
        "num_inference_steps",
        "obs_as_global_cond",
        "crop_shape",
        "diffusion_step_embed_dim",
        "down_dims",
        "kernel_size",
        "n_groups",
        "cond_predict_scale",
        "obs_encoder_group_norm",
        "eval_fixed_crop",
    }
)


def convert_hybrid(
    cfg: dict[str, Any],
    states: dict[str, dict[str, torch.Tensor]],
    *,
    key_map: Mapping[str, str],
    control_hz: float,
) -> tuple[PolicyConfig, Normalizer, dict[str, dict[str, torch.Tensor]]]:
    """Our config, normaliser and policy state dicts for a ``DiffusionUnetHybridImagePolicy``
    (see the module docstring); ImportRefused naming the first unsupported setting."""
    policy = _section(cfg, "policy")
    unknown = sorted(set(policy) - KNOWN_SETTINGS)
    if unknown:
        raise ImportRefused(
            f"policy.{unknown[0]}: not a setting of the hybrid image policy (DP passes it to "
            "scheduler.step); not supported"
        )
    # The constructor's defaults where the config omits a setting.
    if not bool(policy.get("obs_as_global_cond", True)):
        raise ImportRefused("policy.obs_as_global_cond: False is not supported (True)")
    if not bool(policy.get("obs_encoder_group_norm", False)):
        raise ImportRefused(
            "policy.obs_encoder_group_norm: False is not supported: the encoder keeps "
            "BatchNorm (ours is GroupNorm, channels // 16 groups)"
        )
    if cfg.get("n_latency_steps", 0):
        raise ImportRefused(
            f"n_latency_steps: {cfg['n_latency_steps']} is not supported (0): the execution "
            "engine handles latency itself (prt eval --latency-ms)"
        )
    crop = policy.get("crop_shape", (76, 76))
    crop_shape = None if crop is None else (int(crop[0]), int(crop[1]))
    if crop_shape is not None and not bool(policy.get("eval_fixed_crop", False)):
        raise ImportRefused(
            "policy.eval_fixed_crop: False is not supported: robomimic's CropRandomizer crops "
            "at random at inference too (ours takes the centre)"
        )
    scheduler, sampler = _scheduler(policy)
    if "ema_model" not in states and "model" not in states:
        raise ValueError("the checkpoint has neither ema_model nor model weights")
    ema_state = states.get("ema_model", states.get("model"))
    assert ema_state is not None

    names, image_keys, low_keys, shapes = _observations(policy, key_map, crop_shape)
    features = _feature_dim(ema_state, image_keys)
    n_obs_steps = int(policy["n_obs_steps"])
    config = PolicyConfig(
        kind="diffusion",
        obs_keys=[names[k] for k in low_keys],
        image_keys=[names[k] for k in image_keys],
        obs_shapes={names[k]: shape for k, shape in shapes.items()},
        action_dim=_action_dim(policy),
        horizon=int(policy["horizon"]),
        n_obs_steps=n_obs_steps,
        n_action_steps=int(policy["n_action_steps"]),
        control_hz=control_hz,
        down_dims=tuple(policy.get("down_dims", (256, 512, 1024))),
        kernel_size=int(policy.get("kernel_size", 5)),
        step_embed_dim=int(policy.get("diffusion_step_embed_dim", 256)),
        n_groups=int(policy.get("n_groups", 8)),
        cond_predict_scale=bool(policy.get("cond_predict_scale", True)),
        image_feature_dim=features,
        crop_shape=crop_shape,
        image_feature_relu=bool(image_keys),
        **sampler_fields(policy, scheduler, sampler),
    )
    normalizer = _normalizer(ema_state, names, image_keys)
    _check_scheduler(config, normalizer, scheduler)
    probe = make_policy(config, normalizer)
    ours = probe.state_dict()
    weights = {
        name: _policy_state(state, names, image_keys, config, ours)
        for name, state in states.items()
    }
    if "ema_model" not in weights:  # trained with use_ema: false
        weights["ema_model"] = weights["model"]
    weights.setdefault("model", weights["ema_model"])
    try:
        probe.load_state_dict(weights["ema_model"], strict=True)
    except RuntimeError as exc:
        raise ImportRefused(f"the weights do not fit our image diffusion policy: {exc}") from exc
    return config, normalizer, weights


def _observations(
    policy: dict[str, Any], key_map: Mapping[str, str], crop_shape: tuple[int, int] | None
) -> tuple[dict[str, str], list[str], list[str], dict[str, tuple[int, ...]]]:
    """DP name -> ours, DP's rgb and low-dim keys (in order), DP name -> our per-step shape."""
    shape_meta = _section(policy, "shape_meta", "policy.")
    obs_meta = _section(shape_meta, "obs", "policy.shape_meta.")
    action_shape = _section(shape_meta, "action", "policy.shape_meta.").get("shape")
    if not isinstance(action_shape, list | tuple) or len(action_shape) != 1:
        raise ImportRefused(f"policy.shape_meta.action.shape {action_shape}: must be (Da,)")
    extra = sorted(set(key_map) - set(obs_meta))
    if extra:
        raise ImportRefused(
            f"key map names {extra[0]!r}, not an observation of the checkpoint {sorted(obs_meta)}"
        )
    names = {key: key_map.get(key, key) for key in obs_meta}
    if len(set(names.values())) != len(names):
        raise ImportRefused(f"key map: two observations get one name ({names})")
    image_keys: list[str] = []
    low_keys: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    for key, attr in obs_meta.items():
        where = f"policy.shape_meta.obs.{key}"
        kind = attr.get("type", "low_dim")
        shape = tuple(int(d) for d in attr["shape"])
        ours = names[key]
        if "." in ours or ours == "action":
            raise ImportRefused(f"{where}: our name {ours!r} is not a valid observation key")
        if kind == "rgb":
            if low_keys:
                raise ImportRefused(
                    f"{where}: an rgb key after the low-dim key {low_keys[-1]!r} is not "
                    "supported (our encoder puts every camera's features before the low-dim "
                    "keys; robomimic concatenates in shape_meta order)"
                )
            if len(shape) != 3 or shape[0] != 3:
                raise ImportRefused(f"{where}.shape {list(shape)}: only (3, H, W) images")
            height, width = shape[1], shape[2]
            if crop_shape is not None:
                ch, cw = crop_shape
                if not (0 < ch < height and 0 < cw < width):
                    raise ImportRefused(f"policy.crop_shape {list(crop_shape)}: not inside {key}")
                # torchvision's center_crop rounds the offset (half to even); ours floors.
                if any(
                    round((size - c) / 2.0) != (size - c) // 2
                    for size, c in ((height, ch), (width, cw))
                ):
                    raise ImportRefused(
                        f"policy.crop_shape {list(crop_shape)} of {key} {height}x{width}: "
                        "torchvision's centre crop starts a pixel away from ours there"
                    )
            image_keys.append(key)
            shapes[key] = (height, width, 3)
        elif kind == "low_dim":
            if len(shape) != 1:
                raise ImportRefused(f"{where}.shape {list(shape)}: only 1-D low-dim keys")
            low_keys.append(key)
            shapes[key] = shape
        else:
            raise ImportRefused(f"{where}.type {kind!r}: only rgb and low_dim")
    return names, image_keys, low_keys, shapes


def _action_dim(policy: dict[str, Any]) -> int:
    return int(policy["shape_meta"]["action"]["shape"][0])


def _feature_dim(state: dict[str, torch.Tensor], image_keys: list[str]) -> int:
    """Every camera's feature dimension (one, as ours), after checking its spatial softmax."""
    dims = set()
    for key in image_keys:
        prefix = f"obs_encoder.obs_nets.{key}."
        kp, linear = f"{prefix}pool.nets.weight", f"{prefix}nets.3.weight"
        if kp not in state or linear not in state:
            raise ImportRefused(
                f"state dict: no {kp} / {linear}: only robomimic's VisualCore (ResNet18Conv, "
                "SpatialSoftmax with keypoints, flatten, Linear)"
            )
        num_kp = state[kp].shape[0]
        if num_kp != NUM_KP:
            raise ImportRefused(f"{kp}: {num_kp} keypoints, ours has {NUM_KP}")
        if state[linear].shape[1] != 2 * num_kp:
            raise ImportRefused(
                f"{linear}: {state[linear].shape[1]} inputs, not 2 x {num_kp} keypoints "
                "(SpatialSoftmax output_variance is not supported)"
            )
        dims.add(int(state[linear].shape[0]))
    if len(dims) > 1:
        raise ImportRefused(f"cameras with different feature dimensions {sorted(dims)}")
    return dims.pop() if dims else 64


def _normalizer(
    state: dict[str, torch.Tensor], names: dict[str, str], image_keys: list[str]
) -> Normalizer:
    """DP's per-key LinearNormalizer; an image's (on ``uint8 / 255``) folded onto uint8."""
    prefix = "normalizer.params_dict"
    maps = {}
    for theirs, ours in [*names.items(), ("action", "action")]:
        scale, offset = f"{prefix}.{theirs}.scale", f"{prefix}.{theirs}.offset"
        if scale not in state or offset not in state:
            raise ImportRefused(f"state dict: no {scale} / {offset} (DP's LinearNormalizer)")
        s, o = state[scale].double().numpy(), state[offset].double().numpy()
        if theirs in image_keys:
            if s.size != 1 or o.size != 1:
                raise ImportRefused(f"{scale}: an image normaliser must be one scale and offset")
            s = s / 255.0
        maps[ours] = AffineMap(s.astype(np.float32), o.astype(np.float32))
    return Normalizer(maps)


def _policy_state(
    state: dict[str, torch.Tensor],
    names: dict[str, str],
    image_keys: list[str],
    config: PolicyConfig,
    ours: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """DP's ``model.*`` (the U-Net, by name) and ``obs_encoder.*`` mapped onto ours (each
    mapped weight must exist in ``ours`` with its shape)."""
    out = {k: v for k, v in state.items() if k.startswith("model.")}
    encoder = {k: v for k, v in state.items() if k.startswith("obs_encoder.")}
    used: set[str] = set()
    for key in image_keys:
        src = f"obs_encoder.obs_nets.{key}."
        dst = f"obs_encoder.image_encoders.{names[key]}."
        for name, value in encoder.items():
            if not name.startswith(src):
                continue
            rest = name.removeprefix(src)
            if rest.endswith(("running_mean", "running_var", "num_batches_tracked")):
                raise ImportRefused(
                    f"{name}: BatchNorm in the image encoder (obs_encoder_group_norm false); "
                    "ours is GroupNorm"
                )
            parts = rest.split(".")
            target = None
            if parts[:2] == ["backbone", "nets"] and parts[2] in RESNET18_CHILDREN:
                target = dst + ".".join(["backbone", RESNET18_CHILDREN[parts[2]], *parts[3:]])
            elif rest == "nets.3.weight" or rest == "nets.3.bias":
                target = dst + "linear." + parts[-1]
            elif rest in ("pool.nets.weight", "pool.nets.bias"):
                target = dst + rest
                value = value / _temperature(encoder, src)
            elif rest in ("pool.temperature", "pool.pos_x", "pool.pos_y"):
                _check_grid(encoder, src, config, names[key])
            elif parts[0] == "nets" and parts[1] in ("0", "1"):
                alias = ("backbone." if parts[1] == "0" else "pool.") + ".".join(parts[2:])
                if src + alias not in encoder:
                    raise ImportRefused(f"{name}: no {src + alias} it would alias")
            else:
                raise ImportRefused(f"{name}: not part of our image encoder")
            if target is not None:
                if target not in ours or ours[target].shape != value.shape:
                    raise ImportRefused(
                        f"{name} {list(value.shape)}: not part of our image encoder (mapped to "
                        f"{target})"
                    )
                out[target] = value
            used.add(name)
    left = sorted(set(encoder) - used)
    if left:
        raise ImportRefused(f"{left[0]}: not part of our observation encoder")
    return out


def _temperature(encoder: dict[str, torch.Tensor], src: str) -> torch.Tensor:
    name = f"{src}pool.temperature"
    value = encoder.get(name)
    if value is None:
        return torch.ones(())
    if value.numel() != 1 or not float(value) > 0:
        raise ImportRefused(f"{name}: {value.tolist()} is not a positive temperature")
    return value.reshape(())


def _check_grid(
    encoder: dict[str, torch.Tensor], src: str, config: PolicyConfig, ours: str
) -> None:
    """robomimic's keypoint grids (saved buffers) must be ours for the (cropped) feature map."""
    height, width = config.crop_shape or config.obs_shapes[ours][:2]
    fh, fw = ResNet18Trunk.output_size(height, width)
    pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, fw), np.linspace(-1.0, 1.0, fh))
    for axis, grid in (("pos_x", pos_x), ("pos_y", pos_y)):
        name = f"{src}pool.{axis}"
        if name not in encoder:
            continue
        value = encoder[name].double().numpy()
        if value.shape != (1, fh * fw) or not np.allclose(value, grid.reshape(1, -1), atol=1e-6):
            raise ImportRefused(f"{name}: not the {fh}x{fw} keypoint grid our encoder uses")
