"""``prt import lerobot``: a LeRobot diffusion policy directory, written here as LeRobot's
``save_pretrained`` writes it (config.json, model.safetensors with LeRobot's key names, the
pre/post-processor files, or the statistics buffers of LeRobot < 0.4), imported into our
checkpoint. Checked against an independent copy of LeRobot's network and inference (the U-Net
and the sampling loop transcribed below from LeRobot's source), and the exported bundle against
the imported torch policy; unsupported variants are refused by name."""

from __future__ import annotations

import copy
import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers.schedulers.scheduling_ddim import DDIMScheduler  # noqa: E402
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from policy_runtime.importers.lerobot import (  # noqa: E402
    ImportRefused,
    convert,
    import_pretrained,
    read_pretrained,
)
from tests.ros_graph import BIN  # noqa: E402

STATE_DIM, ENV_DIM, ACTION_DIM = 3, 4, 2
N_OBS_STEPS, HORIZON, N_ACTION_STEPS = 2, 16, 8
UNET_TOLERANCE = 1e-5
ACTION_TOLERANCE = 1e-4


# --- LeRobot's DiffusionConditionalUnet1d, transcribed --------------------------------------------
# From huggingface/lerobot, src/lerobot/policies/diffusion/modeling_diffusion.py at commit
# 7427f31801f944f5ec9ce53cda02862ce7d1638b (v0.6.2): DiffusionSinusoidalPosEmb,
# DiffusionConv1dBlock, DiffusionConditionalResidualBlock1d, DiffusionConditionalUnet1d (the
# einops rearranges written as transposes; gradient checkpointing left out: training only).


class LeRobotSinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        device = x.device
        half_dim = self.dim // 2
        emb = math.log(10000) / (half_dim - 1)
        emb = torch.exp(torch.arange(half_dim, device=device) * -emb)
        emb = x.unsqueeze(-1) * emb.unsqueeze(0)
        emb = torch.cat((emb.sin(), emb.cos()), dim=-1)
        return emb


class LeRobotConv1dBlock(nn.Module):
    def __init__(self, inp_channels, out_channels, kernel_size, n_groups=8):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(inp_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x):
        return self.block(x)


class LeRobotConditionalResidualBlock1d(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        cond_dim,
        kernel_size=3,
        n_groups=8,
        use_film_scale_modulation=False,
    ):
        super().__init__()
        self.use_film_scale_modulation = use_film_scale_modulation
        self.out_channels = out_channels
        self.conv1 = LeRobotConv1dBlock(in_channels, out_channels, kernel_size, n_groups=n_groups)
        cond_channels = out_channels * 2 if use_film_scale_modulation else out_channels
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, cond_channels))
        self.conv2 = LeRobotConv1dBlock(out_channels, out_channels, kernel_size, n_groups=n_groups)
        self.residual_conv = (
            nn.Conv1d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x, cond):
        out = self.conv1(x)
        cond_embed = self.cond_encoder(cond).unsqueeze(-1)
        if self.use_film_scale_modulation:
            scale = cond_embed[:, : self.out_channels]
            bias = cond_embed[:, self.out_channels :]
            out = scale * out + bias
        else:
            out = out + cond_embed
        out = self.conv2(out)
        out = out + self.residual_conv(x)
        return out


class LeRobotConditionalUnet1d(nn.Module):
    def __init__(self, config, global_cond_dim: int):
        super().__init__()
        self.config = config
        self.diffusion_step_encoder = nn.Sequential(
            LeRobotSinusoidalPosEmb(config.diffusion_step_embed_dim),
            nn.Linear(config.diffusion_step_embed_dim, config.diffusion_step_embed_dim * 4),
            nn.Mish(),
            nn.Linear(config.diffusion_step_embed_dim * 4, config.diffusion_step_embed_dim),
        )
        cond_dim = config.diffusion_step_embed_dim + global_cond_dim
        in_out = [  # LeRobot: [(...)] + list(zip(...))
            (config.action_dim, config.down_dims[0]),
            *zip(config.down_dims[:-1], config.down_dims[1:], strict=True),
        ]
        common_res_block_kwargs = {
            "cond_dim": cond_dim,
            "kernel_size": config.kernel_size,
            "n_groups": config.n_groups,
            "use_film_scale_modulation": config.use_film_scale_modulation,
        }
        self.down_modules = nn.ModuleList([])
        for ind, (dim_in, dim_out) in enumerate(in_out):
            is_last = ind >= (len(in_out) - 1)
            self.down_modules.append(
                nn.ModuleList(
                    [
                        LeRobotConditionalResidualBlock1d(
                            dim_in, dim_out, **common_res_block_kwargs
                        ),
                        LeRobotConditionalResidualBlock1d(
                            dim_out, dim_out, **common_res_block_kwargs
                        ),
                        nn.Conv1d(dim_out, dim_out, 3, 2, 1) if not is_last else nn.Identity(),
                    ]
                )
            )
        self.mid_modules = nn.ModuleList(
            [
                LeRobotConditionalResidualBlock1d(
                    config.down_dims[-1], config.down_dims[-1], **common_res_block_kwargs
                ),
                LeRobotConditionalResidualBlock1d(
                    config.down_dims[-1], config.down_dims[-1], **common_res_block_kwargs
                ),
            ]
        )
        self.up_modules = nn.ModuleList([])
        for ind, (dim_out, dim_in) in enumerate(reversed(in_out[1:])):
            is_last = ind >= (len(in_out) - 1)
            self.up_modules.append(
                nn.ModuleList(
                    [
                        LeRobotConditionalResidualBlock1d(
                            dim_in * 2, dim_out, **common_res_block_kwargs
                        ),
                        LeRobotConditionalResidualBlock1d(
                            dim_out, dim_out, **common_res_block_kwargs
                        ),
                        nn.ConvTranspose1d(dim_out, dim_out, 4, 2, 1)
                        if not is_last
                        else nn.Identity(),
                    ]
                )
            )
        self.final_conv = nn.Sequential(
            LeRobotConv1dBlock(
                config.down_dims[0], config.down_dims[0], kernel_size=config.kernel_size
            ),
            nn.Conv1d(config.down_dims[0], config.action_dim, 1),
        )

    def forward(self, x, timestep, global_cond=None):
        x = x.transpose(1, 2)  # einops.rearrange(x, "b t d -> b d t")
        timesteps_embed = self.diffusion_step_encoder(timestep)
        if global_cond is not None:
            global_feature = torch.cat([timesteps_embed, global_cond], axis=-1)
        else:
            global_feature = timesteps_embed
        encoder_skip_features = []
        for resnet, resnet2, downsample in self.down_modules:
            x = resnet(x, global_feature)
            x = resnet2(x, global_feature)
            encoder_skip_features.append(x)
            x = downsample(x)
        for mid_module in self.mid_modules:
            x = mid_module(x, global_feature)
        for resnet, resnet2, upsample in self.up_modules:
            x = torch.cat((x, encoder_skip_features.pop()), dim=1)
            x = resnet(x, global_feature)
            x = resnet2(x, global_feature)
            x = upsample(x)
        x = self.final_conv(x)
        return x.transpose(1, 2)  # einops.rearrange(x, "b d t -> b t d")


