"""Evaluation in simulation: Wilson intervals, the policy loop, ``evaluate``, sweeps, ``prt eval``.

Real MuJoCo, a real (tiny, untrained) torch DiffusionPolicy passed through a loader hook, real
worker processes, real mp4 and PNG files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import policy_runtime.evaluation.evaluate as evaluate_module
from policy_runtime.cli.main import app
from policy_runtime.evaluation import run_policy_episode, wilson_interval
from policy_runtime.evaluation.evaluate import EvalConfig, evaluate
from policy_runtime.evaluation.sweep import parse_sweep, run_sweep
from policy_runtime.inference.runtime import PolicyRuntime
from policy_runtime.inference.specs import specs_from_config
from policy_runtime.normalization import AffineMap, Normalizer
from policy_runtime.policies.config import PolicyConfig
from policy_runtime.robots.poses import matrix_from_rot6d

LOW_DIM = ["joint_pos", "cube_pose"]
runner = CliRunner()


# --- Wilson interval -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (85, 100, (0.7672, 0.9069)),
        (5, 10, (0.2366, 0.7634)),
        (0, 3, (0.0, 0.5615)),
    ],
)
def test_wilson_interval_matches_known_values(successes, n, expected):
    low, high = wilson_interval(successes, n)
    assert low == pytest.approx(expected[0], abs=1e-4)
    assert high == pytest.approx(expected[1], abs=1e-4)


def test_wilson_interval_widens_with_confidence_and_rejects_nonsense():
    narrow = wilson_interval(30, 60, confidence=0.8)
    wide = wilson_interval(30, 60, confidence=0.99)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 10, confidence=1.0)


def test_importing_evaluation_imports_no_torch():
    code = (
        "import sys, policy_runtime.evaluation, policy_runtime.cli.eval; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the policy loop, with scripted numpy policies -------------------------------------------


class RecordingEnv:
    """Delegates to a SimEnv and keeps every observation it returned (reset first)."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.returned: list[dict[str, np.ndarray]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        self.returned = [self.env.reset(seed)]
        return self.returned[0]

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        self.returned.append(self.env.step(action))
        return self.returned[-1]


@pytest.fixture(scope="module")
def env():
    from sim_bridge.env import make_env

    env = make_env("pick_place", cameras=())
    yield env
    env.close()


def _holding(env: Any, ta: int, calls: list[tuple[int, dict[str, np.ndarray]]]):
    """A policy that holds the current command; it records (env steps, window) per call."""

    def policy_fn(window: dict[str, np.ndarray]) -> np.ndarray:
        calls.append((env.steps, window))
        return np.repeat(env.last_action_ee[None], ta + 2, axis=0)

    return policy_fn


def test_history_starts_padded_and_each_call_executes_n_action_steps(env):
    recording = RecordingEnv(env)
    calls: list[tuple[int, dict[str, np.ndarray]]] = []
    result = run_policy_episode(
        recording,  # type: ignore[arg-type]
        _holding(env, 4, calls),
        seed=3,
        n_obs_steps=3,
        n_action_steps=4,
        keys=LOW_DIM,
        max_steps=10,
    )
    assert [steps for steps, _ in calls] == [0, 4, 8]  # 4 env steps per chunk
    assert (result.steps, result.policy_calls, result.success) == (10, 3, False)
    assert result.frames is None
    first = calls[0][1]
    assert set(first) == set(LOW_DIM)
    for key in LOW_DIM:
        assert first[key].shape == (3, *recording.returned[0][key].shape)
        for row in first[key]:  # padded with the first observation
            np.testing.assert_array_equal(row, recording.returned[0][key])
    for steps, window in calls[1:]:  # then the newest three, oldest first
        for key in LOW_DIM:
            expected = np.stack([o[key] for o in recording.returned[steps - 2 : steps + 1]])
            np.testing.assert_array_equal(window[key], expected)


