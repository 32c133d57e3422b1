"""``prt import dp`` for Diffusion Policy's ``DiffusionUnetHybridImagePolicy`` (robomimic's
ResNet-18 + GroupNorm + spatial-softmax image encoder, U-Net on the global condition).

No DP image checkpoint fixture exists, so the test writes one in DP's format: the workspace
config (``train_diffusion_unet_hybrid_workspace.yaml``'s policy section, small) and a state
dict with the names DP's modules give their weights (random values), pickled like DP's
workspace (``torch.save`` with dill). The reference is an independent transcription, in plain
torch on DP's own key names, of:

* robomimic 0.2.0 (the version DP pins; ARISE-Initiative/robomimic 62ed2de),
  ``robomimic/models/base_nets.py``: ``ResNet18Conv`` (torchvision's ResNet-18 children
  without avgpool and fc), ``SpatialSoftmax.forward``, ``VisualCore`` (backbone, pool,
  flatten, Linear); ``robomimic/models/obs_nets.py``: ``ObservationEncoder.forward``
  (randomizer in, net, ReLU ``feature_activation``, randomizer out, flatten, concatenation in
  key order);
* real-stanford/diffusion_policy 5ba07ac: ``diffusion_unet_hybrid_image_policy.py``
  (BatchNorm -> ``GroupNorm(C // 16, C)``, ``predict_action``: normalise, ``x[:, :To]``
  folded into the batch, encode, ``reshape(B, -1)``, sample, ``action_pred[:, To-1 : ...]``),
  ``model/vision/crop_randomizer.py`` (eval: torchvision's ``center_crop``),
  ``common/normalize_util.py`` (``get_image_range_normalizer``: 2, -1 on ``uint8 / 255``),
  ``env/pusht/pusht_image_env.py`` (images ``uint8 / 255``, channels first).

The U-Net is our ConditionalUnet1D (DP's names; its parity is ``test_dp_golden``'s).
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from torch.nn import functional as F  # noqa: E402

from policy_runtime.importers.diffusion_policy import ImportRefused, convert  # noqa: E402
from tests.ros_graph import BIN  # noqa: E402

HYBRID = "diffusion_policy.policy.diffusion_unet_hybrid_image_policy.DiffusionUnetHybridImagePolicy"
H = W = 48
CROP = (40, 40)
FEATURES = 16
TO, HORIZON, NA, DA = 2, 8, 4, 2
KEY_MAP = {"image": "top_rgb"}
TOLERANCE = 1e-4


def dp_cfg() -> dict[str, Any]:
    """A hybrid workspace config, as DP's checkpoint stores it (resolved)."""
    return {
        "name": "train_diffusion_unet_hybrid",
        "task_name": "pusht_image",
        "n_latency_steps": 0,
        "policy": {
            "_target_": HYBRID,
            "shape_meta": {
                "obs": {
                    "image": {"shape": [3, H, W], "type": "rgb"},
                    "agent_pos": {"shape": [2], "type": "low_dim"},
                },
                "action": {"shape": [DA]},
            },
            "noise_scheduler": {
                "_target_": "diffusers.schedulers.scheduling_ddim.DDIMScheduler",
                "num_train_timesteps": 100,
                "beta_start": 0.0001,
                "beta_end": 0.02,
                "beta_schedule": "squaredcos_cap_v2",
                "clip_sample": True,
                "set_alpha_to_one": True,
                "steps_offset": 0,
                "prediction_type": "epsilon",
            },
            "horizon": HORIZON,
            "n_action_steps": NA,
            "n_obs_steps": TO,
            "num_inference_steps": 8,
            "obs_as_global_cond": True,
            "crop_shape": list(CROP),
            "diffusion_step_embed_dim": 16,
            "down_dims": [16, 32],
            "kernel_size": 3,
            "n_groups": 4,
            "cond_predict_scale": True,
            "obs_encoder_group_norm": True,
            "eval_fixed_crop": True,
        },
    }


def _resnet18_shapes() -> dict[str, tuple[int, ...]]:
    """``ResNet18Conv.nets`` (torchvision's children 0-7) with GroupNorm: name -> shape."""
    shapes: dict[str, tuple[int, ...]] = {"0.weight": (64, 3, 7, 7)}
    shapes["1.weight"] = shapes["1.bias"] = (64,)
    channels = 64
    for index, out in ((4, 64), (5, 128), (6, 256), (7, 512)):
        for block in (0, 1):
            p = f"{index}.{block}."
            cin = channels if block == 0 else out
            shapes[p + "conv1.weight"] = (out, cin, 3, 3)
            shapes[p + "conv2.weight"] = (out, out, 3, 3)
            for bn in ("bn1", "bn2"):
                shapes[f"{p}{bn}.weight"] = shapes[f"{p}{bn}.bias"] = (out,)
            if block == 0 and cin != out:
                shapes[p + "downsample.0.weight"] = (out, cin, 1, 1)
                shapes[p + "downsample.1.weight"] = shapes[p + "downsample.1.bias"] = (out,)
        channels = out
    return shapes


