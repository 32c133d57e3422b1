"""Training on a real generated dataset: loss falls, exact resume, safe checkpoints, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

from policy_runtime.normalization import AffineMap  # noqa: E402
from policy_runtime.policies.config import DRIFT_TEMPERATURES  # noqa: E402
from policy_runtime.training.checkpoint import load_policy  # noqa: E402
from policy_runtime.training.config import load_config  # noqa: E402
from policy_runtime.training.trainer import Trainer, TrainingError  # noqa: E402
from sim_bridge.datagen import DatagenConfig, generate  # noqa: E402

OBS = ("joint_pos", "cube_pose", "bin_pos")
TINY = [
    "model.down_dims=[16,32,64]",
    "model.step_embed_dim=16",
    "batch_size=32",
    "warmup_steps=5",
    "log_every=5",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pp.zarr"
    generate(DatagenConfig(task="pick_place", episodes=6, out=path, obs=OBS))
    return path


def _config(dataset: Path, out: Path, *overrides: str, policy: str = "diffusion"):
    return load_config(None, [*TINY, *overrides], data=dataset, out=out, policy=policy)


def test_config_file_overrides_and_errors(tmp_path: Path):
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("steps: 100\nmodel:\n  kernel_size: 3\nlr: 0.001\n")
    config = load_config(yaml_file, ["lr=3e-4", "model.down_dims=[8,16]"], data="d", out="o")
    assert (config.steps, config.lr, config.model.kernel_size) == (100, 3e-4, 3)
    assert config.model.down_dims == (8, 16)
    with pytest.raises(ValueError, match="'lr' is not key=value"):
        load_config(None, ["lr"], data="d", out="o")
    with pytest.raises(ValueError, match="stepz"):
        load_config(None, ["stepz=3"], data="d", out="o")
    with pytest.raises(ValueError, match="batch_size"):
        load_config(None, ["batch_size=0"], data="d", out="o")


def test_a_short_diffusion_run_on_generated_demos_lowers_the_loss(dataset, tmp_path):
    config = _config(
        dataset,
        tmp_path / "run",
        "steps=150",
        "lr=1e-3",
        "model.down_dims=[64,128,256]",
        "model.step_embed_dim=128",  # the denoising step must be told apart: 16 is too few
    )
    result = Trainer(config).train()
    losses = np.array(result.losses)
    assert len(losses) == 150 and np.isfinite(losses).all()
    assert losses[-20:].mean() < 0.6 * losses[:20].mean()
    policy = load_policy(tmp_path / "run")
    assert policy.kind == "diffusion"
    obs = {k: torch.zeros(1, 2, *policy.config.obs_shapes[k]) for k in OBS}
    out = policy.predict_action(obs)
    assert out["action"].shape == (1, 8, 10) and torch.isfinite(out["action"]).all()


def test_a_short_drifting_run_moves_its_chunks_toward_the_demos(dataset, tmp_path):
    """The drifting loss is a normalised force (it does not fall as it learns), so progress is
    measured where it matters: generated chunks against the demonstrated ones."""
    config = _config(
        dataset, tmp_path / "run", "steps=150", "lr=1e-3", "checkpoint_every=50", policy="drifting"
    )
    trainer = Trainer(config)
    batch = trainer.data.train.sample_batch(np.arange(0, len(trainer.data.train), 7))
    obs = {k: torch.from_numpy(batch[k]) for k in OBS}
    demo = torch.from_numpy(batch["action"])
    noise = torch.randn(demo.shape, generator=torch.Generator().manual_seed(0))
    flat = batch["action"].reshape(-1, demo.shape[-1])
    yardstick = AffineMap.min_max(flat.min(axis=0), flat.max(axis=0))
    scale = torch.from_numpy(yardstick.scale)

    def error() -> float:
        """Mean squared error with every dimension scaled to the demos' own range: one fixed
        yardstick, not the run's normaliser (whose settings would move it)."""
        trainer.policy.eval()
        predicted = trainer.policy.predict_action(obs, noise)["action_pred"]
        trainer.policy.train()
        return float((((predicted - demo) * scale) ** 2).mean())

    before = error()
    trainer.train()
    assert error() < 0.7 * before
    # What the run logs as its progress: the held-out episode's error, with the per-temperature
    # force beside it.
    checkpoints = tmp_path / "run" / "checkpoints"
    metrics = [
        json.loads((checkpoints / f"step_{step:08d}" / "config.json").read_text())["metrics"]
        for step in (50, 100, 150)
    ]
    held_out = [m["val_action_mse"] for m in metrics]
    assert held_out[2] < held_out[1] < held_out[0] and held_out[2] < 0.85 * held_out[0]
    assert {f"force_rms/{t:g}" for t in DRIFT_TEMPERATURES} <= set(metrics[0])
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    logged = {tag: len(events.Scalars(tag)) for tag in events.Tags()["scalars"]}
    assert logged["train/loss"] == logged["train/force_rms/0.02"] == 150 // 5  # every log_every
    assert logged["train/val_action_mse"] == 3  # every checkpoint


