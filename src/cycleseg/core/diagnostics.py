"""Steganography diagnostics: the tensor computations behind `cycleseg diagnose` (plain torch, no I/O).

The paper's argument is that a cycle model without noise hides low-amplitude image detail ("watermarks") in
G's class scores so that F can rebuild the image from it. These functions measure that channel directly:

- the *decision* of a pixel is argmax over classes of G's logits; everything else in the logit vector is
  information that the segmentation decision does not carry;
- `watermark_inputs` builds inputs for F that carry only the decision (the decision one-hot, or each pixel's
  class-mean vector) or only the ground truth, so that F's PSNR on them can be set beside F's PSNR on the
  noisy logits it was trained on;
- `project_on_one_hot` splits each logit vector into its projection on the decision one-hot (the decided
  class's score) and the residual (all other class scores), whose energy `energy_by_class` sums per class;
- `add_noise_at_snr` adds Gaussian noise at a target SNR with the equal-SNR rule of `noise.gaussian_sigma`;
- `colour_oracles` measures the reward for hiding: how much better an image is rebuilt from the label map when
  each region's own colour is known than from the label map alone;
- `radial_power_spectrum` and `high_frequency_share` compare the residual's spatial frequency content with
  the image's; `principal_components` turns an (S, H, W) residual into 3 maps a person can look at.

Shapes: B images, S classes, C image channels, H x W pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F_
from torch import Tensor

from cycleseg.core.metrics import psnr_db, snr_db
from cycleseg.core.noise import gaussian_sigma

__all__ = [
    "INPUTS",
    "SCALE_REFERENCES",
    "add_noise_at_snr",
    "class_mean_field",
    "class_sums",
    "colour_oracles",
    "decision",
    "energy_by_class",
    "high_frequency_share",
    "one_hot_of",
    "pixel_norm",
    "principal_components",
    "project_on_one_hot",
    "radial_power_spectrum",
    "reconstruction_psnrs",
    "split_mean_field",
    "unexplained_energy",
    "watermark_inputs",
]

# The inputs given to F for the watermark gap, in the order they are reported.
INPUTS = ("noisy", "decision", "class_mean", "split_class_mean", "split_class_mean_own_noise", "ground_truth")
# What the one-hot inputs are scaled against, per pixel: the values F sees in the forward cycle (the noise
# injection's output), G's logits before the noise injection, or nothing (unit one-hots, as in the backward cycle).
SCALE_REFERENCES = ("f_input", "logits", "unit")


def decision(logits: Tensor) -> Tensor:
    """(B, S, H, W) logits -> (B, H, W) int64 class indices, the segmentation decision argmax_s."""
    return logits.argmax(dim=1)


def one_hot_of(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, H, W) class indices -> (B, S, H, W) one-hot; indices outside [0, S) are clamped into it."""
    return F_.one_hot(labels.long().clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).to(dtype)


def pixel_norm(values: Tensor) -> Tensor:
    """(B, S, H, W) -> (B, 1, H, W): the L2 norm of each pixel's class vector."""
    return values.pow(2).sum(dim=1, keepdim=True).sqrt()


