"""What the commands share to present results: numbers as text, a run's noise label, the IoU results of a
confusion matrix, and the figure helpers (a bare Agg figure, atomic PNG saving, images as RGB).

Light on purpose: `cycleseg table` imports it, so nothing heavy is imported at module level; torch, the
data tables, matplotlib and the run layer are imported by the functions that use them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure
    from torch import Tensor

    from cycleseg.config import Config
    from cycleseg.data.classes import ClassTable

__all__ = ["DPI", "figure", "finite_or_none", "fmt", "iou_results", "noise_label", "quantizer_reading", "save_figure",
           "to_rgb"]

DPI = 110  # every PNG figure of diagnose and report


# ------------------------------------------------------------------------------------------------ numbers

def fmt(value: float | None, digits: int, sign: bool = False, missing: str = "-") -> str:
    """`value` with `digits` decimals (and a + or - with `sign`); `missing` for None, NaN and infinities."""
    if value is None or not math.isfinite(value):
        return missing
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def finite_or_none(value: float) -> float | None:
    """`value`, or None where it is NaN or infinite (JSON has neither; results write None)."""
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------------------------- labels

def quantizer_reading(config: Mapping[str, Any]) -> str:
    """", scaled", ", clipped STE", both, or "": how a quantizer run reads eq. 9 (noise.scale rms, noise.ste
    clipped) when not as written; "" for every other run. `config`: a run's config as a dict."""
    noise = config.get("noise") or {}
    if noise.get("kind") != "quantize":
        return ""
    extras = [*(["scaled"] if noise.get("scale", "none") != "none" else []),
              *(["clipped STE"] if noise.get("ste", "identity") != "identity" else [])]
    return "".join(f", {e}" for e in extras)


def noise_label(config: Mapping[str, Any] | Config) -> str:
    """How tables, titles and reports name a run: "plain ERFNet", "no noise", "max-only", "quantize 2 bit",
    "quantize 2 bit, scaled, clipped STE" (noise.scale rms, noise.ste clipped), "Gaussian 7.38 dB", "Gaussian 7.38 dB (paper_eq13)" (a sigma rule other than equal_snr).

    `config`: a Config, or a config as a dict (config.yaml of a run).
    """
    if not isinstance(config, Mapping):
        config = config.to_dict()
    model, noise = config.get("model") or {}, config.get("noise") or {}
    if model.get("kind") == "plain":
        return "plain ERFNet"
    kind = noise.get("kind", "none")
    if kind == "quantize":
        return f"quantize {noise.get('bits')} bit" + quantizer_reading(config)
    if kind == "gaussian":
        snr = noise.get("snr_db")
        snr = f"{float(snr):g}" if isinstance(snr, (int, float)) else str(snr)  # "from RUN_DIR" before training
        rule = noise.get("sigma_rule", "equal_snr")
        return f"Gaussian {snr} dB" + ("" if rule == "equal_snr" else f" ({rule})")
    return {"none": "no noise", "max_only": "max-only"}.get(kind, kind)


# ---------------------------------------------------------------------------------------------------- IoU

def iou_results(conf: Tensor, classes: ClassTable | None = None) -> dict[str, Any]:
    """{"miou": %, "iou": {class name: %}} of an (S, S) confusion matrix (rows = ground truth).

    The one conversion of a confusion matrix into the reported IoUs: `metrics.class_iou` and `metrics.mean_iou`
    over the evaluated classes of `classes` (the dataset's table; default: Cityscapes' 19 classes when S = 20,
    else all S classes, named "class i"), in percent; None stands for NaN (a class absent from prediction and
    ground truth, or every class absent).
    """
    from cycleseg.core.metrics import class_iou, mean_iou
    from cycleseg.data.cityscapes import CITYSCAPES

    conf = conf.cpu()
    if classes is None and conf.shape[0] == CITYSCAPES.num_classes:
        classes = CITYSCAPES
    names = classes.names if classes is not None else [f"class {i}" for i in range(conf.shape[0])]
    n = classes.num_evaluated if classes is not None else conf.shape[0]
    return {
        "miou": finite_or_none(100 * mean_iou(conf, n)),
        "iou": {name: finite_or_none(100 * v) for name, v in zip(names, class_iou(conf, n).tolist())},
    }


# ------------------------------------------------------------------------------------------------ figures

def figure(width: float, height: float, layout: str | None = None) -> Figure:
    """A bare matplotlib Figure (inches) with an Agg canvas: no pyplot, no GUI backend, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write `fig` as a PNG, atomically (RunError naming the file when it cannot be written); returns the path."""
    from cycleseg.runs.files import atomic_write

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write(path, buffer.getvalue())
    return Path(path)


def to_rgb(images: Tensor) -> np.ndarray:
    """Images in [-1, 1], (3, H, W) or (B, 3, H, W) -> uint8 RGB (H, W, 3) or (B, H, W, 3), as a PNG stores them."""
    rgb = ((images.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return rgb.movedim(-3, -1).numpy()
