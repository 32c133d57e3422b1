"""LeRobot diffusion policies (a ``save_pretrained`` directory) as our checkpoints: ``prt import
lerobot DIR --out RUN``.

Implemented from LeRobot's source at v0.6.2, commit ``7427f31801f944f5ec9ce53cda02862ce7d1638b``
(huggingface/lerobot): ``src/lerobot/policies/diffusion/configuration_diffusion.py``,
``modeling_diffusion.py`` and ``processor_diffusion.py``; ``src/lerobot/processor/pipeline.py``,
``normalize_processor.py`` and ``factory.py`` (the saved pre/post-processors);
``src/lerobot/configs/policies.py`` and ``types.py`` (``config.json``); for the older layout,
``src/lerobot/policies/normalize.py`` as it was before commit ``78b866116`` (2025-09-18, "use
pipelines across the codebase", first released in v0.4.0).

A LeRobot pretrained policy directory (a training run's ``checkpoints/<step>/pretrained_model``;
the step directory itself is accepted too) holds ``config.json`` (the draccus-encoded
``DiffusionConfig`` with ``"type": "diffusion"``) and ``model.safetensors`` (``diffusion.unet.*``,
``diffusion.rgb_encoder.*``). The normalisation statistics are, since v0.4.0, in the saved
processors: ``policy_preprocessor.json`` whose ``normalizer_processor`` step names its
``policy_preprocessor_step_<i>_normalizer_processor.safetensors`` (``<feature>.<stat>``), and
``policy_postprocessor.json`` whose ``unnormalizer_processor`` does the same for the actions.
Before v0.4.0 they were buffers in ``model.safetensors`` (``normalize_inputs.buffer_<feature with
_ for .>.<stat>``, ``normalize_targets.*``, ``unnormalize_outputs.*``); both layouts are read.
Only JSON and safetensors are read: nothing is unpickled (``train_config.json`` is not needed).

What is imported (everything else is refused by name, before anything is written):

* ``observation.state`` and ``observation.environment_state`` as low-dim keys (``state_key``,
  ``env_state_key``; the environment state optional with cameras), ``action`` as ``action``.
* Cameras (VISUAL, ``(3, H, W)``, LeRobot's float [0, 1]) as our uint8 ``(H, W, 3)`` image keys
  (``observation.images.<name>`` -> ``<name>``, or ``image_keys``), in ``input_features``
  order. ``DiffusionRgbEncoder`` (shared ``rgb_encoder.*``, copied to each camera; or
  ``rgb_encoder.<i>.*`` per camera) onto our ``ImageEncoder``: ``backbone.{0,1,4-7}`` ->
  ``conv1``, ``bn1``, ``layer1-4``; ``pool.nets`` kept; ``pool.pos_grid`` checked against our
  keypoint grid; ``out`` -> ``linear`` with ``image_feature_relu`` (its ``relu(out(x))``).
  Refused by name: ``vision_backbone`` other than resnet18, ``use_group_norm: false``
  (BatchNorm, e.g. a pretrained backbone), ``spatial_softmax_num_keypoints`` other than 32,
  ``resize_shape``, a crop outside the image or where torchvision's CenterCrop (what LeRobot's
  eval always uses; ``crop_is_random`` only applies in training) rounds its offset unlike ours.
  The image normalisation (per-channel statistics) is folded onto uint8 (``scale / 255``).
* Condition order: LeRobot concatenates per step ``[state, cameras..., env state]``, ours
  ``[cameras..., state, env state]``; both flatten step-major after the step embedding
  (``[embedding, global cond]``), so the columns of every FiLM layer's
  ``cond_encoder.1.weight`` are permuted to ours (exact).
* The U-Net (``DiffusionConditionalUnet1d``): the same network as Diffusion Policy's, whose names
  ours keep; LeRobot's residual blocks call their conv blocks ``conv1``/``conv2`` (ours
  ``blocks.0``/``blocks.1``) and its down/up-sampling convs are bare ``Conv1d`` (ours wrap them
  in ``.conv``). Every key is mapped and loaded strictly; the FiLM embedding is split the same
  way (scales first, then biases).
* Normalisation per feature type (``normalization_mapping``, or the processor's ``norm_map``):
  MIN_MAX (to [-1, 1]), MEAN_STD, IDENTITY, and in the processor layout QUANTILES (q01/q99) and
  QUANTILE10 (q10/q90), each exactly an affine map ``x * scale + offset``. Observations take
  LeRobot's normalising formula (its ``eps`` included), actions its unnormalising one (what
  inference applies; its ``eps`` only replaces a zero range or standard deviation). One
  deliberate difference: an observation dimension constant in the data (zero range or standard
  deviation) maps its value where LeRobot does (-1, or 0 for MEAN_STD) but at slope 1, not
  LeRobot's 1/eps (whose float32 offset would cancel the value away); it only differs for values
  the policy never saw. Statistics missing for a normalised feature are refused (LeRobot would
  pass the raw values through).
* DDPM and DDIM with every scheduler setting LeRobot passes compared with ours (the schedulers'
  full diffusers configs), ``num_inference_steps`` (None: ``num_train_timesteps``). LeRobot, like
  ours, executes ``n_action_steps`` actions from index ``n_obs_steps - 1`` of the horizon.

LeRobot keeps no EMA copy of a diffusion policy, so both our weight files hold the same weights;
the result records where it came from and is not resumable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from safetensors.torch import load_file

from policy_runtime.importers.diffusion_policy import ImportRefused
from policy_runtime.normalization import AffineMap, Normalizer
from policy_runtime.policies import PolicyConfig, make_policy
from policy_runtime.policies.diffusion import DiffusionPolicy, Sampler
from policy_runtime.policies.vision import NUM_KP, RESNET18_CHILDREN, ResNet18Trunk
from policy_runtime.training.checkpoint import save_imported_checkpoint

__all__ = [
    "LEROBOT_COMMIT",
    "LEROBOT_VERSION",
    "FeatureNorm",
    "ImportRefused",
    "convert",
    "import_pretrained",
    "read_pretrained",
]

LEROBOT_VERSION = "0.6.2"
LEROBOT_COMMIT = "7427f31801f944f5ec9ce53cda02862ce7d1638b"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
OBS_STATE = "observation.state"
OBS_ENV_STATE = "observation.environment_state"
ACTION = "action"
OBS_IMAGES = "observation.images."
UNET_PREFIX = "diffusion.unet."
RGB_PREFIX = "diffusion.rgb_encoder."
#: model.safetensors buffers of the layout before v0.4.0 (statistics, read separately).
LEGACY_BUFFERS = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")
LEGACY_EPS = 1e-8
SCHEDULERS: dict[str, Sampler] = {"DDPM": "ddpm", "DDIM": "ddim"}
#: The beta schedules our deploy runtime builds (policy_runtime.inference.schedulers).
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
#: Pre-processor steps that do not change the numbers the policy sees, besides the normaliser.
PREPROCESSOR_STEPS = (
    "rename_observations_processor",
    "to_batch_processor",
    "device_processor",
    "normalizer_processor",
)
POSTPROCESSOR_STEPS = ("unnormalizer_processor", "device_processor")
#: The statistics each normalisation mode reads (low, high) or (mean, std).
MODE_STATS = {
    "MIN_MAX": ("min", "max"),
    "QUANTILES": ("q01", "q99"),
    "QUANTILE10": ("q10", "q90"),
    "MEAN_STD": ("mean", "std"),
}
LEGACY_MODES = ("MIN_MAX", "MEAN_STD", "IDENTITY")
#: DiffusionConfig's defaults (configuration_diffusion.py), for fields an older config lacks.
DEFAULTS: dict[str, Any] = {
    "n_obs_steps": 2,
    "horizon": 64,
    "n_action_steps": 32,
    "down_dims": [512, 1024, 2048],
    "kernel_size": 5,
    "n_groups": 8,
    "diffusion_step_embed_dim": 128,
    "use_film_scale_modulation": True,
    "noise_scheduler_type": "DDPM",
    "num_train_timesteps": 100,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "num_inference_steps": None,
    "use_peft": False,
    # The image encoder's (read only for a policy with cameras).
    "vision_backbone": "resnet18",
    "resize_shape": None,
    "crop_shape": None,
    "crop_is_random": True,
    "pretrained_backbone_weights": "ResNet18_Weights.IMAGENET1K_V1",
    "use_group_norm": False,
    "spatial_softmax_num_keypoints": 32,
    "use_separate_rgb_encoder_per_camera": True,
}


@dataclass(frozen=True)
class FeatureNorm:
    """How LeRobot (un)normalises one feature: its mode, the statistics that mode reads, the
    ``eps`` of its formulas, whether the formulas are the pre-v0.4.0 ones, and where the
    statistics came from (for messages)."""

    mode: str
    stats: dict[str, np.ndarray]
    eps: float
    legacy: bool
    source: str


def import_pretrained(
    directory: Path,
    out: Path,
    *,
    state_key: str = "state",
    env_state_key: str = "environment_state",
    image_keys: Mapping[str, str] | None = None,
    control_hz: float = 10.0,
) -> DiffusionPolicy:
    """Import the LeRobot pretrained policy in ``directory`` into the checkpoint directory
    ``out`` and return the policy. ``state_key`` and ``env_state_key`` are our names for
    ``observation.state`` and ``observation.environment_state``, ``image_keys`` ours for
    cameras (``observation.images.<name>``: ``<name>`` by default); ``control_hz`` is the rate the
    actions were recorded at (the dataset's fps, which the policy's files do not hold). Raises
    ImportRefused naming what is unsupported and ValueError for a directory that is not a
    LeRobot policy (nothing is written in either case)."""
    directory = _pretrained_dir(Path(directory))
    config, weights, norms, layout = read_pretrained(directory)
    policy_config, normalizer, state = convert(
        config,
        weights,
        norms,
        state_key=state_key,
        env_state_key=env_state_key,
        image_keys=image_keys,
        control_hz=control_hz,
    )
    policy = make_policy(policy_config, normalizer)
    assert isinstance(policy, DiffusionPolicy)
    policy.load_state_dict(state, strict=True)
    source = {
        "format": "lerobot.pretrained",
        "directory": str(directory.resolve()),
        "type": config.get("type"),
        "repo_id": config.get("repo_id"),
        "normalization_layout": layout,
        "normalization": {key: norm.mode for key, norm in norms.items()},
        "keys": {
            **_image_names(_features(config, "input_features"), image_keys or {}),
            OBS_STATE: state_key,
            **({OBS_ENV_STATE: env_state_key} if env_state_key in policy_config.obs_keys else {}),
            ACTION: ACTION,
        },
        "implemented_from": f"lerobot {LEROBOT_VERSION} ({LEROBOT_COMMIT})",
        "ema": False,
    }
    save_imported_checkpoint(Path(out), policy=policy, ema_policy=policy, source=source)
    return policy.eval()


def read_pretrained(
    directory: Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, FeatureNorm], str]:
    """``config.json``, ``model.safetensors``, each feature's normalisation and the layout they
    were found in (``processors`` or ``model buffers``) of a pretrained policy directory."""
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file():
        raise ValueError(f"{directory}: no {CONFIG_FILE}: not a LeRobot pretrained policy")
    if not weights_path.is_file():
        sharded = (directory / f"{WEIGHTS_FILE}.index.json").is_file()
        why = " (sharded weights are not supported)" if sharded else ""
        raise ValueError(f"{directory}: no {WEIGHTS_FILE}{why}")
    config = json.loads(config_path.read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: not a JSON object")
    _check_policy(config)
    weights = load_file(weights_path)
    inputs = list(_features(config, "input_features"))
    if (directory / PREPROCESSOR_FILE).is_file() or (directory / POSTPROCESSOR_FILE).is_file():
        return config, weights, _processor_norms(directory, inputs), "processors"
    if any(key.startswith(LEGACY_BUFFERS) for key in weights):
        return config, weights, _legacy_norms(config, weights), "model buffers"
    raise ValueError(
        f"{directory}: no normalisation statistics: neither {PREPROCESSOR_FILE} and "
        f"{POSTPROCESSOR_FILE} (LeRobot >= 0.4) nor normalize_inputs.* buffers in {WEIGHTS_FILE}"
    )


def convert(
    config: dict[str, Any],
    weights: dict[str, torch.Tensor],
    norms: dict[str, FeatureNorm],
    *,
    state_key: str = "state",
    env_state_key: str = "environment_state",
    image_keys: Mapping[str, str] | None = None,
    control_hz: float = 10.0,
) -> tuple[PolicyConfig, Normalizer, dict[str, torch.Tensor]]:
    """Our policy config, normaliser and state dict for a LeRobot diffusion config, its weights
    and its features' normalisation; ImportRefused naming the first unsupported setting."""
    _check_policy(config)
    if state_key == env_state_key:
        raise ValueError(f"the state and environment state keys must differ ({state_key!r})")
    cfg = {**DEFAULTS, **config}
    inputs, outputs = _features(config, "input_features"), _features(config, "output_features")
    sampler = SCHEDULERS.get(str(cfg["noise_scheduler_type"]))
    if sampler is None:
        raise ImportRefused(
            f"config.json noise_scheduler_type {cfg['noise_scheduler_type']!r}: only "
            f"{sorted(SCHEDULERS)}"
        )
    if cfg["prediction_type"] not in ("epsilon", "sample"):
        raise ImportRefused(
            f"config.json prediction_type {cfg['prediction_type']!r}: only 'epsilon' or 'sample'"
        )
    if cfg["beta_schedule"] not in BETA_SCHEDULES:
        raise ImportRefused(
            f"config.json beta_schedule {cfg['beta_schedule']!r}: only {list(BETA_SCHEDULES)}"
        )
    names = _image_names(inputs, image_keys or {})
    taken = [*names.values(), state_key, env_state_key]
    if len(set(taken)) != len(taken) or any("." in n or n == ACTION for n in names.values()):
        raise ValueError(
            f"our observation names must differ, contain no '.' and not be {ACTION!r}: "
            f"cameras {names}, state {state_key!r}, environment state {env_state_key!r}"
        )
    crop_shape = _check_images(cfg, inputs, list(names)) if names else None
    low_dim = {state_key: inputs[OBS_STATE][1]}
    if OBS_ENV_STATE in inputs:
        low_dim[env_state_key] = inputs[OBS_ENV_STATE][1]
    image_shapes = {ours: _hwc(inputs[theirs][1]) for theirs, ours in names.items()}
    policy_config = PolicyConfig(
        kind="diffusion",
        obs_keys=list(low_dim),
        image_keys=list(image_shapes),
        obs_shapes={**image_shapes, **low_dim},
        image_feature_dim=2 * NUM_KP,
        crop_shape=crop_shape,
        image_feature_relu=bool(names),
        action_dim=outputs[ACTION][1][0],
        horizon=int(cfg["horizon"]),
        n_obs_steps=int(cfg["n_obs_steps"]),
        n_action_steps=int(cfg["n_action_steps"]),
        control_hz=control_hz,
        down_dims=tuple(int(d) for d in cfg["down_dims"]),
        kernel_size=int(cfg["kernel_size"]),
        step_embed_dim=int(cfg["diffusion_step_embed_dim"]),
        n_groups=int(cfg["n_groups"]),
        cond_predict_scale=bool(cfg["use_film_scale_modulation"]),
        num_train_timesteps=int(cfg["num_train_timesteps"]),
        beta_schedule=str(cfg["beta_schedule"]),
        prediction_type=cfg["prediction_type"],
        clip_sample=bool(cfg["clip_sample"]),
        sampler=sampler,
        num_inference_steps=int(cfg["num_inference_steps"] or cfg["num_train_timesteps"]),
    )
    maps = {}
    for theirs, ours, shape in (
        (OBS_STATE, state_key, low_dim[state_key]),
        (OBS_ENV_STATE, env_state_key, low_dim.get(env_state_key)),
        (ACTION, ACTION, (policy_config.action_dim,)),
    ):
        if shape is None:
            continue
        if theirs not in norms:
            raise ValueError(f"no normalisation found for {theirs}")
        maps[ours] = _affine(theirs, norms[theirs], shape, unnormalize=theirs == ACTION)
    for theirs, ours in names.items():
        if theirs not in norms:
            raise ValueError(f"no normalisation found for {theirs}")
        maps[ours] = _image_affine(theirs, norms[theirs])
    normalizer = Normalizer(maps)
    probe = make_policy(policy_config, normalizer)
    assert isinstance(probe, DiffusionPolicy)
    _compare_schedulers(cfg, probe)
    seen = crop_shape or next(iter(image_shapes.values()), (0, 0, 3))[:2]
    layout = _Layout(
        cameras=list(names.values()),
        separate=bool(cfg["use_separate_rgb_encoder_per_camera"]),
        step_embed_dim=policy_config.step_embed_dim,
        n_obs_steps=policy_config.n_obs_steps,
        state_dim=low_dim[state_key][0],
        env_dim=low_dim[env_state_key][0] if env_state_key in low_dim else 0,
        feature_map=ResNet18Trunk.output_size(seen[0], seen[1]),
    )
    state = _policy_state(weights, probe.state_dict(), layout)
    return policy_config, normalizer, state


