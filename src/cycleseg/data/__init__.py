"""Data: dataset layouts and class tables, the Cityscapes reader, the prepared cache, the checks, the synthetic city.

`open_split(cfg, split)` is the one way every command opens a split of a run's data, so that the cache
(`data.cache`, `data.cache_dir`) and the image limits behave alike in train, evaluate, calibrate, diagnose,
predict and report. A command that opens several splits, or a split and the class table, opens the data once
(`source = open_source(root, fmt)`) and passes `source=` down: each split's folder is then walked once, and
classes.yaml read once (`train` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch.utils.data import Dataset, Subset

from cycleseg.data.cityscapes import (
    BACKGROUND,
    CITYSCAPES,
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
    Sample,
    colorize,
    image_to_tensor,
    label_ids_to_train_ids,
    load_image,
    load_label,
    read_image,
    read_label,
)
from cycleseg.data.classes import ClassTable, load_classes
from cycleseg.data.source import (
    FORMATS,
    CityscapesDataset,
    DataSource,
    SplitDataset,
    data_format,
    list_samples,
    open_source,
)
from cycleseg.errors import ConfigError

if TYPE_CHECKING:
    from cycleseg.config import Config

__all__ = [
    "BACKGROUND",
    "CITYSCAPES",
    "CLASS_NAMES",
    "FORMATS",
    "IGNORE_TRAIN_ID",
    "IMAGE_SUFFIX",
    "LABEL_ID_TO_TRAIN_ID",
    "LABEL_SUFFIX",
    "NUM_CLASSES",
    "NUM_EVAL_CLASSES",
    "PALETTE",
    "SPLITS",
    "TRAIN_ID_TO_LABEL_ID",
    "CityscapesDataset",
    "ClassTable",
    "DataSource",
    "Sample",
    "SplitDataset",
    "colorize",
    "data_format",
    "image_to_tensor",
    "label_ids_to_train_ids",
    "list_samples",
    "load_classes",
    "load_image",
    "load_label",
    "open_source",
    "open_split",
    "read_image",
    "read_label",
    "resolve_classes",
]


def open_split(cfg: Config, split: str, root: str | Path | None = None, progress: bool = False,
               source: DataSource | None = None) -> Dataset:
    """`split` of the run's data at its training size: from `cycleseg prepare`'s cache when there is one
    (data.cache: auto / require / off), else from the PNGs; the first data.max_{train,val}_images only.

    `root` reads another copy of the data (evaluate --data); the run's data.cache_dir is then used only when
    it is the folder the run was trained on, since a cache belongs to one data folder. `source`: the data at
    `root` already opened (open_source(root, cfg.data.format)), so its folders are not walked again.
    """
    from cycleseg.data.cache import open_dataset  # the cache needs hashing and numpy memory maps: load on use

    root = Path(root if root is not None else (source.root if source is not None else cfg.data.root))
    same_root = root.resolve() == Path(cfg.data.root).resolve()
    dataset = open_dataset(root, split, (cfg.data.height, cfg.data.width), cfg.data.cache,
                           cfg.data.cache_dir if same_root else None, progress=progress, fmt=cfg.data.format,
                           source=source)
    limit = {"train": cfg.data.max_train_images, "val": cfg.data.max_val_images}.get(split)
    return Subset(dataset, range(limit)) if limit is not None and limit < len(dataset) else dataset


def resolve_classes(cfg: Config, root: str | Path | None = None, source: DataSource | None = None) -> ClassTable:
    """The class table of the run's data (or of `root`, or of `source`: the data already opened), with
    cfg.model.num_classes set from it when null.

    ConfigError when the config's number of classes, or loss.ignore_background, does not fit the data.
    """
    if source is None:
        source = open_source(root if root is not None else cfg.data.root, cfg.data.format)
    classes = source.classes
    where = source.root / "classes.yaml" if source.format == "folder" else f"the Cityscapes layout of {source.root}"
    if cfg.model.num_classes is None:
        cfg.model.num_classes = classes.num_classes
    elif cfg.model.num_classes != classes.num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but {where} has {classes.num_classes} classes "
                          f"({classes.num_evaluated} evaluated + {classes.num_classes - classes.num_evaluated} void); "
                          "remove model.num_classes (it then comes from the data) or set "
                          f"model.num_classes={classes.num_classes}", key="model.num_classes")
    if cfg.loss.ignore_background and classes.num_evaluated == classes.num_classes:
        raise ConfigError(f"loss.ignore_background=true needs a void class, and {where} has none; add `void:` "
                          "to classes.yaml or set loss.ignore_background=false", key="loss.ignore_background")
    return classes
