"""The torch modules each bundle graph is traced from, and the tracing itself.

Each wrapper's ``forward(*inputs)`` takes tensors in the order the manifest lists the graph's inputs
(observation keys: cameras in ``image_keys`` order, then ``obs_keys``), so the ONNX graph's
signature is flat and named. Graphs are traced with torch's dynamo exporter (``torch.export`` +
onnxscript) with a dynamic batch axis; a fused DDIM loop is unrolled at trace time, with the
schedule's coefficients as constants. 1-D convolutions are traced as 2-D ones over a height-1
image (see :class:`Conv1dAs2d`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from policy_runtime.policies.bet import BeTPolicy
from policy_runtime.policies.diffusion import DiffusionPolicy
from policy_runtime.policies.drifting import DriftingPolicy

#: The batch axis every graph leaves dynamic.
BATCH = "batch"
#: The policies export knows.
ExportablePolicy = DiffusionPolicy | DriftingPolicy | BeTPolicy


def obs_input_keys(policy: ExportablePolicy) -> list[str]:
    """Observation keys in graph-input order: cameras first, then low-dim keys."""
    return [*policy.config.image_keys, *policy.config.obs_keys]


def obs_input_name(key: str) -> str:
    return f"obs.{key}"


class HalfPrecision(nn.Module):
    """Runs a copy of ``inner`` in half precision with float32 tensors in and out (fp16
    bundles: half the weight memory and GPU tensor-core speed, same interface)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = copy.deepcopy(inner).half()  # the policy itself stays float32
        self.dtype = torch.float16

    def forward(self, *args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        cast = [a.to(self.dtype) if a.is_floating_point() else a for a in args]
        out = self.inner(*cast)
        if isinstance(out, tuple):
            return tuple(o.to(torch.float32) for o in out)
        return out.to(torch.float32)


class ObsEncoderGraph(nn.Module):
    """Observations (raw: float32 low-dim, uint8 images) -> the U-Net's conditioning vector."""

    def __init__(self, policy: ExportablePolicy) -> None:
        super().__init__()
        self.encoder = policy.obs_encoder
        self.keys = obs_input_keys(policy)

    def forward(self, *obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(dict(zip(self.keys, obs, strict=True)))


class DenoiserGraph(nn.Module):
    """One evaluation of the diffusion U-Net: (noisy chunk, timesteps, cond) -> model output."""

    def __init__(self, policy: DiffusionPolicy) -> None:
        super().__init__()
        self.model = policy.model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        sample, timestep, cond = inputs
        return self.model(sample, timestep, global_cond=cond)


class FusedDDIMGraph(nn.Module):
    """Observations + initial noise -> the normalised chunk after ``steps`` DDIM steps."""

    def __init__(self, policy: DiffusionPolicy, steps: int) -> None:
        super().__init__()
        self.encoder = ObsEncoderGraph(policy)
        self.model = policy.model
        self.scheduler = policy.make_scheduler("ddim")
        self.scheduler.set_timesteps(steps)
        self.timesteps = [int(t) for t in self.scheduler.timesteps]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *obs, sample = inputs
        cond = self.encoder(*obs)
        for t in self.timesteps:
            output = self.model(sample, t, global_cond=cond)
            step = self.scheduler.step(output, t, sample).prev_sample  # type: ignore[union-attr]
            sample = step.to(output.dtype)  # the schedule's float32 constants promote half
        return sample


class GeneratorGraph(nn.Module):
    """A drifting policy: observations + noise -> the normalised chunk, in one pass."""

    def __init__(self, policy: DriftingPolicy) -> None:
        super().__init__()
        self.encoder = ObsEncoderGraph(policy)
        self.policy = policy

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *obs, noise = inputs
        return self.policy.generate(noise, self.encoder(*obs))


class TransformerGraph(nn.Module):
    """A BeT policy: observations -> bin logits ``(B, H, k)`` and each bin's action (centre +
    offset) ``(B, H, k, Da)`` over the predicted horizon, normalised; sampling stays outside."""

    def __init__(self, policy: BeTPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.keys = obs_input_keys(policy)

    def forward(self, *obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, bin_actions = self.policy.heads(dict(zip(self.keys, obs, strict=True)))
        return self.policy.on_horizon(logits), self.policy.on_horizon(bin_actions)


class Conv1dAs2d(nn.Module):
    """A ``Conv1d`` computed as a ``Conv2d`` over a height-1 image, same weights and result.

    onnxruntime's CPU provider runs 2-D convolutions in its blocked (NCHWc) kernels and 1-D ones
    in a generic im2col path: on the Diffusion-Policy-sized U-Net one denoiser pass takes 14.4
    instead of 17.8 ms (2 threads, AVX-512), for three extra reshape nodes per convolution.
    """

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        (kernel,), (stride,), (dilation,) = conv.kernel_size, conv.stride, conv.dilation
        padding = int(conv.padding[0])  # only integer paddings are converted
        self.conv = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            (1, kernel),
            stride=(1, stride),
            padding=(0, padding),
            dilation=(1, dilation),
            groups=conv.groups,
            bias=conv.bias is not None,
            dtype=conv.weight.dtype,
            device=conv.weight.device,
        )
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight.unsqueeze(2))
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias)  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.unsqueeze(2)).squeeze(2)


def conv1d_as_conv2d(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every zero-padded ``Conv1d`` (integer padding) replaced by a
    :class:`Conv1dAs2d`; ``module`` itself is left as it is."""
    module = copy.deepcopy(module)

    def replace(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            convertible = (
                isinstance(child, nn.Conv1d)
                and child.padding_mode == "zeros"
                and not isinstance(child.padding, str)
            )
            if convertible:
                setattr(parent, name, Conv1dAs2d(child))  # type: ignore[arg-type]
            else:
                replace(child)

    replace(module)
    return module


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter prints progress lines and warns about optional torchvision ops."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def to_onnx(
    module: nn.Module,
    args: Sequence[torch.Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int,
) -> bytes:
    """Trace ``module`` on example ``args`` into serialised ONNX with a dynamic batch axis (its
    1-D convolutions as 2-D ones: :func:`conv1d_as_conv2d`)."""
    module = conv1d_as_conv2d(module).eval()
    batch = torch.export.Dim(BATCH, min=1, max=4096)
    # Every wrapper's forward is ``*inputs``: one varargs parameter holding all the tensors.
    dynamic_shapes = (tuple({0: batch} for _ in args),)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module,
            tuple(args),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return bytes(program.model_proto.SerializeToString())
