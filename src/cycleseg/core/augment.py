"""Training-time augmentation (`data.augment`, off for the paper): random horizontal flip and random zoom.

Plain torch, no I/O. `train` applies `augment_batch` to the training batches only (never to validation), to the
images and their labels together: images bilinearly, labels by nearest neighbour, so a pixel keeps its class.

Every random choice comes from a torch.Generator seeded by (seed, epoch, batch in the epoch, rank)
(`augment_generator`): a run resumed mid-epoch draws exactly what it would have drawn, no RNG state needs saving,
and the global RNG that the noise injection and the image pool draw from is left alone.

The zoom only zooms in (a window of 1/s of the height and width, s uniform in [1, max_scale], resized back to the
batch size): zooming out would need padding, i.e. invented pixels and labels that F would learn to draw.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_
from torch import Tensor

from cycleseg.core import seeding

__all__ = ["AUGMENT_MODES", "augment_batch", "augment_generator"]

AUGMENT_MODES = ("none", "flip", "flip+scale")


def augment_generator(seed: int, epoch: int, batch: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """The CPU generator of one training batch: a function of (seed, epoch, batch index in the epoch, rank) only;
    `stream` > 0 gives another batch of the same iteration its own draws (semi-supervised: the unlabelled images 1,
    the backward cycle's label maps 2)."""
    key = seeding.mix_seed(seeding.mix_seed(seed, epoch, batch), rank, multiplier=1_009)
    if stream:
        key = seeding.mix_seed(key, stream)
    return torch.Generator().manual_seed(key)


def augment_batch(image: Tensor, labels: Tensor, mode: str, max_scale: float = 1.5,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Augment a batch: image (B, C, H, W) float, labels (B, H, W) int -> the same shapes, dtypes and device.

    mode: "none" (returns the inputs unchanged, draws nothing), "flip" (each image flipped left-right with
    probability 1/2), "flip+scale" (flip, then a random window of round(H/s) x round(W/s), s uniform in
    [1, max_scale], resized back to H x W). The random draws are made on the CPU from `generator`.
    """
    if mode == "none":
        return image, labels
    if mode not in AUGMENT_MODES:
        raise ValueError(f"unknown augmentation {mode!r}; expected one of {', '.join(AUGMENT_MODES)}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    batch, _, height, width = image.shape
    flips = (torch.rand(batch, generator=generator) < 0.5).tolist()
    images, label_maps = [], []
    for k in range(batch):
        x, y = image[k], labels[k]
        if flips[k]:
            x, y = x.flip(-1), y.flip(-1)
        if mode == "flip+scale":
            s = 1.0 + (max_scale - 1.0) * float(torch.rand((), generator=generator))
            h, w = max(1, round(height / s)), max(1, round(width / s))
            top = int(torch.randint(height - h + 1, (), generator=generator))
            left = int(torch.randint(width - w + 1, (), generator=generator))
            x = F_.interpolate(x[None, :, top:top + h, left:left + w], size=(height, width), mode="bilinear",
                               align_corners=False)[0]
            y = F_.interpolate(y[None, None, top:top + h, left:left + w].float(), size=(height, width),
                               mode="nearest-exact")[0, 0].to(labels.dtype)
        images.append(x)
        label_maps.append(y)
    return torch.stack(images), torch.stack(label_maps)
