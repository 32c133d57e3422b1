"""Checkpoints without pickle: safetensors for every tensor, JSON for everything else.

A checkpoint directory holds the policy description and training config (``config.json``), the
weights (``model.safetensors``), the EMA weights inference uses (``ema.safetensors``), the
normaliser, and the full training state (optimiser, LR schedule, EMA counters, RNG states), so
a resumed run continues with exactly the losses it would have had. It is written beside its
final name and renamed into place, so a crash never leaves a half checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from policy_runtime.normalization import Normalizer
from policy_runtime.policies import PolicyConfig, make_policy
from policy_runtime.policies.base import Policy
from policy_runtime.training.config import TrainConfig

FORMAT = "policy_runtime.checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"


@dataclass
class TrainState:
    """What besides weights a resumed run needs."""

    step: int
    optimizer: dict[str, Any]
    lr_scheduler: dict[str, Any]
    ema_step: int
    numpy_rng: dict[str, Any]
    torch_rng: torch.Tensor


def save_checkpoint(
    directory: Path,
    *,
    policy: Policy,
    ema_policy: Policy,
    train_config: TrainConfig,
    state: TrainState,
    metrics: dict[str, float],
) -> None:
    staging = _write_policy(
        directory,
        policy,
        ema_policy,
        step=state.step,
        metrics=metrics,
        train=train_config.model_dump(mode="json"),
    )
    tensors, optimizer_rest = _split_tensors(state.optimizer, "optimizer")
    tensors["torch_rng"] = state.torch_rng
    save_file(tensors, staging / "train_state.safetensors")
    (staging / "train_state.json").write_text(
        json.dumps(
            {
                "step": state.step,
                "optimizer": optimizer_rest,
                "lr_scheduler": state.lr_scheduler,
                "ema_step": state.ema_step,
                "numpy_rng": state.numpy_rng,
            }
        )
    )
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)


def save_imported_checkpoint(
    directory: Path, *, policy: Policy, ema_policy: Policy, source: dict[str, Any]
) -> None:
    """A checkpoint of a policy trained elsewhere (``prt import``): the same files as
    :func:`save_checkpoint` except the training state (it cannot be resumed), ``source``
    (where it came from) in the header, written beside its name and renamed into place."""
    staging = _write_policy(
        directory, policy, ema_policy, step=None, metrics={}, train=None, imported_from=source
    )
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)


def read_header(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{directory}: not a checkpoint (no {CONFIG_FILE})")
    header = json.loads(path.read_text())
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: format is {header.get('format')!r}, not {FORMAT!r}")
    if header.get("version") != VERSION:
        raise ValueError(
            f"{path}: checkpoint version {header.get('version')} (this build: {VERSION})"
        )
    return header


def resolve(path: Path) -> Path:
    """A checkpoint directory, or a run directory (its best checkpoint, else its latest)."""
    if (path / CONFIG_FILE).is_file():
        return path
    for name in ("best", "latest"):
        pointer = path / "checkpoints" / f"{name}.txt"
        if pointer.is_file():
            return path / "checkpoints" / pointer.read_text().strip()
    raise ValueError(f"{path}: neither a checkpoint nor a training run directory")


def load_normalizer(directory: Path) -> Normalizer:
    """The normaliser a checkpoint directory was trained with."""
    return Normalizer.from_state(
        {k: v.numpy() for k, v in load_file(directory / "normalizer.safetensors").items()}
    )


def load_policy(path: Path, ema: bool = True, kind: str | None = None) -> Policy:
    """The policy of a checkpoint (EMA weights by default), in eval mode.

    ``kind`` guards against using a checkpoint of another policy kind by mistake.
    """
    directory = resolve(Path(path))
    header = read_header(directory)
    if kind is not None and header["kind"] != kind:
        raise ValueError(f"{directory}: checkpoint holds a {header['kind']!r} policy, not {kind!r}")
    config = PolicyConfig.model_validate(header["policy"])
    policy = make_policy(config, load_normalizer(directory))
    weights = load_file(directory / ("ema.safetensors" if ema else "model.safetensors"))
    policy.load_state_dict(weights)
    return policy.eval()


def load_train_state(directory: Path) -> tuple[dict[str, Any], TrainState]:
    """(header, training state) of a checkpoint, to resume from."""
    header = read_header(directory)
    if header.get("imported_from"):
        raise ValueError(
            f"{directory}: an imported checkpoint ({header['imported_from'].get('format')}) has "
            "no training state to resume from"
        )
    rest = json.loads((directory / "train_state.json").read_text())
    tensors = load_file(directory / "train_state.safetensors")
    optimizer = _join_tensors(rest["optimizer"], tensors, "optimizer")
    state = TrainState(
        step=rest["step"],
        optimizer=optimizer,
        lr_scheduler=rest["lr_scheduler"],
        ema_step=rest["ema_step"],
        numpy_rng=rest["numpy_rng"],
        torch_rng=tensors["torch_rng"],
    )
    return header, state


def _write_policy(directory: Path, policy: Policy, ema_policy: Policy, **header: Any) -> Path:
    """A fresh staging folder beside ``directory`` holding the header (``config.json``: the
    format, the policy's config and ``header``), both weight files and the normaliser; the
    caller adds what else it writes and renames it into place."""
    staging = directory.with_name(f".{directory.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    full = {
        "format": FORMAT,
        "version": VERSION,
        "kind": policy.config.kind,
        "policy": policy.config.model_dump(mode="json"),
        **header,
    }
    (staging / CONFIG_FILE).write_text(json.dumps(full, indent=2))
    save_file(_contiguous(policy.state_dict()), staging / "model.safetensors")
    save_file(_contiguous(ema_policy.state_dict()), staging / "ema.safetensors")
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in policy.normalizer.state().items()
    }
    save_file(tensors, staging / "normalizer.safetensors")
    return staging


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def _split_tensors(value: Any, prefix: str) -> tuple[dict[str, torch.Tensor], Any]:
    """Tensors out of a nested structure (into a flat dict), the rest as JSON with markers."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[path] = node.detach().contiguous().clone()
            return {"__tensor__": path}
        if isinstance(node, dict):
            return {
                "__dict__": [
                    [walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")]
                    for i, (k, v) in enumerate(node.items())
                ]
            }
        if isinstance(node, list | tuple):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        return node

    return tensors, walk(value, prefix)


def _join_tensors(value: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    if isinstance(value, dict) and "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if isinstance(value, dict) and "__dict__" in value:
        return {
            _join_tensors(k, tensors, prefix): _join_tensors(v, tensors, prefix)
            for k, v in value["__dict__"]
        }
    if isinstance(value, list):
        return [_join_tensors(v, tensors, prefix) for v in value]
    return value
