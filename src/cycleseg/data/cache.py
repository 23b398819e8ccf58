"""`cycleseg prepare`: decode and resize a split once into a memory-mapped uint8 cache.

Decoding a 2048x1024 PNG and resizing it costs tens of milliseconds, every epoch, for every image; the cache
does it once. Per split and size, in <cache dir>/<W>x<H>/ (default cache dir: <data root>/cycleseg_cache):

    <split>_images.npy     (N, H, W, 3) uint8, the resized images (data.read_image)
    <split>_labels.npy     (N, H, W) uint8 class indices 0..S-1 (data.read_label); absent for the test split
    <split>_manifest.json  the source files (relative paths, byte sizes, mtimes, SHA-256), the size, the
                           Pillow version (its resize is what the arrays hold), the class table's
                           fingerprint (a changed classes.yaml changes the labels) and the class pixel counts

Both paths go through the same read_image / read_label and the same image_to_tensor, so a cached batch is
bit-identical to one read from the PNGs (tests/test_cache.py). A cache is *stale* when the split's file list,
a file's byte size or content (SHA-256, computed only for files whose mtime changed, e.g. after a copy),
the size, the class table, the cache format or the Pillow version differ from what it was built from.
Every function takes the dataset's format (`fmt`: auto | cityscapes | folder, source.py), and the dataset itself
when the caller has opened it already (`source`: a DataSource, whose folders are then not walked again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from cycleseg.data.cityscapes import Sample, image_to_tensor, open_image_header, read_image, read_label
from cycleseg.data.source import DataSource, SplitDataset, open_source
from cycleseg.errors import DataError
from cycleseg.fileio import atomic_file, atomic_write, make_folder, read_text, require_file, write_fix

__all__ = ["CACHE_FORMAT", "CachedDataset", "cache_folder", "cache_root", "cache_status", "class_pixel_counts",
           "manifest_name", "open_dataset", "parse_folder_size", "prepare", "prepare_split", "read_cache_status"]

CACHE_FORMAT = 2  # bump when the arrays' meaning changes; older caches are then stale (2: class table recorded)


def cache_root(root: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The folder holding one <W>x<H>/ cache folder per size."""
    return Path(cache_dir) if cache_dir else Path(root) / "cycleseg_cache"


def cache_folder(root: str | Path, size: tuple[int, int], cache_dir: str | Path | None = None) -> Path:
    """The cache folder of size = (H, W)."""
    height, width = size
    return cache_root(root, cache_dir) / f"{width}x{height}"


def parse_folder_size(name: str) -> tuple[int, int] | None:
    """'512x256' -> (256, 512) = (H, W); None for any other name."""
    width, sep, height = name.partition("x")
    return (int(height), int(width)) if sep and width.isdigit() and height.isdigit() else None


def manifest_name(split: str) -> str:
    return f"{split}_manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_record(root: Path, path: Path | None, prefix: str, with_hash: bool = True) -> dict[str, Any]:
    if path is None:
        return {prefix: None}
    st = path.stat()
    record = {prefix: path.relative_to(root).as_posix(), f"{prefix}_bytes": st.st_size,
              f"{prefix}_mtime_ns": st.st_mtime_ns}
    if with_hash:
        record[f"{prefix}_sha256"] = _sha256(path)
    return record