# --- LeRobot's normalisation and sampling, transcribed ------------------------------------------
# Same commit: src/lerobot/processor/normalize_processor.py (_NormalizationMixin._apply_transform)
# and, for the layout before v0.4.0, src/lerobot/policies/normalize.py at 78b866116^ (Normalize,
# Unnormalize); modeling_diffusion.py DiffusionModel (_make_noise_scheduler, conditional_sample,
# _prepare_global_conditioning, generate_actions).


def lerobot_transform(x, mode: str, stats: dict, *, inverse: bool, legacy: bool, eps=1e-8):
    if mode == "IDENTITY":
        return x
    if mode == "MEAN_STD":
        mean, std = stats["mean"], stats["std"]
        return x * std + mean if inverse else (x - mean) / (std + eps)
    low, high = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99")}[mode]
    low, high = stats[low], stats[high]
    if legacy:
        if inverse:
            return (x + 1) / 2 * (high - low) + low
        return (x - low) / (high - low + 1e-8) * 2 - 1
    denom = high - low
    denom = torch.where(denom == 0, torch.tensor(eps, dtype=x.dtype), denom)
    return (x + 1) / 2 * denom + low if inverse else 2 * (x - low) / denom - 1


def lerobot_actions(
    unet: nn.Module,
    config: dict[str, Any],
    modes: dict[str, str],
    stats: dict[str, dict[str, torch.Tensor]],
    obs: dict[str, torch.Tensor],
    noise: torch.Tensor,
    *,
    legacy: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """LeRobot's predicted chunk (``n_action_steps`` from the newest observation), unnormalised."""
    batch = {
        key: lerobot_transform(obs[key], modes[key], stats[key], inverse=False, legacy=legacy)
        for key in ("observation.state", "observation.environment_state")
    }
    global_cond = torch.cat(
        [batch["observation.state"], batch["observation.environment_state"]], dim=-1
    ).flatten(start_dim=1)
    return lerobot_sample(unet, config, modes, stats, global_cond, noise, legacy, generator)


def lerobot_sample(
    unet: nn.Module,
    config: dict[str, Any],
    modes: dict[str, str],
    stats: dict[str, dict[str, torch.Tensor]],
    global_cond: torch.Tensor,
    noise: torch.Tensor,
    legacy: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """DiffusionModel.conditional_sample and generate_actions, then the action unnormalised."""
    kind = {"DDPM": DDPMScheduler, "DDIM": DDIMScheduler}[config["noise_scheduler_type"]]
    scheduler = kind(
        num_train_timesteps=config["num_train_timesteps"],
        beta_start=config["beta_start"],
        beta_end=config["beta_end"],
        beta_schedule=config["beta_schedule"],
        clip_sample=config["clip_sample"],
        clip_sample_range=config["clip_sample_range"],
        prediction_type=config["prediction_type"],
    )
    scheduler.set_timesteps(config["num_inference_steps"] or config["num_train_timesteps"])
    sample = noise
    for t in scheduler.timesteps:
        model_output = unet(
            sample,
            torch.full(sample.shape[:1], t, dtype=torch.long, device=sample.device),
            global_cond=global_cond,
        )
        sample = scheduler.step(model_output, t, sample, generator=generator).prev_sample
    start = config["n_obs_steps"] - 1
    actions = sample[:, start : start + config["n_action_steps"]]
    return lerobot_transform(actions, modes["action"], stats["action"], inverse=True, legacy=legacy)


# --- A LeRobot pretrained policy directory -------------------------------------------------------


def lerobot_config(**overrides: Any) -> dict[str, Any]:
    """config.json as LeRobot writes it (draccus.encode of DiffusionConfig, ``type`` first)."""
    config = {
        "type": "diffusion",
        "n_obs_steps": N_OBS_STEPS,
        "input_features": {
            "observation.state": {"type": "STATE", "shape": [STATE_DIM]},
            "observation.environment_state": {"type": "ENV", "shape": [ENV_DIM]},
        },
        "output_features": {"action": {"type": "ACTION", "shape": [ACTION_DIM]}},
        "device": "cpu",
        "use_amp": False,
        "use_peft": False,
        "push_to_hub": False,
        "repo_id": None,
        "private": None,
        "tags": None,
        "license": None,
        "pretrained_path": None,
        "pretrained_revision": None,
        "horizon": HORIZON,
        "n_action_steps": N_ACTION_STEPS,
        "normalization_mapping": {
            "VISUAL": "MEAN_STD",
            "STATE": "MIN_MAX",
            "ENV": "MEAN_STD",
            "ACTION": "MIN_MAX",
        },
        "drop_n_last_frames": 7,
        "vision_backbone": "resnet18",
        "resize_shape": None,
        "crop_ratio": 1.0,
        "crop_shape": None,
        "crop_is_random": True,
        "pretrained_backbone_weights": "ResNet18_Weights.IMAGENET1K_V1",
        "use_group_norm": False,
        "spatial_softmax_num_keypoints": 32,
        "use_separate_rgb_encoder_per_camera": True,
        "down_dims": [16, 32],
        "kernel_size": 5,
        "n_groups": 8,
        "diffusion_step_embed_dim": 16,
        "use_film_scale_modulation": True,
        "gradient_checkpointing": False,
        "noise_scheduler_type": "DDIM",
        "num_train_timesteps": 100,
        "beta_schedule": "squaredcos_cap_v2",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "prediction_type": "epsilon",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "num_inference_steps": 10,
        "compile_model": False,
        "compile_mode": "reduce-overhead",
        "do_mask_loss_for_padding": False,
        "optimizer_lr": 0.0001,
        "optimizer_betas": [0.95, 0.999],
        "optimizer_eps": 1e-08,
        "optimizer_weight_decay": 1e-06,
        "scheduler_name": "cosine",
        "scheduler_warmup_steps": 500,
    }
    config.update(overrides)
    return config


def reference_unet(
    config: dict[str, Any],
    seed: int = 0,
    global_cond_dim: int = (STATE_DIM + ENV_DIM) * N_OBS_STEPS,
) -> LeRobotConditionalUnet1d:
    """LeRobot's U-Net with random weights (every parameter perturbed, GroupNorm's too)."""
    torch.manual_seed(seed)
    namespace = SimpleNamespace(
        action_dim=ACTION_DIM,
        down_dims=tuple(config["down_dims"]),
        kernel_size=config["kernel_size"],
        n_groups=config["n_groups"],
        diffusion_step_embed_dim=config["diffusion_step_embed_dim"],
        use_film_scale_modulation=config["use_film_scale_modulation"],
    )
    unet = LeRobotConditionalUnet1d(namespace, global_cond_dim)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return unet.eval()


def dataset_stats() -> dict[str, dict[str, torch.Tensor]]:
    """Statistics as LeRobot's compute_stats keeps them; observation.state's last dimension is
    constant (min == max) and the action's ranges are hundreds of units wide."""
    rng = np.random.default_rng(3)
    stats = {}
    for key, dim, scale in (
        ("observation.state", STATE_DIM, 1.0),
        ("observation.environment_state", ENV_DIM, 5.0),
        ("action", ACTION_DIM, 200.0),
    ):
        low = rng.uniform(-1, 0, dim) * scale
        high = low + rng.uniform(0.5, 2, dim) * scale
        values = {
            "min": low,
            "max": high,
            "mean": (low + high) / 2 + rng.uniform(-0.1, 0.1, dim) * scale,
            "std": rng.uniform(0.2, 0.5, dim) * scale,
            "q01": low + 0.01 * (high - low),
            "q99": high - 0.01 * (high - low),
            "count": np.asarray([1000.0]),
        }
        stats[key] = {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}
    stats["observation.state"]["max"][-1] = stats["observation.state"]["min"][-1]
    return stats


def modes_of(config: dict[str, Any]) -> dict[str, str]:
    mapping = config["normalization_mapping"]
    features = {**config["input_features"], **config["output_features"]}
    return {key: mapping.get(feature["type"], "IDENTITY") for key, feature in features.items()}


def write_pretrained(
    directory: Path,
    config: dict[str, Any],
    unet: nn.Module,
    stats: dict[str, dict[str, torch.Tensor]],
    *,
    legacy: bool = False,
    encoders: dict[str, torch.Tensor] | None = None,
) -> Path:
    """What ``DiffusionPolicy.save_pretrained`` and, since v0.4.0, the processors'
    ``save_pretrained`` write (``legacy``: the statistics as model buffers instead)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=4))
    weights = {f"diffusion.unet.{k}": v.contiguous() for k, v in unet.state_dict().items()}
    weights.update(encoders or {})
    features = {**config["input_features"], **config["output_features"]}
    if legacy:
        modes = modes_of(config)
        for module, keys in (
            ("normalize_inputs", tuple(config["input_features"])),
            ("normalize_targets", ("action",)),
            ("unnormalize_outputs", ("action",)),
        ):
            for key in keys:
                wanted = {"MIN_MAX": ("min", "max"), "MEAN_STD": ("mean", "std")}
                for stat in wanted.get(modes[key], ()):
                    buffer = f"{module}.buffer_{key.replace('.', '_')}.{stat}"
                    weights[buffer] = stats[key][stat].clone()
        save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
        return directory
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    flat = {f"{key}.{stat}": v.clone() for key, s in stats.items() for stat, v in s.items()}
    norm_config = {
        "eps": 1e-08,
        "features": features,
        "norm_map": config["normalization_mapping"],
    }
    pre = {
        "name": "policy_preprocessor",
        "steps": [
            {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
            {"registry_name": "to_batch_processor", "config": {}},
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
            {
                "registry_name": "normalizer_processor",
                "config": norm_config,
                "state_file": "policy_preprocessor_step_3_normalizer_processor.safetensors",
            },
        ],
    }
    post = {
        "name": "policy_postprocessor",
        "steps": [
            {
                "registry_name": "unnormalizer_processor",
                "config": {**norm_config, "features": config["output_features"]},
                "state_file": "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
            },
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
        ],
    }
    for pipeline in (pre, post):
        (directory / f"{pipeline['name']}.json").write_text(json.dumps(pipeline, indent=2))
        step = next(s for s in pipeline["steps"] if "state_file" in s)
        save_file(flat, directory / step["state_file"])
    return directory


def observations(stats: dict[str, dict[str, torch.Tensor]], batch: int = 3) -> dict:
    """Observation windows around the data's range; the constant state dimension at its value."""
    generator = torch.Generator().manual_seed(11)
    obs = {}
    for key, dim in (("observation.state", STATE_DIM), ("observation.environment_state", ENV_DIM)):
        low, high = stats[key]["min"], stats[key]["max"]
        u = torch.rand(batch, N_OBS_STEPS, dim, generator=generator)
        obs[key] = low + u * (high - low)
    return obs


def ours(obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        "state": obs["observation.state"],
        "environment_state": obs["observation.environment_state"],
    }


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    config = lerobot_config()
    unet = reference_unet(config)
    stats = dataset_stats()
    directory = write_pretrained(tmp_path_factory.mktemp("lerobot") / "pm", config, unet, stats)
    return SimpleNamespace(config=config, unet=unet, stats=stats, directory=directory)


def _normalised_error(a: torch.Tensor, b: torch.Tensor, scale: np.ndarray) -> float:
    """Largest |a - b| in the normalised action space the network works in."""
    return float((torch.abs(a - b) * torch.as_tensor(scale)).max())


def test_the_imported_unet_matches_lerobots(fixture: SimpleNamespace, tmp_path: Path) -> None:
    policy = import_pretrained(fixture.directory, tmp_path / "run")
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(4, HORIZON, ACTION_DIM, generator=generator)
    timesteps = torch.tensor([0, 17, 55, 99])
    cond = torch.randn(4, (STATE_DIM + ENV_DIM) * N_OBS_STEPS, generator=generator)
    with torch.no_grad():
        expected = fixture.unet(x, timesteps, global_cond=cond)
        got = policy.model(x, timesteps, global_cond=cond)
    error = float((got - expected).abs().max())
    print(f"U-Net: max |ours - LeRobot| = {error:.2e}")
    assert error < UNET_TOLERANCE


@pytest.mark.parametrize(
    ("legacy", "overrides"),
    [
        (False, {}),
        (
            False,
            {
                "noise_scheduler_type": "DDPM",
                "num_inference_steps": 20,
                "normalization_mapping": {
                    "STATE": "MIN_MAX",
                    "ENV": "QUANTILES",
                    "ACTION": "MEAN_STD",
                },
            },
        ),
        (True, {}),
        (True, {"normalization_mapping": {"STATE": "MEAN_STD", "ACTION": "MIN_MAX"}}),
    ],
    ids=["processors-ddim", "processors-ddpm-quantiles-meanstd", "buffers", "buffers-env-identity"],
)
def test_the_imported_policy_predicts_lerobots_actions(
    tmp_path: Path, legacy: bool, overrides: dict[str, Any]
) -> None:
    config = lerobot_config(**overrides)
    unet = reference_unet(config, seed=1)
    stats = dataset_stats()
    directory = write_pretrained(tmp_path / "pm", config, unet, stats, legacy=legacy)
    policy = import_pretrained(directory, tmp_path / "run")
    obs = observations(stats)
    noise = torch.randn(3, HORIZON, ACTION_DIM, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = lerobot_actions(
            unet,
            config,
            modes_of(config),
            stats,
            obs,
            noise,
            legacy=legacy,
            generator=torch.Generator().manual_seed(9),
        )
    got = policy.predict_action(ours(obs), noise=noise, generator=torch.Generator().manual_seed(9))
    scale = policy.normalizer.maps["action"].scale
    error = _normalised_error(got["action"], expected, scale)
    print(
        f"{'buffers' if legacy else 'processors'} {overrides}: max |ours - LeRobot| = {error:.2e}"
    )
    assert got["action"].shape == (3, N_ACTION_STEPS, ACTION_DIM)
    assert error < ACTION_TOLERANCE


def prt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "prt"), *args], capture_output=True, text=True, timeout=300)


