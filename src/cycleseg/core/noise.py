"""Noise injection into the latent segmentation space (paper Section 3.2, SPEC "Noise injections").

Every kind corrupts G's logits (B, S, H, W) before F sees them, in the forward cycle only, and passes the
gradient straight through (d noisy / d logits = identity): for max-only and quantization that is the
straight-through estimator of the paper; for Gaussian noise it is exact, since sigma is a constant.

Two options serve the quantizer only (SPEC "The quantizer's input scale"). The paper's SNRs for 1 to 4 bits
(-0.55 / 7.38 / 14.50 / 21.02 dB) are those of a uniform quantizer whose input stays inside [-1, 1] with an RMS
of about 0.44, which logits trained with cross entropy never do. `scale="rms"` divides each image's logits by
s = RMS(logits) / r before the quantizer and multiplies by s after it (s detached), the reading that reproduces
those SNRs; `scale="none"` is eq. 9 as written. `ste="clipped"` passes the gradient only where the quantizer's
input lies inside [-1, 1] (a clipped value does not change F's input, so the identity estimator would push it
further out); `ste="identity"` is the paper's estimator. Plain torch, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from cycleseg.core.metrics import snr_db

__all__ = [
    "DEFAULT_SCALE_RMS",
    "NOISE_KINDS",
    "PAPER_QUANTIZER_SNR_DB",
    "SCALES",
    "SIGMA_RULES",
    "STES",
    "NoiseInjection",
    "clip_share",
    "gaussian_sigma",
    "max_only",
    "quantize",
    "register_noise",
    "rms_scale",
    "snr_db",
]

# name -> function (logits, injection) -> corrupted values; registered below, listed by `cycleseg --help`.
NOISE_KINDS: dict[str, Callable[[Tensor, NoiseInjection], Tensor]] = {}
SIGMA_RULES = ("equal_snr", "paper_eq13")
SCALES = ("none", "rms")  # the quantizer's input: eq. 9 as written | each image scaled to RMS r first
STES = ("identity", "clipped")  # the quantizer's gradient: everywhere | only inside [-1, 1]
# r of scale "rms": a uniform quantizer on [-1, 1] adds noise of power step^2 / 12, and the paper's SNRs put the
# signal 7.38 / 14.50 / 21.02 dB above it for 2 / 3 / 4 bits: an input RMS of 0.450 / 0.438 / 0.433
DEFAULT_SCALE_RMS = 0.44
PAPER_QUANTIZER_SNR_DB = {1: -0.55, 2: 7.38, 3: 14.50, 4: 21.02}  # Table 2's measured SNR of each bit depth


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


def rms_scale(logits: Tensor, target_rms: float) -> Tensor:
    """s = RMS(logits of each image) / target_rms, shape (B, 1, 1, 1), so that logits / s has RMS target_rms.

    Detached: the scale is a constant for the gradient. An all-zero image gets s = 1 (nothing to scale)."""
    rms = logits.detach().double().pow(2).flatten(1).mean(dim=1).sqrt()
    s = torch.where(rms > 0, rms / target_rms, torch.ones_like(rms))
    return s.to(logits.dtype).view(-1, 1, 1, 1)


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
    s = inj.input_scale(logits)
    return s * quantize(logits / s, inj.bits)


@register_noise("gaussian")
def _gaussian(logits: Tensor, inj: NoiseInjection) -> Tensor:
    # Fresh noise on every call, as in training; the caller seeds torch for reproducible evaluation.
    return logits + gaussian_sigma(logits, inj.snr_db, inj.sigma_rule) * torch.randn_like(logits)


def clip_share(logits: Tensor, inj: NoiseInjection) -> Tensor | None:
    """Per image (B,), the share of the quantizer's input values beyond +-1 (clipped by eq. 9); None for a noise
    that is not a quantizer."""
    if inj.kind != "quantize":
        return None
    x = logits.detach().float() / inj.input_scale(logits.detach().float())
    return (x.abs() > 1.0).flatten(1).float().mean(dim=1)


class NoiseInjection(nn.Module):
    """The noise injection block of Fig. 2: logits (B, S, H, W) -> noisy logits (B, S, H, W).

    Args:
        kind: one of NOISE_KINDS: "none", "max_only", "quantize", "gaussian".
        bits: quantizer resolution n in 1..8 (kind "quantize" only).
        snr_db: target SNR in dB (kind "gaussian" only).
        sigma_rule: "equal_snr" or "paper_eq13" (kind "gaussian" only), see `gaussian_sigma`.
        scale: "none" (eq. 9 as written) or "rms": noisy = s Q(logits / s), s = `rms_scale(logits, scale_rms)`
            (kind "quantize" only).
        scale_rms: r, the RMS of the quantizer's input under scale "rms".
        ste: "identity" (the paper's straight-through estimator) or "clipped": gradient 1 where the quantizer's
            input lies in [-1, 1], 0 beyond (kind "quantize" only).
    """

    def __init__(self, kind: str = "none", bits: int | None = None, snr_db: float | None = None,
                 sigma_rule: str = "equal_snr", scale: str = "none", scale_rms: float = DEFAULT_SCALE_RMS,
                 ste: str = "identity") -> None:
        super().__init__()
        if kind not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
        if kind == "quantize" and (not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8):
            raise ValueError(f"quantize needs bits as an integer in 1..8, got {bits!r}")
        if kind == "gaussian" and snr_db is None:
            raise ValueError("gaussian noise needs snr_db (the target SNR in dB)")
        if sigma_rule not in SIGMA_RULES:
            raise ValueError(f"unknown sigma_rule {sigma_rule!r}; choose one of {', '.join(SIGMA_RULES)}")
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
        if ste not in STES:
            raise ValueError(f"unknown ste {ste!r}; choose one of {', '.join(STES)}")
        if not (isinstance(scale_rms, (int, float)) and math.isfinite(scale_rms) and scale_rms > 0):
            raise ValueError(f"scale_rms must be a finite number > 0, got {scale_rms!r}")
        if kind != "quantize" and (scale != "none" or ste != "identity"):
            raise ValueError(f"scale and ste belong to the quantizer; noise kind {kind!r} takes neither")
        self.kind, self.bits, self.snr_db, self.sigma_rule = kind, bits, snr_db, sigma_rule
        self.scale, self.scale_rms, self.ste = scale, float(scale_rms), ste

    def input_scale(self, logits: Tensor) -> Tensor:
        """s of noisy = s Q(logits / s): `rms_scale` under scale "rms", else 1. (B, 1, 1, 1) or a scalar."""
        return rms_scale(logits, self.scale_rms) if self.scale == "rms" else logits.new_ones(())

    def forward(self, logits: Tensor) -> Tensor:
        if self.kind == "none":
            return logits
        # The noise runs in fp32 whatever the autocast context, so that quantization levels and SNRs are exact.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            clean = logits.float()
            with torch.no_grad():
                corrupted = NOISE_KINDS[self.kind](clean, self)
            if self.ste == "clipped":  # gradient 1 inside the codebook's range, 0 where the quantizer clips
                clean = clean * (clean / self.input_scale(clean)).abs().le(1.0)
            # Straight-through: forward value of the corrupted logits, gradient of the identity (or its clipped form).
            return clean + (corrupted - clean).detach()

    def extra_repr(self) -> str:
        text = f"kind={self.kind!r}, bits={self.bits}, snr_db={self.snr_db}, sigma_rule={self.sigma_rule!r}"
        if self.kind == "quantize":
            text += f", scale={self.scale!r}, scale_rms={self.scale_rms}, ste={self.ste!r}"
        return text