def prepare_split(root: str | Path, split: str, size: tuple[int, int], cache_dir: str | Path | None = None,
                  progress: bool = True, fmt: str = "auto", source: DataSource | None = None) -> Path:
    """Build the cache of one split at size = (H, W); returns its manifest path.

    Files are written under temporary names and renamed, manifest last, so that a crash or a concurrent reader
    never sees a manifest describing arrays that are not complete.
    """
    root = Path(root)
    source = source if source is not None else open_source(root, fmt)
    samples, classes = source.samples(split), source.classes
    folder = cache_folder(root, size, cache_dir)
    # a cycleseg_cache/ or <W>x<H>/ linked elsewhere (a shared dataset) is refused: nothing is written there
    make_folder(folder, cache_dir if cache_dir else root, error=DataError)
    manifest = folder / manifest_name(split)
    manifest.unlink(missing_ok=True)  # from here on the old cache is invalid
    height, width = size
    has_labels = samples[0].label_path is not None
    shapes = {"images": (len(samples), height, width, 3), "labels": (len(samples), height, width)}
    kinds = ("images", "labels") if has_labels else ("images",)
    records, class_pixels = [], np.zeros(classes.num_classes, np.int64)
    try:
        # Plain sequential writes, not a writable memmap: a full disk is then an OSError, not a SIGBUS. Each array
        # through its own *.tmp (never through a link planted there), renamed when all images are written.
        with contextlib.ExitStack() as stack:
            outs = {kind: stack.enter_context(atomic_file(folder / f"{split}_{kind}.npy", DataError))
                    for kind in kinds}
            for kind, f in outs.items():
                np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shapes[kind]})
            for sample in tqdm(samples, desc=f"prepare {split} {width}x{height}", unit="img", disable=not progress,
                               dynamic_ncols=True):
                outs["images"].write(read_image(sample.image_path, size).tobytes())
                if has_labels:
                    labels = read_label(sample.label_path, size, classes)
                    outs["labels"].write(labels.tobytes())
                    class_pixels += np.bincount(labels.ravel(), minlength=classes.num_classes)[:classes.num_classes]
                with open_image_header(sample.image_path) as header:
                    source_size = list(header.size)
                records.append({**_source_record(root, sample.image_path, "image"),
                                **_source_record(root, sample.label_path, "label"), "source_size": source_size})
    except OSError as e:
        raise DataError(f"{folder}: cannot write the cache ({e.strerror or e}); {write_fix(e, manifest)}, or set "
                        "data.cache_dir (prepare --cache-dir) to another folder") from None
    if not has_labels:
        (folder / f"{split}_labels.npy").unlink(missing_ok=True)
    _write_manifest(manifest, {
        "format": CACHE_FORMAT, "split": split, "height": height, "width": width, "pillow": PIL.__version__,
        "classes": classes.fingerprint(), "class_names": list(classes.names),
        "num_images": len(samples), "class_pixels": class_pixels.tolist() if has_labels else None, "files": records,
    })
    return manifest


def prepare(root: str | Path, size: tuple[int, int], splits: tuple[str, ...] | None = None,
            cache_dir: str | Path | None = None, force: bool = False, progress: bool = True,
            fmt: str = "auto", source: DataSource | None = None) -> dict[str, str]:
    """Build the caches of `splits` (default: every split present) unless already up to date.

    Returns {split: "built" | "up to date"}. The data is opened once (or `source` used): each split's folder is
    walked once for the check and the build together.
    """
    source = source if source is not None else open_source(root, fmt)
    if splits is None:
        splits = source.present_splits()
        if not splits:
            source.samples("train")  # raises the reader's error naming the missing folder
    done = {}
    for split in splits:
        status, _ = cache_status(root, split, size, cache_dir, source.format, source=source)
        if status == "ok" and not force:
            done[split] = "up to date"
        else:
            prepare_split(root, split, size, cache_dir, progress, source.format, source=source)
            done[split] = "built"
    return done


def cache_status(root: str | Path, split: str, size: tuple[int, int], cache_dir: str | Path | None = None,
                 fmt: str = "auto", source: DataSource | None = None) -> tuple[str, str]:
    """("ok" | "missing" | "stale", why) for the cache of `split` at size = (H, W).

    Checks file names and byte sizes of every source file; hashes only files whose mtime changed, and when their
    content is unchanged records the new mtime so that the next check is fast again. DataError if the data
    folder itself is broken (DataSource.samples).
    """
    status, reason, _ = read_cache_status(Path(root), split, size, cache_dir, fmt, source)
    return status, reason


def read_cache_status(root: Path, split: str, size: tuple[int, int], cache_dir: str | Path | None = None,
                      fmt: str = "auto", source: DataSource | None = None
                      ) -> tuple[str, str, dict[str, Any] | None]:
    """cache_status, and the manifest it read when the cache is ok (None otherwise), to hand to CachedDataset:
    the manifest is then read once."""
    folder = cache_folder(root, size, cache_dir)
    manifest_path = folder / manifest_name(split)
    if not require_file(manifest_path, DataError):  # a FIFO or device: DataError naming it, never opened
        return "missing", f"no cache at {folder}", None
    try:
        manifest = json.loads(read_text(manifest_path, DataError))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "stale", f"{manifest_path.name} is unreadable", None
    why = _stale_settings(manifest, size)
    if why:
        return "stale", why, None
    source = source if source is not None else open_source(root, fmt)
    why = _stale_file_list(root, source, split, files, manifest.get("classes"))
    if why:
        return "stale", why, None
    why, refreshed = _stale_sources(root, files)
    why = why or _stale_arrays(folder, split, files, size)
    if why:
        return "stale", why, None
    if refreshed:
        try:
            _write_manifest(manifest_path, manifest)
        except DataError:
            pass  # a read-only cache stays valid, its check just hashes again next time
    return "ok", "up to date", manifest


