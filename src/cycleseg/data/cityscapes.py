"""Cityscapes-layout reader and label tables (SPEC "Data").

Layout: ROOT/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png and
        ROOT/gtFine/<split>/<city>/<name>_gtFine_labelIds.png (the test split has no labels).
labelIds map to trainIds with the official table of `cityscapesscripts`; ids whose trainId is 255 (or -1)
become the background class 19, so there are S = 20 classes. Images are resized bilinearly and scaled to
[-1, 1]; labels are resized by nearest neighbour.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from cycleseg.data.classes import ClassTable
from cycleseg.errors import DataError

__all__ = [
    "BACKGROUND",
    "CITYSCAPES",
    "CLASS_NAMES",
    "IGNORE_TRAIN_ID",
    "IMAGE_SUFFIX",
    "LABEL_ID_TO_TRAIN_ID",
    "LABEL_SUFFIX",
    "MAX_IMAGE_PIXELS",
    "NUM_CLASSES",
    "NUM_EVAL_CLASSES",
    "PALETTE",
    "SPLITS",
    "TRAIN_ID_TO_LABEL_ID",
    "Sample",
    "colorize",
    "image_to_tensor",
    "label_ids_to_train_ids",
    "load_image",
    "load_label",
    "open_image",
    "open_image_header",
    "read_image",
    "read_label",
    "too_large",
]

NUM_CLASSES = 20  # S: the 19 Cityscapes trainIds and the background class
NUM_EVAL_CLASSES = 19  # mIoU is over the 19 Cityscapes classes; background is not evaluated
BACKGROUND = 19
IGNORE_TRAIN_ID = 255
SPLITS = ("train", "val", "test")
# The largest image cycleseg decodes: 150 Mpx, 3x a 50 Mpx camera's photo, 70x a Cityscapes frame (2048x1024);
# 450 MB as RGB. Anything larger (a small PNG can claim 30000x30000) is refused from its header.
MAX_IMAGE_PIXELS = 150_000_000
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

_train_labels = sorted((lab for lab in _CS_LABELS if 0 <= lab.trainId < IGNORE_TRAIN_ID), key=lambda lab: lab.trainId)
CLASS_NAMES: tuple[str, ...] = tuple(lab.name for lab in _train_labels) + ("background",)
PALETTE = np.array([lab.color for lab in _train_labels] + [(0, 0, 0)], dtype=np.uint8)  # (20, 3)
TRAIN_ID_TO_LABEL_ID = np.array([lab.id for lab in _train_labels] + [0], dtype=np.int64)  # (20,)

# (256,) lookup labelId -> trainId; -1 marks values that are not Cityscapes labelIds.
LABEL_ID_TO_TRAIN_ID = np.full(256, -1, dtype=np.int64)
for _lab in _CS_LABELS:
    if 0 <= _lab.id < 256:
        LABEL_ID_TO_TRAIN_ID[_lab.id] = _lab.trainId if 0 <= _lab.trainId < IGNORE_TRAIN_ID else BACKGROUND

# The same tables as a ClassTable (classes.py), which folder datasets define in their classes.yaml. Each class
# lists its labelIds, the first being TRAIN_ID_TO_LABEL_ID's (background: 0, "unlabeled").
CITYSCAPES = ClassTable(
    names=CLASS_NAMES, colors=tuple(tuple(int(v) for v in c) for c in PALETTE),
    values=tuple((int(TRAIN_ID_TO_LABEL_ID[c]),) + tuple(i for i in np.flatnonzero(LABEL_ID_TO_TRAIN_ID == c).tolist()
                                                          if i != TRAIN_ID_TO_LABEL_ID[c]) for c in range(NUM_CLASSES)),
    num_evaluated=NUM_EVAL_CLASSES, source="the Cityscapes labels of cityscapesscripts")


def label_ids_to_train_ids(label_ids: np.ndarray, source: str = "<array>") -> np.ndarray:
    """(H, W) uint8 Cityscapes labelIds -> (H, W) int64 trainIds in 0..19 (background 19)."""
    train_ids = LABEL_ID_TO_TRAIN_ID[label_ids]
    if (train_ids < 0).any():
        unknown = sorted(set(np.unique(label_ids[train_ids < 0]).tolist()))
        raise DataError(f"{source}: unknown Cityscapes labelIds {unknown[:10]}; labels must be "
                        "*_gtFine_labelIds.png files with ids 0..33")
    return train_ids


@dataclass(frozen=True)
class Sample:
    """One image of a split and its label file (None for the test split)."""

    image_path: Path
    label_path: Path | None
    city: str
    name: str


def open_image(path: Path) -> Image.Image:
    """An image file opened and decoded; DataError naming it when it is unreadable, corrupt or larger than
    MAX_IMAGE_PIXELS (checked from the header, before anything is decoded)."""
    image = open_image_header(path)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as e:
        image.close()
        raise DataError(f"{path}: unreadable or corrupt image ({type(e).__name__}); replace the file") from None
    return image


def open_image_header(path: Path) -> Image.Image:
    """An image file opened lazily (its header read: size, mode, format; close it, or use it in `with`);
    DataError naming it when it is no image or larger than MAX_IMAGE_PIXELS."""
    try:
        with warnings.catch_warnings():  # Pillow warns above 89 Mpx; MAX_IMAGE_PIXELS decides here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError:  # Pillow's own hard limit, twice its warning size
        raise DataError(f"{path}: {too_large(None)}") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable or corrupt image ({type(e).__name__}); replace the file") from None
    if image.width * image.height > MAX_IMAGE_PIXELS:
        size = image.size
        image.close()
        raise DataError(f"{path}: {too_large(size)}")
    return image


def too_large(size: tuple[int, int] | None) -> str:
    """Why an image of `size` (W, H; None: over Pillow's own limit) is refused, and the fix."""
    what = f"{size[0]}x{size[1]} pixels" if size else f"over {2 * (Image.MAX_IMAGE_PIXELS or 0) // 1_000_000} Mpx"
    return (f"image of {what}, more than the {MAX_IMAGE_PIXELS // 1_000_000} megapixels cycleseg reads "
            "(MAX_IMAGE_PIXELS: larger than any camera's photo, and decoding it could exhaust memory: a "
            "decompression bomb?); downscale it or remove it")


def read_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """RGB PNG or JPEG -> uint8 (H, W, 3), resized bilinearly to size = (H, W). What the cache (cache.py) stores."""
    image = open_image(Path(path)).convert("RGB")
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def image_to_tensor(array: np.ndarray) -> Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1]; the one conversion both the PNG and the cache path use.

    Scaled in NumPy, not torch: the same float32 operations and results, without torch's thread pool, which on
    a busy CPU made this 0.3 MB conversion take ~16 ms instead of ~0.2 ms (benchmarks/bench_data.py).
    """
    return torch.from_numpy(array.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).permute(2, 0, 1)


def load_image(path: str | Path, size: tuple[int, int]) -> Tensor:
    """RGB PNG -> float32 (3, H, W) in [-1, 1], resized bilinearly to size = (H, W)."""
    return image_to_tensor(read_image(path, size))


def read_label(path: str | Path, size: tuple[int, int], classes: ClassTable | None = None) -> np.ndarray:
    """Label PNG (mode L or P) -> uint8 class indices (H, W), resized by nearest neighbour to size = (H, W).

    classes: the dataset's table of label values (default: Cityscapes labelIds -> trainIds 0..19).
    """
    path = Path(path)
    label = open_image(path)
    if label.mode not in ("L", "P"):
        what = "labelIds PNG (mode L); use *_gtFine_labelIds.png, not *_color.png" if classes in (None, CITYSCAPES) \
            else "PNG of label values (mode L or P), not a colour image"
        raise DataError(f"{path}: label image has mode {label.mode}, expected a single-channel {what}")
    height, width = size
    if label.size != (width, height):
        label = label.resize((width, height), Image.NEAREST)
    values = np.asarray(label, dtype=np.uint8)
    if classes is None or classes is CITYSCAPES:
        return label_ids_to_train_ids(values, str(path)).astype(np.uint8)
    return classes.to_class_ids(values, str(path)).astype(np.uint8)


def load_label(path: str | Path, size: tuple[int, int], classes: ClassTable | None = None) -> Tensor:
    """Label PNG (mode L or P) -> int64 class indices (H, W), resized by nearest neighbour to size = (H, W)."""
    return torch.from_numpy(read_label(path, size, classes).astype(np.int64))


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """(H, W) trainIds 0..19 -> (H, W, 3) uint8 with the official Cityscapes colours (background black)."""
    return PALETTE[np.asarray(train_ids)]