def _pretrained_dir(directory: Path) -> Path:
    """``directory``, or its ``pretrained_model`` (a LeRobot training checkpoint's step)."""
    nested = directory / "pretrained_model"
    if not (directory / CONFIG_FILE).is_file() and (nested / CONFIG_FILE).is_file():
        return nested
    return directory


def _check_policy(config: dict[str, Any]) -> None:
    """The policy type and the features, refused by name where we have no counterpart."""
    kind = config.get("type")
    if kind != "diffusion":
        why = (
            " (a LeRobot config from before v0.2 (input_shapes): re-save it with a newer LeRobot)"
            if kind is None and "input_shapes" in config
            else ""
        )
        raise ImportRefused(f"config.json type {kind!r}: only 'diffusion' is supported{why}")
    if config.get("use_peft"):
        raise ImportRefused("config.json use_peft: true: PEFT adapters are not supported")
    inputs, outputs = _features(config, "input_features"), _features(config, "output_features")
    expected_types = {OBS_STATE: "STATE", OBS_ENV_STATE: "ENV"}
    images = [key for key, (kind, _) in inputs.items() if kind == "VISUAL"]
    for key, (kind, shape) in inputs.items():
        if kind == "VISUAL":
            if len(shape) != 3 or shape[0] != 3:
                raise ImportRefused(
                    f"config.json input_features {key}: shape {list(shape)}: only (3, H, W) images"
                )
            continue
        if expected_types.get(key) != kind:
            raise ImportRefused(
                f"config.json input_features {key} ({kind}): only {OBS_STATE} (STATE), "
                f"{OBS_ENV_STATE} (ENV) and cameras (VISUAL) are supported"
            )
        if len(shape) != 1:
            raise ImportRefused(f"config.json input_features {key}: shape {list(shape)} is not 1-D")
    required = [OBS_STATE] if images else list(expected_types)
    for key in required:
        if key not in inputs:
            raise ImportRefused(
                f"config.json input_features: no {key} (a LeRobot diffusion policy reads "
                f"{OBS_STATE} and cameras, {OBS_ENV_STATE} or both)"
            )
    if set(outputs) != {ACTION} or outputs[ACTION][0] != "ACTION" or len(outputs[ACTION][1]) != 1:
        raise ImportRefused(
            f"config.json output_features {sorted(outputs)}: only {ACTION} (ACTION, 1-D)"
        )