def test_resume_gives_exactly_the_same_losses(dataset, tmp_path):
    straight = Trainer(_config(dataset, tmp_path / "a", "steps=8", "checkpoint_every=4")).train()
    first = Trainer(_config(dataset, tmp_path / "b", "steps=4", "checkpoint_every=4")).train()
    resumed = Trainer(
        _config(dataset, tmp_path / "b", "steps=8", "checkpoint_every=4"),
        resume=tmp_path / "b",
    ).train()
    assert first.losses + resumed.losses == straight.losses
    assert resumed.val_losses == {k: v for k, v in straight.val_losses.items() if k > 4}


def test_a_checkpoint_from_before_a_new_config_field_still_resumes(dataset, tmp_path):
    """Fields added to PolicyConfig since a checkpoint was written take their defaults."""
    Trainer(_config(dataset, tmp_path / "run", "steps=2", "checkpoint_every=2")).train()
    header_file = tmp_path / "run" / "checkpoints" / "step_00000002" / "config.json"
    header = json.loads(header_file.read_text())
    del header["policy"]["control_hz"]  # as written before control_hz existed
    header_file.write_text(json.dumps(header))
    config = _config(dataset, tmp_path / "run", "steps=3", "checkpoint_every=2")
    assert len(Trainer(config, resume=tmp_path / "run").train().losses) == 1


def test_resume_compares_only_the_fields_the_policy_kind_reads(dataset, tmp_path):
    """A diffusion run resumes after a drifting default changed (the kernel temperatures did);
    a change to a field it reads is refused, naming the field."""
    Trainer(_config(dataset, tmp_path / "run", "steps=2", "checkpoint_every=2")).train()
    header_file = tmp_path / "run" / "checkpoints" / "step_00000002" / "config.json"
    header = json.loads(header_file.read_text())
    header["policy"]["drift_temperatures"] = [0.02, 0.05, 0.2]  # the default before
    header_file.write_text(json.dumps(header))
    config = _config(dataset, tmp_path / "run", "steps=3", "checkpoint_every=2")
    assert len(Trainer(config, resume=tmp_path / "run").train().losses) == 1
    config = _config(dataset, tmp_path / "run", "steps=4", "model.kernel_size=3")
    with pytest.raises(TrainingError, match="policy differs from this run's config in kernel_size"):
        Trainer(config, resume=tmp_path / "run")


def test_resuming_with_another_normalisation_is_refused(dataset, tmp_path):
    """The normaliser is fitted from the run's data and settings, so a resume that would
    change it (other data, another ``norm_min_range``) would silently shift every input."""
    Trainer(_config(dataset, tmp_path / "run", "steps=2", "checkpoint_every=2")).train()
    config = _config(dataset, tmp_path / "run", "steps=3", "norm_min_range=0.5")
    with pytest.raises(TrainingError, match=r"normalisation differs .*cube_pose\.scale"):
        Trainer(config, resume=tmp_path / "run")