def test_cli_import_and_its_bundle_predict_the_torch_policys_actions(
    fixture: SimpleNamespace, tmp_path: Path
) -> None:
    from policy_runtime.training.checkpoint import load_policy, read_header

    run, bundle = tmp_path / "run", tmp_path / "bundle"
    # A LeRobot training checkpoint's step directory: its pretrained_model/ is imported.
    step = tmp_path / "checkpoints" / "005000"
    step.mkdir(parents=True)
    (step / "pretrained_model").symlink_to(fixture.directory, target_is_directory=True)
    done = prt("import", "lerobot", str(step), "--out", str(run), "--state-key", "joints")
    assert done.returncode == 0, done.stderr
    assert "horizon 16, ddim 10 steps" in done.stdout
    header = read_header(run)
    assert header["imported_from"]["format"] == "lerobot.pretrained"
    assert header["imported_from"]["normalization_layout"] == "processors"
    assert header["policy"]["obs_keys"] == ["joints", "environment_state"]
    done = prt("export", "--checkpoint", str(run), "--out", str(bundle))
    assert done.returncode == 0, done.stderr

    obs = observations(fixture.stats, batch=2)
    noise = torch.randn(2, HORIZON, ACTION_DIM, generator=torch.Generator().manual_seed(4))
    inputs = {
        "joints": obs["observation.state"].numpy().tolist(),
        "environment_state": obs["observation.environment_state"].numpy().tolist(),
    }
    script = f"""
import json, sys
import numpy as np
from policy_runtime.inference import load_policy
inputs = json.loads({json.dumps(json.dumps(inputs))})
runtime = load_policy({str(bundle)!r})
chunk = runtime.predict({{k: np.asarray(v, np.float32) for k, v in inputs.items()}},
                        noise=np.asarray({noise.numpy().tolist()!r}, np.float32))
assert "torch" not in sys.modules, "the runtime imported torch"
print(json.dumps(chunk.actions.tolist()))
"""
    out = subprocess.run(
        [str(BIN / "python"), "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    actions = torch.tensor(json.loads(out.stdout))

    policy = load_policy(run)
    torch_obs = {k: torch.tensor(v) for k, v in inputs.items()}
    expected = policy.predict_action(torch_obs, noise=noise)["action_pred"][:, N_OBS_STEPS - 1 :]
    scale = policy.normalizer.maps["action"].scale
    error = _normalised_error(actions, expected, scale)
    print(f"bundle on onnxruntime: max |bundle - torch| = {error:.2e} (normalised)")
    assert actions.shape == expected.shape and error < ACTION_TOLERANCE
    with torch.no_grad():
        lerobot = lerobot_actions(
            fixture.unet,
            fixture.config,
            modes_of(fixture.config),
            fixture.stats,
            obs,
            noise,
            legacy=False,
        )
    error = _normalised_error(actions[:, :N_ACTION_STEPS], lerobot, scale)
    print(f"bundle on onnxruntime: max |bundle - LeRobot| = {error:.2e} (normalised)")
    assert error < ACTION_TOLERANCE


def test_a_compiled_unets_keys_are_read(fixture: SimpleNamespace) -> None:
    """compile_model: torch.compile wraps the U-Net, its keys gain ``_orig_mod.``."""
    config, weights, norms, _ = read_pretrained(fixture.directory)
    compiled = {
        k.replace("diffusion.unet.", "diffusion.unet._orig_mod."): v for k, v in weights.items()
    }
    _, _, state = convert(config, compiled, norms)
    _, _, plain = convert(config, weights, norms)
    assert state.keys() == plain.keys()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "act"}, r"config.json type 'act': only 'diffusion'"),
        ({"noise_scheduler_type": "DPMSolver"}, r"noise_scheduler_type 'DPMSolver': only"),
        ({"prediction_type": "v_prediction"}, r"prediction_type 'v_prediction'"),
        ({"beta_schedule": "sigmoid"}, r"beta_schedule 'sigmoid'"),
        ({"clip_sample_range": 2.0}, r"config.json clip_sample_range: 2.0, where ours is 1.0"),
        (
            {"beta_schedule": "linear", "beta_end": 0.05},
            r"config.json beta_end: 0.05, where ours is 0.02",
        ),
        ({"use_peft": True}, r"use_peft: true"),
        (
            {
                "input_features": {
                    **lerobot_config()["input_features"],
                    "observation.images.top": {"type": "VISUAL", "shape": [3, 96, 96]},
                }
            },
            r"config.json use_group_norm: false is not supported: .*BatchNorm",
        ),
        (
            {
                "input_features": {
                    **lerobot_config()["input_features"],
                    "observation.velocity": {"type": "STATE", "shape": [3]},
                }
            },
            r"input_features observation.velocity \(STATE\): only observation.state",
        ),
        (
            {"input_features": {"observation.state": {"type": "STATE", "shape": [STATE_DIM]}}},
            r"input_features: no observation.environment_state",
        ),
    ],
)
def test_unsupported_configs_are_refused_by_name(
    fixture: SimpleNamespace, change: dict[str, Any], message: str
) -> None:
    config, weights, norms, _ = read_pretrained(fixture.directory)
    with pytest.raises(ImportRefused, match=message):
        convert({**copy.deepcopy(config), **change}, weights, norms)