def test_episode_ends_at_the_task_step_limit(env):
    calls: list[tuple[int, dict[str, np.ndarray]]] = []
    result = run_policy_episode(
        env, _holding(env, 8, calls), seed=0, n_obs_steps=2, n_action_steps=8, keys=LOW_DIM
    )
    assert result.steps == env.task.max_steps == 250 and not result.success
    assert result.policy_calls == len(calls) == 32  # ceil(250 / 8): the last chunk is cut short


def test_episode_ends_at_success_with_the_expert_as_policy(env):
    from sim_bridge.experts import expert_for
    from sim_bridge.rollout import run_expert_episode

    expert = expert_for("pick_place")
    reference = run_expert_episode(env, expert, 5)
    assert reference.success and reference.steps < env.task.max_steps

    actions: list[Any] = []

    def replay(window: dict[str, np.ndarray]) -> np.ndarray:
        if not actions:  # the expert reads the env as it goes: one action per call
            actions.append(expert(env, np.random.default_rng([5, 1])))
        return next(actions[0])[None]

    result = run_policy_episode(env, replay, seed=5, n_obs_steps=2, n_action_steps=1, keys=LOW_DIM)
    assert result.success and result.score == 1.0
    assert result.steps == result.policy_calls == reference.steps


def test_video_frames_come_from_the_camera_at_the_size(env):
    result = run_policy_episode(
        env,
        _holding(env, 2, []),
        seed=1,
        n_obs_steps=1,
        n_action_steps=2,
        keys=["joint_pos"],
        video_camera="front",
        video_size=(32, 48),
        max_steps=5,
    )
    assert result.frames is not None
    assert result.frames.shape == (6, 32, 48, 3) and result.frames.dtype == np.uint8
    assert result.frames.std() > 1


def test_bad_chunks_and_missing_keys_are_named(env):
    with pytest.raises(ValueError, match="chunk of shape"):
        run_policy_episode(
            env,
            lambda w: np.zeros((2, 10)),
            seed=0,
            n_obs_steps=2,
            n_action_steps=4,
            keys=LOW_DIM,
        )
    with pytest.raises(ValueError, match=r"\['front_rgb'\]"):
        run_policy_episode(
            env,
            lambda w: np.zeros((4, 10)),
            seed=0,
            n_obs_steps=2,
            n_action_steps=4,
            keys=[*LOW_DIM, "front_rgb"],
        )


# --- evaluate, with a tiny real torch policy -------------------------------------------------


def tiny_policy_config() -> PolicyConfig:
    return PolicyConfig(
        kind="diffusion",
        obs_keys=LOW_DIM,
        obs_shapes={"joint_pos": (6,), "cube_pose": (7,)},
        action_dim=10,
        horizon=8,
        n_obs_steps=2,
        n_action_steps=4,
        # Simulated demonstrations' timing: each action is reached at the end of its step.
        action_offset_steps=1,
        down_dims=(16, 32),
        step_embed_dim=16,
        num_inference_steps=3,
    )


def tiny_loader(path: Path) -> Any:
    """The loader hook: an untrained tiny DiffusionPolicy whose actions stay near home."""
    import torch

    from policy_runtime.inference.torch_backend import TorchPolicy
    from policy_runtime.policies import make_policy
    from policy_runtime.robots.poses import pose_to_ee_action
    from policy_runtime.robots.ur5 import forward_kinematics
    from sim_bridge.cell import HOME_Q
    from sim_bridge.tcp import TOOL0_TO_TCP

    home = pose_to_ee_action(forward_kinematics(HOME_Q) @ TOOL0_TO_TCP, 1.0)
    spread = np.array([0.01] * 3 + [0.01] * 6 + [0.5], np.float32)
    normalizer = Normalizer(
        {
            "joint_pos": AffineMap.min_max(np.full(6, -np.pi), np.full(6, np.pi)),
            "cube_pose": AffineMap.min_max(np.full(7, -1.0), np.full(7, 1.0)),
            "action": AffineMap.min_max(home - spread, home + spread),
        }
    )
    torch.manual_seed(0)
    return TorchPolicy(make_policy(tiny_policy_config(), normalizer))


