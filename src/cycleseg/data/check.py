"""`cycleseg check-data`: validate a dataset folder before a long run, and summarize it.

A folder dataset (images/, labels/, classes.yaml; source.py) gets the same checks where they apply: pairing by
file stem, PNG or JPEG images, single-channel PNG labels of their image's size, label values its classes.yaml
knows. The Cityscapes specifics (city folders and names, the official cities) apply to the Cityscapes layout.

What is checked, per split (train and val must exist; test is checked when present, without its labels,
which in the official download are placeholders):

- the layout: leftImg8bit/<split>/<city>/ and gtFine/<split>/<city>/, images named after their city folder;
  in a real Cityscapes folder (one that holds official city names) every official city of the split, and no
  city of another split (that would leak images between train and val);
- pairing: every image has its *_gtFine_labelIds.png and every label its image;
- the PNG headers: readable, PNG format, images mode RGB, labels mode L (or P), labels the size of their
  image, images all of one size (the most common one, or the size the caller expects);
- with full=True, the pixels too: each file decodes completely (a truncated or corrupt file fails here),
  label values are known Cityscapes labelIds; and the class pixel frequencies of each split are counted;
- the caches written by `cycleseg prepare` (cache.py) that sit in the cache folder: stale ones are reported.

The fast path (names, headers) opens only PNG headers, a few seconds for the ~7,000 files of train and val,
so `train` runs it at every start (`data.check`).
"""

from __future__ import annotations

import collections
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from cycleseg.data.cityscapes import IMAGE_SUFFIX, LABEL_SUFFIX, MAX_IMAGE_PIXELS, SPLITS, too_large
from cycleseg.data.classes import ClassTable
from cycleseg.data.source import FOLDER_IMAGE_SUFFIXES, DataSource, open_source
from cycleseg.errors import DataError

__all__ = ["CITYSCAPES_CITIES", "DataReport", "Problem", "SplitSummary", "check_data", "format_report",
           "require_valid"]

