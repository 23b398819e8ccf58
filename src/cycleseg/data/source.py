"""Where a dataset's files are: the Cityscapes layout, or a folder of images and labels with a classes.yaml.

    cityscapes  ROOT/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
                ROOT/gtFine/<split>/<city>/<name>_gtFine_labelIds.png           (the classes of cityscapesscripts)
    folder      ROOT/images/<split>/[subfolders/]<stem>.png|.jpg|.jpeg
                ROOT/labels/<split>/[subfolders/]<stem>.png                      (paired by path and file stem)
                ROOT/classes.yaml                                                (classes.py: names, values, colours)

`data.format: auto` (the default) reads a folder holding classes.yaml as a folder dataset, anything else as
Cityscapes. Either way a split is a list of `Sample`s and a `DataSource` knows its class table, so everything
downstream (cache, checks, training, metrics, predictions, reports) is the same code for both.

`scan_split` is the one function that walks a split's folders; a `DataSource` walks each split once and keeps what
it found (`DataSource.files`), so a command that opens its data once (train: the check, the labelled choice, the
cache, the datasets) reads each folder once, and classes.yaml once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from cycleseg.data.cityscapes import (
    CITYSCAPES,
    IMAGE_SUFFIX,
    LABEL_SUFFIX,
    SPLITS,
    Sample,
    load_image,
    load_label,
)
from cycleseg.data.classes import CLASSES_FILE, ClassTable, load_classes
from cycleseg.errors import DataError

__all__ = ["FOLDER_IMAGE_SUFFIXES", "FORMATS", "CityscapesDataset", "DataSource", "SplitDataset", "SplitFiles",
           "cityscapes_samples", "data_format", "folder_samples", "list_folder_samples", "list_samples",
           "open_source", "scan_split"]

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
class SplitFiles:
    """What one walk of a split's folders found (`scan_split`), sorted by path; None for a folder that is absent.

    cityscapes: the *_leftImg8bit.png images and *_gtFine_labelIds.png labels in the city folders;
    folder: every file under images/<split>/ and labels/<split>/ (the readers pick the suffixes they take)."""

    image_dir: Path
    label_dir: Path
    images: tuple[Path, ...] | None
    labels: tuple[Path, ...] | None


def scan_split(root: Path, fmt: str, split: str) -> SplitFiles:
    """Walk the image and label folders of `split` (fmt: cityscapes | folder) once: the only read of a dataset's
    folders; the listing (DataSource.samples) and the check (check.py) both work from what it returns."""
    image_dir = root / ("images" if fmt == "folder" else "leftImg8bit") / split
    label_dir = root / ("labels" if fmt == "folder" else "gtFine") / split
    return SplitFiles(image_dir, label_dir, _walk(image_dir, fmt, IMAGE_SUFFIX), _walk(label_dir, fmt, LABEL_SUFFIX))


def _walk(folder: Path, fmt: str, suffix: str) -> tuple[Path, ...] | None:
    """Every file under `folder` (folder layout), or its */*<suffix> (Cityscapes: one level of city folders),
    sorted; None when the folder is absent."""
    if not folder.is_dir():
        return None
    if fmt == "folder":
        return tuple(p for p in sorted(folder.rglob("*")) if p.is_file())
    return tuple(sorted(folder.glob(f"*/*{suffix}")))


