"""The framework's networks as one module: G, and for the cycle model F, D_X and the noise injection.

`Models` is what a checkpoint stores and what training and evaluation run; it holds no loss and no loop.
Plain torch, no I/O.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_
from torch import Tensor, nn

from cycleseg.config import ModelConfig, NoiseConfig
from cycleseg.core.networks import PatchDiscriminator, image_generator, init_weights, segmentation_generator
from cycleseg.core.noise import NoiseInjection
from cycleseg.errors import ConfigError, RunError

__all__ = ["Models", "build_models", "noise_injection", "one_hot", "resolve_device"]


DEFAULT_NUM_CLASSES = 20  # the paper's S (19 Cityscapes classes + background)


class Models(nn.Module):
    """G (image -> logits); for kind "cyclegan" also F (segmentation -> image), D_X and the noise injection.

    Attributes:
        G: ERFNet (or model.arch's generator), (B, 3, H, W) -> (B, S, H, W).
        F: ERFNet (or model.arch's) with tanh, (B, S, H, W) -> (B, 3, H, W); None for the plain ERFNet.
        D: PatchGAN, (B, 3, H, W) -> (B, 1, H/8 - 2, W/8 - 2); None for the plain ERFNet.
        noise: NoiseInjection applied to G's logits before F (forward cycle only).
        D_Y: PatchGAN on segmentations, (B, S, H, W) -> (B, 1, H/8 - 2, W/8 - 2): softmax(G(x)) of unlabelled
            images against one-hot label maps; only in a semi-supervised run with loss.adv_y > 0 (build_models),
            else None, so that every other run has the state_dict keys it always had.
    """

    def __init__(self, model: ModelConfig, noise: NoiseConfig) -> None:
        super().__init__()
        # null num_classes is "from the data" (data.resolve_classes sets it before training); without data at
        # hand, the paper's S
        self.kind, self.num_classes = model.kind, model.num_classes or DEFAULT_NUM_CLASSES
        self.f_input = model.f_input
        if isinstance(noise.snr_db, str):
            raise ConfigError(f"noise.snr_db {noise.snr_db!r} is not resolved to a number; run through `cycleseg "
                              "train` or `cycleseg sweep`, which read that run's measured SNR (cycleseg calibrate)")
        self.G = segmentation_generator(self.num_classes, model.arch)
        self.noise = noise_injection(noise)
        self.F = image_generator(self.num_classes, model.arch) if model.kind == "cyclegan" else None
        self.D = PatchDiscriminator() if model.kind == "cyclegan" else None
        self.D_Y: PatchDiscriminator | None = None  # build_models(..., d_y=True) adds it

    @property
    def is_cycle(self) -> bool:
        return self.F is not None

    def forward_cycle(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x -> logits = G(x) -> noisy = noise(logits) -> x_rec = F(noisy) (F(softmax(noisy)) with
        model.f_input=softmax); returns (logits, noisy, x_rec).

        Network outputs are cast to fp32 (a no-op without autocast): the noise and the losses stay fp32.
        """
        logits = self.G(image).float()
        noisy = self.noise(logits)
        return logits, noisy, self.F(self.to_f_input(noisy)).float()

    def to_f_input(self, noisy: Tensor) -> Tensor:
        """What F reads of the noise injection's output (B, S, H, W): itself, or its softmax over the S classes."""
        return torch.softmax(noisy, dim=1) if self.f_input == "softmax" else noisy

    def backward_cycle(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """y -> x_fake = F(one_hot(y)) -> logits_rec = G(x_fake); returns (x_fake, logits_rec)."""
        fake = self.F(one_hot(labels, self.num_classes)).float()
        return fake, self.G(fake).float()


def noise_injection(noise: NoiseConfig) -> NoiseInjection:
    """The noise injection block of a config's noise section (snr_db resolved to a number)."""
    return NoiseInjection(noise.kind, bits=noise.bits, snr_db=noise.snr_db, sigma_rule=noise.sigma_rule,
                          scale=noise.scale, scale_rms=noise.scale_rms, ste=noise.ste)


def build_models(model: ModelConfig, noise: NoiseConfig, d_y: bool = False) -> Models:
    """Models with the paper's initialisation (N(0, 0.02) weights, SPEC "Init"); with `d_y` (a semi-supervised
    cycle model, config.uses_d_y) also D_Y, a PatchGAN on S channels.

    D_Y is made and initialised after the others, so that G, F and D_X start from the weights that a run without
    D_Y gets from the same seed.
    """
    models = init_weights(Models(model, noise))
    if d_y:
        if not models.is_cycle:
            raise ConfigError("D_Y belongs to a semi-supervised cycle model; the plain ERFNet has none")
        models.D_Y = init_weights(PatchDiscriminator(in_chans=models.num_classes))
    return models


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """(B, H, W) int64 class indices -> (B, S, H, W) float one-hot, the ground truth y_bar fed to F."""
    return F_.one_hot(labels.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).float()


def resolve_device(name: str, setting: str = "--device") -> torch.device:
    """"auto" -> the first CUDA GPU if there is one, else the CPU; "cpu", "cuda", "cuda:N" as given.

    Any other name is a ConfigError listing the accepted ones (the --device flags reach here unchecked). `setting`
    is where the name came from, for the fix the errors suggest: "--device" (evaluate and the other commands on a
    run) or "train.device" (train has no --device, its config key says)."""
    fix = f"{setting}=cpu" if "." in setting else f"{setting} cpu"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (name in ("cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ConfigError(f"device {name!r} is not known; use auto, cpu, cuda or cuda:N (e.g. {fix})")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device {name!r} requested but no CUDA GPU is available; use {fix} (or auto)")
    return torch.device(name)
