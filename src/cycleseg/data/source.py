"""Where a dataset's files are: the Cityscapes layout, or a folder of images and labels with a classes.yaml.

    cityscapes  ROOT/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
                ROOT/gtFine/<split>/<city>/<name>_gtFine_labelIds.png           (the classes of cityscapesscripts)
    folder      ROOT/images/<split>/[subfolders/]<stem>.png|.jpg|.jpeg
                ROOT/labels/<split>/[subfolders/]<stem>.png                      (paired by path and file stem)
                ROOT/classes.yaml                                                (classes.py: names, values, colours)

`data.format: auto` (the default) reads a folder holding classes.yaml as a folder dataset, anything else as
Cityscapes. Either way a split is a list of `Sample`s and a `DataSource` knows its class table, so everything
downstream (cache, checks, training, metrics, predictions, reports) is the same code for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from cycleseg.data.cityscapes import CITYSCAPES, SPLITS, Sample, list_samples, load_image, load_label
from cycleseg.data.classes import CLASSES_FILE, ClassTable, load_classes
from cycleseg.errors import DataError

__all__ = ["FOLDER_IMAGE_SUFFIXES", "FORMATS", "CityscapesDataset", "DataSource", "SplitDataset", "data_format",
           "list_folder_samples", "open_source"]

FORMATS = ("auto", "cityscapes", "folder")
FOLDER_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def data_format(root: str | Path, fmt: str = "auto") -> str:
    """"cityscapes" or "folder": `fmt` itself, or for "auto" whether ROOT holds a classes.yaml."""
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    return "folder" if (Path(root) / CLASSES_FILE).is_file() else "cityscapes"


@dataclass(frozen=True)
class DataSource:
    """A dataset on disk: its root, its layout ("cityscapes" | "folder") and its class table."""

    root: Path
    format: str
    classes: ClassTable

    def samples(self, split: str, require_labels: bool = True) -> list[Sample]:
        """All (image, label) pairs of `split`, sorted; DataError on a missing folder or an unpaired file.

        require_labels=False (the unlabelled images of semi-supervised training): an image without a label file
        is a Sample with label_path None instead of an error."""
        if self.format == "folder":
            return list_folder_samples(self.root, split, require_labels)
        return list_samples(self.root, split, require_labels)

    def image_dir(self, split: str) -> Path:
        return self.root / ("images" if self.format == "folder" else "leftImg8bit") / split

    def label_dir(self, split: str) -> Path:
        return self.root / ("labels" if self.format == "folder" else "gtFine") / split

    def present_splits(self) -> tuple[str, ...]:
        """The splits whose image folder exists."""
        return tuple(s for s in SPLITS if self.image_dir(s).is_dir())


def open_source(root: str | Path, fmt: str = "auto") -> DataSource:
    """The dataset at `root` (format: auto | cityscapes | folder); DataError when the folder is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found; pass a Cityscapes folder, a folder dataset (images/, "
                        f"labels/, {CLASSES_FILE}) or run `cycleseg make-synthetic {root}`")
    fmt = data_format(root, fmt)
    classes = load_classes(root / CLASSES_FILE) if fmt == "folder" else CITYSCAPES
    return DataSource(root, fmt, classes)


def list_folder_samples(root: str | Path, split: str, require_labels: bool = True) -> list[Sample]:
    """The (image, label) pairs of a folder dataset's `split`, sorted by path; DataError on any unpaired file.

    Sample.city is the subfolder (may be ""), Sample.name the file stem; the test split may have no labels, nor
    may images of any split with require_labels=False (their label_path is None).
    """
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    image_dir, label_dir = root / "images" / split, root / "labels" / split
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: folder not found; a folder dataset holds images/{split}/ and labels/{split}/")
    images: dict[str, Path] = {}
    for path in sorted(image_dir.rglob("*")):
        if path.is_file() and path.suffix.lower() in FOLDER_IMAGE_SUFFIXES:
            key = path.relative_to(image_dir).with_suffix("").as_posix()
            if key in images:
                raise DataError(f"{path}: two images with the stem {key!r} ({images[key].name}); labels pair with "
                                "images by stem, so rename one")
            images[key] = path
    if not images:
        raise DataError(f"{image_dir}: no .png/.jpg/.jpeg images; the split is empty")
    if (split == "test" or not require_labels) and not label_dir.is_dir():
        return [_sample(key, path, None) for key, path in images.items()]
    if not label_dir.is_dir():
        raise DataError(f"{label_dir}: folder not found; the labels of {split} belong in labels/{split}/, one PNG "
                        "per image with the same name")
    labels = {p.relative_to(label_dir).with_suffix("").as_posix(): p
              for p in sorted(label_dir.rglob("*.png")) if p.is_file()}
    for key in sorted(images.keys() - labels.keys()) if require_labels else ():
        raise DataError(f"{images[key]}: image has no label {label_dir / (key + '.png')}; add it or remove the image")
    for key in sorted(labels.keys() - images.keys()):
        raise DataError(f"{labels[key]}: label has no image in {image_dir} with the stem {key!r}; add it or remove "
                        "the label")
    return [_sample(key, images[key], labels.get(key)) for key in sorted(images)]


def _sample(key: str, image: Path, label: Path | None) -> Sample:
    folder, _, name = key.rpartition("/")
    return Sample(image, label, folder, name)


class SplitDataset(Dataset):
    """A split of a dataset read from its files: items are (image (3, H, W) float32 in [-1, 1], labels (H, W)
    int64 class indices 0..S-1; all -1 for a split without labels).

    Args:
        source: the dataset (open_source).
        split: "train", "val" or "test".
        size: (H, W) the images and labels are resized to.
    """

    def __init__(self, source: DataSource, split: str, size: tuple[int, int],
                 samples: list[Sample] | None = None) -> None:
        self.source, self.root, self.split, self.size = source, source.root, split, size
        self.classes = source.classes
        self.samples = source.samples(split) if samples is None else samples  # samples: already listed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.image(index)
        if self.samples[index].label_path is None:
            return image, torch.full(self.size, -1, dtype=torch.int64)
        return image, self.label(index)

    def image(self, index: int) -> Tensor:
        """The image alone, (3, H, W) float32 in [-1, 1]: its label file is not opened (unlabelled images)."""
        return load_image(self.samples[index].image_path, self.size)

    def label(self, index: int) -> Tensor:
        """The labels alone, (H, W) int64 class indices."""
        return load_label(self.samples[index].label_path, self.size, self.classes)


class CityscapesDataset(SplitDataset):
    """A split of a Cityscapes-layout folder (SplitDataset of its DataSource): labels are trainIds 0..19."""

    def __init__(self, root: str | Path, split: str, size: tuple[int, int]) -> None:
        super().__init__(open_source(root, "cityscapes"), split, size)
