"""Export the segmentation network G of a run to ONNX, checked against PyTorch with ONNX Runtime.

G alone is what a deployed segmenter runs: image (B, 3, H, W) in [-1, 1] -> logits (B, S, H, W). Batch,
height and width are dynamic axes (H and W multiples of 8, as ERFNet needs).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch

from cycleseg.errors import RunError
from cycleseg.runs import LAST, atomic_write, inside_run, load_run, seeded_inference, writes_into_run

__all__ = ["check_onnx", "export_onnx"]

OPSET = 17


@writes_into_run(lambda a: inside_run(a["out"], a["run_dir"]))
def export_onnx(run_dir: str | Path, out: str | Path, checkpoint: str = LAST, check: bool = True) -> dict[str, Any]:
    """Write G of `run_dir` to the ONNX file `out` (its folder created); with `check`, compare it with PyTorch
    (see check_onnx). RunError, one line, when the [onnx] extra is missing or `out` cannot be written."""
    _require_onnx(check)
    out = Path(out)
    _check_destination(out)
    models, cfg = load_run(run_dir, torch.device("cpu"), checkpoint)
    G = models.G.eval()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"{out.parent}: cannot create the folder ({e.strerror or e}); choose another --onnx path") \
            from None
    example = torch.zeros(1, 3, cfg.data.height, cfg.data.width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about G's input-shape checks: they hold for any input
        buffer = io.BytesIO()  # written whole, then atomically: a crash never leaves half a model file
        torch.onnx.export(G, (example,), buffer, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                        "logits": {0: "batch", 2: "height", 3: "width"}},
                          opset_version=OPSET, dynamo=False)
    atomic_write(out, buffer.getvalue())
    result = {"onnx": str(out), "opset": OPSET, "input": ["batch", 3, "height", "width"],
              "num_classes": cfg.model.num_classes, "size": [cfg.data.height, cfg.data.width]}
    if check:
        result |= check_onnx(G, out, (cfg.data.height, cfg.data.width))
    return result


def _require_onnx(check: bool) -> None:
    """RunError, before any work, when a package of the [onnx] extra is missing."""
    names = ("onnx", "onnxruntime") if check else ("onnx",)
    missing = []
    for name in names:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise RunError(f"{' and '.join(missing)} not installed; ONNX export needs the [onnx] extra: "
                       "pip install 'cycleseg[onnx]'")


def _check_destination(out: Path) -> None:
    """RunError naming the path when `out` is a folder or a folder above it is a file."""
    if out.is_dir():
        raise RunError(f"{out}: is a folder; --onnx takes a file name, e.g. {out / 'g.onnx'}")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunError(f"{parent}: is a file, not a folder; choose an --onnx path outside it")
            return


def check_onnx(G: torch.nn.Module, path: str | Path, size: tuple[int, int], batch: int = 2,
               seed: int = 0) -> dict[str, float]:
    """Max absolute difference of the logits of ONNX Runtime and PyTorch on random images (B, 3, H, W)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RunError("onnxruntime not installed; pip install 'cycleseg[onnx]' (or pass --no-check)") from None
    x = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with seeded_inference(G, seed):  # eval mode and no autograd; G's own mode is restored after
        ours = G(x)
    theirs = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    return {"max_abs_diff": (ours - theirs).abs().max().item(),
            "argmax_agreement": (ours.argmax(1) == theirs.argmax(1)).double().mean().item()}
