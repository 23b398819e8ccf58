"""The three networks of the framework: G (image -> segmentation), F (segmentation -> image) and D_X.

G and F are ERFNet (Romera et al., 2018), built from the three blocks of the official implementation;
D_X is the 70x70 PatchGAN of CycleGAN (Zhu et al., 2017) used as a least-squares GAN critic. `ResidualGenerator`
is the laboratory's small stride-1 alternative for G and F (model.arch=resnet_small, docs/mechanism.md).
Plain torch, no I/O.

Shapes: images (B, 3, H, W) in [-1, 1]; logits (B, S, H, W) with S = 20 classes; H and W multiples of 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_
from torch import Tensor, nn

__all__ = [
    "ARCHS",
    "DownsamplerBlock",
    "ERFNet",
    "NonBottleneck1d",
    "PatchDiscriminator",
    "ResidualBlock",
    "ResidualGenerator",
    "UpsamplerBlock",
    "image_generator",
    "init_weights",
    "segmentation_generator",
]

# ERFNet uses BatchNorm eps 1e-3 throughout (official code), not PyTorch's default 1e-5.
_BN_EPS = 1e-3


class DownsamplerBlock(nn.Module):
    """ERFNet downsampler: concat(conv3x3/2 with (out - in) channels, maxpool2x2(input)) -> BN -> ReLU.

    (B, in, H, W) -> (B, out, H/2, W/2). The max-pool branch carries the input channels through, which is
    why out > in must hold (and why F's first block is S -> 32 rather than S -> 16).
    """

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        if out_chans <= in_chans:
            raise ValueError(f"DownsamplerBlock needs out_chans > in_chans, got {in_chans} -> {out_chans}")
        self.conv = nn.Conv2d(in_chans, out_chans - in_chans, 3, stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(out_chans, eps=_BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return F_.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class NonBottleneck1d(nn.Module):
    """ERFNet's factorised residual block: (3x1, 1x3) -> BN, then dilated (3x1, 1x3) -> BN, dropout, + input.

    (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, chans: int, dropout: float = 0.0, dilation: int = 1) -> None:
        super().__init__()
        d = dilation
        self.conv3x1_1 = nn.Conv2d(chans, chans, (3, 1), padding=(1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(chans, chans, (1, 3), padding=(0, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(chans, eps=_BN_EPS)
        self.conv3x1_2 = nn.Conv2d(chans, chans, (3, 1), padding=(d, 0), dilation=(d, 1), bias=True)
        self.conv1x3_2 = nn.Conv2d(chans, chans, (1, 3), padding=(0, d), dilation=(1, d), bias=True)
        self.bn2 = nn.BatchNorm2d(chans, eps=_BN_EPS)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F_.relu(self.conv3x1_1(x))
        out = F_.relu(self.bn1(self.conv1x3_1(out)))
        out = F_.relu(self.conv3x1_2(out))
        out = self.dropout(self.bn2(self.conv1x3_2(out)))
        return F_.relu(out + x)


class UpsamplerBlock(nn.Module):
    """ERFNet upsampler: ConvTranspose 3x3/2 -> BN -> ReLU. (B, in, H, W) -> (B, out, 2H, 2W)."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_chans, out_chans, 3, stride=2, padding=1, output_padding=1, bias=True)
        self.bn = nn.BatchNorm2d(out_chans, eps=_BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return F_.relu(self.bn(self.conv(x)))


class ERFNet(nn.Module):
    """ERFNet encoder-decoder, (B, in_chans, H, W) -> (B, out_chans, H, W); H, W multiples of 8.

    Args:
        in_chans: input channels (3 for G, S for F).
        out_chans: output channels (S for G, 3 for F).
        first_width: channels after the first downsampler (16 in the official net; F uses 32 since it
            must exceed in_chans).
        output_activation: None for logits (G) or "tanh" for images in [-1, 1] (F).
    """

    def __init__(
        self,
        in_chans: int = 3,
        out_chans: int = 20,
        first_width: int = 16,
        output_activation: str | None = None,
    ) -> None:
        super().__init__()
        if output_activation not in (None, "tanh"):
            raise ValueError(f"output_activation must be None or 'tanh', got {output_activation!r}")
        self.in_chans, self.out_chans = in_chans, out_chans
        self.output_activation = output_activation

        encoder: list[nn.Module] = [DownsamplerBlock(in_chans, first_width), DownsamplerBlock(first_width, 64)]
        encoder += [NonBottleneck1d(64, dropout=0.03, dilation=1) for _ in range(5)]
        encoder.append(DownsamplerBlock(64, 128))
        for _ in range(2):
            encoder += [NonBottleneck1d(128, dropout=0.3, dilation=d) for d in (2, 4, 8, 16)]
        self.encoder = nn.Sequential(*encoder)

        self.decoder = nn.Sequential(
            UpsamplerBlock(128, 64),
            NonBottleneck1d(64),
            NonBottleneck1d(64),
            UpsamplerBlock(64, 16),
            NonBottleneck1d(16),
            NonBottleneck1d(16),
        )
        self.output_conv = nn.ConvTranspose2d(16, out_chans, 2, stride=2, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        _assert_shape(x, self.in_chans, "ERFNet input")
        out = self.output_conv(self.decoder(self.encoder(x)))
        return torch.tanh(out) if self.output_activation == "tanh" else out


class PatchDiscriminator(nn.Module):
    """CycleGAN's 70x70 PatchGAN, least-squares (no sigmoid).

    (B, in_chans, H, W) -> (B, 1, H/8 - 2, W/8 - 2): one realness score per overlapping 70x70 patch
    (30 x 62 at 256 x 512).
    """

    def __init__(self, in_chans: int = 3, width: int = 64) -> None:
        super().__init__()
        self.in_chans = in_chans

        def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
            # Conv bias is kept with InstanceNorm, as in the CycleGAN code (affine-free norm).
            return [nn.Conv2d(c_in, c_out, 4, stride, 1), nn.InstanceNorm2d(c_out), nn.LeakyReLU(0.2)]

        self.model = nn.Sequential(
            nn.Conv2d(in_chans, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            *block(width, 2 * width, 2),
            *block(2 * width, 4 * width, 2),
            *block(4 * width, 8 * width, 1),
            nn.Conv2d(8 * width, 1, 4, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        _assert_shape(x, self.in_chans, "PatchDiscriminator input")
        return self.model(x)


class ResidualBlock(nn.Module):
    """conv3x3 (dilated) -> BN -> ReLU -> conv3x3 (dilated) -> BN, + input, ReLU. (B, C, H, W) -> same."""

    def __init__(self, chans: int, dilation: int = 1) -> None:
        super().__init__()
        d = dilation
        self.conv1 = nn.Conv2d(chans, chans, 3, padding=d, dilation=d, bias=False)
        self.bn1 = nn.BatchNorm2d(chans)
        self.conv2 = nn.Conv2d(chans, chans, 3, padding=d, dilation=d, bias=False)
        self.bn2 = nn.BatchNorm2d(chans)

    def forward(self, x: Tensor) -> Tensor:
        out = F_.relu(self.bn1(self.conv1(x)))
        return F_.relu(self.bn2(self.conv2(out)) + x)


class ResidualGenerator(nn.Module):
    """A small stride-1 residual generator, (B, in_chans, H, W) -> (B, out_chans, H, W), any H, W.

    conv3x3 (in -> width) -> BN -> ReLU, `blocks` ResidualBlocks at full resolution, conv3x3 (width -> out).
    No down-sampling: every pixel keeps its own `width` features from input to output, the kind of generator in
    which Chu et al. (2017, "CycleGAN, a master of steganography") found image detail hidden in the output.
    The blocks' dilations 1, 2, 4, ... widen the receptive field (to 33 pixels with 3 blocks) without striding,
    so that a region's class can be read from its shape.

    Args:
        in_chans, out_chans: 3 and S for G, S and 3 for F.
        width: channels of every hidden layer (32).
        blocks: number of residual blocks (3).
        output_activation: None for logits (G) or "tanh" for images in [-1, 1] (F).
    """

    def __init__(self, in_chans: int = 3, out_chans: int = 20, width: int = 32, blocks: int = 3,
                 output_activation: str | None = None) -> None:
        super().__init__()
        if output_activation not in (None, "tanh"):
            raise ValueError(f"output_activation must be None or 'tanh', got {output_activation!r}")
        self.in_chans, self.out_chans = in_chans, out_chans
        self.output_activation = output_activation
        self.head = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.blocks = nn.Sequential(*[ResidualBlock(width, dilation=2**i) for i in range(blocks)])
        self.output_conv = nn.Conv2d(width, out_chans, 3, padding=1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"ResidualGenerator input: expected (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        out = self.output_conv(self.blocks(self.head(x)))
        return torch.tanh(out) if self.output_activation == "tanh" else out


ARCHS = ("erfnet", "resnet_small")  # model.arch: the paper's ERFNet, the laboratory's small residual generator


def segmentation_generator(num_classes: int = 20, arch: str = "erfnet") -> nn.Module:
    """G: image (B, 3, H, W) -> logits (B, num_classes, H, W); the official ERFNet, or ResidualGenerator."""
    if arch == "resnet_small":
        return ResidualGenerator(in_chans=3, out_chans=num_classes)
    _check_arch(arch)
    return ERFNet(in_chans=3, out_chans=num_classes, first_width=16)


def image_generator(num_classes: int = 20, arch: str = "erfnet") -> nn.Module:
    """F: segmentation (B, S, H, W) -> image (B, 3, H, W) with tanh; ERFNet with a S -> 32 first downsampler, or
    ResidualGenerator."""
    if arch == "resnet_small":
        return ResidualGenerator(in_chans=num_classes, out_chans=3, output_activation="tanh")
    _check_arch(arch)
    first_width = 32 if num_classes < 32 else 2 * num_classes  # SPEC: 32 for S = 20; must exceed S
    return ERFNet(in_chans=num_classes, out_chans=3, first_width=first_width, output_activation="tanh")


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def init_weights(module: nn.Module, std: float = 0.02) -> nn.Module:
    """CycleGAN's "normal" init: conv/linear weights N(0, std), norm weights N(1, std), all biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


def _assert_shape(x: Tensor, chans: int, what: str) -> None:
    if x.ndim != 4 or x.shape[1] != chans:
        raise ValueError(f"{what}: expected (B, {chans}, H, W), got {tuple(x.shape)}")
    if x.shape[2] % 8 or x.shape[3] % 8:
        raise ValueError(f"{what}: H and W must be multiples of 8, got {x.shape[2]}x{x.shape[3]}")