def _random(shape: tuple[int, ...], name: str, gen: Any) -> Any:
    if len(shape) == 4:  # conv: He-scaled so activations neither vanish nor explode
        fan_in = shape[1] * shape[2] * shape[3]
        return torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
    if name.endswith("weight"):  # GroupNorm scale
        return 1.0 + 0.2 * torch.randn(shape, generator=gen)
    return 0.1 * torch.randn(shape, generator=gen)


def dp_unet(policy: dict[str, Any]) -> Any:
    """The U-Net DP's policy config describes (what the checkpoint's ``model.`` keys load into)."""
    from policy_runtime.policies.unet1d import ConditionalUnet1D

    return ConditionalUnet1D(
        input_dim=DA,
        global_cond_dim=(FEATURES + 2) * TO,
        diffusion_step_embed_dim=policy["diffusion_step_embed_dim"],
        down_dims=policy["down_dims"],
        kernel_size=policy["kernel_size"],
        n_groups=policy["n_groups"],
        cond_predict_scale=policy["cond_predict_scale"],
    )


def dp_state(cfg: dict[str, Any], temperature: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """A DP-format state dict for ``cfg`` (random values, DP's key names, aliases included)."""
    gen = torch.Generator().manual_seed(seed)
    policy = cfg["policy"]
    state: dict[str, Any] = {}
    enc = "obs_encoder.obs_nets.image."
    backbone = {f"backbone.nets.{k}": _random(s, k, gen) for k, s in _resnet18_shapes().items()}
    fh, fw = math.ceil(CROP[0] / 32), math.ceil(CROP[1] / 32)
    pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, fw), np.linspace(-1.0, 1.0, fh))
    pool = {
        "pool.nets.weight": torch.randn(32, 512, 1, 1, generator=gen) * 0.2,
        "pool.nets.bias": 0.1 * torch.randn(32, generator=gen),
        "pool.temperature": torch.ones(1) * temperature,
        "pool.pos_x": torch.from_numpy(pos_x.reshape(1, fh * fw)).float(),
        "pool.pos_y": torch.from_numpy(pos_y.reshape(1, fh * fw)).float(),
    }
    linear = {
        # about nn.Linear's own initial scale (1 / sqrt(64))
        "nets.3.weight": torch.randn(FEATURES, 64, generator=gen) * 0.125,
        "nets.3.bias": 0.125 * torch.randn(FEATURES, generator=gen),
    }
    for part in (backbone, pool):  # VisualCore.nets lists backbone and pool again
        for k, v in part.items():
            state[enc + k] = v
            alias = ("nets.0." if k.startswith("backbone.") else "nets.1.") + k.split(".", 1)[1]
            state[enc + alias] = v
    state.update({enc + k: v for k, v in linear.items()})
    with torch.random.fork_rng():  # the U-Net's own initialisation, reproducibly
        torch.manual_seed(seed)
        unet = dp_unet(policy)
    for k, v in unet.state_dict().items():
        state[f"model.{k}"] = v + 0.05 * torch.randn(v.shape, generator=gen)
    norm = "normalizer.params_dict"
    state[f"{norm}.image.scale"] = torch.tensor([2.0])
    state[f"{norm}.image.offset"] = torch.tensor([-1.0])
    state[f"{norm}.agent_pos.scale"] = torch.tensor([0.004, 0.005])
    state[f"{norm}.agent_pos.offset"] = torch.tensor([-1.0, -1.2])
    state[f"{norm}.action.scale"] = torch.tensor([0.004, 0.0045])
    state[f"{norm}.action.offset"] = torch.tensor([-1.02, -0.98])
    state["_dummy_variable"] = torch.zeros(0)  # DP's ModuleAttrMixin
    return state


