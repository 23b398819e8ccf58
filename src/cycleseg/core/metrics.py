"""Metrics of the paper (Section 4.1): class IoU and mIoU (eqs. 15-16), PSNR (eq. 14), SNR (eq. 11).

Plain torch, no I/O. IoU follows the Cityscapes convention: one confusion matrix accumulated over the whole
split; pixels whose ground truth is background (void) are not evaluated; a class absent from both the
prediction and the ground truth is NaN and left out of the mean.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["METRICS", "class_iou", "confusion_matrix", "mean_iou", "psnr_db", "snr_db"]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Confusion matrix of one batch, rows = ground truth, columns = prediction.

    Args:
        pred: (B, H, W) or any shape, integer class indices in [0, num_classes).
        target: same shape; pixels outside [0, num_classes) (e.g. -1) are skipped.
    Returns:
        (num_classes, num_classes) int64; add the matrices of all batches to get the split's matrix.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    valid = (target >= 0) & (target < num_classes)
    index = target[valid] * num_classes + pred[valid]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def class_iou(confusion: Tensor, num_eval_classes: int) -> Tensor:
    """IoU_s = TP / (TP + FP + FN) (eq. 15) for the first num_eval_classes classes.

    Classes from num_eval_classes on (void: Cityscapes' background, index 19 of 20) are not evaluated: ground-truth
    void pixels count for nothing, while predicting void on a real class is a false negative of that class
    (as in the official Cityscapes evaluation). The count comes from the data's class table
    (ClassTable.num_evaluated: 19 for Cityscapes), so it has no default here.

    Args:
        confusion: (K, K) with rows = ground truth, K >= num_eval_classes.
    Returns:
        (num_eval_classes,) float64, NaN where TP + FP + FN = 0.
    """
    conf = confusion.double()
    n = num_eval_classes
    tp = conf.diagonal()[:n]
    fn = conf[:n, :].sum(dim=1) - tp
    fp = conf[:n, :n].sum(dim=0) - tp  # only pixels whose ground truth is evaluated
    denom = tp + fp + fn
    return torch.where(denom > 0, tp / denom.clamp(min=1), torch.full_like(tp, math.nan))


def mean_iou(confusion: Tensor, num_eval_classes: int) -> float:
    """mIoU (eq. 16): mean of the non-NaN class IoUs; NaN if every class is absent."""
    iou = class_iou(confusion, num_eval_classes)
    present = ~torch.isnan(iou)
    return float(iou[present].mean()) if present.any() else math.nan


def psnr_db(image: Tensor, reconstruction: Tensor, peak_to_peak: float = 2.0) -> Tensor:
    """PSNR (eq. 14) per image: 10 log10(peak^2 / mean over C*H*W of the squared error).

    Args:
        image, reconstruction: (B, C, H, W), in [-1, 1] (hence peak-to-peak 2).
    Returns:
        (B,) in dB (inf for a perfect reconstruction).
    """
    mse = (image.double() - reconstruction.double()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(peak_to_peak**2 / mse)


def snr_db(clean: Tensor, noisy: Tensor) -> Tensor:
    """SNR (eq. 11) per image: 10 log10(sum ||clean||^2 / sum ||clean - noisy||^2), sums over pixels and classes.

    Args:
        clean: G's logits (B, S, H, W); noisy: the noise injection's output, same shape.
    Returns:
        (B,) in dB (inf where the noise is exactly zero).
    """
    signal = clean.double().pow(2).flatten(1).sum(dim=1)
    noise = (clean.double() - noisy.double()).pow(2).flatten(1).sum(dim=1)
    return 10.0 * torch.log10(signal / noise)


# Name -> one-line description; `cycleseg evaluate` reports these and `--help` lists them.
METRICS = {
    "miou": "mean IoU over the 19 Cityscapes classes (eq. 16), in %",
    "iou": "IoU per class (eq. 15), in %; null for a class absent from prediction and ground truth",
    "psnr_db": "PSNR of the forward-cycle reconstruction F(noise(G(x))) (eq. 14, peak-to-peak 2), mean over images",
    "snr_db": "SNR of the noise injection on G's logits (eq. 11), mean over images",
}
