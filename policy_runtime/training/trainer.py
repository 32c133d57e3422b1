"""The training loop: AdamW + cosine schedule with warm-up, EMA weights, TensorBoard, periodic
checkpoints and evaluation in simulation, exact resume, and DDP under torchrun.

Batches are drawn by index from a numpy generator (seeded, saved in every checkpoint) rather
than a DataLoader: the sampler gathers a whole batch in one vectorised call, and the generator's
state is all that is needed for a resumed run to see the same batches.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.utils.tensorboard import SummaryWriter

from policy_runtime.policies import PolicyConfig, make_policy
from policy_runtime.policies.base import Policy
from policy_runtime.policies.diffusion import normalized_action_chunk
from policy_runtime.training.checkpoint import (
    TrainState,
    load_normalizer,
    load_train_state,
    resolve,
    save_checkpoint,
)
from policy_runtime.training.config import TrainConfig
from policy_runtime.training.data import TrainingData, prepare, to_torch
from policy_runtime.training.prefetch import BatchPrefetcher

#: Called with (step, metrics) after every logged step; the CLI drives its progress bar with it.
ProgressHook = Callable[[int, dict[str, float]], None]
#: Runs an evaluation in simulation of a checkpoint directory; returns metrics incl. "success".
Evaluator = Callable[[Path], dict[str, float]]


class TrainingError(RuntimeError):
    """Training had to stop; the message says why (NaN loss, a mismatched resume, ...)."""


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)
    val_losses: dict[int, float] = field(default_factory=dict)
    checkpoints: list[Path] = field(default_factory=list)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Trains ``config.policy`` on ``config.data``; ``resume`` continues a checkpoint."""

    def __init__(self, config: TrainConfig, resume: Path | None = None) -> None:
        self.config = config
        self.rank, self.world = _distributed_setup()
        self.device = pick_device(config.device)
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.data: TrainingData = prepare(config)
        torch.manual_seed(config.seed + self.rank)
        self.policy = make_policy(self.data.policy_config, self.data.normalizer)
        if resume is None:  # a resumed run's fitted state comes with its weights
            self.policy.fit_data(self.data.train_steps, config.seed)
        self.policy.to(self.device)
        self.ema_policy = make_policy(self.data.policy_config, self.data.normalizer).to(self.device)
        self.ema_policy.load_state_dict(self.policy.state_dict())
        self.ema_policy.eval()  # validation losses without dropout
        self.optimizer = torch.optim.AdamW(
            self.policy.parameter_groups(config.weight_decay),
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )
        self.lr_scheduler = get_scheduler(
            "cosine",
            optimizer=self.optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=config.steps,
        )
        self.ema = self._new_ema()
        self.rng = np.random.default_rng([config.seed, self.rank])
        self.step = 0
        if resume is not None:
            self._resume(resume)
        self.batches = BatchPrefetcher(
            self.data.train, self.rng, config.batch_size, self.device, config.prefetch_batches
        )
        self.model: torch.nn.Module = self.policy
        if self.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.policy, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def train(
        self, progress: ProgressHook | None = None, evaluator: Evaluator | None = None
    ) -> TrainResult:
        config = self.config
        result = TrainResult(steps=self.step)
        writer = SummaryWriter(str(config.out / "tb")) if self.is_main else None
        self.policy.train()
        try:
            while self.step < config.steps:
                loss = self._train_step()
                self.step += 1
                result.losses.append(loss)
                metrics = {"loss": loss, "lr": float(self.lr_scheduler.get_last_lr()[0])}
                at_checkpoint = (
                    self.step % config.checkpoint_every == 0 or self.step == config.steps
                )
                if self.step % config.log_every == 0 or at_checkpoint:
                    metrics.update(self._loss_diagnostics())
                    if self.data.val is not None:
                        metrics["val_loss"] = self._val_loss()
                        result.val_losses[self.step] = metrics["val_loss"]
                        if at_checkpoint:
                            metrics["val_action_mse"] = self._val_action_mse()
                    if writer is not None:
                        for name, value in metrics.items():
                            writer.add_scalar(f"train/{name}", value, self.step)
                if progress is not None and self.is_main:
                    progress(self.step, metrics)
                if self.is_main and at_checkpoint:
                    result.checkpoints.append(self._checkpoint(metrics, evaluator, writer))
        finally:
            self.batches.close()
            if writer is not None:
                writer.close()
        result.steps = self.step
        return result

    def _train_step(self) -> float:
        batch = self.batches.next()
        module = self.model.module if self.world > 1 else self.model
        assert isinstance(module, Policy)
        # DDP synchronises gradients through forward of the wrapped module.
        loss = self.model(batch) if self.world > 1 else module.compute_loss(batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(
                f"loss became {value} at step {self.step + 1} (lr "
                f"{self.lr_scheduler.get_last_lr()[0]:.3g}); lower lr or check the data for "
                "outliers"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.grad_clip_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.ema.step(self.policy.parameters())
        return value

    def _loss_diagnostics(self) -> dict[str, float]:
        """The last training batch's loss diagnostics (the drifting force per temperature)."""
        return {name: float(value) for name, value in self.policy.last_info.items()}

    @contextlib.contextmanager
    def _validation(self) -> Iterator[np.random.Generator]:
        """EMA weights in ``ema_policy``, fixed validation draws, and the training run's torch
        noise left as it was (so logging does not change what the run learns)."""
        self.ema.copy_to(self.ema_policy.parameters())
        cpu_state = torch.get_rng_state()
        torch.manual_seed(self.config.seed)
        try:
            yield np.random.default_rng([self.config.seed, 7])
        finally:
            torch.set_rng_state(cpu_state)

    @torch.no_grad()
    def _val_loss(self, batches: int = 4) -> float:
        assert self.data.val is not None
        with self._validation() as draws:
            losses = []
            for _ in range(batches):
                ids = draws.integers(len(self.data.val), size=self.config.batch_size)
                batch = to_torch(self.data.val.sample_batch(ids), self.device)
                losses.append(float(self.ema_policy.compute_loss(batch)))
        return float(np.mean(losses))

    @torch.no_grad()
    def _val_action_mse(self) -> float:
        """Mean squared error, in the normalised [-1, 1] action space, between the EMA policy's
        sampled chunk and the demonstrated one on a validation batch (Diffusion Policy's
        ``action_mse_error``). Unlike the loss it reads the same for both policy kinds: a
        drifting loss stays near a constant by design, so this is its progress measure."""
        assert self.data.val is not None
        policy = self.ema_policy
        config = policy.config
        with self._validation() as draws:
            ids = draws.integers(len(self.data.val), size=self.config.batch_size)
            batch = to_torch(self.data.val.sample_batch(ids), self.device)
            keys = [*config.obs_keys, *config.image_keys]
            obs = {k: batch[k][:, : config.n_obs_steps] for k in keys}
            generator = torch.Generator(self.device).manual_seed(self.config.seed)
            predicted = policy.predict_action(obs, generator=generator)["action_pred"]
            demo = normalized_action_chunk(config, policy.normalizer, batch)
            error = policy.normalizer.normalize(config.action_key, predicted) - demo
        return float(error.square().mean())

    def _checkpoint(
        self,
        metrics: dict[str, float],
        evaluator: Evaluator | None,
        writer: SummaryWriter | None,
    ) -> Path:
        self.ema.copy_to(self.ema_policy.parameters())
        root = self.config.out / "checkpoints"
        directory = root / f"step_{self.step:08d}"
        state = TrainState(
            step=self.step,
            optimizer=self.optimizer.state_dict(),
            lr_scheduler=self.lr_scheduler.state_dict(),
            ema_step=self.ema.optimization_step,
            numpy_rng=self.batches.rng_state(),
            torch_rng=torch.get_rng_state(),
        )
        save_checkpoint(
            directory,
            policy=self.policy,
            ema_policy=self.ema_policy,
            train_config=self.config,
            state=state,
            metrics={k: float(v) for k, v in metrics.items()},
        )
        (root / "latest.txt").write_text(directory.name)
        wants_eval = self.config.eval_every and self.step % self.config.eval_every == 0
        if evaluator is not None and wants_eval:
            scores = evaluator(directory)
            if writer is not None:
                for name, value in scores.items():
                    writer.add_scalar(f"eval/{name}", value, self.step)
            self._keep_top_k(root, directory, scores["success"])
        return directory

    def _keep_top_k(self, root: Path, directory: Path, success: float) -> None:
        """Keep the best ``top_k`` evaluated checkpoints and the latest; record the best."""
        ranking_file = root / "ranking.txt"
        ranking = (
            [
                (float(score), name)
                for score, name in (
                    line.split() for line in ranking_file.read_text().splitlines() if line
                )
            ]
            if ranking_file.is_file()
            else []
        )
        ranking.append((success, directory.name))
        ranking.sort(key=lambda item: (-item[0], item[1]))
        keep, drop = ranking[: self.config.top_k], ranking[self.config.top_k :]
        for _, name in drop:
            if name != directory.name:
                shutil.rmtree(root / name, ignore_errors=True)
        ranking_file.write_text("".join(f"{score} {name}\n" for score, name in keep))
        (root / "best.txt").write_text(keep[0][1])

    def _new_ema(self) -> EMAModel:
        return EMAModel(
            self.ema_policy.parameters(),
            decay=self.config.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=1.0,
            power=self.config.ema_power,
        )

    def _resume(self, path: Path) -> None:
        directory = resolve(path)
        header, state = load_train_state(directory)
        if header["kind"] != self.config.policy:
            raise TrainingError(
                f"{directory}: checkpoint holds a {header['kind']!r} policy; this run trains "
                f"{self.config.policy!r}"
            )
        # Compared as validated configs: a field added since (with its default) is no change,
        # nor is one only the other policy kind reads.
        saved_policy = PolicyConfig.model_validate(header["policy"]).fields_in_use()
        run_policy = self.data.policy_config.fields_in_use()
        differing = sorted(k for k in saved_policy if saved_policy[k] != run_policy[k])
        if differing:
            raise TrainingError(
                f"{directory}: the checkpoint's policy differs from this run's config in "
                f"{', '.join(differing)}"
            )
        from safetensors.torch import load_file

        saved, fitted = load_normalizer(directory).state(), self.data.normalizer.state()
        changed = sorted(
            name
            for name in saved.keys() | fitted.keys()
            if name not in saved
            or name not in fitted
            or saved[name].shape != fitted[name].shape
            or not np.allclose(saved[name], fitted[name], rtol=1e-6, atol=1e-7)
        )
        if changed:
            raise TrainingError(
                f"{directory}: the checkpoint's normalisation differs from the one this run's "
                f"data and norm_min_range give ({', '.join(changed)}); resume with the same data "
                "and settings, or start a new run"
            )
        self.policy.load_state_dict(load_file(directory / "model.safetensors"))
        self.ema_policy.load_state_dict(load_file(directory / "ema.safetensors"))
        self.ema = self._new_ema()
        self.ema.optimization_step = state.ema_step
        self.optimizer.load_state_dict(state.optimizer)
        self.lr_scheduler.load_state_dict(state.lr_scheduler)
        self.rng.bit_generator.state = state.numpy_rng
        torch.set_rng_state(state.torch_rng)
        self.step = state.step


def _distributed_setup() -> tuple[int, int]:
    """(rank, world size); initialises torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend)
    return torch.distributed.get_rank(), world