def _features(config: dict[str, Any], name: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{feature: (type, shape)}`` of ``input_features`` or ``output_features``."""
    features = config.get(name)
    if not isinstance(features, dict) or not features:
        raise ValueError(f"config.json {name}: missing or empty")
    out = {}
    for key, feature in features.items():
        if not isinstance(feature, dict) or "type" not in feature or "shape" not in feature:
            raise ValueError(f"config.json {name}.{key}: not a {{type, shape}} feature")
        out[key] = (str(feature["type"]), tuple(int(d) for d in feature["shape"]))
    return out


def _image_names(
    inputs: dict[str, tuple[str, tuple[int, ...]]], key_map: Mapping[str, str]
) -> dict[str, str]:
    """LeRobot's cameras (``input_features`` order, which LeRobot stacks and encodes them in)
    -> our names: ``key_map``'s, else ``observation.images.<name>`` -> ``<name>`` (any other
    ``observation.<name>`` -> ``<name>``), dots as underscores."""
    images = [key for key, (kind, _) in inputs.items() if kind == "VISUAL"]
    extra = sorted(set(key_map) - set(images))
    if extra:
        raise ValueError(f"image key map names {extra[0]!r}, not a camera of the policy {images}")
    names = {}
    for key in images:
        default = key.removeprefix(OBS_IMAGES) if key.startswith(OBS_IMAGES) else key
        names[key] = key_map.get(key, default.removeprefix("observation.").replace(".", "_"))
    return names


def _hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """LeRobot's (3, H, W) image feature as our (H, W, 3)."""
    return (shape[1], shape[2], 3)