@dataclass(frozen=True)
class DataSource:
    """A dataset on disk: its root, its layout ("cityscapes" | "folder") and its class table.

    Each split's folders are walked once, on first use (`files`), and the samples paired from that walk are kept:
    pass one DataSource down instead of opening the data again."""

    root: Path
    format: str
    classes: ClassTable
    _files: dict[str, SplitFiles] = field(default_factory=dict, init=False, repr=False, compare=False)
    _samples: dict[tuple[str, bool], list[Sample]] = field(default_factory=dict, init=False, repr=False,
                                                           compare=False)

    def files(self, split: str) -> SplitFiles:
        """The files of `split` (scan_split), walked on the first call only."""
        if split not in self._files:
            self._files[split] = scan_split(self.root, self.format, split)
        return self._files[split]

    def samples(self, split: str, require_labels: bool = True) -> list[Sample]:
        """All (image, label) pairs of `split`, sorted; DataError on a missing folder or an unpaired file.

        require_labels=False (the unlabelled images of semi-supervised training): an image without a label file
        is a Sample with label_path None instead of an error. A new list each call, of samples paired once."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        key = (split, require_labels)
        if key not in self._samples:
            pair = folder_samples if self.format == "folder" else cityscapes_samples
            self._samples[key] = pair(self.root, self.files(split), split, require_labels)
        return list(self._samples[key])

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


def list_samples(root: str | Path, split: str, require_labels: bool = True) -> list[Sample]:
    """All (image, label) pairs of `split`, sorted by city and name; DataError on any missing or extra file.

    require_labels=False: an image without a label file (an unlabelled image) gets label_path None."""
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found; pass a Cityscapes folder or run "
                        f"`cycleseg make-synthetic {root}`")
    return cityscapes_samples(root, scan_split(root, "cityscapes", split), split, require_labels)


def cityscapes_samples(root: Path, files: SplitFiles, split: str, require_labels: bool = True) -> list[Sample]:
    """list_samples from the files one walk of the split found (source.scan_split)."""
    image_dir, label_dir = files.image_dir, files.label_dir
    if files.images is None:
        raise DataError(f"{image_dir}: folder not found; {root} must hold leftImg8bit/{split}/<city>/ "
                        "(the Cityscapes layout)")
    images = {p.relative_to(image_dir).as_posix()[: -len(IMAGE_SUFFIX)]: p for p in files.images}
    if not images:
        raise DataError(f"{image_dir}: no *{IMAGE_SUFFIX} images in its city folders; the split is empty")
    if split == "test" or (not require_labels and files.labels is None):
        return [Sample(p, None, key.split("/")[0], key.split("/")[1]) for key, p in sorted(images.items())]
    if files.labels is None:
        raise DataError(f"{label_dir}: folder not found; labels belong in gtFine/{split}/<city>/")
    labels = {p.relative_to(label_dir).as_posix()[: -len(LABEL_SUFFIX)]: p for p in files.labels}
    for key in sorted(images.keys() - labels.keys()) if require_labels else ():
        raise DataError(f"{images[key]}: image has no label {label_dir / (key + LABEL_SUFFIX)}; add it or "
                        "remove the image")
    for key in sorted(labels.keys() - images.keys()):
        raise DataError(f"{labels[key]}: label has no image {image_dir / (key + IMAGE_SUFFIX)}; add it or "
                        "remove the label")
    return [Sample(images[k], labels.get(k), k.split("/")[0], k.split("/")[1]) for k in sorted(images)]


def list_folder_samples(root: str | Path, split: str, require_labels: bool = True) -> list[Sample]:
    """The (image, label) pairs of a folder dataset's `split`, sorted by path; DataError on any unpaired file.

    Sample.city is the subfolder (may be ""), Sample.name the file stem; the test split may have no labels, nor
    may images of any split with require_labels=False (their label_path is None).
    """
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return folder_samples(root, scan_split(root, "folder", split), split, require_labels)


def folder_samples(root: Path, files: SplitFiles, split: str, require_labels: bool = True) -> list[Sample]:
    """list_folder_samples from the files one walk found (scan_split)."""
    image_dir, label_dir = files.image_dir, files.label_dir
    if files.images is None:
        raise DataError(f"{image_dir}: folder not found; a folder dataset holds images/{split}/ and labels/{split}/")
    images: dict[str, Path] = {}
    for path in files.images:
        if path.suffix.lower() in FOLDER_IMAGE_SUFFIXES:
            key = path.relative_to(image_dir).with_suffix("").as_posix()
            if key in images:
                raise DataError(f"{path}: two images with the stem {key!r} ({images[key].name}); labels pair with "
                                "images by stem, so rename one")
            images[key] = path
    if not images:
        raise DataError(f"{image_dir}: no .png/.jpg/.jpeg images; the split is empty")
    if (split == "test" or not require_labels) and files.labels is None:
        return [_sample(key, path, None) for key, path in images.items()]
    if files.labels is None:
        raise DataError(f"{label_dir}: folder not found; the labels of {split} belong in labels/{split}/, one PNG "
                        "per image with the same name")
    labels = {p.relative_to(label_dir).with_suffix("").as_posix(): p for p in files.labels if p.name.endswith(".png")}
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
