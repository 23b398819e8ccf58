"""Export the segmentation network G of a run to ONNX, checked against PyTorch with ONNX Runtime.

G alone is what a deployed segmenter runs: image (B, 3, H, W) in [-1, 1] -> logits (B, S, H, W). Batch,
height and width are dynamic axes (H and W multiples of 8, as ERFNet needs).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from cycleseg.errors import RunError
from cycleseg.runs import LAST, load_run

__all__ = ["check_onnx", "export_onnx"]

OPSET = 17


def export_onnx(run_dir: str | Path, out: str | Path, checkpoint: str = LAST, check: bool = True) -> dict[str, Any]:
    """Write G of `run_dir` to the ONNX file `out`; with `check`, compare it with PyTorch (see check_onnx)."""
    models, cfg = load_run(run_dir, torch.device("cpu"), checkpoint)
    G = models.G.eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 3, cfg.data.height, cfg.data.width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about G's input-shape checks: they hold for any input
        try:
            torch.onnx.export(G, (example,), str(out), input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                            "logits": {0: "batch", 2: "height", 3: "width"}},
                              opset_version=OPSET, dynamo=False)
        except OSError as e:
            raise RunError(f"{out}: could not write the ONNX file ({e.strerror or e})") from None
    result = {"onnx": str(out), "opset": OPSET, "input": ["batch", 3, "height", "width"],
              "num_classes": cfg.model.num_classes, "size": [cfg.data.height, cfg.data.width]}
    if check:
        result |= check_onnx(G, out, (cfg.data.height, cfg.data.width))
    return result


@torch.no_grad()
def check_onnx(G: torch.nn.Module, path: str | Path, size: tuple[int, int], batch: int = 2,
               seed: int = 0) -> dict[str, float]:
    """Max absolute difference of the logits of ONNX Runtime and PyTorch on random images (B, 3, H, W)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RunError("onnxruntime is not installed; pip install onnxruntime (or pass --no-check)") from None
    x = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = G.eval()(x)
    theirs = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    return {"max_abs_diff": (ours - theirs).abs().max().item(),
            "argmax_agreement": (ours.argmax(1) == theirs.argmax(1)).double().mean().item()}
