"""Noise injection into the latent segmentation space (paper Section 3.2, SPEC "Noise injections").

Every kind corrupts G's logits (B, S, H, W) before F sees them, in the forward cycle only, and passes the
gradient straight through (d noisy / d logits = identity): for max-only and quantization that is the
straight-through estimator of the paper; for Gaussian noise it is exact, since sigma is a constant.
Plain torch, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from cycleseg.core.metrics import snr_db

__all__ = [
    "NOISE_KINDS",
    "SIGMA_RULES",
    "NoiseInjection",
    "gaussian_sigma",
    "max_only",
    "quantize",
    "register_noise",
    "snr_db",
]

# name -> function (logits, injection) -> corrupted values; registered below, listed by `cycleseg --help`.
NOISE_KINDS: dict[str, Callable[[Tensor, NoiseInjection], Tensor]] = {}
SIGMA_RULES = ("equal_snr", "paper_eq13")


def register_noise(name: str):
    def decorator(fn):
        NOISE_KINDS[name] = fn
        return fn

    return decorator


def max_only(logits: Tensor) -> Tensor:
    """Keep each pixel's maximal class score, set the other S - 1 to 0. (B, S, H, W) -> same."""
    keep = torch.zeros_like(logits).scatter_(1, logits.argmax(dim=1, keepdim=True), 1.0)
    return logits * keep


def quantize(logits: Tensor, bits: int) -> Tensor:
    """Nearest of 2^bits levels spaced uniformly on [-1, 1] (eq. 9); values outside are clipped to +-1."""
    step = 2.0 / (2**bits - 1)
    return torch.round((logits.clamp(-1.0, 1.0) + 1.0) / step) * step - 1.0


def gaussian_sigma(logits: Tensor, snr_db: float, rule: str = "equal_snr") -> Tensor:
    """Per-image noise standard deviation for a target SNR, shape (B, 1, 1, 1).

    "equal_snr" (default): sigma^2 = sum ||logits||^2 / (S H W 10^(snr/10)), so the measured SNR of eq. 11
    equals the target. "paper_eq13": the paper's eq. 13 taken literally, dividing by H W only, which
    measures 10 log10(S) dB (13 dB for S = 20) below the target.
    """
    b, s, h, w = logits.shape
    count = s * h * w if rule == "equal_snr" else h * w
    power = logits.detach().double().pow(2).flatten(1).sum(dim=1)
    sigma = torch.sqrt(power / (count * 10.0 ** (snr_db / 10.0)))
    return sigma.to(logits.dtype).view(b, 1, 1, 1)


@register_noise("none")
def _none(logits: Tensor, inj: NoiseInjection) -> Tensor:
    return logits


@register_noise("max_only")
def _max_only(logits: Tensor, inj: NoiseInjection) -> Tensor:
    return max_only(logits)


@register_noise("quantize")
def _quantize(logits: Tensor, inj: NoiseInjection) -> Tensor:
    return quantize(logits, inj.bits)


@register_noise("gaussian")
def _gaussian(logits: Tensor, inj: NoiseInjection) -> Tensor:
    # Fresh noise on every call, as in training; the caller seeds torch for reproducible evaluation.
    return logits + gaussian_sigma(logits, inj.snr_db, inj.sigma_rule) * torch.randn_like(logits)


class NoiseInjection(nn.Module):
    """The noise injection block of Fig. 2: logits (B, S, H, W) -> noisy logits (B, S, H, W).

    Args:
        kind: one of NOISE_KINDS: "none", "max_only", "quantize", "gaussian".
        bits: quantizer resolution n in 1..8 (kind "quantize" only).
        snr_db: target SNR in dB (kind "gaussian" only).
        sigma_rule: "equal_snr" or "paper_eq13" (kind "gaussian" only), see `gaussian_sigma`.
    """

    def __init__(self, kind: str = "none", bits: int | None = None, snr_db: float | None = None,
                 sigma_rule: str = "equal_snr") -> None:
        super().__init__()
        if kind not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
        if kind == "quantize" and (not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8):
            raise ValueError(f"quantize needs bits as an integer in 1..8, got {bits!r}")
        if kind == "gaussian" and snr_db is None:
            raise ValueError("gaussian noise needs snr_db (the target SNR in dB)")
        if sigma_rule not in SIGMA_RULES:
            raise ValueError(f"unknown sigma_rule {sigma_rule!r}; choose one of {', '.join(SIGMA_RULES)}")
        self.kind, self.bits, self.snr_db, self.sigma_rule = kind, bits, snr_db, sigma_rule

    def forward(self, logits: Tensor) -> Tensor:
        if self.kind == "none":
            return logits
        # The noise runs in fp32 whatever the autocast context, so that quantization levels and SNRs are exact.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            clean = logits.float()
            with torch.no_grad():
                corrupted = NOISE_KINDS[self.kind](clean, self)
            # Straight-through: forward value of the corrupted logits, gradient of the identity.
            return clean + (corrupted - clean).detach()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, bits={self.bits}, snr_db={self.snr_db}, sigma_rule={self.sigma_rule!r}"