def _stale_settings(manifest: dict[str, Any], size: tuple[int, int]) -> str:
    """Why a cache's format, size or Pillow version do not fit ("" when they do)."""
    height, width = size
    if manifest.get("format") != CACHE_FORMAT:
        return f"cache format {manifest.get('format')}, this cycleseg writes {CACHE_FORMAT}"
    if (manifest.get("height"), manifest.get("width")) != (height, width):
        return f"built for {manifest.get('width')}x{manifest.get('height')}"
    if manifest.get("pillow") != PIL.__version__:
        return f"built with Pillow {manifest.get('pillow')}, whose resizing may differ from {PIL.__version__}"
    return ""


def _stale_sources(root: Path, files: list[dict[str, Any]]) -> tuple[str, bool]:
    """(why the manifest's source files are not the split's, "" when they are; whether a record was refreshed).

    Compares the class table, the file list, byte sizes, and the content (SHA-256) of files whose mtime changed;
    a file whose content is unchanged gets its new mtime in its record (the manifest is then rewritten)."""
    refreshed = False
    for record in files:
        for prefix in ("image", "label"):
            if record.get(prefix) is None:
                continue
            path = root / record[prefix]
            st = path.stat()
            if st.st_size != record[f"{prefix}_bytes"]:
                return f"{record[prefix]} changed since prepare ({st.st_size} bytes, was {record[prefix + '_bytes']})", \
                    refreshed
            if st.st_mtime_ns != record[f"{prefix}_mtime_ns"]:
                if _sha256(path) != record[f"{prefix}_sha256"]:
                    return f"{record[prefix]} changed since prepare (content)", refreshed
                record[f"{prefix}_mtime_ns"], refreshed = st.st_mtime_ns, True
    return "", refreshed


def _stale_file_list(root: Path, source: DataSource, split: str, files: list[dict[str, Any]],
                     classes_fingerprint: Any) -> str:
    """Why the manifest's class table or file list is not the split's ("" when they are)."""
    if classes_fingerprint != source.classes.fingerprint():
        return f"built for other classes than those of {source.classes.source}"
    now = [(s.image_path.relative_to(root).as_posix(),
            s.label_path.relative_to(root).as_posix() if s.label_path else None) for s in source.samples(split)]
    then = [(r.get("image"), r.get("label")) for r in files]
    if now != then:
        added, removed = set(now) - set(then), set(then) - set(now)
        if not (added or removed):
            return "file order changed"
        first = min(added or removed, key=lambda pair: pair[0] or "")[0]  # an image path
        return f"{len(added)} image(s) added and {len(removed)} removed since prepare (first: {first})"
    return ""


def _stale_arrays(folder: Path, split: str, files: list[dict[str, Any]], size: tuple[int, int]) -> str:
    """Why the .npy arrays do not hold what the manifest lists ("" when they do)."""
    height, width = size
    expected = {"images": (len(files), height, width, 3), "labels": (len(files), height, width)}
    for kind, shape in expected.items():
        if kind == "labels" and files and files[0].get("label") is None:
            continue
        try:
            found = _load_array(folder / f"{split}_{kind}.npy").shape
        except (OSError, ValueError):
            return f"{split}_{kind}.npy is missing or unreadable"
        if found != shape:
            return f"{split}_{kind}.npy has shape {found}, expected {shape}"
    return ""


def _load_array(path: Path) -> np.ndarray:
    """A cache array, memory-mapped (no pickled objects); DataError for a FIFO or device (never opened),
    FileNotFoundError when it is missing."""
    if not require_file(path, DataError):
        raise FileNotFoundError(f"{path}: not found")
    return np.load(path, mmap_mode="r")


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """The manifest, atomically (fileio.atomic_write): DataError naming it when it cannot be written."""
    atomic_write(path, json.dumps(manifest, indent=1) + "\n", error=DataError)


