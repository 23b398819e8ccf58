"""The class table of a dataset: what each of the S network outputs means, and how label files encode it.

A label file stores *values* (Cityscapes: labelIds 0..33; a folder dataset: whatever its classes.yaml says).
The table maps every value to a class index 0..S-1, names and colours each class, and says which classes are
evaluated: the first `num_evaluated` ones. Values that a dataset marks as void (Cityscapes: the ids whose
trainId is 255) become one extra class at the end, "background" or "void": G still predicts it and F still
reads it (every pixel needs a class for F's one-hot input, SPEC "Data"), but it is left out of the mIoU.

A folder dataset's classes.yaml:

    classes:                              # in this order: class index 0, 1, ...
      - {name: sky, value: 0, color: [128, 128, 128]}
      - {name: building, values: [1, 2], color: [128, 0, 0]}   # several label values may form one class
      ...
    void: [11, 255]                       # optional: values not evaluated (one extra class "void")
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cycleseg.errors import DataError

__all__ = ["CLASSES_FILE", "ClassTable", "load_classes"]

CLASSES_FILE = "classes.yaml"

# Colours for classes whose classes.yaml entry gives none: well-separated, fixed, background-free.
_DEFAULT_COLOURS = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
                    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
                    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)]


@dataclass(frozen=True)
class ClassTable:
    """S classes: names, colours and label values; the first `num_evaluated` classes count in the mIoU.

    `values[c]` lists the label-file values of class c; the first one is what predictions are written with.
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    values: tuple[tuple[int, ...], ...]
    num_evaluated: int
    source: str = "<built in>"  # where the table was read from, for messages

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.colors) == len(self.values)):
            raise ValueError("names, colors and values need one entry per class")
        seen: dict[int, str] = {}
        for name, vals in zip(self.names, self.values):
            for v in vals:
                if v in seen:
                    raise DataError(f"{self.source}: label value {v} belongs to both {seen[v]!r} and {name!r}; "
                                    "give each value one class")
                seen[v] = name

    @property
    def num_classes(self) -> int:
        """S, the number of network outputs (evaluated classes plus the void class, if any)."""
        return len(self.names)

    @property
    def evaluated_names(self) -> tuple[str, ...]:
        return self.names[: self.num_evaluated]

    @property
    def palette(self) -> np.ndarray:
        """(S, 3) uint8 colours."""
        return np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)

    @property
    def lookup(self) -> np.ndarray:
        """(256,) int64: label value -> class index; -1 for values the dataset does not define."""
        table = np.full(256, -1, dtype=np.int64)
        for c, vals in enumerate(self.values):
            table[list(vals)] = c
        return table

    @property
    def class_values(self) -> np.ndarray:
        """(S,) uint8: the label value predictions of each class are written with."""
        return np.asarray([vals[0] for vals in self.values], dtype=np.uint8)

    def to_class_ids(self, label_values: np.ndarray, source: str = "<array>") -> np.ndarray:
        """(H, W) uint8 label values -> (H, W) int64 class indices; DataError naming `source` on unknown values."""
        ids = self.lookup[label_values]
        if (ids < 0).any():
            unknown = sorted(set(np.unique(label_values[ids < 0]).tolist()))
            raise DataError(f"{source}: label values {unknown[:10]} are not in the class table ({self.source}); "
                            f"add them to a class or to `void`")
        return ids

    def colorize(self, class_ids: np.ndarray) -> np.ndarray:
        """(H, W) class indices -> (H, W, 3) uint8 colours."""
        return self.palette[np.asarray(class_ids)]

    def to_dict(self) -> dict[str, Any]:
        """The table as plain values (saved in run folders; `from_dict` reads it back)."""
        return {"classes": [{"name": n, "values": list(v), "color": list(c)}
                            for n, v, c in zip(self.names, self.values, self.colors)],
                "num_evaluated": self.num_evaluated}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> ClassTable:
        entries = d["classes"]
        return cls(tuple(e["name"] for e in entries), tuple(tuple(e["color"]) for e in entries),
                   tuple(tuple(e["values"]) for e in entries), int(d["num_evaluated"]), source)

    def fingerprint(self) -> str:
        """A short hash of names, values and evaluation split (not colours): what the cached labels depend on."""
        key = [self.names, self.values, self.num_evaluated]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]

    def same_classes(self, other: ClassTable) -> bool:
        return (self.names, self.values, self.num_evaluated) == (other.names, other.values, other.num_evaluated)


def load_classes(path: str | Path) -> ClassTable:
    """Read a folder dataset's classes.yaml (format in the module docstring); DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class table not found; a folder dataset needs a {CLASSES_FILE} naming each class "
                        "and its label value(s) (see docs/guide/own-data.md)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the file as UTF-8") from None
    except OSError as e:
        raise DataError(f"{path}: not readable ({e.strerror or e}); fix its permissions") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise DataError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e}); fix the file") from None

    def fail(why: str) -> DataError:
        return DataError(f"{path}: {why}")

    if not isinstance(raw, dict) or not isinstance(raw.get("classes"), list) or not raw["classes"]:
        raise fail("expected a `classes:` list of {name, value(s), color} entries")
    unknown = set(raw) - {"classes", "void"}
    if unknown:
        raise fail(f"unknown key(s) {', '.join(sorted(unknown))}; allowed: classes, void")
    names, colors, values = [], [], []
    for i, entry in enumerate(raw["classes"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise fail(f"classes[{i}] needs a name, e.g. {{name: road, value: 1, color: [128, 64, 128]}}")
        if ("value" in entry) == ("values" in entry):
            raise fail(f"class {entry['name']!r} needs exactly one of value: N or values: [N, ...]")
        vals = entry["values"] if "values" in entry else [entry["value"]]
        values.append(_label_values(vals, f"class {entry['name']!r}", fail))
        color = entry.get("color", list(_DEFAULT_COLOURS[i % len(_DEFAULT_COLOURS)]))
        if not (isinstance(color, list) and len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255
                                                                     for c in color)):
            raise fail(f"class {entry['name']!r}: color must be [R, G, B] with integers 0..255, got {color!r}")
        names.append(entry["name"])
        colors.append(tuple(color))
    if len(set(names)) != len(names):
        raise fail(f"class names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    num_evaluated = len(names)
    void = raw.get("void")
    if void is not None:
        void_values = _label_values(void if isinstance(void, list) else [void], "void", fail)
        if "void" in names:
            raise fail("a class is named 'void', which is the name of the void class; rename it")
        names.append("void")
        colors.append((0, 0, 0))
        values.append(void_values)
    if len(names) < 2:
        raise fail("needs at least 2 classes (counting void)")
    return ClassTable(tuple(names), tuple(colors), tuple(values), num_evaluated, str(path))


def _label_values(vals: Any, what: str, fail) -> tuple[int, ...]:
    if not (isinstance(vals, list) and vals and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255
                                                    for v in vals)):
        raise fail(f"{what}: label values must be integers 0..255 (PNG labels are 8-bit), got {vals!r}")
    return tuple(vals)
