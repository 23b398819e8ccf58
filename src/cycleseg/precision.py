"""Speed options of training and inference: mixed precision, memory format, optimizer kernels, compilation.

The networks run under autocast (bf16, or fp16 with a gradient scaler); the noise injection and the losses
see fp32 tensors (Models casts network outputs to fp32), so eqs. 1-13 keep their fp32 numerics. `fp32`
turns every option off the paper's way and is what the correctness tests use.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from cycleseg.errors import ConfigError

__all__ = ["FP32", "PRECISIONS", "Precision", "make_adam", "resolve_precision", "to_memory_format"]

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass
class Precision:
    """Autocast dtype (None: fp32) for one device type, and one gradient scaler per optimizer for fp16."""

    device_type: str = "cpu"
    dtype: torch.dtype | None = None
    scalers: dict[int, torch.amp.GradScaler] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def uses_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self, optimizer: torch.optim.Optimizer) -> torch.amp.GradScaler:
        key = id(optimizer)
        if key not in self.scalers:
            self.scalers[key] = torch.amp.GradScaler(self.device_type)
        return self.scalers[key]


FP32 = Precision()


def resolve_precision(name: str, device: torch.device) -> Precision:
    """"auto": bf16 on GPUs that support it (fp16 with a scaler on older ones), fp32 on the CPU.

    On the CPU bf16 is an explicit choice (train.precision=bf16): about twice as fast where the CPU has
    AVX512-BF16 or AMX (benchmarks/bench_train.py), but it changes the numbers of short CPU runs, such as the
    demo and the tests, which should stay those of the reference.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            name = "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    return Precision(device.type, dtype)


def to_memory_format(x: Tensor, channels_last: bool) -> Tensor:
    """(B, C, H, W) in channels_last (NHWC) layout when asked: oneDNN and cuDNN convolutions prefer it."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def make_adam(params: list[nn.Parameter], lr: float, betas: tuple[float, float], kernel: str,
              device: torch.device) -> torch.optim.Adam:
    """Adam with the chosen kernel: "fused" (one kernel for all tensors), "foreach" (batched), "loop"
    (one tensor at a time, torch's reference), or "auto" (fused where supported, CUDA and CPU)."""
    if kernel == "auto":
        kernel = "fused" if device.type in ("cuda", "cpu") else "foreach"
    options = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}
    if kernel not in options:
        raise ConfigError(f"optim.kernel must be auto, fused, foreach or loop, got {kernel!r}")
    return torch.optim.Adam(params, lr=lr, betas=betas, **options[kernel])
