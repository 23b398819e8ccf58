"""The framework's networks as one module: G, and for the cycle model F, D_X and the noise injection.

`Models` is what a checkpoint stores and what training and evaluation run; it holds no loss and no loop.
Plain torch, no I/O.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_
from torch import Tensor, nn

from cycleseg.config import ModelConfig, NoiseConfig
from cycleseg.errors import ConfigError, RunError
from cycleseg.networks import PatchDiscriminator, image_generator, init_weights, segmentation_generator
from cycleseg.noise import NoiseInjection

__all__ = ["Models", "build_models", "one_hot", "resolve_device"]


class Models(nn.Module):
    """G (image -> logits); for kind "cyclegan" also F (segmentation -> image), D_X and the noise injection.

    Attributes:
        G: ERFNet, (B, 3, H, W) -> (B, S, H, W).
        F: ERFNet with tanh, (B, S, H, W) -> (B, 3, H, W); None for the plain ERFNet.
        D: PatchGAN, (B, 3, H, W) -> (B, 1, H/8 - 2, W/8 - 2); None for the plain ERFNet.
        noise: NoiseInjection applied to G's logits before F (forward cycle only).
    """

    def __init__(self, model: ModelConfig, noise: NoiseConfig) -> None:
        super().__init__()
        self.kind, self.num_classes = model.kind, model.num_classes
        if isinstance(noise.snr_db, str):
            raise ConfigError(f"noise.snr_db {noise.snr_db!r} is not resolved to a number; run through `cycleseg "
                              "train` or `cycleseg sweep`, which read that run's measured SNR (cycleseg calibrate)")
        self.G = segmentation_generator(model.num_classes)
        self.noise = NoiseInjection(noise.kind, bits=noise.bits, snr_db=noise.snr_db, sigma_rule=noise.sigma_rule)
        self.F = image_generator(model.num_classes) if model.kind == "cyclegan" else None
        self.D = PatchDiscriminator() if model.kind == "cyclegan" else None

    @property
    def is_cycle(self) -> bool:
        return self.F is not None

    def forward_cycle(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x -> logits = G(x) -> noisy = noise(logits) -> x_rec = F(noisy); returns (logits, noisy, x_rec).

        Network outputs are cast to fp32 (a no-op without autocast): the noise and the losses stay fp32.
        """
        logits = self.G(image).float()
        noisy = self.noise(logits)
        return logits, noisy, self.F(noisy).float()

    def backward_cycle(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """y -> x_fake = F(one_hot(y)) -> logits_rec = G(x_fake); returns (x_fake, logits_rec)."""
        fake = self.F(one_hot(labels, self.num_classes)).float()
        return fake, self.G(fake).float()


def build_models(model: ModelConfig, noise: NoiseConfig) -> Models:
    """Models with the paper's initialisation (N(0, 0.02) weights, SPEC "Init")."""
    return init_weights(Models(model, noise))


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """(B, H, W) int64 class indices -> (B, S, H, W) float one-hot, the ground truth y_bar fed to F."""
    return F_.one_hot(labels.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).float()


def resolve_device(name: str) -> torch.device:
    """"auto" -> the first CUDA GPU if there is one, else the CPU; "cpu", "cuda", "cuda:N" as given.

    Any other name is a ConfigError listing the accepted ones (the --device flags reach here unchecked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (name in ("cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ConfigError(f"device {name!r} is not known; use auto, cpu, cuda or cuda:N (e.g. --device cpu or "
                          "train.device=cpu)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device {name!r} requested but no CUDA GPU is available; use --device cpu (train.device=cpu)")
    return torch.device(name)