# The official cities of each split (leftImg8bit_trainvaltest.zip): 2975 train, 500 val, 1525 test images.
CITYSCAPES_CITIES = {
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg", "hanover",
              "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm", "weimar",
              "zurich"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn", "leverkusen", "mainz", "munich"),
}
_CITY_SPLIT = {city: split for split, cities in CITYSCAPES_CITIES.items() for city in cities}
LABEL_MODES = ("L", "P")  # what data.load_label accepts: 8-bit single channel


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data: the file (or folder) and what is wrong with it, including the fix."""

    path: Path
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass
class SplitSummary:
    """What one split holds."""

    cities: int = 0
    images: int = 0
    labels: int = 0
    class_pixels: np.ndarray | None = None  # (S,) int64 pixel counts per class; full check only


@dataclass
class DataReport:
    """The result of check_data: a summary per split and the problems found (empty when the data is fine)."""

    root: Path
    full: bool
    classes: ClassTable | None = None  # the dataset's class table (None when the folder could not be opened)
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    image_size: tuple[int, int] | None = None  # (W, H) the images are expected to have
    caches: list[str] = field(default_factory=list)  # "512x256 train: up to date" ...
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _File:
    """A PNG to inspect and what inspecting it found."""

    path: Path
    is_label: bool
    split: str
    image: Path | None = None  # for a label: its image, whose size it must have
    size: tuple[int, int] | None = None  # (W, H) from the header
    mode: str = ""
    format: str = ""
    error: str = ""  # unreadable or corrupt
    refused: str = ""  # larger than MAX_IMAGE_PIXELS: never decoded
    unknown_ids: tuple[int, ...] = ()
    counts: np.ndarray | None = None  # (256,) pixel count per label value


def check_data(root: str | Path, splits: tuple[str, ...] = SPLITS, full: bool = True,
               expect_size: tuple[int, int] | None = None, cache_dir: str | Path | None = None,
               check_cache: bool = True, progress: bool = False, fmt: str = "auto",
               unlabelled: frozenset[Path] = frozenset(), source: DataSource | None = None) -> DataReport:
    """Check the dataset folder `root` (fmt: auto | cityscapes | folder); never raises for data problems, returns
    them in the report.

    Args:
        splits: the splits to check; "test" is optional (skipped when its folder is absent), the others not.
        full: decode every PNG (corrupt files, unknown labelIds, class frequencies) instead of headers only.
        expect_size: (W, H) every image must have, e.g. (2048, 1024); None: the most common size.
        cache_dir, check_cache: report stale caches of `cycleseg prepare` (cache.py) in this folder.
        unlabelled: image paths (as the split lists them) whose labels must not be read (the unlabelled images of
            semi-supervised training): their label files are neither opened nor required; the images are checked.
        source: the dataset already opened (open_source of root and fmt): its folders are not walked again.
    """
    root = Path(root)
    report = DataReport(root, full)
    if not root.is_dir():
        report.problems.append(Problem(root, "data folder not found; pass a Cityscapes folder (holding leftImg8bit/ "
                                             "and gtFine/), a folder dataset (images/, labels/, classes.yaml) or "
                                             f"run `cycleseg make-synthetic {root}`"))
        return report
    try:
        source = source if source is not None else open_source(root, fmt)
    except DataError as e:  # a missing or invalid classes.yaml
        report.problems.append(Problem(root, str(e).removeprefix(f"{root}: ")))
        return report
    report.classes = source.classes
    files: list[_File] = []
    for split in splits:
        files += _check_layout(source, split, report, unlabelled) if source.format == "cityscapes" else \
            _check_folder_layout(source, split, report, unlabelled)
    _inspect(files, full, progress, source.classes)
    _check_files(files, expect_size, report, source.format)
    if full:
        _count_classes(files, report)
    if check_cache:
        _check_caches(source, [s for s in splits if s in report.splits], cache_dir, report)
    return report


def require_valid(root: str | Path, splits: tuple[str, ...], full: bool = False, progress: bool = False,
                  fmt: str = "auto", unlabelled: frozenset[Path] = frozenset(),
                  source: DataSource | None = None) -> None:
    """check_data for `train`: raise DataError naming the first problem (and how many more there are).

    unlabelled: image paths whose labels are neither read nor required; source: the data already opened
    (check_data)."""
    report = check_data(root, splits, full=full, check_cache=False, progress=progress, fmt=fmt, unlabelled=unlabelled,
                        source=source)
    if report.problems:
        more = len(report.problems) - 1
        suffix = f" ({more} more problem{'s' * (more > 1)}; list them with `cycleseg check-data {root}`)" if more else ""
        raise DataError(f"{report.problems[0]}{suffix}")


def _check_folder_layout(source: DataSource, split: str, report: DataReport,
                         unlabelled: frozenset[Path] = frozenset()) -> list[_File]:
    """A folder dataset's split: images/<split>/ and labels/<split>/ paired by path and stem."""
    found = source.files(split)
    image_dir, label_dir = found.image_dir, found.label_dir
    if found.images is None:
        if split != "test":
            report.problems.append(Problem(image_dir, f"split folder not found; a folder dataset holds images/{split}/ "
                                                      f"and labels/{split}/"))
        return []
    images = {p.relative_to(image_dir).with_suffix("").as_posix(): p for p in found.images
              if p.suffix.lower() in FOLDER_IMAGE_SUFFIXES}
    if not images:
        report.problems.append(Problem(image_dir, "no .png/.jpg/.jpeg images; the split is empty"))
        return []
    report.splits[split] = SplitSummary(cities=len({k.rpartition("/")[0] for k in images}), images=len(images))
    files = [_File(p, False, split) for p in images.values()]
    if found.labels is None:
        if split != "test":
            report.problems.append(Problem(label_dir, f"folder not found; the labels of {split} belong in "
                                                      f"labels/{split}/, one PNG per image with the same name"))
        return files
    labels = {p.relative_to(label_dir).with_suffix("").as_posix(): p for p in found.labels}
    for key in sorted(images.keys() - labels.keys()):
        if images[key] in unlabelled:
            continue
        report.problems.append(Problem(images[key], f"image has no label {label_dir / (key + '.png')}; add it or "
                                                    "remove the image"))
    for key in sorted(labels.keys() - images.keys()):
        report.problems.append(Problem(labels[key], f"label has no image with the stem {key!r} in {image_dir}; add it "
                                                    "or remove the label"))
    paired = sorted(images.keys() & labels.keys())
    report.splits[split].labels = len(paired)
    return files + [_File(labels[key], True, split, image=images[key]) for key in paired
                    if images[key] not in unlabelled]  # an unlabelled image's label is never opened