def _edit_json(path: Path, edit: Any) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda pre: pre["steps"].insert(
                3, {"registry_name": "relative_actions_processor", "config": {}}
            ),
            r"policy_preprocessor.json step 3 'relative_actions_processor': only",
        ),
        (
            lambda pre: pre["steps"][3]["config"]["norm_map"].update(STATE="ROBUST"),
            r"norm_map: observation.state normalised 'ROBUST': not supported",
        ),
        (
            lambda pre: pre["steps"][0]["config"].update(rename_map={"a": "observation.state"}),
            r"non-empty rename_map",
        ),
    ],
    ids=["processor-step", "normalisation-mode", "rename-map"],
)
def test_unsupported_processors_are_refused_by_name(
    fixture: SimpleNamespace, tmp_path: Path, edit: Any, message: str
) -> None:
    directory = write_pretrained(tmp_path / "pm", fixture.config, fixture.unet, fixture.stats)
    _edit_json(directory / "policy_preprocessor.json", edit)
    with pytest.raises(ImportRefused, match=message):
        import_pretrained(directory, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_legacy_unsupported_mode_and_stray_weights_are_refused(
    fixture: SimpleNamespace, tmp_path: Path
) -> None:
    config = lerobot_config(normalization_mapping={"STATE": "QUANTILES", "ACTION": "MIN_MAX"})
    directory = write_pretrained(tmp_path / "a", config, fixture.unet, fixture.stats, legacy=True)
    with pytest.raises(ImportRefused, match=r"observation.state normalised 'QUANTILES'"):
        import_pretrained(directory, tmp_path / "run")
    config, weights, norms, _ = read_pretrained(fixture.directory)
    weights = {**weights, "diffusion.rgb_encoder.out.weight": torch.zeros(64, 64)}
    with pytest.raises(ImportRefused, match=r"diffusion.rgb_encoder.out.weight has no counterpart"):
        convert(config, weights, norms)


def test_missing_files_are_named(fixture: SimpleNamespace, tmp_path: Path) -> None:
    directory = write_pretrained(tmp_path / "pm", fixture.config, fixture.unet, fixture.stats)
    (directory / "policy_postprocessor_step_0_unnormalizer_processor.safetensors").unlink()
    with pytest.raises(ValueError, match=r"no policy_postprocessor_step_0_unnormalizer"):
        import_pretrained(directory, tmp_path / "run")
    (directory / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"no model.safetensors"):
        import_pretrained(directory, tmp_path / "run")
    (directory / "config.json").unlink()
    done = prt("import", "lerobot", str(directory), "--out", str(tmp_path / "run"))
    assert done.returncode == 1
    assert "no config.json: not a LeRobot pretrained policy" in done.stderr
    assert not (tmp_path / "run").exists()


# --- Policies with cameras ----------------------------------------------------------------------
# modeling_diffusion.py (same commit): DiffusionRgbEncoder (eval: CenterCrop, backbone = torchvision
# resnet18 children[:-2] with GroupNorm, SpatialSoftmax, relu(out(x))) and
# DiffusionModel._prepare_global_conditioning (per step [state, cameras..., env state]); the
# ResNet-18 trunk and the centre crop are the plain-torch ones of tests/test_import_dp_image.py.

IMAGE_HW, CROP = (48, 48), (40, 40)
IMAGE_FEATURES = 64  # 2 * spatial_softmax_num_keypoints


def image_config(cameras: list[str], env: bool, **overrides: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {"observation.state": {"type": "STATE", "shape": [STATE_DIM]}}
    for camera in cameras:
        inputs[camera] = {"type": "VISUAL", "shape": [3, *IMAGE_HW]}
    if env:
        inputs["observation.environment_state"] = {"type": "ENV", "shape": [ENV_DIM]}
    settings = {
        "input_features": inputs,
        "crop_shape": list(CROP),
        "pretrained_backbone_weights": None,
        "use_group_norm": True,
        **overrides,
    }
    return lerobot_config(**settings)


def rgb_encoder_weights(prefix: str, seed: int) -> dict[str, torch.Tensor]:
    """One DiffusionRgbEncoder's state dict (random values) under LeRobot's key names."""
    from tests.test_import_dp_image import _random, _resnet18_shapes

    gen = torch.Generator().manual_seed(seed)
    out = {f"{prefix}backbone.{k}": _random(s, k, gen) for k, s in _resnet18_shapes().items()}
    fh, fw = math.ceil(CROP[0] / 32), math.ceil(CROP[1] / 32)
    pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, fw), np.linspace(-1.0, 1.0, fh))
    out[f"{prefix}pool.nets.weight"] = torch.randn(32, 512, 1, 1, generator=gen) * 0.2
    out[f"{prefix}pool.nets.bias"] = 0.1 * torch.randn(32, generator=gen)
    out[f"{prefix}pool.pos_grid"] = torch.cat(
        [
            torch.from_numpy(pos_x.reshape(fh * fw, 1)).float(),
            torch.from_numpy(pos_y.reshape(fh * fw, 1)).float(),
        ],
        dim=1,
    )
    out[f"{prefix}out.weight"] = torch.randn(64, 64, generator=gen) * 0.125
    out[f"{prefix}out.bias"] = 0.125 * torch.randn(64, generator=gen)
    return out


