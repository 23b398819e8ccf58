"""Data: the Cityscapes tables and reader, the prepared cache, the checks, the synthetic city.

`open_split(cfg, split)` is the one way every command opens a split of a run's data, so that the cache
(`data.cache`, `data.cache_dir`) and the image limits behave alike in train, evaluate, calibrate, diagnose,
predict and report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch.utils.data import Dataset, Subset

from cycleseg.data.cityscapes import (
    BACKGROUND,
    CLASS_NAMES,
    IGNORE_TRAIN_ID,
    IMAGE_SUFFIX,
    LABEL_ID_TO_TRAIN_ID,
    LABEL_SUFFIX,
    NUM_CLASSES,
    NUM_EVAL_CLASSES,
    PALETTE,
    SPLITS,
    TRAIN_ID_TO_LABEL_ID,
    CityscapesDataset,
    Sample,
    colorize,
    image_to_tensor,
    label_ids_to_train_ids,
    list_samples,
    load_image,
    load_label,
    read_image,
    read_label,
)

if TYPE_CHECKING:
    from cycleseg.config import Config

__all__ = [
    "BACKGROUND", "CLASS_NAMES", "IGNORE_TRAIN_ID", "IMAGE_SUFFIX", "LABEL_ID_TO_TRAIN_ID", "LABEL_SUFFIX",
    "NUM_CLASSES", "NUM_EVAL_CLASSES", "PALETTE", "SPLITS", "TRAIN_ID_TO_LABEL_ID", "CityscapesDataset", "Sample",
    "colorize", "image_to_tensor", "label_ids_to_train_ids", "list_samples", "load_image", "load_label",
    "open_split", "read_image", "read_label",
]


def open_split(cfg: Config, split: str, root: str | Path | None = None, progress: bool = False) -> Dataset:
    """`split` of the run's data at its training size: from `cycleseg prepare`'s cache when there is one
    (data.cache: auto / require / off), else from the PNGs; the first data.max_{train,val}_images only.

    `root` reads another copy of the data (evaluate --data); the run's data.cache_dir is then used only when
    it is the folder the run was trained on, since a cache belongs to one data folder.
    """
    from cycleseg.data.cache import open_dataset  # the cache needs hashing and numpy memory maps: load on use

    root = Path(root if root is not None else cfg.data.root)
    same_root = root.resolve() == Path(cfg.data.root).resolve()
    dataset = open_dataset(root, split, (cfg.data.height, cfg.data.width), cfg.data.cache,
                           cfg.data.cache_dir if same_root else None, progress=progress)
    limit = {"train": cfg.data.max_train_images, "val": cfg.data.max_val_images}.get(split)
    return Subset(dataset, range(limit)) if limit is not None and limit < len(dataset) else dataset