def _config(tmp_path: Path, **overrides: Any) -> EvalConfig:
    policy = tmp_path / "policy"
    policy.mkdir(exist_ok=True)
    settings: dict[str, Any] = {
        "policy": policy,
        "task": "pick_place",
        "episodes": 3,
        "out": tmp_path / "eval",
        "max_steps": 16,
        "loader": tiny_loader,
    }
    settings.update(overrides)
    return EvalConfig(**settings)


def test_evaluate_writes_the_log_and_a_video(tmp_path: Path):
    import imageio.v2 as imageio

    config = _config(tmp_path, videos=1, video_size=(64, 96), inference_steps=2)
    done: list[int] = []
    report = evaluate(config, lambda record, n: done.append(n))
    assert done == [1, 2, 3]
    log = json.loads((tmp_path / "eval" / "eval_log.json").read_text())
    assert report.log_path == tmp_path / "eval" / "eval_log.json"
    assert log["config"]["task"] == "pick_place" and log["config"]["start_seed"] == 100_000
    assert "workers" not in log["config"] and "out" not in log["config"]
    assert log["policy"]["num_inference_steps"] == 2  # the override reached the sampler
    assert log["policy"]["n_action_steps"] == 4
    episodes = log["episodes"]
    assert [e["seed"] for e in episodes] == [100_000, 100_001, 100_002]
    for e in episodes:
        assert (e["variant"], e["success"], e["score"]) == ("default", False, 0.0)
        assert (e["steps"], e["policy_calls"]) == (16, 4)
    assert len({e["actions_sha256"] for e in episodes}) == 3  # the policy acted, per seed
    summary = log["summary"]
    assert (summary["episodes"], summary["successes"], summary["success_rate"]) == (3, 0, 0.0)
    assert summary["success_interval_95"] == pytest.approx([0.0, 0.5615], abs=1e-4)
    assert report.interval == tuple(summary["success_interval_95"])
    assert log["videos"] == ["episode_100000.mp4"]
    frames = imageio.mimread(tmp_path / "eval" / "episode_100000.mp4")
    assert len(frames) == 17  # after reset + after each of 16 steps
    assert frames[0].shape == (64, 96, 3)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "episode_100000.mp4",
        "eval_log.json",
    ]


def test_worker_processes_give_the_same_log(tmp_path: Path):
    one = evaluate(_config(tmp_path, out=tmp_path / "one"))
    two = evaluate(_config(tmp_path, out=tmp_path / "two", workers=2))
    assert one.log_path is not None and two.log_path is not None
    assert one.log_path.read_bytes() == two.log_path.read_bytes()
    again = evaluate(_config(tmp_path, out=None, episodes=1))
    assert again.records[0] == one.records[0] and again.log_path is None


def test_ray_actors_on_a_local_ray_instance_give_the_same_log(tmp_path: Path):
    pytest.importorskip("ray", reason="Ray (the 'distributed' extra) is not installed")
    local = evaluate(_config(tmp_path, out=tmp_path / "local", episodes=2))
    ray = evaluate(
        _config(tmp_path, out=tmp_path / "ray", episodes=2, workers=2, ray_address="local")
    )
    assert local.log_path is not None and ray.log_path is not None
    assert local.log_path.read_bytes() == ray.log_path.read_bytes()


def test_a_policy_that_does_not_fit_the_task_fails_before_writing(tmp_path: Path):
    config = _config(tmp_path, task="push_t")  # push_t has no cube_pose
    with pytest.raises(ValueError, match=r"\['cube_pose'\]"):
        evaluate(config)
    assert not (tmp_path / "eval").exists()