def _check_images(
    cfg: dict[str, Any], inputs: dict[str, tuple[str, tuple[int, ...]]], images: list[str]
) -> tuple[int, int] | None:
    """``DiffusionRgbEncoder``'s settings, refused by name where ours differs; the crop."""
    if cfg["vision_backbone"] != "resnet18":
        raise ImportRefused(
            f"config.json vision_backbone {cfg['vision_backbone']!r}: only 'resnet18'"
        )
    if cfg["resize_shape"] is not None:
        raise ImportRefused(
            f"config.json resize_shape {cfg['resize_shape']}: resizing images is not supported"
        )
    if not cfg["use_group_norm"]:
        raise ImportRefused(
            "config.json use_group_norm: false is not supported: the image encoder keeps "
            f"BatchNorm (pretrained_backbone_weights {cfg['pretrained_backbone_weights']!r}); "
            "ours is GroupNorm, channels // 16 groups"
        )
    if int(cfg["spatial_softmax_num_keypoints"]) != NUM_KP:
        raise ImportRefused(
            f"config.json spatial_softmax_num_keypoints {cfg['spatial_softmax_num_keypoints']}: "
            f"ours has {NUM_KP}"
        )
    shapes = {inputs[key][1] for key in images}
    if len(shapes) != 1:
        raise ImportRefused(f"config.json input_features {images}: cameras of different shapes")
    _, height, width = shapes.pop()
    crop = cfg["crop_shape"]
    if crop is None:
        return None
    ch, cw = int(crop[0]), int(crop[1])
    if not (0 < ch <= height and 0 < cw <= width):
        raise ImportRefused(f"config.json crop_shape {list(crop)}: not inside {height}x{width}")
    # Inference takes torchvision's CenterCrop (crop_is_random only applies in training), whose
    # offset rounds half to even; ours floors.
    if any(round((size - c) / 2.0) != (size - c) // 2 for size, c in ((height, ch), (width, cw))):
        raise ImportRefused(
            f"config.json crop_shape {list(crop)} of {height}x{width} images: torchvision's "
            "centre crop starts a pixel away from ours there"
        )
    return (ch, cw)


def _processor_norms(directory: Path, inputs: list[str]) -> dict[str, FeatureNorm]:
    """Observation normalisation from the pre-processor's normaliser, the action's from the
    post-processor's unnormaliser (the step inference applies)."""
    pre = _processor_step(directory, PREPROCESSOR_FILE, PREPROCESSOR_STEPS, "normalizer_processor")
    post = _processor_step(
        directory, POSTPROCESSOR_FILE, POSTPROCESSOR_STEPS, "unnormalizer_processor"
    )
    norms = {key: _processor_norm(directory, pre, key) for key in inputs}
    norms[ACTION] = _processor_norm(directory, post, ACTION)
    return norms


def _processor_step(
    directory: Path, file: str, allowed: tuple[str, ...], wanted: str
) -> dict[str, Any]:
    """The ``wanted`` step of a saved pipeline (the others must not change the numbers)."""
    path = directory / file
    if not path.is_file():
        raise ValueError(f"{directory}: no {file}")
    pipeline = json.loads(path.read_text())
    steps = pipeline.get("steps") if isinstance(pipeline, dict) else None
    if not isinstance(steps, list):
        raise ValueError(f"{path}: no steps")
    found = []
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            raise ValueError(f"{path}: step {index} is not an object")
        name = step.get("registry_name") or step.get("class")
        if name not in allowed:
            raise ImportRefused(
                f"{file} step {index} {name!r}: only {list(allowed)} are supported (another "
                "step would change what the policy sees or returns)"
            )
        if name == "rename_observations_processor" and step.get("config", {}).get("rename_map"):
            raise ImportRefused(
                f"{file} step {index} rename_observations_processor: a non-empty rename_map is "
                "not supported (map the keys with --state-key / --env-state-key)"
            )
        if name == wanted:
            found.append(step)
    if len(found) != 1:
        raise ValueError(f"{path}: expected one {wanted} step, found {len(found)}")
    step = found[0]
    state_file = step.get("state_file")
    if not isinstance(state_file, str) or Path(state_file).name != state_file:
        raise ValueError(f"{path}: {wanted} names no state_file in the directory ({state_file!r})")
    if not (directory / state_file).is_file():
        raise ValueError(f"{directory}: no {state_file} ({file}'s {wanted} statistics)")
    return {**step, "file": file, "stats": load_file(directory / state_file)}


def _processor_norm(directory: Path, step: dict[str, Any], key: str) -> FeatureNorm:
    """One feature's normalisation as ``_NormalizationMixin._apply_transform`` applies it."""
    config = step.get("config", {})
    features, norm_map = config.get("features", {}), config.get("norm_map", {})
    source = str(step["state_file"])
    selected = config.get("normalize_observation_keys")
    mode = "IDENTITY"
    if key == ACTION:  # _normalize_action: the ACTION mode, whatever ``features`` holds
        mode = str(norm_map.get("ACTION", "IDENTITY"))
    elif key in features and (selected is None or key in selected):
        mode = str(norm_map.get(features[key].get("type"), "IDENTITY"))
    if mode != "IDENTITY" and mode not in MODE_STATS:
        raise ImportRefused(f"{step['file']} norm_map: {key} normalised {mode!r}: not supported")
    stats = {}
    for stat in MODE_STATS.get(mode, ()):
        name = f"{key}.{stat}"
        if name not in step["stats"]:
            raise ValueError(f"{directory / source}: no {name} ({key} is normalised {mode})")
        stats[stat] = step["stats"][name].to(torch.float32).numpy()
    eps = float(config.get("eps", LEGACY_EPS))
    return FeatureNorm(mode, stats, eps, legacy=False, source=source)


def _legacy_norms(
    config: dict[str, Any], weights: dict[str, torch.Tensor]
) -> dict[str, FeatureNorm]:
    """The pre-v0.4.0 layout: ``Normalize`` / ``Unnormalize`` buffers in model.safetensors, the
    modes from config.json's ``normalization_mapping``."""
    mapping = config.get("normalization_mapping") or {}
    inputs, outputs = _features(config, "input_features"), _features(config, "output_features")
    norms = {}
    for key, (kind, _) in inputs.items():
        norms[key] = _legacy_norm(weights, "normalize_inputs", key, mapping.get(kind, "IDENTITY"))
    norms[ACTION] = _legacy_norm(
        weights, "unnormalize_outputs", ACTION, mapping.get(outputs[ACTION][0], "IDENTITY")
    )
    return norms


def _legacy_norm(weights: dict[str, torch.Tensor], module: str, key: str, mode: str) -> FeatureNorm:
    if mode not in LEGACY_MODES:
        raise ImportRefused(
            f"config.json normalization_mapping: {key} normalised {mode!r}: not supported "
            f"({list(LEGACY_MODES)} in this layout)"
        )
    prefix = f"{module}.buffer_{key.replace('.', '_')}"
    stats = {}
    for stat in MODE_STATS.get(mode, ()):
        name = f"{prefix}.{stat}"
        if name not in weights:
            raise ValueError(f"{WEIGHTS_FILE}: no {name} ({key} is normalised {mode})")
        value = weights[name].to(torch.float32).numpy()
        if not np.isfinite(value).all():
            raise ValueError(
                f"{WEIGHTS_FILE}: {name} is not finite: the policy was saved without its "
                "dataset statistics"
            )
        stats[stat] = value
    return FeatureNorm(mode, stats, LEGACY_EPS, legacy=True, source=prefix)


def _affine(key: str, norm: FeatureNorm, shape: tuple[int, ...], *, unnormalize: bool) -> AffineMap:
    """LeRobot's formula as ``x * scale + offset``: its normalisation for an observation, its
    unnormalisation (inverted) for the action."""
    if norm.mode == "IDENTITY":
        return AffineMap(np.ones(shape, np.float32), np.zeros(shape, np.float32))
    eps = np.float32(norm.eps)
    first, second = (norm.stats[s] for s in MODE_STATS[norm.mode])
    for name, value in zip(MODE_STATS[norm.mode], (first, second), strict=True):
        if value.shape != shape:
            raise ValueError(f"{norm.source}: {key}.{name} has shape {value.shape}, not {shape}")
    if norm.mode == "MEAN_STD":
        center, spread = first.astype(np.float64), second
        # normalise: (x - mean) / (std + eps); unnormalise: x * std + mean.
        denom = np.where(spread == 0, eps, spread) if unnormalize else spread + eps
        scale = 1.0 / denom.astype(np.float64)
        offset = -center * scale
        target = 0.0  # where a constant dimension's value goes
    else:
        low, span = first.astype(np.float64), second - first
        spread = span
        # normalise: 2 (x - low) / span - 1 (span + eps before v0.4.0; eps for a zero span
        # since); unnormalise: (x + 1) / 2 * span + low (a zero span: eps since v0.4.0).
        denom = span + eps if norm.legacy and not unnormalize else np.where(span == 0, eps, span)
        scale = 2.0 / denom.astype(np.float64)
        offset = -low * scale - 1.0
        target = -1.0
    if not unnormalize:
        # A dimension constant in the data (zero range or deviation): LeRobot maps its value to
        # -1 (0 for MEAN_STD) and any other value 1/eps away; the value's map is kept at slope
        # 1 (in float32, scale 1/eps would cancel the constant away).
        constant = spread == 0
        scale = np.where(constant, 1.0, scale)
        offset = np.where(constant, target - first.astype(np.float64), offset)
    return AffineMap(scale.astype(np.float32), offset.astype(np.float32))


def _image_affine(key: str, norm: FeatureNorm) -> AffineMap:
    """LeRobot's normalisation of a camera's float [0, 1] pixels (per-channel statistics,
    ``(3, 1, 1)``) folded onto our uint8 (H, W, 3) input: ``x / 255``, then its formula."""
    stats = {}
    for name, value in norm.stats.items():
        if value.size not in (1, 3):
            raise ImportRefused(
                f"{norm.source}: {key}.{name} has shape {list(value.shape)}: only per-channel "
                "image statistics"
            )
        stats[name] = np.broadcast_to(value.reshape(-1), (3,)).astype(np.float32)
    per_unit = _affine(key, replace(norm, stats=stats), (3,), unnormalize=False)
    scale = per_unit.scale.astype(np.float64) / 255.0
    return AffineMap(scale.astype(np.float32), per_unit.offset)


def _compare_schedulers(cfg: dict[str, Any], probe: DiffusionPolicy) -> None:
    """LeRobot's scheduler (``_make_noise_scheduler`` with the config's settings) against ours,
    every diffusers setting; the betas only where the schedule reads them, the clipping range
    only where samples are clipped."""
    kwargs = {
        name: cfg[name]
        for name in (
            "num_train_timesteps",
            "beta_start",
            "beta_end",
            "beta_schedule",
            "clip_sample",
            "clip_sample_range",
            "prediction_type",
        )
    }
    kind = SCHEDULERS[str(cfg["noise_scheduler_type"])]
    theirs = (DDPMScheduler if kind == "ddpm" else DDIMScheduler)(**kwargs).config
    ours = probe.make_scheduler(kind).config
    unused = set()
    if cfg["beta_schedule"] == "squaredcos_cap_v2":
        unused |= {"beta_start", "beta_end"}
    if not cfg["clip_sample"]:
        unused.add("clip_sample_range")
    for name, value in theirs.items():
        if name.startswith("_") or name in unused:
            continue
        if ours.get(name) != value:
            raise ImportRefused(f"config.json {name}: {value!r}, where ours is {ours.get(name)!r}")


def _unet_key(key: str) -> str:
    """A ``DiffusionConditionalUnet1d`` parameter name (without ``diffusion.unet.``) as ours."""
    key = key.replace(".conv1.block.", ".blocks.0.block.")
    key = key.replace(".conv2.block.", ".blocks.1.block.")
    key = re.sub(r"^(down_modules|up_modules)\.(\d+)\.2\.(weight|bias)$", r"\1.\2.2.conv.\3", key)
    return f"model.{key}"


@dataclass(frozen=True)
class _Layout:
    """What mapping LeRobot's weights onto ours needs: our camera names (LeRobot's order),
    whether each has its own encoder, and the sizes of the global condition's parts."""

    cameras: list[str]
    separate: bool
    step_embed_dim: int
    n_obs_steps: int
    state_dim: int
    env_dim: int
    feature_map: tuple[int, int]

    def cond_columns(self) -> torch.Tensor:
        """For each column of our FiLM input ``[step embedding, per step: cameras..., state,
        env state]`` (steps flattened step-major, as LeRobot's), its column in LeRobot's
        ``[step embedding, per step: state, cameras..., env state]``."""
        cams = len(self.cameras) * 2 * NUM_KP
        step = self.state_dim + cams + self.env_dim
        within = [
            *range(self.state_dim, self.state_dim + cams),
            *range(self.state_dim),
            *range(self.state_dim + cams, step),
        ]
        columns = list(range(self.step_embed_dim))
        for index in range(self.n_obs_steps):
            columns += [self.step_embed_dim + index * step + k for k in within]
        return torch.tensor(columns)


def _policy_state(
    weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], layout: _Layout
) -> dict[str, torch.Tensor]:
    """Our state dict from LeRobot's: every U-Net key mapped (the FiLM layers' condition
    columns reordered to ours), each camera's encoder (the shared one copied to every camera),
    the old layout's statistics buffers set aside (read as the normaliser), anything else
    refused by name."""
    state: dict[str, torch.Tensor] = {}
    columns = layout.cond_columns()
    for key, value in weights.items():
        name = key.replace("._orig_mod.", ".")  # a torch.compile'd U-Net (compile_model)
        if name.startswith(LEGACY_BUFFERS):
            continue
        if name.startswith(UNET_PREFIX):
            targets = [_unet_key(name.removeprefix(UNET_PREFIX))]
            if targets[0].endswith(".cond_encoder.1.weight") and layout.cameras:
                if value.shape[-1] != len(columns):
                    raise ValueError(
                        f"{WEIGHTS_FILE}: {key} has {value.shape[-1]} condition inputs, where the "
                        f"config gives {len(columns)}"
                    )
                value = value[:, columns]
        elif name.startswith(RGB_PREFIX) and layout.cameras:
            targets = _rgb_targets(key, name.removeprefix(RGB_PREFIX), value, layout)
        else:
            raise ImportRefused(f"{WEIGHTS_FILE}: {key} has no counterpart in our policy")
        for ours in targets:
            if ours not in expected:
                raise ImportRefused(f"{WEIGHTS_FILE}: {key} has no counterpart in our policy")
            if tuple(value.shape) != tuple(expected[ours].shape):
                raise ValueError(
                    f"{WEIGHTS_FILE}: {key} is {tuple(value.shape)}, where the config gives "
                    f"{tuple(expected[ours].shape)} ({ours})"
                )
            state[ours] = value.to(expected[ours].dtype).clone()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{WEIGHTS_FILE}: no weights for {len(missing)} of ours: {missing[:5]}")
    return state