# --- the reference: robomimic's encoder and DP's predict_action on DP's key names -----------
def _gn(x: Any, sd: dict[str, Any], p: str) -> Any:
    # replace_submodules: nn.GroupNorm(num_groups=C // 16, num_channels=C) (eps 1e-5)
    return F.group_norm(x, x.shape[1] // 16, sd[p + ".weight"], sd[p + ".bias"])


def ref_resnet18_conv(x: Any, sd: dict[str, Any], p: str) -> Any:
    """torchvision resnet18's conv1, bn1, relu, maxpool, layer1-4 (``ResNet18Conv.nets``)."""
    x = F.conv2d(x, sd[p + "0.weight"], stride=2, padding=3)
    x = F.max_pool2d(F.relu(_gn(x, sd, p + "1")), 3, 2, 1)
    for index, stride in ((4, 1), (5, 2), (6, 2), (7, 2)):
        for block in (0, 1):
            q = f"{p}{index}.{block}."
            s = stride if block == 0 else 1
            out = F.relu(
                _gn(F.conv2d(x, sd[q + "conv1.weight"], stride=s, padding=1), sd, q + "bn1")
            )
            out = _gn(F.conv2d(out, sd[q + "conv2.weight"], padding=1), sd, q + "bn2")
            identity = x
            if q + "downsample.0.weight" in sd:
                identity = _gn(
                    F.conv2d(x, sd[q + "downsample.0.weight"], stride=s), sd, q + "downsample.1"
                )
            x = F.relu(out + identity)
    return x


def ref_spatial_softmax(feature: Any, sd: dict[str, Any], p: str) -> Any:
    """robomimic 0.2.0 ``SpatialSoftmax.forward`` (eval: no noise; no output_variance)."""
    feature = F.conv2d(feature, sd[p + "nets.weight"], sd[p + "nets.bias"])
    num_kp, h, w = feature.shape[1:]
    feature = feature.reshape(-1, h * w)
    attention = F.softmax(feature / sd[p + "temperature"], dim=-1)
    expected_x = torch.sum(sd[p + "pos_x"] * attention, dim=1, keepdim=True)
    expected_y = torch.sum(sd[p + "pos_y"] * attention, dim=1, keepdim=True)
    return torch.cat([expected_x, expected_y], 1).view(-1, num_kp, 2)


def ref_center_crop(x: Any, ch: int, cw: int) -> Any:
    """torchvision ``center_crop`` for a crop inside the image."""
    h, w = x.shape[-2:]
    top, left = round((h - ch) / 2.0), round((w - cw) / 2.0)
    return x[..., top : top + ch, left : left + cw]


def ref_condition(cfg: dict[str, Any], sd: dict[str, Any], obs: dict[str, Any]) -> Any:
    """DP's ``predict_action`` up to ``global_cond``: ``obs`` as DP's env gives it (images
    float ``uint8 / 255``, (B, To, 3, H, W))."""
    policy = cfg["policy"]
    norm = "normalizer.params_dict"
    # LinearNormalizer: x * scale + offset (an image's one scale over every pixel)
    nobs = {k: v * sd[f"{norm}.{k}.scale"] + sd[f"{norm}.{k}.offset"] for k, v in obs.items()}
    b = next(iter(nobs.values())).shape[0]
    to = policy["n_obs_steps"]
    this = {k: v[:, :to].reshape(-1, *v.shape[2:]) for k, v in nobs.items()}
    feats = []
    for key, attr in policy["shape_meta"]["obs"].items():  # ObservationEncoder order
        x = this[key]
        if attr.get("type", "low_dim") == "rgb":
            p = f"obs_encoder.obs_nets.{key}."
            x = ref_center_crop(x, *policy["crop_shape"])  # dmvc.CropRandomizer, eval
            x = ref_resnet18_conv(x, sd, p + "backbone.nets.")
            x = ref_spatial_softmax(x, sd, p + "pool.")
            x = torch.flatten(x, 1)
            x = F.linear(x, sd[p + "nets.3.weight"], sd[p + "nets.3.bias"])
            x = F.relu(x)  # ObservationEncoder's feature_activation
        feats.append(x.reshape(x.shape[0], -1))
    return torch.cat(feats, dim=-1).reshape(b, -1)


def ref_predict_action(
    cfg: dict[str, Any], sd: dict[str, Any], obs: dict[str, Any], noise: Any
) -> dict[str, Any]:
    import diffusers

    policy = cfg["policy"]
    model = dp_unet(policy)
    model.load_state_dict(
        {k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")}
    )
    model.eval()
    settings = dict(policy["noise_scheduler"])
    scheduler = getattr(diffusers, settings.pop("_target_").rsplit(".", 1)[1])(**settings)
    with torch.no_grad():
        global_cond = ref_condition(cfg, sd, obs)
        trajectory = noise.clone()
        scheduler.set_timesteps(policy["num_inference_steps"])
        for t in scheduler.timesteps:
            out = model(trajectory, t, global_cond=global_cond)
            trajectory = scheduler.step(out, t, trajectory).prev_sample
        norm = "normalizer.params_dict.action"
        action_pred = (trajectory - sd[f"{norm}.offset"]) / sd[f"{norm}.scale"]
        start = TO - 1
    return {
        "action": action_pred[:, start : start + NA],
        "action_pred": action_pred,
        "cond": global_cond,
    }


def observations(seed: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ours: uint8 (B, To, H, W, 3) and agent_pos, DP's: the same as its env gives them)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (2, TO, H, W, 3), dtype=np.uint8)
    agent_pos = rng.uniform(0, 500, (2, TO, 2)).astype(np.float32)
    ours = {"top_rgb": torch.from_numpy(images), "agent_pos": torch.from_numpy(agent_pos)}
    dp_images = torch.from_numpy(np.moveaxis(images.astype(np.float32) / 255, -1, 2))
    return ours, {"image": dp_images, "agent_pos": torch.from_numpy(agent_pos)}


def _noise(seed: int = 2) -> Any:
    return torch.randn(2, HORIZON, DA, generator=torch.Generator().manual_seed(seed))


def _imported(cfg: dict[str, Any], state: dict[str, Any]) -> Any:
    from policy_runtime.policies import make_policy

    config, normalizer, weights = convert(cfg, {"ema_model": state}, key_map=KEY_MAP)
    policy = make_policy(config, normalizer)
    policy.load_state_dict(weights["ema_model"], strict=True)
    return policy.eval()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_the_imported_policy_reproduces_dps_conditioning_and_actions(temperature: float) -> None:
    cfg = dp_cfg()
    state = dp_state(cfg, temperature)
    policy = _imported(cfg, state)
    c = policy.config
    assert (c.image_keys, c.obs_keys, c.crop_shape, c.image_feature_dim) == (
        ["top_rgb"],
        ["agent_pos"],
        CROP,
        FEATURES,
    )
    assert c.image_feature_relu and c.obs_shapes["top_rgb"] == (H, W, 3)
    assert (c.chunk_start, c.action_offset_steps, c.sampler) == (TO - 1, 0, "ddim")
    ours_obs, dp_obs = observations()
    noise = _noise()
    theirs = ref_predict_action(cfg, state, dp_obs, noise)
    with torch.no_grad():
        cond = policy.obs_encoder(ours_obs)
    assert cond.shape == theirs["cond"].shape == (2, (FEATURES + 2) * TO)
    assert float(theirs["cond"][:, :FEATURES].abs().max()) > 0.1  # the features are not dead
    cond_error = float((cond - theirs["cond"]).abs().max())
    out = policy.predict_action(ours_obs, noise=noise)
    scale = state["normalizer.params_dict.action.scale"].numpy()
    errors = {
        k: float((np.abs(out[k].numpy() - theirs[k].numpy()) * scale).max())
        for k in ("action", "action_pred")
    }
    print(f"T={temperature}: cond {cond_error:.1e}, actions (normalised) {errors}")
    assert cond_error < 1e-5
    assert max(errors.values()) < TOLERANCE


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A DP-format ``.ckpt`` (dill-pickled) through ``prt import dp`` and ``prt export``."""
    dill = pytest.importorskip("dill")
    omegaconf = pytest.importorskip("omegaconf")
    root = tmp_path_factory.mktemp("dp_image")
    cfg = dp_cfg()
    state = dp_state(cfg)
    payload = {
        "cfg": omegaconf.OmegaConf.create(cfg),
        "state_dicts": {"model": state, "ema_model": state},
        "pickles": {"epoch": dill.dumps(3), "global_step": dill.dumps(300)},
    }
    torch.save(payload, root / "dp_image.ckpt", pickle_module=dill)
    run, out = root / "run", root / "bundle"
    done = _prt(
        "import",
        "dp",
        str(root / "dp_image.ckpt"),
        "--out",
        str(run),
        "--trust",
        "--key-map",
        "image=top_rgb",
    )
    assert done.returncode == 0, done.stderr
    assert "'top_rgb': (48, 48, 3)" in done.stdout
    done = _prt("export", "--checkpoint", str(run), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return run, out


def _prt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "prt"), *args], capture_output=True, text=True, timeout=600)


def test_its_bundle_reproduces_dps_actions_without_torch(bundle: tuple[Path, Path]) -> None:
    from policy_runtime.training.checkpoint import read_header

    run, out = bundle
    header = read_header(run)
    assert header["imported_from"]["policy"] == HYBRID
    assert header["policy"]["image_feature_relu"] is True
    ours_obs, dp_obs = observations()
    noise = _noise()
    cfg = dp_cfg()
    theirs = ref_predict_action(cfg, dp_state(cfg), dp_obs, noise)
    request = {k: v.numpy().tolist() for k, v in ours_obs.items()}
    script = f"""
import json, sys
import numpy as np
from policy_runtime.inference import load_policy
request = json.loads(open(sys.argv[1]).read())
obs = {{"top_rgb": np.asarray(request["top_rgb"], np.uint8),
        "agent_pos": np.asarray(request["agent_pos"], np.float32)}}
runtime = load_policy({str(out)!r})
chunk = runtime.predict(obs, noise=np.asarray(request["noise"], np.float32))
assert "torch" not in sys.modules, "the runtime imported torch"
print(json.dumps(chunk.actions.tolist()))
"""
    request["noise"] = noise.numpy().tolist()
    path = run.parent / "request.json"
    path.write_text(json.dumps(request))
    done = subprocess.run(
        [str(BIN / "python"), "-c", script, str(path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    actions = np.asarray(json.loads(done.stdout), np.float32)
    expected = theirs["action_pred"].numpy()[:, TO - 1 :]  # the chunk from the newest step
    scale = dp_state(cfg)["normalizer.params_dict.action.scale"].numpy()
    error = float((np.abs(actions - expected) * scale).max())
    print(f"bundle on onnxruntime: max |ours - DP| = {error:.2e} (normalised)")
    assert actions.shape == expected.shape and error < TOLERANCE


def _set(cfg: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(cfg)
    node = changed
    for name in path[:-1]:
        node = node[name]
    if value is _DELETE:
        node.pop(path[-1])
    else:
        node[path[-1]] = value
    return changed


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("policy", "obs_as_global_cond"), False, r"policy.obs_as_global_cond: False"),
        (("policy", "obs_encoder_group_norm"), False, r"policy.obs_encoder_group_norm: False"),
        (("policy", "obs_encoder_group_norm"), _DELETE, r"policy.obs_encoder_group_norm: False"),
        (("policy", "eval_fixed_crop"), False, r"policy.eval_fixed_crop: False"),
        (("policy", "crop_shape"), [41, 41], r"policy.crop_shape \[41, 41\].*centre crop"),
        (("policy", "eta"), 0.5, r"policy.eta: not a setting"),
        (("n_latency_steps",), 1, r"n_latency_steps: 1"),
        (
            ("policy", "shape_meta", "obs"),
            {"agent_pos": {"shape": [2]}, "image": {"shape": [3, H, W], "type": "rgb"}},
            r"obs.image: an rgb key after the low-dim key 'agent_pos'",
        ),
        (
            ("policy", "shape_meta", "obs", "image", "type"),
            "depth",
            r"obs.image.type 'depth'",
        ),
        (
            ("policy", "noise_scheduler", "steps_offset"),
            1,
            r"noise_scheduler.steps_offset: 1",
        ),
    ],
)
def test_unsupported_settings_are_refused_by_name(
    path: tuple[str, ...], value: Any, message: str
) -> None:
    cfg = dp_cfg()
    state = dp_state(cfg)
    with pytest.raises(ImportRefused, match=message):
        convert(_set(cfg, path, value), {"ema_model": state}, key_map=KEY_MAP)


def test_unsupported_encoders_are_refused_by_name() -> None:
    cfg = dp_cfg()
    state = dp_state(cfg)
    enc = "obs_encoder.obs_nets.image."
    batch_norm = {**state, enc + "backbone.nets.1.running_mean": torch.zeros(64)}
    with pytest.raises(ImportRefused, match=r"backbone.nets.1.running_mean: BatchNorm"):
        convert(cfg, {"ema_model": batch_norm}, key_map=KEY_MAP)
    fewer = {**state, enc + "pool.nets.weight": torch.zeros(16, 512, 1, 1)}
    with pytest.raises(ImportRefused, match=r"pool.nets.weight: 16 keypoints, ours has 32"):
        convert(cfg, {"ema_model": fewer}, key_map=KEY_MAP)
    variance = {**state, enc + "nets.3.weight": torch.zeros(FEATURES, 192)}
    with pytest.raises(ImportRefused, match=r"output_variance"):
        convert(cfg, {"ema_model": variance}, key_map=KEY_MAP)
    coord = {**state, enc + "backbone.nets.0.conv.weight": torch.zeros(64, 5, 7, 7)}
    with pytest.raises(
        ImportRefused, match=r"backbone.nets.0.conv.weight \[64, 5, 7, 7\]: not part of"
    ):
        convert(cfg, {"ema_model": coord}, key_map=KEY_MAP)
    with pytest.raises(ImportRefused, match=r"key map names 'wrist'"):
        convert(cfg, {"ema_model": state}, key_map={"wrist": "wrist_rgb"})
