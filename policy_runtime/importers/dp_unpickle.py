"""The one place a Diffusion Policy checkpoint is unpickled, run as a child process by
:func:`policy_runtime.importers.diffusion_policy.import_checkpoint` once the user said
``--trust``::

    python -m policy_runtime.importers.dp_unpickle CHECKPOINT.ckpt STAGING_DIR

A DP checkpoint is ``torch.save(payload, pickle_module=dill)``: loading it executes pickle,
that is, whatever code the file holds. So it happens here, in a process that only writes plain
data into ``STAGING_DIR`` and exits: ``cfg.json`` (the workspace config, OmegaConf resolved to
plain JSON), ``meta.json`` (training counters and which state dict entries were not tensors)
and one ``<name>.safetensors`` per state dict (``model``, ``ema_model``). The importing
process reads only those, never a pickle.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def unpickle(checkpoint: Path, staging: Path) -> None:
    try:
        import dill
        from omegaconf import OmegaConf
    except ImportError as exc:
        raise SystemExit(f"reading a DP checkpoint needs the interop extra: {exc}") from exc
    import torch
    from safetensors.torch import save_file

    payload = torch.load(checkpoint, map_location="cpu", weights_only=False, pickle_module=dill)
    if not isinstance(payload, dict) or "cfg" not in payload or "state_dicts" not in payload:
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise SystemExit(
            f"{checkpoint}: not a Diffusion Policy workspace checkpoint (a dict with cfg and "
            f"state_dicts); found {found}"
        )
    cfg = OmegaConf.to_container(payload["cfg"], resolve=True)
    (staging / "cfg.json").write_text(json.dumps(cfg, indent=2))
    meta: dict[str, Any] = {"state_dicts": {}, "skipped": {}}
    for name, state in payload["state_dicts"].items():
        if name not in ("model", "ema_model"):
            continue  # the optimizer's state: nothing an imported policy needs
        tensors = {
            k: v.detach().contiguous().clone() for k, v in state.items() if torch.is_tensor(v)
        }
        meta["skipped"][name] = sorted(k for k, v in state.items() if not torch.is_tensor(v))
        meta["state_dicts"][name] = len(tensors)
        save_file(tensors, staging / f"{name}.safetensors")
    for name, blob in (payload.get("pickles") or {}).items():
        value = dill.loads(blob)
        if isinstance(value, int | float | str | bool):
            meta[name] = value
    (staging / "meta.json").write_text(json.dumps(meta, indent=2))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m policy_runtime.importers.dp_unpickle CKPT STAGING_DIR")
    unpickle(Path(args[0]), Path(args[1]))


if __name__ == "__main__":
    main()
