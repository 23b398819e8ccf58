"""The data of semi-supervised training (data.labelled, data.unpaired_labels; docs/guide/semi-supervised-training.md).

The training split (its first data.max_train_images) is cut into labelled and unlabelled images:

    data.labelled: f       a fraction: round(f N) of the N training images (at least 1, and at least 1 left
                           unlabelled), drawn by train.seed among the images that have a label file
    data.labelled: FILE    the images FILE lists, one path relative to the data root per line (RUN/labelled.txt
                           of another run works); the FILE itself relative to the data root, or absolute

The choice is the same for a plain run and a cycle run of the same seed, and a run keeps it in RUN/labelled.txt
(runs.write_labelled), which a resume reads back instead of choosing again. Every other image of the split is
unlabelled: `ImageSubset` reads its image alone, so its label file is never opened (it may also be missing).

`UnpairedLabels` is a folder of label maps without images (data.unpaired_labels) for the backward cycle.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from cycleseg.core import seeding
from cycleseg.data.cityscapes import Sample, load_label
from cycleseg.data.classes import ClassTable
from cycleseg.data.source import DataSource, SplitDataset, open_source
from cycleseg.errors import DataError

if TYPE_CHECKING:
    from cycleseg.config import Config

__all__ = ["ImageSubset", "LabelSubset", "LabelledSplit", "UnpairedLabels", "labelled_split", "open_labelled_sets",
           "open_unpaired_labels", "stream_indices"]


@dataclass(frozen=True)
class LabelledSplit:
    """The training split cut into labelled and unlabelled images.

    samples: the split's images in their order (label_path None where an image has no label file);
    labelled: the indices of the labelled images, ascending; unlabelled: all others, ascending.
    """

    source: DataSource
    samples: list[Sample]
    labelled: list[int]

    @property
    def unlabelled(self) -> list[int]:
        chosen = set(self.labelled)
        return [i for i in range(len(self.samples)) if i not in chosen]

    def paths(self, indices: Sequence[int]) -> list[str]:
        """Image paths relative to the data root (labelled.txt's lines)."""
        return [self.samples[i].image_path.relative_to(self.source.root).as_posix() for i in indices]

    def unlabelled_images(self) -> frozenset[Path]:
        """The image paths whose labels must never be read (data.check skips them: check.require_valid)."""
        return frozenset(self.samples[i].image_path for i in self.unlabelled)


def labelled_split(cfg: Config, saved: list[str] | None = None, saved_from: str = "labelled.txt",
                   source: DataSource | None = None) -> LabelledSplit:
    """The labelled choice of the run of `cfg`: `saved` (a run's labelled.txt, read back on resume, named
    `saved_from` in errors) when given, else data.labelled. DataError naming the file or image on any problem.
    `source`: the run's data already opened (open_source), whose training folder is then not walked again.
    """
    source = source if source is not None else open_source(cfg.data.root, cfg.data.format)
    samples = source.samples("train", require_labels=False)
    if cfg.data.max_train_images is not None:
        samples = samples[: cfg.data.max_train_images]
    index = {s.image_path.relative_to(source.root).as_posix(): i for i, s in enumerate(samples)}
    spec = cfg.data.labelled
    if saved is not None:
        chosen = _listed(saved, index, saved_from, resume=True)
    elif isinstance(spec, str):
        path = Path(spec) if Path(spec).is_absolute() else source.root / spec
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: data.labelled file not readable ({type(e).__name__}); give a fraction "
                            "(data.labelled=1/8) or a file listing the labelled images, one per line") from None
        chosen = _listed([line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")],
                         index, str(path), resume=False)
    else:
        chosen = _drawn(float(spec), samples, cfg.train.seed, source.root)
    for i in chosen:
        if samples[i].label_path is None:
            raise DataError(f"{samples[i].image_path}: a labelled image (data.labelled) without a label file; add "
                            "its label or leave it out of the labelled images")
    if len(chosen) == len(samples):
        raise DataError(f"data.labelled lists all {len(samples)} training images, so none is left unlabelled; use "
                        "data.labelled: null for fully supervised training")
    return LabelledSplit(source, samples, sorted(chosen))


def _listed(lines: list[str], index: dict[str, int], where: str, resume: bool) -> list[int]:
    """Indices of the listed image paths; DataError naming the first one that is not a training image."""
    chosen: dict[int, None] = {}
    for line in lines:
        if line not in index:
            if resume:
                raise DataError(f"{where}: the labelled image {line} of this run is no longer in the training split "
                                "of the data; restore the data (or data.root) the run was trained on, or start a "
                                "new run")
            raise DataError(f"{where}: {line} is not an image of the training split (one image path relative to "
                            "the data root per line, e.g. as in a run's labelled.txt)")
        if index[line] in chosen:
            raise DataError(f"{where}: {line} is listed twice")
        chosen[index[line]] = None
    if not chosen:
        raise DataError(f"{where}: lists no labelled image")
    return list(chosen)


def _drawn(fraction: float, samples: list[Sample], seed: int, root: Path) -> list[int]:
    """round(fraction N) of the N images (1 .. N - 1): the first ones with a label file in a shuffle of all N
    seeded by `seed`. Deleting the labels of images not chosen leaves the choice as it is."""
    n = len(samples)
    if n < 2:
        raise DataError(f"{root}: data.labelled={fraction:g} needs at least 2 training images (labelled and "
                        f"unlabelled), the split has {n}")
    count = min(n - 1, max(1, math.floor(fraction * n + 0.5)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seeding.mix_seed(seed, 7))).tolist()
    chosen = [i for i in order if samples[i].label_path is not None][:count]
    if len(chosen) < count:
        raise DataError(f"{root}: data.labelled={fraction:g} needs {count} labelled training images, but only "
                        f"{len(chosen)} of the {n} have a label file")
    return chosen


class ImageSubset(Dataset):
    """Images of a split without their labels: items are (3, H, W) float32 images in [-1, 1]; only
    `dataset.image(i)` is called (SplitDataset, CachedDataset), so no label file is ever opened."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Tensor:
        return self.dataset.image(self.indices[index])


class LabelSubset(ImageSubset):
    """Label maps of a split without their images: items are (H, W) int64 class indices (`dataset.label(i)`)."""

    def __getitem__(self, index: int) -> Tensor:
        return self.dataset.label(self.indices[index])


def open_labelled_sets(cfg: Config, split: LabelledSplit, progress: bool = False) -> tuple[Dataset, ImageSubset]:
    """(labelled, unlabelled): a Subset of (image, labels) items over the labelled images and an ImageSubset over
    the unlabelled ones, of one dataset of the training split at the run's size.

    The prepared cache (data.cache) is used when it is up to date; a semi-supervised run never builds or
    rebuilds it, because that reads every label of the split: a missing or stale cache means reading the PNGs
    (data.cache=require refuses), and so does a split with images that have no label file.
    """
    from cycleseg.data.cache import CachedDataset, cache_folder, manifest_name, read_cache_status

    size, root, cache_dir = (cfg.data.height, cfg.data.width), cfg.data.root, cfg.data.cache_dir
    dataset: Dataset = SplitDataset(split.source, "train", size, samples=split.samples)
    if cfg.data.cache != "off":
        unlabelled_files = sum(s.label_path is None for s in split.samples)
        status, reason, manifest = ("missing", f"{unlabelled_files} training images have no label file", None) \
            if unlabelled_files else read_cache_status(Path(root), "train", size, cache_dir, split.source.format,
                                                       split.source)
        if status == "ok":
            dataset = CachedDataset(split.source, "train", size, cache_dir, manifest)
        elif status == "stale" and cfg.data.cache == "auto":
            print(f"cycleseg: the train cache at {size[1]}x{size[0]} is stale ({reason}); a semi-supervised run reads "
                  "the PNGs instead of rebuilding it (that reads every label): run `cycleseg prepare` to use it",
                  file=sys.stderr)
        elif cfg.data.cache == "require":
            where = cache_folder(root, size, cache_dir) / manifest_name("train")
            raise DataError(f"{where}: {status} cache for train ({reason}) and data.cache=require; a semi-supervised "
                            "run does not build the cache (that reads every label): run `cycleseg prepare`, or set "
                            "data.cache=auto")
    return Subset(dataset, split.labelled), ImageSubset(dataset, split.unlabelled)


class UnpairedLabels(Dataset):
    """data.unpaired_labels: label maps without images, every *.png under `folder` (sorted), read like a split's
    labels (the dataset's label values -> class indices, nearest-neighbour resize to size = (H, W)); items are
    (H, W) int64 class indices."""

    def __init__(self, folder: Path, size: tuple[int, int], classes: ClassTable) -> None:
        self.folder, self.size, self.classes = folder, size, classes
        if not folder.is_dir():
            raise DataError(f"{folder}: data.unpaired_labels folder not found; give a folder of label PNGs (relative "
                            "to the data root, or absolute)")
        self.files = sorted(p for p in folder.rglob("*.png") if p.is_file())
        if not self.files:
            raise DataError(f"{folder}: data.unpaired_labels holds no .png label maps")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        return load_label(self.files[index], self.size, self.classes)


def open_unpaired_labels(cfg: Config, source: DataSource | None = None) -> UnpairedLabels:
    """The folder of data.unpaired_labels (relative to the data root, or absolute) as UnpairedLabels; `source`:
    the run's data already opened (its class table)."""
    source = source if source is not None else open_source(cfg.data.root, cfg.data.format)
    folder = Path(cfg.data.unpaired_labels)
    return UnpairedLabels(folder if folder.is_absolute() else source.root / folder, (cfg.data.height, cfg.data.width),
                          source.classes)


def stream_indices(n: int, seed: int, positions: Sequence[int]) -> list[int]:
    """The items at `positions` of an endless stream over range(n): pass after pass, each pass a shuffle seeded by
    (seed, pass). An item depends on (seed, its position) only, so the stream needs no state in a checkpoint and a
    resumed run draws what it would have drawn; each of the n items comes once per pass."""
    out: list[int] = []
    passes: dict[int, list[int]] = {}
    for position in positions:
        k = position // n
        if k not in passes:
            passes[k] = torch.randperm(n, generator=torch.Generator().manual_seed(seeding.mix_seed(seed, k))).tolist()
        out.append(passes[k][position % n])
    return out
