"""``prt import``: policies trained elsewhere as our checkpoints (for ``prt export``, ``eval``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import_app = typer.Typer(
    help=(
        "Import policies trained elsewhere (Diffusion Policy checkpoints, LeRobot diffusion "
        "policies) as our checkpoints."
    ),
    no_args_is_help=True,
)

DP_EPILOG = (
    "Examples:\n\n"
    "  prt import dp epoch=0500.ckpt --out runs/dp_imported --trust\n\n"
    "  prt export --checkpoint runs/dp_imported --out bundles/dp_imported\n\n"
    "A .ckpt is a pickle: loading it runs code from the file. --trust says you trust it; it is "
    "then loaded in a separate process that hands back plain weights. Supported: "
    "DiffusionUnetLowdimPolicy with obs_as_global_cond, oa_step_convention, DDPM or DDIM; "
    "DiffusionUnetHybridImagePolicy (robomimic ResNet-18 with obs_encoder_group_norm, "
    "eval_fixed_crop, obs_as_global_cond; cameras before low-dim keys in shape_meta), its "
    "observation keys renamed with --key-map (e.g. --key-map image=top_rgb: prt eval wants "
    "cameras named <camera>_rgb); anything else is refused by name."
)


@import_app.command("dp", epilog=DP_EPILOG)
def import_dp(
    checkpoint: Annotated[Path, typer.Argument(help="A Diffusion Policy .ckpt file.")],
    out: Annotated[Path, typer.Option(help="The checkpoint directory to write.")],
    trust: Annotated[
        bool,
        typer.Option(
            "--trust", help="Load the file although loading runs pickle (only files you trust)."
        ),
    ] = False,
    obs_key: Annotated[
        str, typer.Option(help="Our name for DP's observation vector (the key a task provides).")
    ] = "obs",
    control_hz: Annotated[
        float, typer.Option(min=0.1, help="The rate the policy's actions were recorded at.")
    ] = 10.0,
    key_map: Annotated[
        list[str] | None,
        typer.Option(
            help="DP=OURS: our name for an observation key of an image policy (repeatable; "
            "unnamed keys keep DP's name)."
        ),
    ] = None,
) -> None:
    """Import a Diffusion Policy checkpoint (EMA weights) as one of our checkpoints."""
    from policy_runtime.importers.diffusion_policy import import_checkpoint

    names = _renames(key_map, "dp", "--key-map", "DP=OURS")
    try:
        policy = import_checkpoint(
            checkpoint, out, trust=trust, obs_key=obs_key, control_hz=control_hz, key_map=names
        )
    except (PermissionError, ValueError) as exc:
        typer.echo(f"prt import dp: {exc}", err=True)
        raise typer.Exit(1) from exc
    config = policy.config
    layout = (
        ""
        if config.action_start is None and not config.action_offset_steps
        else f", chunk from index {config.chunk_start} due {config.action_offset_steps} step(s) "
        "after the newest observation"
    )
    typer.echo(
        f"{out}: diffusion policy, obs {config.obs_shapes}, action {config.action_dim}, horizon "
        f"{config.horizon}, {config.sampler} {config.num_inference_steps} steps{layout}"
    )


LEROBOT_EPILOG = (
    "Examples:\n\n"
    "  prt import lerobot outputs/train/diffusion_pusht/checkpoints/last/pretrained_model "
    "--out runs/lerobot_imported\n\n"
    "  prt export --checkpoint runs/lerobot_imported --out bundles/lerobot_imported\n\n"
    "DIR is what LeRobot's save_pretrained writes (config.json, model.safetensors and the "
    "policy_preprocessor / policy_postprocessor files, or before LeRobot 0.4 the statistics "
    "inside model.safetensors); only JSON and safetensors are read. Supported: type diffusion "
    "with observation.state and observation.environment_state, cameras or both (ResNet-18 "
    "with use_group_norm, 32 keypoints, no resize_shape; observation.images.<name> becomes "
    "<name>, or --image-key observation.images.top=top_rgb: prt eval wants cameras named "
    "<camera>_rgb), DDPM or DDIM; anything else is refused by name."
)


@import_app.command("lerobot", epilog=LEROBOT_EPILOG)
def import_lerobot(
    directory: Annotated[
        Path, typer.Argument(help="A LeRobot pretrained policy directory (pretrained_model).")
    ],
    out: Annotated[Path, typer.Option(help="The checkpoint directory to write.")],
    state_key: Annotated[
        str, typer.Option(help="Our name for observation.state (the key a task provides).")
    ] = "state",
    env_state_key: Annotated[
        str, typer.Option(help="Our name for observation.environment_state.")
    ] = "environment_state",
    control_hz: Annotated[
        float, typer.Option(min=0.1, help="The rate the policy's actions were recorded at (fps).")
    ] = 10.0,
    image_key: Annotated[
        list[str] | None,
        typer.Option(
            help="LEROBOT=OURS: our name for a camera (repeatable; observation.images.<name> "
            "is <name> by default)."
        ),
    ] = None,
) -> None:
    """Import a LeRobot diffusion policy as one of our checkpoints."""
    from policy_runtime.importers.lerobot import import_pretrained

    names = _renames(image_key, "lerobot", "--image-key", "LEROBOT=OURS")
    try:
        policy = import_pretrained(
            directory,
            out,
            state_key=state_key,
            env_state_key=env_state_key,
            image_keys=names,
            control_hz=control_hz,
        )
    except ValueError as exc:
        typer.echo(f"prt import lerobot: {exc}", err=True)
        raise typer.Exit(1) from exc
    config = policy.config
    typer.echo(
        f"{out}: diffusion policy, obs {config.obs_shapes}, action {config.action_dim}, horizon "
        f"{config.horizon}, {config.sampler} {config.num_inference_steps} steps"
    )


def _renames(items: list[str] | None, command: str, option: str, form: str) -> dict[str, str]:
    """``THEIRS=OURS`` options as a mapping; exits 1 naming the option for a malformed one."""
    names = {}
    for item in items or []:
        theirs, sep, ours = item.partition("=")
        if not sep or not theirs or not ours:
            typer.echo(f"prt import {command}: {option} {item!r}: expected {form}", err=True)
            raise typer.Exit(1)
        names[theirs] = ours
    return names