def _check_layout(source: DataSource, split: str, report: DataReport,
                  unlabelled: frozenset[Path] = frozenset()) -> list[_File]:
    """Folders, names, cities and image/label pairing of one Cityscapes split; returns the PNGs to inspect."""
    root, found = source.root, source.files(split)
    image_dir, label_dir = found.image_dir, found.label_dir
    problems = report.problems
    if found.images is None:
        if split != "test":  # the test split is optional
            problems.append(Problem(image_dir, f"split folder not found; {root} must hold leftImg8bit/{split}/<city>/ "
                                               "(the Cityscapes layout)"))
        return []
    images = {p.relative_to(image_dir).as_posix()[: -len(IMAGE_SUFFIX)]: p for p in found.images}
    if not images:
        problems.append(Problem(image_dir, f"no *{IMAGE_SUFFIX} images in its city folders; the split is empty"))
        return []
    cities = sorted({key.split("/")[0] for key in images})
    report.splits[split] = SplitSummary(cities=len(cities), images=len(images))
    files = [_File(p, False, split) for p in images.values()]

    for key, path in images.items():
        city, name = key.split("/")
        if not name.startswith(city + "_"):
            problems.append(Problem(path, f"file name does not start with its city folder's name {city!r}_; move "
                                          "it into the folder of its city"))
    if any(city in _CITY_SPLIT for city in cities):  # a real Cityscapes folder: check its cities too
        for city in cities:
            home = _CITY_SPLIT.get(city, split)
            if home != split:
                problems.append(Problem(image_dir / city, f"city {city} belongs to the Cityscapes {home} split, not "
                                                          f"{split}; move it back to leftImg8bit/{home}/"))
        for city in sorted(set(CITYSCAPES_CITIES[split]) - set(cities)):
            problems.append(Problem(image_dir / city, f"city folder missing: Cityscapes {split} has "
                                                      f"{', '.join(CITYSCAPES_CITIES[split])}; re-extract "
                                                      "leftImg8bit_trainvaltest.zip"))
    if split == "test":
        return files  # the test labels of the official download are placeholders; nothing reads them

    if found.labels is None:
        problems.append(Problem(label_dir, f"folder not found; the labels of {split} belong in "
                                           f"gtFine/{split}/<city>/ (gtFine_trainvaltest.zip)"))
        return files
    labels = {p.relative_to(label_dir).as_posix()[: -len(LABEL_SUFFIX)]: p for p in found.labels}
    for key in sorted(images.keys() - labels.keys()):
        if images[key] in unlabelled:
            continue
        problems.append(Problem(images[key], f"image has no label {label_dir / (key + LABEL_SUFFIX)}; add it or "
                                             "remove the image"))
    for key in sorted(labels.keys() - images.keys()):
        problems.append(Problem(labels[key], f"label has no image {image_dir / (key + IMAGE_SUFFIX)}; add it or "
                                             "remove the label"))
    paired = sorted(images.keys() & labels.keys())
    report.splits[split].labels = len(paired)
    return files + [_File(labels[key], True, split, image=images[key]) for key in paired
                    if images[key] not in unlabelled]  # an unlabelled image's label is never opened


