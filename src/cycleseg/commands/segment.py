"""A trained run as a segmenter of any photo: the Python API (`cycleseg.load`) and `cycleseg segment`.

    import cycleseg
    model = cycleseg.load("runs/demo/quant2")                      # last.pt; checkpoint="best" for best.pt
    labels = model.segment(Image.open("street.jpg"))              # (H, W) uint8 class indices, the photo's size
    colour = model.colorize(labels)                                # (H, W, 3) uint8, the dataset's colours
    x_rec = model.reconstruct(Image.open("street.jpg"))            # (H, W, 3) uint8: F(noise(G(x))), cycle runs

Any size and any RGB, grey or RGBA image (PIL image, or a uint8 array (H, W, 3) or (H, W)): it is resized to the
run's training size as the training images were (bilinear), G runs there, and its class scores are upsampled
bilinearly to the photo's own size before the argmax, as `cycleseg predict` does for the benchmark.

`cycleseg segment RUN_DIR IMAGES... --out OUT` writes, per image (files, or folders searched recursively):
OUT/labels/<name>.png (class indices' label values, mode L), OUT/color/<name>.png and OUT/overlay/<name>.jpg
(the colours over the photo); a folder's images keep their paths below it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F_
from PIL import Image
from tqdm import tqdm

from cycleseg.commands.session import open_model
from cycleseg.config import Config
from cycleseg.core.models import Models
from cycleseg.core.precision import resolve_precision, to_memory_format
from cycleseg.data import ClassTable, image_to_tensor
from cycleseg.data.cityscapes import open_image
from cycleseg.errors import DataError, RunError
from cycleseg.fileio import make_folder
from cycleseg.runs import BEST, LAST, atomic_write, seeded_inference, write_json
from cycleseg.runs.formats import to_rgb

__all__ = ["IMAGE_SUFFIXES", "Segmenter", "find_images", "load", "segment_files"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
CHECKPOINTS = {"best": BEST, "last": LAST}


class Segmenter:
    """A trained run, ready to segment images; made by `load`.

    Attributes:
        classes: the class table of the run's data (names, colours, label values).
        size: (H, W), the training size images are resized to before G.
        config: the run's config.
    """

    def __init__(self, models: Models, cfg: Config, classes: ClassTable, device: torch.device,
                 precision: str = "auto") -> None:
        self.models, self.config, self.classes, self.device = models, cfg, classes, device
        self.size = (cfg.data.height, cfg.data.width)
        self.amp = resolve_precision(precision, device)
        self.models.to(memory_format=torch.channels_last)

    def _input(self, image: Image.Image | np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """The image as G's (1, 3, H, W) input at the training size, and its own (H0, W0)."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
                raise DataError(f"image array of shape {image.shape} and dtype {image.dtype}: expected uint8 "
                                "(H, W, 3), (H, W, 4) or (H, W)")
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise DataError(f"expected a PIL image or a uint8 array, got {type(image).__name__}")
        rgb = image.convert("RGB")
        own = (rgb.height, rgb.width)
        height, width = self.size
        if own != self.size:
            rgb = rgb.resize((width, height), Image.BILINEAR)
        tensor = image_to_tensor(np.asarray(rgb, dtype=np.uint8))[None].to(self.device)
        return to_memory_format(tensor, True), own

    def scores(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """G's class scores (S, H0, W0) float32 at the image's own size (upsampled bilinearly)."""
        x, own = self._input(image)
        with seeded_inference(self.models, self.config.train.seed, self.device, self.amp):
            logits = self.models.G(x).float()
        return F_.interpolate(logits, size=own, mode="bilinear", align_corners=False)[0].cpu()

    def segment(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """(H0, W0) uint8 class indices 0..S-1 (names: `classes.names`) at the image's own size."""
        return self.scores(image).argmax(dim=0).to(torch.uint8).numpy()

    def reconstruct(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """x_rec = F(noise(G(x))) as uint8 RGB (H0, W0, 3), resized to the image's own size; cycle runs only."""
        if not self.models.is_cycle:
            raise RunError("reconstruct needs a cycle model (model.kind=cyclegan); this run is a plain ERFNet (no F)")
        x, (height, width) = self._input(image)
        with seeded_inference(self.models, self.config.train.seed, self.device, self.amp):
            _, _, reconstruction = self.models.forward_cycle(x)
        rgb = Image.fromarray(to_rgb(reconstruction.float()[0]))
        return np.asarray(rgb.resize((width, height), Image.BILINEAR) if rgb.size != (width, height) else rgb)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) class indices -> (H, W, 3) uint8 in the dataset's colours."""
        return self.classes.colorize(labels)

    def overlay(self, image: Image.Image | np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """The colours of `labels` blended over the photo: (H0, W0, 3) uint8."""
        photo = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else
                           Image.fromarray(image).convert("RGB"), dtype=np.float32)
        return (alpha * self.colorize(labels) + (1 - alpha) * photo).round().astype(np.uint8)


def load(run_dir: str | Path, checkpoint: str = "last", device: str = "auto", precision: str = "auto",
         trust: bool = False) -> Segmenter:
    """The trained model of `run_dir` as a Segmenter.

    checkpoint: "last" (last.pt, the weights at the end of training: the default of every command), "best"
        (best.pt, the best validation mIoU), or a file name in the run.
    precision: auto (bf16 where the CPU or GPU computes it natively), fp32 or bf16.
    trust: also read a checkpoint of cycleseg 0.1.0 (whose RNG state is pickled NumPy data; runs.load_checkpoint).
    """
    run_dir = Path(run_dir)
    name = CHECKPOINTS.get(checkpoint, checkpoint)
    if not (run_dir / name).is_file() and run_dir.is_dir():
        have = ", ".join(sorted(p.name for p in run_dir.glob("*.pt"))) or "none"
        raise RunError(f"{run_dir / name}: checkpoint not found (the run has: {have}); pass "
                       "checkpoint='last', 'best' or a file name it has")
    session = open_model(run_dir, device, name, precision, trust=trust)
    return Segmenter(session.models, session.config, session.classes, session.device, precision)


def find_images(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(image file, output name without suffix) for every input: a file, or each image under a folder
    (recursively; its path below the folder kept). DataError naming a missing input, an input folder without
    images, or two inputs that would write the same output."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"{item}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            found += [(p, p.relative_to(item).with_suffix("")) for p in files]
        elif item.is_file():
            found.append((item, Path(item.stem)))
        else:
            raise DataError(f"{item}: no such image file or folder")
    seen: dict[Path, Path] = {}
    for path, name in found:
        if name in seen:
            raise DataError(f"{path}: would overwrite the output of {seen[name]} (both are named {name}); segment "
                            "them into separate --out folders or rename one")
        seen[name] = path
    return found


def segment_files(segmenter: Segmenter, inputs: list[Path], out: Path, progress: bool = False,
                  reconstruction: bool = False) -> dict[str, object]:
    """`cycleseg segment`: labels, colour and overlay PNG/JPEGs of every input image under `out`."""
    images = find_images(inputs)
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a folder; choose another --out")
    if reconstruction and not segmenter.models.is_cycle:
        raise RunError("--reconstruction needs a cycle model; this run is a plain ERFNet (no F)")
    values = segmenter.classes.class_values
    for path, name in tqdm(images, desc="segment", unit="img", disable=not progress, dynamic_ncols=True):
        photo = open_image(path)
        labels = segmenter.segment(photo)
        _write(Image.fromarray(values[labels], "L"), out / "labels" / name.with_suffix(".png"), out)
        _write(Image.fromarray(segmenter.colorize(labels), "RGB"), out / "color" / name.with_suffix(".png"), out)
        _write(Image.fromarray(segmenter.overlay(photo, labels), "RGB"), out / "overlay" / name.with_suffix(".jpg"),
               out)
        if reconstruction:
            _write(Image.fromarray(segmenter.reconstruct(photo)), out / "reconstruction" / name.with_suffix(".png"),
                   out)
    summary = {"num_images": len(images), "classes": list(segmenter.classes.names),
               "size": f"{segmenter.size[1]}x{segmenter.size[0]}", "precision": segmenter.amp.name,
               "outputs": ["labels", "color", "overlay"] + (["reconstruction"] if reconstruction else [])}
    write_json(out / "segment.json", summary)
    return summary


def _write(image: Image.Image, path: Path, out: Path) -> None:
    """One output image, atomically; its folders below `out` made, never through a link planted there."""
    make_folder(path.parent, out)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if path.suffix == ".jpg" else "PNG", **({"quality": 92} if path.suffix == ".jpg"
                                                                              else {}))
    atomic_write(path, buffer.getvalue())