def project_on_one_hot(values: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Split each pixel's vector into its projection on the one-hot of `labels` and the residual.

    The projection of v on the unit vector e_c is v_c e_c: the score of class c alone. The residual v - v_c e_c
    holds every other class score, which is what the decision c does not explain. For the logits' own argmax
    the projection is exactly the max-only noise injection of the paper.

    Args:
        values: (B, S, H, W) logits (or the noise injection's output).
        labels: (B, H, W) class indices, usually `decision(logits)`.
    Returns:
        (projection, residual), both (B, S, H, W), summing to `values`.
    """
    projection = values * one_hot_of(labels, values.shape[1], values.dtype)
    return projection, values - projection


def energy_by_class(values: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Energy of the residual of `project_on_one_hot` and of the vectors themselves, summed per class.

    Pixels are grouped by `labels` (the decided class), so residual[c] / total[c] is the share of the energy of
    the pixels decided as class c that the decision does not explain; sums over classes give the overall share.
    Sums (not means) so that they can be accumulated over a split.

    Args:
        values: (B, S, H, W); labels: (B, H, W) class indices in [0, S).
    Returns:
        (residual, total), both (S,) float64: sum over pixels of class c of ||residual||^2 and of ||values||^2.
    """
    _, residual = project_on_one_hot(values, labels)
    return _energy_per_class(residual, labels, values.shape[1]), _energy_per_class(values, labels, values.shape[1])


def class_mean_field(values: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
    """Each pixel's vector replaced by the mean vector of the pixels of the same image with the same label.

    The result carries only the decision map (plus S x S numbers per image, the class means), in the value
    range F is used to: an input with no per-pixel hidden detail.

    Args:
        values: (B, C, H, W), usually C = S class scores (or an image, C = 3); labels: (B, H, W) class indices
            in [0, num_classes); num_classes: default C.
    Returns:
        (B, C, H, W).
    """
    num_classes = num_classes or values.shape[1]
    member = one_hot_of(labels, num_classes, values.dtype)  # (B, K, H, W), K = S labels
    sums = torch.einsum("bkhw,bshw->bks", member, values)
    counts = member.sum(dim=(2, 3)).clamp(min=1).unsqueeze(-1)  # (B, K, 1)
    return torch.einsum("bkhw,bks->bshw", member, sums / counts)


def class_sums(values: Tensor, labels: Tensor, num_classes: int | None = None) -> tuple[Tensor, Tensor]:
    """Per label k, the sum of the vectors of the pixels labelled k and their count, over the whole batch; summed
    over a split's batches, sums / counts are the split's class means (`split_mean_field`).

    Args:
        values: (B, C, H, W), usually C = S (or an image, C = 3); labels: (B, H, W) class indices in
            [0, num_classes); num_classes: default C.
    Returns:
        (sums (S, C) float64, row k the sum for label k; counts (S,) float64).
    """
    member = one_hot_of(labels, num_classes or values.shape[1], torch.float64)
    return torch.einsum("bkhw,bshw->ks", member, values.double()), member.sum(dim=(0, 2, 3))


def split_mean_field(means: Tensor, labels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Each pixel gets the mean vector of its label over the whole split (`means` (S, C), row k for label k):
    unlike `class_mean_field`, not even per-image information (the colour of this image's sky) is left.

    Returns:
        (B, C, H, W).
    """
    return torch.einsum("bkhw,ks->bshw", one_hot_of(labels, means.shape[0], dtype), means.to(dtype))


def colour_oracles(image: Tensor, labels: Tensor, split_colours: Tensor) -> dict[str, Tensor]:
    """PSNR (eq. 14) of two oracle reconstructions of `image` from its label map; their difference is the reward
    for hiding, what a watermark could win at most against an F that reads only the labels.

    - "labels_only": every pixel painted with its class's mean colour over the split (`split_colours`, from
      `class_sums` of the images with their labels): the best a decoder of the label map alone can do pixel by
      pixel in squared error, when the colours are those of the split.
    - "image_colours": every pixel painted with the mean colour of its class in this image: the label map plus
      the colour of each region (regions of one class in one image share one colour here, so this is a lower
      bound of an oracle that knows each object's colour).

    Args:
        image: (B, 3, H, W) in [-1, 1]; labels: (B, H, W) class indices in [0, S) (the ground truth);
        split_colours: (S, 3) mean colour of each class over the split (any row for a class with no pixel).
    Returns:
        {"labels_only": (B,), "image_colours": (B,)} in dB.
    """
    num_classes = split_colours.shape[0]
    return {"labels_only": psnr_db(image, split_mean_field(split_colours, labels, image.dtype)),
            "image_colours": psnr_db(image, class_mean_field(image, labels, num_classes))}


def unexplained_energy(values: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Energy of values - class_mean_field(values, labels) and of values, summed per class like `energy_by_class`.

    The share of the first in the second is the part of the vectors' energy that the decision map cannot
    predict even with the best per-image class means: the per-pixel variation within each decided region.

    Args:
        values: (B, S, H, W); labels: (B, H, W) class indices in [0, S).
    Returns:
        (unexplained, total), both (S,) float64, pixels grouped by `labels`.
    """
    deviation = values - class_mean_field(values, labels)
    return _energy_per_class(deviation, labels, values.shape[1]), _energy_per_class(values, labels, values.shape[1])


def _energy_per_class(x: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(S,) float64: sum of ||x||^2 over the pixels of each label. x: (B, S, H, W); labels: (B, H, W)."""
    energy = torch.zeros(num_classes, dtype=torch.float64, device=x.device)
    return energy.index_add_(0, labels.reshape(-1).long(), x.double().pow(2).sum(dim=1).reshape(-1))


def watermark_inputs(logits: Tensor, f_input: Tensor, labels: Tensor | None,
                     scale_to: str = "f_input", split_means: Tensor | None = None) -> dict[str, Tensor]:
    """The inputs of F whose reconstructions the watermark gap compares; each (B, S, H, W).

    - "noisy": `f_input` itself, the noise injection's output noise(G(x)), what F sees in training.
    - "decision": the one-hot of argmax G(x), scaled per pixel to the L2 norm of the reference (`scale_to`).
    - "class_mean": `class_mean_field(f_input, argmax G(x))`, only the decision, in F's usual value range.
    - "split_class_mean": each pixel the split-wide mean f_input vector of its decided class (`split_means`,
      (S, S), from `class_sums`): only the decision, without the per-image class means (left out when None).
    - "ground_truth": the one-hot of `labels`, scaled like "decision" (left out when labels is None).

    Args:
        logits: G's logits (B, S, H, W); f_input: noise(logits), same shape; labels: (B, H, W) ground truth.
        scale_to: "f_input" (default: the per-pixel norm of what F sees), "logits" (the norm of G's logits
            before the noise injection; the same for a run without noise) or "unit" (plain one-hots, the
            input F gets in the backward cycle).
    """
    if scale_to not in SCALE_REFERENCES:
        raise ValueError(f"scale_to must be one of {', '.join(SCALE_REFERENCES)}, got {scale_to!r}")
    num_classes = logits.shape[1]
    decided = decision(logits)
    scale = {"f_input": lambda: pixel_norm(f_input), "logits": lambda: pixel_norm(logits),
             "unit": lambda: torch.ones_like(f_input[:, :1])}[scale_to]()
    inputs = {
        "noisy": f_input,
        "decision": one_hot_of(decided, num_classes, f_input.dtype) * scale,
        "class_mean": class_mean_field(f_input, decided),
    }
    if split_means is not None:
        inputs["split_class_mean"] = split_mean_field(split_means, decided, f_input.dtype)
    if labels is not None:
        inputs["ground_truth"] = one_hot_of(labels, num_classes, f_input.dtype) * scale
    return inputs


def reconstruction_psnrs(F: Callable[[Tensor], Tensor], image: Tensor, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """PSNR (eq. 14) of F(input) against `image` (B, 3, H, W) for each input of `watermark_inputs`; each (B,)."""
    return {name: psnr_db(image, F(value)) for name, value in inputs.items()}


def add_noise_at_snr(logits: Tensor, snr_target_db: float,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """logits + sigma * N(0, 1), sigma per image by the equal-SNR rule of `noise.gaussian_sigma`.

    sigma^2 = sum ||logits||^2 / (S H W 10^(snr/10)), so the measured SNR (eq. 11) of each image equals the
    target up to the randomness of the draw (about 10 log10(1 +- sqrt(2 / (S H W))) dB).

    Args:
        logits: (B, S, H, W); generator: a torch.Generator on logits' device, for repeatable draws.
    Returns:
        (noisy (B, S, H, W), measured SNR in dB (B,)).
    """
    sigma = gaussian_sigma(logits, snr_target_db, "equal_snr")
    draw = torch.randn(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    noisy = logits + sigma * draw
    return noisy, snr_db(logits, noisy)


def _radius(height: int, width: int, device: torch.device) -> Tensor:
    """(H, W) spatial frequency radius in cycles per pixel of each FFT coefficient."""
    fy = torch.fft.fftfreq(height, device=device).view(-1, 1)
    fx = torch.fft.fftfreq(width, device=device).view(1, -1)
    return torch.sqrt(fy**2 + fx**2)


def _power(maps: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H, W): |FFT|^2 of each mean-free map, summed over the C maps."""
    centred = maps.double() - maps.double().mean(dim=(2, 3), keepdim=True)
    return torch.fft.fft2(centred).abs().pow(2).sum(dim=1)


def radial_power_spectrum(maps: Tensor, num_bins: int | None = None) -> tuple[Tensor, Tensor]:
    """Radially averaged power spectrum of mean-free maps, summed over channels.

    Frequencies are radii sqrt(fx^2 + fy^2) in cycles per pixel, binned uniformly on (0, 0.5]; the power of a
    bin is the mean of |FFT|^2 over the coefficients in it. The DC term (removed with the mean) and the corner
    coefficients beyond 0.5 cycles/pixel are left out.

    Args:
        maps: (B, C, H, W), e.g. an image (C = 3) or a residual (C = S).
        num_bins: default min(H, W) // 2.
    Returns:
        (frequency (num_bins,) bin centres, power (B, num_bins) float64; 0 in a bin with no coefficient).
    """
    _, _, height, width = maps.shape
    num_bins = num_bins or max(min(height, width) // 2, 1)
    radius = _radius(height, width, maps.device).reshape(-1)
    edges = torch.linspace(0.0, 0.5, num_bins + 1, dtype=torch.float64, device=maps.device)
    inside = (radius > 0) & (radius <= 0.5)
    index = (torch.bucketize(radius.double(), edges, right=False) - 1).clamp(0, num_bins - 1)[inside]
    power = _power(maps).reshape(maps.shape[0], -1)[:, inside]
    sums = torch.zeros(maps.shape[0], num_bins, dtype=torch.float64, device=maps.device)
    sums.index_add_(1, index, power)
    counts = torch.bincount(index, minlength=num_bins).double()
    centres = (edges[:-1] + edges[1:]) / 2
    return centres, sums / counts.clamp(min=1)


def high_frequency_share(maps: Tensor, cutoff: float = 0.25) -> Tensor:
    """Share of the (non-DC) power of mean-free maps at radii above `cutoff` cycles/pixel, summed over channels.

    0.25 cycles/pixel is half the Nyquist frequency: detail finer than 4 pixels per period. Coefficients beyond
    0.5 cycles/pixel (the corners) count as high frequency.

    Args:
        maps: (B, C, H, W).
    Returns:
        (B,) in [0, 1]; NaN for a constant map.
    """
    radius = _radius(maps.shape[2], maps.shape[3], maps.device)
    power = _power(maps)
    return power[:, radius > cutoff].sum(dim=1) / power.flatten(1).sum(dim=1)


def principal_components(maps: Tensor, k: int = 3) -> Tensor:
    """Project each pixel's vector on the top-k principal directions of its image, for display.

    Args:
        maps: (B, S, H, W), e.g. a residual.
    Returns:
        (B, k, H, W) float32; components beyond the rank (or beyond S) are 0.
    """
    b, s, h, w = maps.shape
    out = torch.zeros(b, k, h, w, dtype=torch.float32, device=maps.device)
    for i in range(b):
        x = maps[i].double().reshape(s, -1).T  # (HW, S)
        x = x - x.mean(dim=0, keepdim=True)
        _, _, vh = torch.linalg.svd(x, full_matrices=False)
        comps = (x @ vh[:k].T).T.reshape(-1, h, w)  # (min(k, S), H, W)
        out[i, : comps.shape[0]] = comps.float()
    return out