def _inspect(files: list[_File], full: bool, progress: bool, classes: ClassTable) -> None:
    """Read each file's header (and with full=True its pixels) into its _File."""
    known = classes.lookup >= 0
    for f in tqdm(files, desc="checking" + (" pixels" if full else " headers"), unit="file", disable=not progress,
                  dynamic_ncols=True):
        try:
            with warnings.catch_warnings():  # Pillow warns above 89 Mpx; MAX_IMAGE_PIXELS decides here
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                opened = Image.open(f.path)
            with opened as image:
                f.size, f.mode, f.format = image.size, image.mode, image.format or ""
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    f.refused = too_large(image.size)
                elif full:
                    image.load()  # decodes everything: truncated or corrupt data fails here
                    if f.is_label and f.mode in LABEL_MODES:
                        f.counts = np.bincount(np.asarray(image, dtype=np.uint8).ravel(), minlength=256)
                        f.unknown_ids = tuple(np.flatnonzero((f.counts > 0) & ~known).tolist())
        except Image.DecompressionBombError:
            f.refused = too_large(None)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
            f.error = f"{type(e).__name__}: {' '.join(str(e).split())}"[:120]


def _check_files(files: list[_File], expect_size: tuple[int, int] | None, report: DataReport,
                 fmt: str = "cityscapes") -> None:
    """Turn what _inspect found into problems: corrupt, not PNG, wrong mode, wrong size, unknown label values."""
    cityscapes = fmt == "cityscapes"
    sizes = collections.Counter(f.size for f in files if not f.is_label and f.size is not None)
    expected = expect_size or (sizes.most_common(1)[0][0] if sizes else None)
    report.image_size = expected
    image_sizes = {f.path: f.size for f in files if not f.is_label}
    fix = "replace it with the file from the Cityscapes zip" if cityscapes else "replace the file"
    for f in files:
        if f.refused:
            report.problems.append(Problem(f.path, f.refused))
            continue
        if f.error:
            report.problems.append(Problem(f.path, f"unreadable or corrupt {'PNG' if cityscapes else 'image'} "
                                                   f"({f.error}); {fix}"))
            continue
        allowed = ("PNG",) if cityscapes or f.is_label else ("PNG", "JPEG")
        if f.format not in allowed:
            report.problems.append(Problem(f.path, f"not a {' or '.join(allowed)} file ({f.format or 'unknown'} "
                                                   f"data); {fix}"))
            continue
        if f.is_label:
            if f.mode not in LABEL_MODES:
                wanted = ("labelIds PNG (mode L); use *_gtFine_labelIds.png, not *_color.png" if cityscapes
                          else "PNG of label values (mode L or P), not a colour image")
                report.problems.append(Problem(f.path, f"label has mode {f.mode}, expected a single-channel {wanted}"))
            own = image_sizes.get(f.image)
            if own is not None and f.size != own:
                report.problems.append(Problem(f.path, f"label is {_wxh(f.size)} but its image is {_wxh(own)}; "
                                                       "a label must have its image's size"))
            if f.unknown_ids and cityscapes:
                report.problems.append(Problem(f.path, f"unknown Cityscapes labelIds {list(f.unknown_ids)[:10]}; "
                                                       "labels must be *_gtFine_labelIds.png with ids 0..33"))
            elif f.unknown_ids:
                report.problems.append(Problem(f.path, f"label values {list(f.unknown_ids)[:10]} are not in "
                                                       f"{report.classes.source}; add them to a class or to `void`"))
        else:
            if f.mode != "RGB" and cityscapes:
                report.problems.append(Problem(f.path, f"image has mode {f.mode}, expected RGB (8-bit colour); "
                                                       "use the *_leftImg8bit.png files of leftImg8bit_trainvaltest.zip"))
            elif f.mode not in ("RGB", "L", "RGBA", "P"):  # a folder dataset's images are converted to RGB
                report.problems.append(Problem(f.path, f"image has mode {f.mode}, expected 8-bit RGB (or grey); "
                                                       "convert it to 8-bit RGB"))
            if expected is not None and f.size != expected:
                why = "the expected size" if expect_size else f"the size of the other {sizes[expected]} images"
                report.problems.append(Problem(f.path, f"image is {_wxh(f.size)}, expected {_wxh(expected)} ({why}); "
                                                       "resize or replace it"))