def lerobot_rgb_encoder(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    """DiffusionRgbEncoder.forward in eval: (B, 3, H, W) in [0, 1] (normalised) -> (B, 64)."""
    from tests.test_import_dp_image import ref_center_crop, ref_resnet18_conv

    x = ref_center_crop(x, *CROP)
    features = ref_resnet18_conv(x, sd, p + "backbone.")
    # SpatialSoftmax.forward
    features = F.conv2d(features, sd[p + "pool.nets.weight"], sd[p + "pool.nets.bias"])
    h, w = features.shape[-2:]
    attention = F.softmax(features.reshape(-1, h * w), dim=-1)
    keypoints = (attention @ sd[p + "pool.pos_grid"]).view(-1, 32, 2)
    x = torch.flatten(keypoints, start_dim=1)
    return F.relu(F.linear(x, sd[p + "out.weight"], sd[p + "out.bias"]))


def lerobot_image_actions(
    unet: nn.Module,
    encoders: dict[str, torch.Tensor],
    config: dict[str, Any],
    stats: dict[str, dict[str, torch.Tensor]],
    obs: dict[str, torch.Tensor],
    noise: torch.Tensor,
    *,
    legacy: bool,
) -> torch.Tensor:
    """LeRobot's chunk for float [0, 1] (B, To, 3, H, W) images and low-dim windows."""
    modes = modes_of(config)
    batch = {
        key: lerobot_transform(obs[key], modes[key], stats[key], inverse=False, legacy=legacy)
        for key in config["input_features"]
    }
    cameras = [k for k, f in config["input_features"].items() if f["type"] == "VISUAL"]
    images = torch.stack([batch[key] for key in cameras], dim=-4)  # OBS_IMAGES: (B, S, N, ...)
    b, s, n = images.shape[:3]
    if config["use_separate_rgb_encoder_per_camera"]:
        per_camera = images.transpose(0, 2).transpose(1, 2)  # "b s n ... -> n b s ..."
        features = torch.cat(
            [
                lerobot_rgb_encoder(
                    per_camera[i].reshape(b * s, *images.shape[3:]),
                    encoders,
                    f"diffusion.rgb_encoder.{i}.",
                )
                for i in range(n)
            ]
        )  # "(n b s) d -> b s (n d)"
        features = features.reshape(n, b, s, -1).permute(1, 2, 0, 3).reshape(b, s, -1)
    else:
        features = lerobot_rgb_encoder(
            images.reshape(b * s * n, *images.shape[3:]), encoders, "diffusion.rgb_encoder."
        ).reshape(b, s, -1)  # "(b s n) d -> b s (n d)"
    parts = [batch["observation.state"], features]
    if "observation.environment_state" in batch:
        parts.append(batch["observation.environment_state"])
    global_cond = torch.cat(parts, dim=-1).flatten(start_dim=1)
    return lerobot_sample(unet, config, modes, stats, global_cond, noise, legacy, None)


def image_stats(cameras: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """dataset_stats plus per-channel (3, 1, 1) image statistics, as LeRobot computes them."""
    stats = dataset_stats()
    for index, camera in enumerate(cameras):
        rng = np.random.default_rng(20 + index)
        low = rng.uniform(0.0, 0.1, (3, 1, 1))
        stats[camera] = {
            k: torch.tensor(v, dtype=torch.float32)
            for k, v in {
                "min": low,
                "max": low + rng.uniform(0.8, 0.9, (3, 1, 1)),
                "mean": rng.uniform(0.3, 0.6, (3, 1, 1)),
                "std": rng.uniform(0.15, 0.3, (3, 1, 1)),
            }.items()
        }
    return stats


def image_setup(
    directory: Path, cameras: list[str], env: bool, legacy: bool = False, **overrides: Any
) -> SimpleNamespace:
    config = image_config(cameras, env, **overrides)
    per_step = STATE_DIM + IMAGE_FEATURES * len(cameras) + (ENV_DIM if env else 0)
    unet = reference_unet(config, seed=4, global_cond_dim=per_step * N_OBS_STEPS)
    encoders: dict[str, torch.Tensor] = {}
    if config["use_separate_rgb_encoder_per_camera"]:
        for i in range(len(cameras)):
            encoders.update(rgb_encoder_weights(f"diffusion.rgb_encoder.{i}.", seed=30 + i))
    else:
        encoders = rgb_encoder_weights("diffusion.rgb_encoder.", seed=30)
    stats = image_stats(cameras)
    write_pretrained(directory, config, unet, stats, legacy=legacy, encoders=encoders)
    return SimpleNamespace(config=config, unet=unet, encoders=encoders, stats=stats)


def image_observations(
    cameras: list[str], env: bool, stats: dict[str, dict[str, torch.Tensor]], batch: int = 2
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(LeRobot's observations: float [0, 1] channels first, ours: uint8 (H, W, 3))."""
    theirs = observations(stats, batch=batch)
    if not env:
        del theirs["observation.environment_state"]
    generator = torch.Generator().manual_seed(12)
    pixels = {}
    for camera in cameras:
        pixels[camera] = torch.randint(
            0, 256, (batch, N_OBS_STEPS, *IMAGE_HW, 3), generator=generator, dtype=torch.uint8
        )
        theirs[camera] = pixels[camera].permute(0, 1, 4, 2, 3).float() / 255.0
    return theirs, pixels


IMAGE_CASES = [
    (["observation.images.top"], True, False, {"use_separate_rgb_encoder_per_camera": False}),
    (
        ["observation.images.top", "observation.images.wrist"],
        False,
        True,
        {"normalization_mapping": {"VISUAL": "MIN_MAX", "STATE": "MEAN_STD", "ACTION": "MIN_MAX"}},
    ),
]


@pytest.mark.parametrize(
    ("cameras", "env", "legacy", "overrides"),
    IMAGE_CASES,
    ids=["one-camera-shared-env-processors", "two-cameras-separate-buffers-minmax"],
)
def test_an_image_policy_predicts_lerobots_actions(
    tmp_path: Path, cameras: list[str], env: bool, legacy: bool, overrides: dict[str, Any]
) -> None:
    setup = image_setup(tmp_path / "pm", cameras, env, legacy, **overrides)
    policy = import_pretrained(tmp_path / "pm", tmp_path / "run")
    assert policy.config.image_keys == [c.removeprefix("observation.images.") for c in cameras]
    assert policy.config.image_feature_relu and policy.config.crop_shape == CROP
    theirs, pixels = image_observations(cameras, env, setup.stats)
    noise = torch.randn(2, HORIZON, ACTION_DIM, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = lerobot_image_actions(
            setup.unet, setup.encoders, setup.config, setup.stats, theirs, noise, legacy=legacy
        )
    obs = {"state": theirs["observation.state"]}
    if env:
        obs["environment_state"] = theirs["observation.environment_state"]
    obs.update({c.removeprefix("observation.images."): pixels[c] for c in cameras})
    got = policy.predict_action(obs, noise=noise)
    error = _normalised_error(got["action"], expected, policy.normalizer.maps["action"].scale)
    print(f"{len(cameras)} camera(s): max |ours - LeRobot| = {error:.2e} (normalised)")
    assert got["action"].shape == expected.shape and error < ACTION_TOLERANCE


def test_cli_imports_an_image_policy_and_its_bundle_predicts_lerobots_actions(
    tmp_path: Path,
) -> None:
    cameras = ["observation.images.top"]
    setup = image_setup(tmp_path / "pm", cameras, True)
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    done = prt(
        "import",
        "lerobot",
        str(tmp_path / "pm"),
        "--out",
        str(run),
        "--image-key",
        "observation.images.top=top_rgb",
    )
    assert done.returncode == 0, done.stderr
    assert "'top_rgb': (48, 48, 3)" in done.stdout
    done = prt("export", "--checkpoint", str(run), "--out", str(bundle))
    assert done.returncode == 0, done.stderr
    theirs, pixels = image_observations(cameras, True, setup.stats)
    noise = torch.randn(2, HORIZON, ACTION_DIM, generator=torch.Generator().manual_seed(4))
    request = {
        "top_rgb": pixels["observation.images.top"].numpy().tolist(),
        "state": theirs["observation.state"].numpy().tolist(),
        "environment_state": theirs["observation.environment_state"].numpy().tolist(),
        "noise": noise.numpy().tolist(),
    }
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    script = f"""
import json, sys
import numpy as np
from policy_runtime.inference import load_policy
request = json.loads(open(sys.argv[1]).read())
obs = {{"top_rgb": np.asarray(request["top_rgb"], np.uint8),
        "state": np.asarray(request["state"], np.float32),
        "environment_state": np.asarray(request["environment_state"], np.float32)}}
runtime = load_policy({str(bundle)!r})
chunk = runtime.predict(obs, noise=np.asarray(request["noise"], np.float32))
assert "torch" not in sys.modules, "the runtime imported torch"
print(json.dumps(chunk.actions.tolist()))
"""
    out = subprocess.run(
        [str(BIN / "python"), "-c", script, str(path)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    actions = torch.tensor(json.loads(out.stdout))
    with torch.no_grad():
        expected = lerobot_image_actions(
            setup.unet, setup.encoders, setup.config, setup.stats, theirs, noise, legacy=False
        )
    from policy_runtime.training.checkpoint import load_policy

    scale = load_policy(run).normalizer.maps["action"].scale
    error = _normalised_error(actions[:, :N_ACTION_STEPS], expected, scale)
    print(f"image bundle on onnxruntime: max |bundle - LeRobot| = {error:.2e} (normalised)")
    assert error < ACTION_TOLERANCE


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"use_group_norm": False}, r"use_group_norm: false is not supported: .*BatchNorm"),
        ({"vision_backbone": "resnet34"}, r"vision_backbone 'resnet34': only 'resnet18'"),
        ({"resize_shape": [40, 40]}, r"resize_shape \[40, 40\]: resizing"),
        ({"spatial_softmax_num_keypoints": 16}, r"spatial_softmax_num_keypoints 16: ours has 32"),
        ({"crop_shape": [45, 40]}, r"crop_shape \[45, 40\] of 48x48 .*a pixel away"),
        ({"crop_shape": [50, 40]}, r"crop_shape \[50, 40\]: not inside 48x48"),
    ],
)
def test_unsupported_image_settings_are_refused_by_name(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    image_setup(tmp_path / "pm", ["observation.images.top"], True)
    config, weights, norms, _ = read_pretrained(tmp_path / "pm")
    with pytest.raises(ImportRefused, match=message):
        convert({**config, **overrides}, weights, norms)


def test_batchnorm_weights_and_a_wrong_grid_are_refused(tmp_path: Path) -> None:
    shared = {"use_separate_rgb_encoder_per_camera": False}
    image_setup(tmp_path / "pm", ["observation.images.top"], True, **shared)
    config, weights, norms, _ = read_pretrained(tmp_path / "pm")
    stray = {**weights, "diffusion.rgb_encoder.backbone.1.running_mean": torch.zeros(64)}
    with pytest.raises(ImportRefused, match=r"backbone.1.running_mean: BatchNorm"):
        convert(config, stray, norms)
    grid = {**weights, "diffusion.rgb_encoder.pool.pos_grid": torch.zeros(4, 2)}
    with pytest.raises(ImportRefused, match=r"pool.pos_grid: not the 2x2 keypoint grid"):
        convert(config, grid, norms)
