"""The four losses of the paper (eqs. 1-4) and their weighted sums J_gen (eqs. 5-7) and J_disc (eq. 8).

Pure functions of tensors, kept out of the networks. Plain torch, no I/O.
Shapes: logits (B, S, H, W); labels (B, H, W) int64 class indices 0..S-1; images (B, 3, H, W);
discriminator outputs (B, 1, H_D, W_D).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F_
from torch import Tensor

__all__ = [
    "ALPHA",
    "BETA",
    "GAMMA",
    "GeneratorTerms",
    "adversarial_loss",
    "discriminator_loss",
    "enet_class_weights",
    "generator_loss",
    "image_reconstruction_loss",
    "segmentation_loss",
    "segmentation_reconstruction_loss",
]

# The paper's weights (Section 4.2).
ALPHA = 0.5
BETA = 1 / 11
GAMMA = 20 / 31


def segmentation_loss(logits: Tensor, labels: Tensor, ignore_index: int = -100, weight: Tensor | None = None) -> Tensor:
    """J_seg (eq. 1): mean cross entropy between softmax(logits) and the one-hot labels.

    weight: optional (S,) class weights (class-balanced CE, e.g. enet_class_weights); None is the paper's loss.
    """
    return F_.cross_entropy(logits.float(), labels, weight=weight, ignore_index=ignore_index)


def adversarial_loss(d_fake: Tensor) -> Tensor:
    """J_adv (eq. 2): least-squares GAN loss of the generator, MSE(D(x), 1)."""
    return F_.mse_loss(d_fake.float(), torch.ones_like(d_fake, dtype=torch.float32))


def image_reconstruction_loss(reconstruction: Tensor, image: Tensor) -> Tensor:
    """J_rec_X (eq. 3): L1 between x_rec and x, mean over C*H*W (and the batch)."""
    return F_.l1_loss(reconstruction.float(), image.float())


def segmentation_reconstruction_loss(logits_rec: Tensor, labels: Tensor, ignore_index: int = -100,
                                     weight: Tensor | None = None) -> Tensor:
    """J_rec_Y (eq. 4): cross entropy between G(F(y)) and the labels y (class weights as in segmentation_loss)."""
    return F_.cross_entropy(logits_rec.float(), labels, weight=weight, ignore_index=ignore_index)


def enet_class_weights(pixel_counts: Tensor, c: float = 1.02) -> Tensor:
    """Class weights 1 / ln(c + p_s) of ENet (Paszke et al. 2016), as the ERFNet authors trained with.

    Args:
        pixel_counts: (S,) pixels of each class in the training labels.
    Returns:
        (S,) float32; p_s = pixel_counts / total, so a class absent from the data gets the largest weight,
        1 / ln(1.02) ~ 50.5, and one that covers everything 1 / ln(2.02) ~ 1.42.
    """
    p = pixel_counts.double() / pixel_counts.sum().clamp(min=1)
    return (1.0 / torch.log(c + p)).float()


class GeneratorTerms(NamedTuple):
    """The four scalar generator losses of one batch, and the optional paired loss of F (loss.paired_f)."""

    seg: Tensor
    rec_x: Tensor
    adv: Tensor
    rec_y: Tensor
    paired_f: Tensor | None = None  # mean |F(onehot(y)) - x|, computed only when loss.paired_f > 0


def generator_loss(terms: GeneratorTerms, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA) -> Tensor:
    """J_gen = gamma (alpha J_seg + (1 - alpha) J_rec_X) + (1 - gamma) (beta J_adv + (1 - beta) J_rec_Y)."""
    forward = alpha * terms.seg + (1 - alpha) * terms.rec_x  # eq. 5
    backward = beta * terms.adv + (1 - beta) * terms.rec_y  # eq. 6
    return gamma * forward + (1 - gamma) * backward  # eq. 7


def discriminator_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """J_disc (eq. 8) = MSE(D(x_real), 1) + MSE(D(x'), 0), x' drawn from the image pool."""
    real = F_.mse_loss(d_real.float(), torch.ones_like(d_real, dtype=torch.float32))
    fake = F_.mse_loss(d_fake.float(), torch.zeros_like(d_fake, dtype=torch.float32))
    return real + fake
