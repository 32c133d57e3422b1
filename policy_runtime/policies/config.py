"""What defines a policy: its observation and action spaces, horizons, network and sampler.

Torch-free (pydantic only), so checkpoints, bundles and the deploy runtime read the same
description. Defaults are Diffusion Policy's (H 16, To 2, Ta 8, kernel 5, 100 DDPM training steps
with squaredcos_cap_v2 betas, epsilon prediction, clipping, DDIM at inference) with a smaller
U-Net than the paper's (256, 512, 1024) so CPU training is practical; set ``down_dims`` for the
full size. A BeT policy's ``bet_*`` defaults are the minGPT, bins and losses of Diffusion
Policy's BeT baseline (4 layers, 4 heads, 72 wide, dropout 0.1, 24 bins, focal gamma 2, offset
loss x1000 on normalised actions).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

PolicyKind = Literal["diffusion", "drifting", "bet"]
#: Drifting kernel temperatures, relative to the batch's mean distance: the paper's (0.02, 0.05,
#: 0.2) plus a long-range 4.0. With one positive per observation (its demo chunk), a row whose
#: generated chunks all sit several mean distances from the demo sees only its own siblings
#: through the short kernels, so its force is exactly zero and training never brings it back
#: (push_t: every episode-start window stayed 140-190 mm off after 8000 steps). The long kernel
#: is nearly flat there, a pull of the samples' mean toward the demo that also vanishes at
#: equilibrium.
DRIFT_TEMPERATURES = (0.02, 0.05, 0.2, 4.0)
#: The fields only one policy kind reads (the sampler's for diffusion, the loss's for drifting).
KIND_ONLY_FIELDS: dict[PolicyKind, frozenset[str]] = {
    "diffusion": frozenset(
        {
            "num_train_timesteps",
            "beta_schedule",
            "prediction_type",
            "clip_sample",
            "sampler",
            "num_inference_steps",
        }
    ),
    "drifting": frozenset({"drift_samples", "drift_temperatures", "drift_per_timestep"}),
    "bet": frozenset(
        {
            "bet_bins",
            "bet_layers",
            "bet_heads",
            "bet_embed_dim",
            "bet_dropout",
            "bet_offsets",
            "bet_focal_gamma",
            "bet_offset_weight",
            "bet_temperature",
            "bet_relative_to",
        }
    ),
}
#: The U-Net's fields, which a BeT policy (a transformer) does not read either.
UNET_FIELDS = frozenset(
    {"down_dims", "kernel_size", "step_embed_dim", "n_groups", "cond_predict_scale"}
)
#: Diffusion Policy's betas for the linear schedules (squaredcos_cap_v2 ignores them).
BETA_START, BETA_END = 1e-4, 2e-2


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: PolicyKind
    #: Low-dim observation keys, concatenated in this order per observation step.
    obs_keys: list[str]
    #: Camera keys (H, W, 3) uint8, one image encoder each.
    image_keys: list[str] = Field(default_factory=list)
    #: Per-step shapes of every observation key (filled from the dataset schema).
    obs_shapes: dict[str, tuple[int, ...]]
    action_key: str = "action"
    action_dim: int = Field(gt=0)

    horizon: int = Field(default=16, gt=0)
    n_obs_steps: int = Field(default=2, gt=0)
    n_action_steps: int = Field(default=8, gt=0)
    #: Actions per second (the dataset's ``control_hz``): action ``i`` of a chunk is due
    #: ``i / control_hz`` after the observation it is aligned with.
    control_hz: float = Field(default=10.0, gt=0)
    #: Steps after that time that action ``i`` (index ``chunk_start + i`` of the prediction)
    #: is due: ``(i + action_offset_steps) / control_hz`` after the newest observation.
    #: Trained here, the chunk starts at the newest observation's step and this is the
    #: dataset's ``action_offset_steps``; a chunk that starts ``k`` steps later in the data's
    #: time is due ``k`` steps later, and carries that ``k`` here too (an imported Diffusion
    #: Policy with ``oa_step_convention: false``: its data's 0 plus 1).
    action_offset_steps: int = Field(default=0, ge=0)
    #: Where the chunk starts: the index in the predicted sequence (``horizon`` steps) of its
    #: first action, the first of the ``n_action_steps`` executed and of what the runtime
    #: returns (the chunk runs to the sequence's end; see :attr:`chunk_start`). None:
    #: ``n_obs_steps - 1``, the newest observation's step, as training lays its windows out
    #: (``horizon`` actions from the oldest observation's step) and as Diffusion Policy's
    #: ``oa_step_convention`` executes; an explicit ``n_obs_steps - 1`` is stored as None, so
    #: configs of one layout compare equal. Only importers set it, for other code's layouts
    #: (Diffusion Policy's ``oa_step_convention: false``: ``n_obs_steps``; its
    #: ``pred_action_steps_only``: 0, the network predicting just the ``horizon =
    #: n_action_steps`` executed actions); training refuses it (see
    #: :func:`~policy_runtime.policies.diffusion.normalized_action_chunk`). Left out of the
    #: serialised config while None: a default layout's ``config.json`` is what it was before
    #: this field (older builds read it), and one that sets it is refused by them by name.
    action_start: int | None = Field(default=None, ge=0)

    down_dims: tuple[int, ...] = (64, 128, 256)
    kernel_size: int = 5
    step_embed_dim: int = 128
    n_groups: int = 8
    cond_predict_scale: bool = True
    #: Image encoders: output features per camera, and the random/centre crop (H, W).
    image_feature_dim: int = 64
    crop_shape: tuple[int, int] | None = None
    #: A ReLU on each camera's features (after its linear layer), as robomimic's
    #: ``ObservationEncoder`` applies its ``feature_activation`` in Diffusion Policy's hybrid
    #: image policy. Only importers set it; left out of the serialised config while False (a
    #: ``config.json`` without it is what it was before this field), so older builds refuse a
    #: config that sets it by name.
    image_feature_relu: bool = False

    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "sample"] = "epsilon"
    clip_sample: bool = True
    sampler: Literal["ddpm", "ddim"] = "ddim"
    num_inference_steps: int = Field(default=10, gt=0)

    #: Drifting: generated chunks per observation (G), kernel temperatures, per-step loss.
    drift_samples: int = Field(default=8, gt=1)
    drift_temperatures: tuple[float, ...] = DRIFT_TEMPERATURES
    drift_per_timestep: bool = False

    #: BeT: k-means bins over the normalised actions (k); the causal minGPT's depth, heads,
    #: width and dropout (its context is the ``n_obs_steps`` observations); whether it predicts
    #: a residual offset per bin (else an action is its bin's centre); the focal loss's gamma on
    #: the bin and the weight of the true bin's offset MSE; the softmax temperature sampling
    #: the bin. Each observation step predicts the ``horizon - n_obs_steps + 1`` actions from
    #: its own on (1: the paper's one action per step). ``bet_relative_to``: a low-dim
    #: observation key whose value at each step the first dims of that step's actions are
    #: predicted relative to (its dims, in order, are the action's first ones, e.g. ``ee_pose``
    #: for an end-effector pose action): the bins then cover the motion from where the arm is,
    #: not the whole workspace (None: absolute actions, the paper's form). The bins are fitted
    #: on each step's own action; a step's later predictions (a chunk) are relative to it too and
    #: lean more on their offsets.
    bet_bins: int = Field(default=24, gt=1)
    bet_layers: int = Field(default=4, gt=0)
    bet_heads: int = Field(default=4, gt=0)
    bet_embed_dim: int = Field(default=72, gt=0)
    bet_dropout: float = Field(default=0.1, ge=0, lt=1)
    bet_offsets: bool = True
    bet_focal_gamma: float = Field(default=2.0, ge=0)
    bet_offset_weight: float = Field(default=1000.0, ge=0)
    bet_temperature: float = Field(default=1.0, gt=0)
    bet_relative_to: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PolicyConfig:
        if not self.obs_keys and not self.image_keys:
            raise ValueError("a policy needs at least one observation key")
        missing = [k for k in [*self.obs_keys, *self.image_keys] if k not in self.obs_shapes]
        if missing:
            raise ValueError(f"obs_shapes has no shape for {missing}")
        for key in self.image_keys:
            shape = self.obs_shapes[key]
            if len(shape) != 3 or shape[-1] != 3:
                raise ValueError(f"image key {key!r} must be (H, W, 3), got {shape}")
        if self.action_start == self.n_obs_steps - 1:
            self.action_start = None  # the default layout, one way
        start = "n_obs_steps - 1" if self.action_start is None else "action_start"
        if self.chunk_start + self.n_action_steps > self.horizon:
            raise ValueError(
                f"{start} + n_action_steps ({self.chunk_start + self.n_action_steps})"
                f" must fit in horizon ({self.horizon})"
            )
        if self.kind == "bet":
            if self.bet_embed_dim % self.bet_heads:
                raise ValueError(
                    f"bet_embed_dim {self.bet_embed_dim} must be divisible by bet_heads "
                    f"{self.bet_heads}"
                )
            anchor = self.bet_relative_to
            if anchor is not None:
                if anchor not in self.obs_keys:
                    raise ValueError(
                        f"bet_relative_to {anchor!r} must be one of obs_keys {self.obs_keys}"
                    )
                if len(self.obs_shapes[anchor]) != 1:
                    raise ValueError(
                        f"bet_relative_to {anchor!r} must be a vector observation, its shape is "
                        f"{self.obs_shapes[anchor]}"
                    )
                if math.prod(self.obs_shapes[anchor]) > self.action_dim:
                    raise ValueError(
                        f"bet_relative_to {anchor!r} has {math.prod(self.obs_shapes[anchor])} "
                        f"dims, more than the action's {self.action_dim}"
                    )
            return self
        levels = len(self.down_dims)
        if self.horizon % 2 ** (levels - 1):
            raise ValueError(f"horizon {self.horizon} must be divisible by 2^{levels - 1}")
        return self

    @model_serializer(mode="wrap")
    def _omit_default_start(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        # A BeT config holds only what BeT reads; the others leave the BeT fields out, so their
        # ``config.json`` is what it was before BeT.
        for field in self._unused_fields() if self.kind == "bet" else KIND_ONLY_FIELDS["bet"]:
            data.pop(field, None)
        if self.action_start is None:
            data.pop("action_start", None)
        if not self.image_feature_relu:
            data.pop("image_feature_relu", None)
        return data

    @property
    def chunk_start(self) -> int:
        """Index of the chunk's first action in the predicted sequence (``action_start``,
        default ``n_obs_steps - 1``)."""
        return self.n_obs_steps - 1 if self.action_start is None else self.action_start

    def fields_in_use(self) -> dict[str, Any]:
        """The settings this policy's kind reads: two configs describe the same policy when
        these agree, whatever the other kind's fields (or their defaults) hold."""
        return self.model_dump(exclude=self._unused_fields())

    def _unused_fields(self) -> set[str]:
        unused = set().union(*(f for kind, f in KIND_ONLY_FIELDS.items() if kind != self.kind))
        return unused | UNET_FIELDS if self.kind == "bet" else unused

    @property
    def bet_predicted_steps(self) -> int:
        """Actions each observation step predicts (BeT): its own and the ones after it, up to
        the window's end."""
        return self.horizon - self.n_obs_steps + 1

    @property
    def low_dim_size(self) -> int:
        """Features per observation step from the low-dim keys."""
        size = 0
        for key in self.obs_keys:
            n = 1
            for d in self.obs_shapes[key]:
                n *= d
            size += n
        return size