class HoldingRuntime(PolicyRuntime):
    """A scripted joint-space policy on two cameras: it holds the measured joints."""

    def __init__(self) -> None:
        config = PolicyConfig(
            kind="diffusion",
            obs_keys=["joint_pos", "gripper"],
            image_keys=["front_rgb", "wrist_rgb"],
            obs_shapes={"joint_pos": (6,), "gripper": (1,), "front_rgb": (48, 64, 3)}
            | {"wrist_rgb": (48, 64, 3)},
            action_dim=7,
            horizon=16,
        )
        identity = AffineMap(np.ones(7, np.float32), np.zeros(7, np.float32))
        maps = {k: identity for k in ("joint_pos", "gripper", "action")}
        maps |= {k: AffineMap.image() for k in ("front_rgb", "wrist_rgb")}
        super().__init__(specs_from_config(config, Normalizer(maps)))

    def _predict_normalized(self, obs, noise, steps, sampler, rng, guide=None):  # type: ignore[no-untyped-def]
        assert obs["front_rgb"].shape == obs["wrist_rgb"].shape == (1, 2, 48, 64, 3)
        assert obs["front_rgb"].dtype == np.uint8
        hold = np.concatenate([obs["joint_pos"][:, -1], obs["gripper"][:, -1]], axis=-1)
        return np.repeat(hold[:, None], 16, axis=1)


def image_loader(path: Path) -> PolicyRuntime:
    return HoldingRuntime()


def test_the_env_gives_the_policy_its_cameras_size_and_action_space(tmp_path: Path):
    report = evaluate(_config(tmp_path, loader=image_loader, episodes=1, max_steps=3))
    assert report.records[0].steps == 3 and report.records[0].policy_calls == 1
    options = evaluate_module.env_options(report.policy)
    assert options == {"cameras": ("front", "wrist"), "action_space": "joint"} | {
        "image_size": (48, 64)
    }
    other = report.policy.action.model_copy(update={"dim": 5, "representation": "other"})
    with pytest.raises(ValueError, match="action_dim 5"):
        evaluate_module.env_options(dataclasses.replace(report.policy, action=other))


def test_policy_formats_are_recognised_by_their_files(tmp_path: Path):
    checkpoint, bundle, run, other = (tmp_path / n for n in ("ckpt", "bundle", "run", "other"))
    for d in (checkpoint, bundle, run / "checkpoints", other):
        d.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "model.safetensors").write_bytes(b"")
    (bundle / "manifest.json").write_text("{}")
    (run / "checkpoints" / "latest.txt").write_text("step_000010")
    assert evaluate_module.policy_format(checkpoint) == "checkpoint"
    assert evaluate_module.policy_format(run) == "checkpoint"
    assert evaluate_module.policy_format(bundle) == "bundle"
    with pytest.raises(ValueError, match="neither a checkpoint"):
        evaluate_module.policy_format(other)
    with pytest.raises(ValueError, match="no such file"):
        evaluate_module.policy_format(tmp_path / "missing")


# --- prt eval ----------------------------------------------------------------------------------


def _checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "ckpt"
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")
    return path


def _trained_checkpoint(tmp_path: Path) -> Path:
    """The tiny policy saved as training saves it (read back by the default loader)."""
    import torch

    from policy_runtime.training.checkpoint import TrainState, save_checkpoint
    from policy_runtime.training.config import TrainConfig

    policy = tiny_loader(tmp_path).policy
    state = TrainState(1, {}, {}, 0, {}, torch.get_rng_state())
    save_checkpoint(
        tmp_path / "ckpt",
        policy=policy,
        ema_policy=policy,
        train_config=TrainConfig(data=tmp_path / "d.zarr", out=tmp_path),
        state=state,
        metrics={},
    )
    return tmp_path / "ckpt"


