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

__all__ = ["FP32", "PRECISIONS", "PRECISION_DTYPES", "Precision", "make_adam", "native_bf16_cpu", "precision_reason", "resolve_precision", "to_memory_format"]

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
PRECISION_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtype; None: off


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


def native_bf16_cpu(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast about halves a
    training step; elsewhere bf16 is emulated and slower than fp32."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> Precision:
    """"auto": bf16 on GPUs that support it (fp16 with a scaler on older ones) and on CPUs with native bf16
    (AVX512-BF16 or AMX: about 2x faster, benchmarks/bench_train.py), fp32 on other CPUs.

    `train` checks the choice on its first batch (steps.bf16_agrees) and falls back to fp32 when bf16's loss
    terms differ from fp32's by more than the precision tests allow. `fp32` gives the reference numerics.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            name = "bf16" if native_bf16_cpu() else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    return Precision(device.type, PRECISION_DTYPES[name])


def precision_reason(requested: str, amp: Precision) -> str:
    """Why `requested` (train.precision) became `amp` on this machine, in words for the log and run.json."""
    if requested != "auto":
        return f"train.precision={requested}"
    if amp.device_type == "cuda":
        return f"auto: {amp.name} on this GPU"
    if amp.name == "bf16":
        return "auto: this CPU computes bf16 natively (AVX512-BF16 or AMX), about 2x faster than fp32"
    return "auto: this CPU has no native bf16, where fp32 is faster"


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