class CachedDataset(Dataset):
    """A split read from its cache: the same items as SplitDataset, (image (3, H, W) float32 in [-1, 1],
    labels (H, W) int64 class indices, all -1 for a split without labels).

    The arrays are memory-mapped lazily in each process (DataLoader workers included), never pickled.
    """

    def __init__(self, source: DataSource, split: str, size: tuple[int, int],
                 cache_dir: str | Path | None = None, manifest: dict[str, Any] | None = None) -> None:
        self.source, self.root, self.split, self.size = source, source.root, split, size
        self.classes = source.classes
        self.folder = cache_folder(source.root, size, cache_dir)
        self.samples: list[Sample] = source.samples(split)
        self.manifest = manifest if manifest is not None else \
            json.loads(read_text(self.folder / manifest_name(split), DataError))  # read_cache_status read it
        self.has_labels = self.samples[0].label_path is not None
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The memory-mapped (N, H, W, 3) images and (N, H, W) trainIds (None for the test split)."""
        if self._images is None:
            self._images = _load_array(self.folder / f"{self.split}_images.npy")
            if self.has_labels:
                self._labels = _load_array(self.folder / f"{self.split}_labels.npy")
        return self._images, self._labels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        images, labels = self.arrays()
        image = image_to_tensor(np.asarray(images[index]))
        if labels is None:
            return image, torch.full(self.size, -1, dtype=torch.int64)
        return image, torch.from_numpy(labels[index].astype(np.int64))

    def image(self, index: int) -> Tensor:
        """The image alone, (3, H, W) float32 in [-1, 1] (the unlabelled images of semi-supervised training)."""
        return image_to_tensor(np.asarray(self.arrays()[0][index]))

    def label(self, index: int) -> Tensor:
        """The labels alone, (H, W) int64 class indices."""
        return torch.from_numpy(self.arrays()[1][index].astype(np.int64))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None, "_labels": None}  # workers map the files themselves


def open_dataset(root: str | Path, split: str, size: tuple[int, int], cache: str = "auto",
                 cache_dir: str | Path | None = None, progress: bool = False, fmt: str = "auto",
                 source: DataSource | None = None) -> Dataset:
    """The split as a Dataset: from the cache when there is one that matches, else from the PNGs.

    cache: "auto" uses an up-to-date cache, rebuilds a stale one, reads the PNGs when there is none;
    "require" refuses (DataError) to go on without an up-to-date cache; "off" always reads the PNGs.
    source: the dataset at `root` already opened (open_source), whose folders are then not walked again.
    """
    source = source if source is not None else open_source(root, fmt)
    if cache == "off":
        return SplitDataset(source, split, size)
    status, reason, manifest = read_cache_status(Path(root), split, size, cache_dir, source.format, source)
    height, width = size
    if status == "ok":
        return CachedDataset(source, split, size, cache_dir, manifest)
    command = f"cycleseg prepare {root} --size {width}x{height}" + (f" --cache-dir {cache_dir}" if cache_dir else "")
    if cache == "require":
        raise DataError(f"{cache_folder(root, size, cache_dir) / manifest_name(split)}: {status} cache for {split} "
                        f"at {width}x{height} ({reason}) and data.cache=require; run `{command}`")
    if status == "missing":
        return SplitDataset(source, split, size)
    print(f"cycleseg: the {split} cache at {width}x{height} is stale ({reason}); rebuilding it", file=sys.stderr)
    prepare_split(root, split, size, cache_dir, progress, source.format, source=source)
    return CachedDataset(source, split, size, cache_dir)


def class_pixel_counts(dataset: Dataset, progress: bool = False) -> np.ndarray:
    """(S,) int64 pixel count of each class over the labels of `dataset` (a split, cached or not, or a Subset).

    A whole cached split answers from its manifest (counted when it was prepared); otherwise the labels are
    read (from the cache's array, or decoded from the PNGs).
    """
    base, indices = dataset, None
    if isinstance(dataset, Subset):
        base, indices = dataset.dataset, list(dataset.indices)
    if not isinstance(base, (CachedDataset, SplitDataset)):
        raise TypeError(f"class_pixel_counts needs a dataset split, got {type(base).__name__}")
    if base.samples[0].label_path is None:
        raise DataError(f"{base.root}: the {base.split} split has no labels to count")
    if isinstance(base, CachedDataset) and indices is None and base.manifest.get("class_pixels") is not None:
        return np.asarray(base.manifest["class_pixels"], np.int64)
    indices = range(len(base)) if indices is None else indices
    num_classes = base.classes.num_classes
    counts = np.zeros(num_classes, np.int64)
    for i in tqdm(indices, desc="class frequencies", unit="img", disable=not progress, dynamic_ncols=True):
        if isinstance(base, CachedDataset):
            labels = np.asarray(base.arrays()[1][i])
        else:
            labels = read_label(base.samples[i].label_path, base.size, base.classes)
        counts += np.bincount(labels.ravel(), minlength=num_classes)[:num_classes]
    return counts