def _rgb_targets(key: str, rest: str, value: torch.Tensor, layout: _Layout) -> list[str]:
    """Our names for one ``DiffusionRgbEncoder`` weight (``rgb_encoder.<i>.*`` per camera, or
    ``rgb_encoder.*`` shared by all); the keypoint grid is checked, not loaded (ours is not a
    saved buffer)."""
    indexed = re.match(r"^(\d+)\.(.*)$", rest)
    if layout.separate != bool(indexed):
        raise ValueError(
            f"{WEIGHTS_FILE}: {key}: config.json use_separate_rgb_encoder_per_camera is "
            f"{str(layout.separate).lower()}"
        )
    cameras = layout.cameras
    if indexed:
        if int(indexed[1]) >= len(cameras):
            raise ImportRefused(f"{WEIGHTS_FILE}: {key}: the policy has {len(cameras)} cameras")
        cameras, rest = [cameras[int(indexed[1])]], indexed[2]
    parts = rest.split(".")
    if rest.endswith(("running_mean", "running_var", "num_batches_tracked")):
        raise ImportRefused(
            f"{WEIGHTS_FILE}: {key}: BatchNorm in the image encoder; ours is GroupNorm"
        )
    if parts[0] == "backbone" and len(parts) > 2 and parts[1] in RESNET18_CHILDREN:
        mapped = ".".join(["backbone", RESNET18_CHILDREN[parts[1]], *parts[2:]])
    elif rest in ("pool.nets.weight", "pool.nets.bias"):
        mapped = rest
    elif rest in ("out.weight", "out.bias"):
        mapped = f"linear.{parts[1]}"
    elif rest == "pool.pos_grid":
        _check_grid(key, value, layout.feature_map)
        return []
    else:
        raise ImportRefused(f"{WEIGHTS_FILE}: {key} has no counterpart in our image encoder")
    return [f"obs_encoder.image_encoders.{camera}.{mapped}" for camera in cameras]


def _check_grid(key: str, value: torch.Tensor, feature_map: tuple[int, int]) -> None:
    """LeRobot's ``SpatialSoftmax.pos_grid`` (x, y per feature-map pixel) must be ours."""
    height, width = feature_map
    pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, width), np.linspace(-1.0, 1.0, height))
    grid = np.stack([pos_x.reshape(-1), pos_y.reshape(-1)], axis=1)
    got = value.double().numpy()
    if got.shape != grid.shape or not np.allclose(got, grid, atol=1e-6):
        raise ImportRefused(
            f"{WEIGHTS_FILE}: {key}: not the {height}x{width} keypoint grid our encoder uses"
        )