def test_cli_evaluates_a_checkpoint_and_a_sweep_writes_csv_json_png(tmp_path: Path):
    checkpoint = _trained_checkpoint(tmp_path)
    common = ["--policy", str(checkpoint), "--task", "pick_place", "--max-steps", "8"]
    result = runner.invoke(
        app,
        ["eval", *common, "--episodes", "2", "--out", str(tmp_path / "single")],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "0.0% (0/2)" in result.output and "[0.0%, 65.8%]" in result.output
    log = json.loads((tmp_path / "single" / "eval_log.json").read_text())
    hooked = evaluate(_config(tmp_path, out=None, episodes=2, max_steps=8))
    assert [e["actions_sha256"] for e in log["episodes"]] == [
        r.actions_sha256 for r in hooked.records
    ]  # the checkpoint loader restores the very policy the hook builds

    out = tmp_path / "sweep"
    result = runner.invoke(
        app,
        ["eval", *common, "--episodes", "1", "--out", str(out), "--sweep", "inference_steps=1,3"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "inference_steps=1" in result.output and "inference_steps=3" in result.output
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["inference_steps"] for row in rows] == ["1", "3"]
    assert set(rows[0]) >= {"success_rate", "interval_low", "interval_high", "mean_score"}
    sweep = json.loads((out / "sweep.json").read_text())
    assert [r["inference_steps"] for r in sweep["results"]] == [1, 3]
    assert sweep["results"][0]["interval_high"] == pytest.approx(0.7935, abs=1e-4)
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for steps in (1, 3):
        log = json.loads((out / f"inference_steps_{steps}" / "eval_log.json").read_text())
        assert log["policy"]["num_inference_steps"] == steps


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "{tmp}/missing", "--task", "pick_place"], "missing: no such file"),
        (["--policy", "{tmp}/ckpt", "--task", "push_tee"], "unknown task 'push_tee'"),
        (["--policy", "{tmp}/empty", "--task", "pick_place"], "neither a checkpoint"),
        (["--policy", "{tmp}/bundle", "--task", "pick_place"], "field 'format' is None"),
        (
            ["--policy", "{tmp}/ckpt", "--task", "pick_place", "--sweep", "steps=1,2"],
            "--sweep 'steps=1,2': expected NAME=V1,V2",
        ),
        (
            ["--policy", "{tmp}/ckpt", "--task", "pick_place", "--sweep", "inference_steps=1,x"],
            "values must be integers",
        ),
        (
            ["--policy", "{tmp}/ckpt", "--task", "pick_place", "--video-size", "100x100"],
            "multiples of 16",
        ),
        (["--policy", "{tmp}/ckpt", "--task", "pick_place", "--domain-rand", "fog"], "['fog']"),
        (
            [
                *("--policy", "{tmp}/ckpt", "--task", "pick_place"),
                *("--execution-horizon", "3", "--sweep", "execution_horizon=2,4"),
            ],
            "--sweep execution_horizon=... and --execution-horizon exclude each other",
        ),
    ],
)
def test_cli_bad_input_fails_naming_it_and_writes_nothing(tmp_path: Path, args, message):
    _checkpoint(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "manifest.json").write_text("{}")
    before = sorted(tmp_path.rglob("*"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(
        app, ["eval", *argv, "--out", str(tmp_path / "out")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(tmp_path.rglob("*")) == before


def test_an_execution_horizon_sweep_runs_each_horizon_on_the_same_seeds(tmp_path: Path):
    out = tmp_path / "sweep"
    result = run_sweep(_config(tmp_path, out=out, episodes=1), parse_sweep("execution_horizon=2,4"))
    assert [row["execution_horizon"] for row in result.rows()] == [2, 4]
    for horizon, calls in ((2, 8), (4, 4)):
        log = json.loads((out / f"execution_horizon_{horizon}" / "eval_log.json").read_text())
        assert log["config"]["execution_horizon"] == horizon
        assert log["episodes"][0]["seed"] == 100_000
        assert log["episodes"][0]["policy_calls"] == calls


def test_parse_sweep():
    assert parse_sweep("inference_steps=1,2,4").values == (1, 2, 4)
    assert parse_sweep("execution_horizon=4,8").name == "execution_horizon"
    assert parse_sweep("temperature=0.1,0.3,1").values == (0.1, 0.3, 1.0)
    for bad in (
        "inference_steps",
        "inference_steps=0,1",
        "inference_steps=2,2",
        "inference_steps=0.5",
        "lr=1,2",
        "temperature=0,1",
        "temperature=a",
    ):
        with pytest.raises(ValueError, match="--sweep"):
            parse_sweep(bad)


def test_prt_eval_chooses_the_headless_backend_itself(tmp_path: Path):
    """A user's shell has no MUJOCO_GL: ``prt`` must pick EGL before anything imports mujoco."""
    checkpoint = _trained_checkpoint(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    args = ["--policy", str(checkpoint), "--task", "pick_place", "--episodes", "1"]
    args += ["--max-steps", "2", "--out", str(tmp_path / "eval")]
    out = subprocess.run(
        [sys.executable, "-m", "policy_runtime", "eval", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "eval" / "eval_log.json").is_file()


def _recorded_commands(config: EvalConfig, seed: int) -> list[np.ndarray]:
    """The command in effect at the end of each policy period of an episode (``action_ee``)."""
    worker = evaluate_module.EvalWorker(config)
    env = worker.env(seed)
    commands: list[np.ndarray] = []
    end_step = env._end_step_bookkeeping

    def recording() -> None:
        end_step()
        commands.append(env.last_action_ee.copy())

    env._end_step_bookkeeping = recording  # type: ignore[method-assign]
    worker.run(seed)
    worker.close()
    return commands


def test_engine_replace_without_latency_is_the_synchronous_receding_horizon(tmp_path: Path):
    """Without the stack, the engine at the controller rate executes what the synchronous loop
    does: each action reached one policy period after its observation (the bundle's timing,
    offset 1), up to where the 125 Hz ticks fall against the 10 Hz grid (a period ends up to
    half a tick before an action's due time) and the observations that difference changes."""
    sync = _recorded_commands(_config(tmp_path, execution="sync", max_steps=20), 100_000)
    engine = _recorded_commands(
        _config(tmp_path, execution="replace", max_steps=20, safety=False), 100_000
    )
    assert len(sync) == len(engine) == 20
    ours, reference = np.stack(engine), np.stack(sync)
    # The first period is the same command; then this untrained policy jumps 1-2 cm a step, a
    # period ends up to 4 ms (4% of a step) before its action is due, and the observations,
    # hence the chunks, differ by that much: a few mm, where one step apart would be 1-2 cm
    # (and its gripper, which swings by 0.5 a step, by a tenth).
    np.testing.assert_allclose(ours[0], reference[0], atol=1e-6)
    np.testing.assert_allclose(ours[:, :3], reference[:, :3], atol=3e-3)
    np.testing.assert_allclose(ours[:, 9], reference[:, 9], atol=0.15)
    np.testing.assert_allclose(
        matrix_from_rot6d(ours[:, 3:9]), matrix_from_rot6d(reference[:, 3:9]), atol=1e-2
    )


@pytest.mark.parametrize("execution", ["sync", "replace"])
def test_execution_horizon_sets_the_actions_run_per_chunk(tmp_path: Path, execution: str):
    """16 steps of a policy whose chunks hold 7 actions (horizon 8, 2 observations) and that
    executes 4: 4 chunks by default, 8 at a horizon of 2, 3 at the whole chunk, and past the
    chunk's end is refused before an episode runs."""
    calls = {
        horizon: evaluate(
            _config(tmp_path, out=None, episodes=1, execution=execution, execution_horizon=horizon)
        ).records[0]
        for horizon in (None, 2, 7)
    }
    assert {h: r.policy_calls for h, r in calls.items()} == {None: 4, 2: 8, 7: 3}
    assert all(r.steps == 16 for r in calls.values())
    with pytest.raises(ValueError, match="execution horizon 8: the policy's chunks hold 7"):
        evaluate(_config(tmp_path, execution=execution, execution_horizon=8))
    assert not (tmp_path / "eval").exists()
    with pytest.raises(ValueError, match="execution_horizon must be >= 1"):
        _config(tmp_path, execution_horizon=0)


def test_latency_makes_the_engine_drop_late_actions_and_request_early(tmp_path: Path):
    """250 ms of inference at 10 Hz: the robot never idles (the plan never runs out) and every
    chunk is used, its actions that were due during inference skipped."""
    config = _config(tmp_path, execution="replace", inference_latency_s=0.25, max_steps=30)
    record = evaluate(config).records[0]
    assert record.steps == 30 and "no_command" not in record.holds
    # Waiting for the first chunk: the ticks at 0, 8, ..., 256 ms (it arrives at 250 ms).
    assert record.holds == {"resuming": 33}
    report = evaluate(_config(tmp_path, execution="rtc", inference_latency_s=0.25, episodes=1))
    assert report.records[0].steps == 16 and report.records[0].policy_calls >= 3
    with pytest.raises(ValueError, match="needs an execution engine mode"):
        _config(tmp_path, execution="sync", inference_latency_s=0.1)
    with pytest.raises(ValueError, match="execution must be one of"):
        _config(tmp_path, execution="fastest")


# --- the deployed stack in the simulation ------------------------------------------------------


def _wrist_at_twice_the_limit(safety: bool) -> np.ndarray:
    """Joint velocities measured in MuJoCo over every controller tick (the joints' travel in
    the tick over its length: a position servo's speed swings within a tick, which holds one
    target, so the sampled ``qvel`` alone reads low) of a policy that turns the
    last wrist joint at twice the velocity limit (pi rad/s: the arm's own maximum, against the
    default half of it, pi/2). Turning wrist 3 leaves the TCP where it is, so only the joint
    limits speak. It re-plans every step, so its target stays ~0.3 rad ahead of the arm (within
    the 0.5 rad jump limit). The first action lies 0.31 rad ahead, past the default resume bound
    of 0.2 rad (a resume would be refused, as it should for a policy that asks this much from
    rest): the run allows 0.5."""
    from policy_runtime.execution import ExecutorConfig, LoopConfig
    from sim_bridge.env import make_env

    env = make_env("pick_place", cameras=(), action_space="joint")
    velocities: list[np.ndarray] = []
    step = env.cell.step

    def measured_step(q: np.ndarray, gripper: float) -> None:
        before = env.cell.joint_positions
        step(q, gripper)
        velocities.append((env.cell.joint_positions - before) / env.cell.control_period_s)

    env.cell.step = measured_step  # type: ignore[method-assign]

    def policy_fn(window: dict[str, np.ndarray]) -> np.ndarray:
        q = window["joint_pos"][-1].astype(np.float64)
        turn = 2 * (np.pi / 2) * 0.1 * np.arange(1, 16)[:, None] * np.eye(6)[5]
        return np.hstack([q + turn, np.ones((15, 1))])

    executor = ExecutorConfig(loop=LoopConfig(max_resume_joint_rad=0.5))
    run_policy_episode(
        env,
        policy_fn,
        0,
        n_obs_steps=2,
        n_action_steps=1,
        keys=["joint_pos"],
        max_steps=15,
        execution=executor.execution_for("joint"),
        executor=executor if safety else None,
        action_offset_steps=1,
    )
    env.close()
    return np.array(velocities)


def test_a_policy_commanding_twice_the_velocity_limit_is_slowed_to_it_in_mujoco():
    """With the deployed stack the wrist reaches the limit, pi/2 rad/s, and no more (the
    position servo follows a ramp at the commanded speed); without it, the simulated controller
    applies what it is sent and the joint turns at about pi rad/s."""
    limited = np.abs(_wrist_at_twice_the_limit(safety=True)[:, 5])
    assert limited.max() <= np.pi / 2 * 1.03
    assert np.median(limited[60:]) == pytest.approx(np.pi / 2, rel=0.01)
    unlimited = np.abs(_wrist_at_twice_the_limit(safety=False)[:, 5])
    assert unlimited.max() > 0.9 * np.pi
