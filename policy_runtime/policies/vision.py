"""Per-camera image encoder: crop, ResNet-18 trunk with GroupNorm, spatial softmax, linear.

Diffusion Policy's image configs (via robomimic) use this design: a ResNet-18 without its average
pool and classifier; BatchNorm replaced by GroupNorm (channels // 16 groups) because the EMA copy
of the weights does not track BatchNorm's running statistics; spatial softmax over 32 learned
keypoint maps (their expected x, y: 64 values) -> Linear(64, feature_dim); random crop in
training, centre crop in evaluation. Written in plain torch (no torchvision); the trunk keeps
torchvision's module names (``conv1``, ``bn1``, ``layer1.0.conv1`` ...) so its weights can be
mapped from a torchvision state dict, even though the ``bn*`` modules are GroupNorm here.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from policy_runtime.normalization import Normalizer

#: ResNet-18 halves the resolution five times (conv1, max-pool, layer2-4), rounding up.
TRUNK_DOWNSAMPLING = 5
TRUNK_CHANNELS = 512
#: torchvision's ResNet-18 children by index (what ``nn.Sequential(*resnet.children())``
#: numbers them, as robomimic's and LeRobot's encoders store them) -> our trunk's names.
RESNET18_CHILDREN = {
    "0": "conv1",
    "1": "bn1",
    "4": "layer1",
    "5": "layer2",
    "6": "layer3",
    "7": "layer4",
}
#: Spatial-softmax keypoints per camera (Diffusion Policy's, robomimic's and LeRobot's default).
NUM_KP = 32


def group_norm(channels: int) -> nn.GroupNorm:
    """DP's BatchNorm replacement: one group per 16 channels."""
    return nn.GroupNorm(channels // 16, channels)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a projected shortcut when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = group_norm(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = group_norm(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), group_norm(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18Trunk(nn.Module):
    """ResNet-18 up to ``layer4``: (N, 3, H, W) -> (N, 512, ceil(H / 32), ceil(W / 32))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = group_norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))
        # torchvision's initialisation (which DP starts from when not pretrained).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def output_size(height: int, width: int) -> tuple[int, int]:
        """Feature-map size for an input of ``height`` x ``width``."""
        scale = 2**TRUNK_DOWNSAMPLING
        return math.ceil(height / scale), math.ceil(width / scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class SpatialSoftmax(nn.Module):
    """Keypoints as the softmax-weighted mean (x, y) of learned maps (robomimic's layer).

    A 1x1 conv makes ``num_kp`` maps from the trunk's channels; each map's softmax over pixels
    weighs a fixed grid in [-1, 1], giving (N, num_kp * 2) coordinates. The grid is a derived,
    non-persistent buffer, so it is not part of the state dict.
    """

    pos_x: torch.Tensor
    pos_y: torch.Tensor

    def __init__(self, in_channels: int, height: int, width: int, num_kp: int = NUM_KP) -> None:
        super().__init__()
        self.nets = nn.Conv2d(in_channels, num_kp, kernel_size=1)
        self.num_kp = num_kp
        self.height, self.width = height, width
        pos_y, pos_x = torch.meshgrid(
            torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij"
        )
        self.register_buffer("pos_x", pos_x.reshape(1, height * width), persistent=False)
        self.register_buffer("pos_y", pos_y.reshape(1, height * width), persistent=False)

    @property
    def output_dim(self) -> int:
        return self.num_kp * 2

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        n = feature.shape[0]
        maps = self.nets(feature).reshape(n * self.num_kp, self.height * self.width)
        attention = F.softmax(maps, dim=-1)
        expected_x = (self.pos_x * attention).sum(dim=1, keepdim=True)
        expected_y = (self.pos_y * attention).sum(dim=1, keepdim=True)
        return torch.cat([expected_x, expected_y], dim=1).reshape(n, self.num_kp * 2)


def crop_images(images: torch.Tensor, crop_shape: tuple[int, int], random: bool) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, h, w): an independent random window per image, or the centre.

    The centre crop is a plain slice, so evaluation and export are deterministic.
    """
    n, _, height, width = images.shape
    ch, cw = crop_shape
    if (ch, cw) == (height, width):
        return images
    if not random:
        top, left = (height - ch) // 2, (width - cw) // 2
        return images[:, :, top : top + ch, left : left + cw]
    device = images.device
    tops = torch.randint(0, height - ch + 1, (n,), device=device)
    lefts = torch.randint(0, width - cw + 1, (n,), device=device)
    rows = (tops[:, None] + torch.arange(ch, device=device))[:, :, None]  # (N, h, 1)
    cols = (lefts[:, None] + torch.arange(cw, device=device))[:, None, :]  # (N, 1, w)
    batch = torch.arange(n, device=device)[:, None, None]
    # Advanced indexing puts the indexed dims first: (N, h, w, C) -> channels first.
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


class ImageEncoder(nn.Module):
    """One camera: uint8 (N, H, W, 3) -> (N, feature_dim).

    Pixels are normalised with the normaliser's map for ``key`` (DP's [0, 255] -> [-1, 1]), moved
    channels first, cropped (random in training, centre in eval; ``crop_shape`` None = whole
    image), and encoded by trunk -> spatial softmax -> linear (-> ReLU with ``feature_relu``,
    as robomimic's ObservationEncoder in Diffusion Policy's hybrid image policy).
    """

    def __init__(
        self,
        key: str,
        normalizer: Normalizer,
        image_shape: tuple[int, ...],
        feature_dim: int = 64,
        crop_shape: tuple[int, int] | None = None,
        num_kp: int = NUM_KP,
        feature_relu: bool = False,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or image_shape[-1] != 3:
            raise ValueError(f"image {key!r} must be (H, W, 3), got {image_shape}")
        height, width = int(image_shape[0]), int(image_shape[1])
        if crop_shape is not None:
            if not (0 < crop_shape[0] <= height and 0 < crop_shape[1] <= width):
                raise ValueError(
                    f"crop_shape {crop_shape} does not fit image {key!r} of {(height, width)}"
                )
            height, width = int(crop_shape[0]), int(crop_shape[1])
        self.key = key
        self.normalizer = normalizer
        self.image_shape = tuple(int(d) for d in image_shape)
        self.crop_shape = None if crop_shape is None else (height, width)
        feature_hw = ResNet18Trunk.output_size(height, width)
        if min(feature_hw) == 1:
            warnings.warn(
                f"image {key!r}: a {height}x{width} input gives a {feature_hw[0]}x{feature_hw[1]}"
                " feature map; spatial softmax sees no position along a size-1 axis (use more"
                " than 32 pixels per side)",
                stacklevel=2,
            )
        self.backbone = ResNet18Trunk()
        self.pool = SpatialSoftmax(TRUNK_CHANNELS, *feature_hw, num_kp)
        self.linear = nn.Linear(self.pool.output_dim, feature_dim)
        self.feature_dim = feature_dim
        self.feature_relu = feature_relu

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"image {self.key!r} must be (N, {', '.join(map(str, self.image_shape))}),"
                f" got {tuple(images.shape)}"
            )
        dtype = self.linear.weight.dtype
        x = self.normalizer.normalize(self.key, images.to(dtype)).permute(0, 3, 1, 2)
        if self.crop_shape is not None:
            x = crop_images(x, self.crop_shape, random=self.training)
        features = self.linear(self.pool(self.backbone(x.contiguous())))
        return F.relu(features) if self.feature_relu else features