def _count_classes(files: list[_File], report: DataReport) -> None:
    """Sum the label value histograms of each split into class pixel counts (unknown values left out)."""
    s = report.classes.num_classes
    to_class = np.where(report.classes.lookup >= 0, report.classes.lookup, s)  # unknown -> bin S, dropped
    for split, summary in report.splits.items():
        counts = [f.counts for f in files if f.split == split and f.counts is not None]
        if counts:
            by_id = np.sum(counts, axis=0)
            summary.class_pixels = np.bincount(to_class, weights=by_id, minlength=s + 1)[:s].astype(np.int64)


def _check_caches(source: DataSource, splits: list[str], cache_dir: str | Path | None, report: DataReport) -> None:
    """Each cache of `cycleseg prepare` for these splits: up to date, or a problem naming its manifest."""
    from cycleseg.data import cache  # cache builds on data.py like this module; imported here to keep startup light

    root = source.root
    base = cache.cache_root(root, cache_dir)
    for folder in sorted(p for p in base.glob("*x*") if p.is_dir()) if base.is_dir() else []:
        size = cache.parse_folder_size(folder.name)
        if size is None:
            continue
        for split in splits:
            manifest = folder / cache.manifest_name(split)
            if not manifest.exists():
                continue
            try:
                status, reason = cache.cache_status(root, split, size, cache_dir, source.format, source=source)
            except DataError:
                continue  # the data problem itself is already reported
            if status == "ok":
                report.caches.append(f"{folder.name} {split}: up to date")
            else:
                report.caches.append(f"{folder.name} {split}: {status}")
                report.problems.append(Problem(manifest, f"stale cache for {folder.name} ({reason}); rebuild it with "
                                                         f"`cycleseg prepare {root} --size {folder.name}`"))


def format_report(report: DataReport) -> str:
    """The summary `check-data` prints: images per split, sizes, class pixel frequencies, caches."""
    lines = [f"data: {report.root} ({'full' if report.full else 'fast'} check)",
             f"{'split':<6} {'cities':>6} {'images':>7} {'labels':>7}"]
    for split, s in report.splits.items():
        lines.append(f"{split:<6} {s.cities:>6} {s.images:>7} {s.labels if split != 'test' else '-':>7}")
    if report.image_size:
        lines.append(f"image size: {_wxh(report.image_size)}")
    with_pixels = {split: s.class_pixels for split, s in report.splits.items() if s.class_pixels is not None}
    if with_pixels:
        void = "background: ids with trainId 255" if report.classes.num_classes == 20 and \
            report.classes.names[-1] == "background" else "void: values left out of the metrics"
        lines.append(f"class pixel frequencies, % of the split's pixels ({void}):")
        lines.append(f"{'class':<15}" + "".join(f" {split:>7}" for split in with_pixels))
        for c, name in enumerate(report.classes.names):
            lines.append(f"{name:<15}" + "".join(f" {100 * px[c] / max(px.sum(), 1):>7.2f}" for px in with_pixels.values()))
    lines += [f"cache {c}" for c in report.caches]
    n = len(report.problems)
    lines.append("no problems found" if n == 0 else f"{n} problem{'s' * (n > 1)} found (listed on stderr)")
    return "\n".join(lines)


def _wxh(size: tuple[int, int] | None) -> str:
    return "?" if size is None else f"{size[0]}x{size[1]}"