def test_checkpoints_hold_no_pickle_and_describe_themselves(dataset, tmp_path):
    Trainer(_config(dataset, tmp_path / "run", "steps=2")).train()
    directory = tmp_path / "run" / "checkpoints" / "step_00000002"
    names = sorted(p.name for p in directory.iterdir())
    assert names == [
        "config.json",
        "ema.safetensors",
        "model.safetensors",
        "normalizer.safetensors",
        "train_state.json",
        "train_state.safetensors",
    ]
    header = json.loads((directory / "config.json").read_text())
    assert header["kind"] == "diffusion" and header["step"] == 2
    assert header["policy"]["obs_keys"] == sorted(OBS)
    assert (tmp_path / "run" / "checkpoints" / "latest.txt").read_text() == directory.name
    assert list((tmp_path / "run" / "tb").iterdir())  # TensorBoard events


def test_missing_obs_key_is_named(dataset, tmp_path):
    config = _config(dataset, tmp_path / "run", "obs_keys=[joint_pos,lidar]")
    with pytest.raises(ValueError, match=r"obs_keys names \['lidar'\]"):
        Trainer(config)


def test_checkpoint_of_another_policy_kind_is_refused(dataset, tmp_path):
    Trainer(_config(dataset, tmp_path / "run", "steps=2")).train()
    with pytest.raises(
        TrainingError, match="holds a 'diffusion' policy; this run trains 'drifting'"
    ):
        Trainer(
            _config(dataset, tmp_path / "run", "steps=4", policy="drifting"),
            resume=tmp_path / "run",
        )
    with pytest.raises(ValueError, match="holds a 'diffusion' policy, not 'drifting'"):
        load_policy(tmp_path / "run", kind="drifting")


def test_nan_loss_stops_training_with_the_cause(dataset, tmp_path):
    config = _config(dataset, tmp_path / "run", "steps=200", "lr=1e30", "warmup_steps=0")
    with pytest.raises(TrainingError, match=r"loss became (nan|inf) at step"):
        Trainer(config).train()


def test_top_k_keeps_the_best_evaluated_checkpoints(dataset, tmp_path):
    scores = iter([0.2, 0.9, 0.5, 0.1])

    def evaluator(directory: Path) -> dict[str, float]:
        return {"success": next(scores), "score": 0.0}

    config = _config(
        dataset, tmp_path / "run", "steps=4", "checkpoint_every=1", "eval_every=1", "top_k=2"
    )
    Trainer(config).train(evaluator=evaluator)
    root = tmp_path / "run" / "checkpoints"
    kept = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert kept == ["step_00000002", "step_00000003", "step_00000004"]  # 2 best + latest
    assert (root / "best.txt").read_text() == "step_00000002"
    assert load_policy(tmp_path / "run") is not None  # a run directory resolves to its best


def test_image_policy_trains_and_evaluates_end_to_end(tmp_path):
    """Front + wrist cameras at a small size, through datagen, training and evaluation."""
    from policy_runtime.evaluation.evaluate import EvalConfig, evaluate

    data = tmp_path / "img.zarr"
    generate(
        DatagenConfig(
            task="pick_place",
            episodes=2,
            out=data,
            obs=("joint_pos", "front_rgb", "wrist_rgb"),
            image_size=(48, 64),
        )
    )
    config = _config(
        data,
        tmp_path / "run",
        "steps=3",
        "batch_size=4",
        "obs_keys=[joint_pos]",
        "image_keys=[front_rgb,wrist_rgb]",
        "model.crop_shape=[44,60]",
    )
    result = Trainer(config).train()
    assert np.isfinite(result.losses).all()
    report = evaluate(
        EvalConfig(policy=tmp_path / "run", task="pick_place", episodes=1, max_steps=16)
    )
    assert report.episodes == 1 and report.records[0].steps == 16


def test_ddp_under_torchrun_trains_on_two_cpu_processes(dataset, tmp_path):
    """The multi-GPU path (torchrun + DistributedDataParallel), run with gloo on the CPU."""
    import subprocess
    import sys

    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.is_file():
        pytest.skip("torchrun is not installed beside this interpreter")
    out = tmp_path / "ddp"
    command = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "policy_runtime",
        "train",
        "--data",
        str(dataset),
        "--out",
        str(out),
        "--policy",
        "diffusion",
        "steps=4",
        "checkpoint_every=2",
        "device=cpu",
        *TINY,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "trained to step 4" in proc.stdout
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir())
    assert checkpoints == ["step_00000002", "step_00000004"]  # written by rank 0 only, once
    assert load_policy(out).kind == "diffusion"
