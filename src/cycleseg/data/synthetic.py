"""A synthetic "toy city" dataset written in the Cityscapes layout, with real Cityscapes labelIds, or as a
folder dataset with 11 CamVid-like classes (`fmt="folder"`: JPEG images, PNG labels, classes.yaml).

Each image is a procedural street scene: sky, buildings with windows, trees, a road in perspective with lane
markings, sidewalks, terrain, fences, poles with traffic signs and lights, cars, trucks, buses, persons,
riders on bicycles, and void regions (ego vehicle, static objects, ground) whose ids map to background.
Every object draws its own colour and texture, so an image is not a fixed function of its label map, while
each class keeps a typical appearance a network can learn. Deterministic for a seed: image i of a split uses
its own generator seeded with (seed, split, i), whatever the number of images generated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cycleseg.data.cityscapes import IMAGE_SUFFIX, LABEL_SUFFIX
from cycleseg.errors import ConfigError, DataError

__all__ = ["CAMVID_CLASSES", "CITIES", "COLOUR_MODES", "SCENES", "SHAPE_CLASSES", "make_synthetic", "render_scene",
           "render_shapes"]

SCENES = ("city", "shapes")
# class: each object's colour is its class colour plus a jitter (the label map predicts much of the image);
# independent: each object's colour is uniform on [0, 255]^3 whatever its class (the label map predicts none of it)
COLOUR_MODES = ("class", "independent")

CITIES = {"train": ("toyberg", "pixelstadt", "gridham"), "val": ("rendermund", "polyburg")}

# Cityscapes labelIds used by the scenes.
EGO, STATIC, GROUND, ROAD, SIDEWALK, PARKING = 1, 4, 6, 7, 8, 9
BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = 11, 12, 13, 17, 19, 20, 21, 22, 23
PERSON, RIDER, CAR, TRUCK, BUS, BICYCLE = 24, 25, 26, 27, 28, 33

# The folder format's 11 classes (those of the CamVid benchmark of SegNet), the Cityscapes labelIds each one
# takes from the scenes, and the CamVid colours; everything else (ego vehicle, static, ground) is void, value 11.
CAMVID_CLASSES = (
    ("sky", (SKY,), (128, 128, 128)), ("building", (BUILDING, WALL), (128, 0, 0)),
    ("pole", (POLE, LIGHT), (192, 192, 128)), ("road", (ROAD, PARKING), (128, 64, 128)),
    ("pavement", (SIDEWALK,), (60, 40, 222)), ("tree", (VEGETATION, TERRAIN), (128, 128, 0)),
    ("sign_symbol", (SIGN,), (192, 128, 128)), ("fence", (FENCE,), (64, 64, 128)),
    ("car", (CAR, TRUCK, BUS), (64, 0, 128)), ("pedestrian", (PERSON,), (64, 64, 0)),
    ("bicyclist", (RIDER, BICYCLE), (0, 128, 192)),
)
CAMVID_VOID = 11
_TO_CAMVID = np.full(256, CAMVID_VOID, np.uint8)
for _value, (_name, _ids, _colour) in enumerate(CAMVID_CLASSES):
    _TO_CAMVID[list(_ids)] = _value

# Class-typical colour (RGB, 0..255) and how far one object may deviate from it.
BASE_COLOURS = {
    SKY: ((120, 170, 225), 35), BUILDING: ((140, 120, 110), 45), WALL: ((170, 160, 140), 30),
    VEGETATION: ((60, 120, 45), 30), TERRAIN: ((140, 160, 80), 30), ROAD: ((85, 85, 90), 20),
    SIDEWALK: ((175, 160, 165), 25), FENCE: ((150, 130, 100), 30), POLE: ((110, 110, 115), 25),
    SIGN: ((235, 210, 40), 25), LIGHT: ((40, 40, 40), 15), PERSON: ((180, 60, 70), 60),
    RIDER: ((200, 120, 40), 50), BICYCLE: ((60, 40, 120), 40), CAR: ((50, 70, 160), 80),
    TRUCK: ((200, 200, 195), 40), BUS: ((220, 150, 30), 45), EGO: ((30, 30, 35), 10),
    STATIC: ((120, 90, 70), 40), GROUND: ((120, 105, 90), 25), PARKING: ((110, 100, 120), 20),
}


class _Canvas:
    """A label map (H, W) uint8 and an image (H, W, 3) float32 painted together, object by object."""

    def __init__(self, height: int, width: int, rng: np.random.Generator, colour_spread: float = 1.0,
                 colour_mode: str = "class") -> None:
        self.h, self.w, self.rng = height, width, rng
        self.colour_spread, self.colour_mode = colour_spread, colour_mode
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self.label = np.zeros((height, width), np.uint8)  # 0 = unlabeled until painted
        self.image = np.zeros((height, width, 3), np.float32)

    def paint(self, mask: np.ndarray, label_id: int, texture: float | None = None) -> None:
        """Paint `mask` with this object's own colour: class colour + jitter + vertical shading + noise."""
        if not mask.any():
            return
        if self.colour_mode == "independent":  # the same draw for every class: colour tells nothing of the class
            colour = self.rng.uniform(0, 255, 3).astype(np.float32)
        else:
            base, spread = BASE_COLOURS[label_id]
            spread = spread * self.colour_spread
            colour = np.clip(np.asarray(base, np.float32) + self.rng.uniform(-spread, spread, 3), 0, 255)
        shade = self.rng.uniform(-25, 25) * (self.yy[mask] / self.h - 0.5)
        amount = self.rng.uniform(3, 14) if texture is None else texture
        noise = self.rng.normal(0, amount, (int(mask.sum()), 1)) + self.rng.normal(0, amount / 3,
                                                                                   (int(mask.sum()), 3))
        self.image[mask] = colour + shade[:, None] + noise
        self.label[mask] = label_id

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return (self.xx >= x0) & (self.xx < x1) & (self.yy >= y0) & (self.yy < y1)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((self.xx - cx) / max(rx, 0.5)) ** 2 + ((self.yy - cy) / max(ry, 0.5)) ** 2 <= 1.0


def render_scene(height: int, width: int, rng: np.random.Generator,
                 colour_spread: float = 1.0, colour_mode: str = "class") -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (image (H, W, 3) uint8 RGB, labelIds (H, W) uint8).

    colour_spread scales how far each object's colour may stray from its class-typical colour (BASE_COLOURS):
    above 1, the label map predicts less of the image, which gives a cycle model more detail worth hiding.
    colour_mode "independent" draws every object's colour uniformly whatever its class (COLOUR_MODES).
    """
    c = _Canvas(height, width, rng, colour_spread, colour_mode)
    h, w = height, width
    horizon = h * rng.uniform(0.35, 0.5)
    vx = w * rng.uniform(0.35, 0.65)  # vanishing point of the road
    depth = np.clip((c.yy - horizon) / (h - horizon), 0, None)  # 0 at the horizon, 1 at the bottom

    # Sky, then the ground plane: road in perspective, sidewalks, then terrain / void ground further out.
    c.paint(c.yy < horizon, SKY, texture=rng.uniform(1, 6))
    below = c.yy >= horizon
    c.paint(below, rng.choice([TERRAIN, GROUND, TERRAIN]))
    side_half = w * rng.uniform(0.75, 1.1) * depth
    road_half = w * rng.uniform(0.35, 0.5) * depth
    c.paint(below & (np.abs(c.xx - vx) < side_half), SIDEWALK)
    if rng.random() < 0.3:  # a parking strip (void in Cityscapes) beside the road
        c.paint(below & (np.abs(c.xx - vx) < road_half * 1.25), PARKING)
    c.paint(below & (np.abs(c.xx - vx) < road_half), ROAD)
    lane = below & (np.abs(c.xx - vx) < 0.02 * w * depth + 0.3) & (np.sin(c.yy * 0.6 / (depth + 0.08)) > 0.2)
    c.image[lane] = rng.uniform(200, 250)  # lane markings: texture on the road, still labelled road

    # Buildings along the horizon, with windows; walls and trees in front of them.
    x = -rng.uniform(0, 0.1 * w)
    while x < w:
        bw = w * rng.uniform(0.08, 0.25)
        top = horizon - h * rng.uniform(0.1, 0.4)
        if rng.random() < 0.85:
            mask = c.rect(x, top, x + bw, horizon + 1)
            c.paint(mask, BUILDING)
            win = mask & (np.sin(c.xx * rng.uniform(0.8, 1.6)) > 0.4) & (np.sin(c.yy * rng.uniform(0.8, 1.6)) > 0.3)
            c.image[win] *= rng.uniform(0.45, 0.75)
        x += bw
    for _ in range(rng.integers(0, 3)):
        x0 = rng.uniform(0, w)
        c.paint(c.rect(x0, horizon - h * 0.06, x0 + w * rng.uniform(0.1, 0.25), horizon + 1), WALL)
    for _ in range(rng.integers(1, 5)):
        tx, r = rng.uniform(0, w), h * rng.uniform(0.05, 0.14)
        c.paint(c.rect(tx - r * 0.12, horizon - r, tx + r * 0.12, horizon + 2), VEGETATION)
        c.paint(c.ellipse(tx, horizon - r * 1.4, r * rng.uniform(0.8, 1.3), r), VEGETATION, texture=18)

    # Objects on the ground, far to near so that nearer ones cover farther ones.
    objects = []
    for _ in range(rng.integers(1, 5)):
        objects.append(("vehicle", rng.uniform(0.15, 0.85)))
    for _ in range(rng.integers(0, 4)):
        objects.append(("person", rng.uniform(0.2, 1.0)))
    for _ in range(rng.integers(1, 4)):
        objects.append(("pole", rng.uniform(0.15, 0.9)))
    if rng.random() < 0.5:
        objects.append(("fence", rng.uniform(0.3, 0.8)))
    if rng.random() < 0.4:
        objects.append(("static", rng.uniform(0.2, 0.9)))
    for kind, d in sorted(objects, key=lambda o: o[1]):
        _draw_object(c, kind, d, horizon, vx, rng)

    if rng.random() < 0.5:  # the ego vehicle's bonnet at the bottom edge (void)
        bonnet = c.yy > h * (1 - rng.uniform(0.05, 0.12)) + 0.08 * h * ((c.xx - w / 2) / w) ** 2 * 4
        c.paint(bonnet, EGO, texture=2)
    image = np.clip(c.image, 0, 255).astype(np.uint8)
    return image, c.label


# The shapes scene: the class of an object is its shape (Cityscapes labelIds, so the scene uses the same layout).
SHAPE_CLASSES = {"background": ROAD, "disc": CAR, "square": BUILDING, "triangle": PERSON, "ring": SIGN}


def render_shapes(height: int, width: int, rng: np.random.Generator, colour_spread: float = 1.0,
                  colour_mode: str = "class") -> tuple[np.ndarray, np.ndarray]:
    """A flat scene of 3 to 6 shapes on a background: (image (H, W, 3) uint8 RGB, labelIds (H, W) uint8).

    Each shape's class is its outline (SHAPE_CLASSES: disc, square, triangle, ring; the background is road);
    half-widths 15-35 % of the shorter side, later shapes cover earlier ones. With colour_mode "independent" every
    region's colour is uniform on [0, 255]^3, so only the shape tells the class, and the label map predicts
    none of the colours: the laboratory of docs/mechanism.md.
    """
    c = _Canvas(height, width, rng, colour_spread, colour_mode)
    side = min(height, width)
    c.paint(np.ones((height, width), bool), SHAPE_CLASSES["background"], texture=rng.uniform(1, 4))
    for _ in range(rng.integers(3, 7)):
        kind = rng.choice(["disc", "square", "triangle", "ring"])
        r = side * rng.uniform(0.15, 0.35)  # half the width of the shape
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        if kind == "disc":
            mask = c.ellipse(cx, cy, r, r)
        elif kind == "square":
            mask = c.rect(cx - r, cy - r, cx + r, cy + r)
        elif kind == "triangle":  # apex up: inside the band under the apex, between the two sloped sides
            mask = (c.yy <= cy + r) & (np.abs(c.xx - cx) <= (c.yy - (cy - r)) / 2)
        else:
            mask = c.ellipse(cx, cy, r, r) & ~c.ellipse(cx, cy, r * 0.55, r * 0.55)
        c.paint(mask, SHAPE_CLASSES[kind], texture=rng.uniform(1, 4))
    return np.clip(c.image, 0, 255).astype(np.uint8), c.label


def _draw_object(c: _Canvas, kind: str, d: float, horizon: float, vx: float, rng: np.random.Generator) -> None:
    """Draw one object whose base sits at depth d (0 horizon, 1 bottom); sizes shrink with distance."""
    h, w = c.h, c.w
    y = horizon + d * (h - horizon)
    scale = d * h  # apparent size of a 1-unit object at this depth
    road_half = w * 0.4 * d
    if kind == "vehicle":
        x = vx + rng.uniform(-0.9, 0.9) * road_half
        label = rng.choice([CAR, CAR, CAR, TRUCK, BUS])
        vw = scale * {CAR: 0.55, TRUCK: 0.7, BUS: 0.85}[label] * rng.uniform(0.85, 1.15)
        vh = scale * {CAR: 0.32, TRUCK: 0.55, BUS: 0.6}[label] * rng.uniform(0.85, 1.15)
        body = c.rect(x - vw / 2, y - vh, x + vw / 2, y)
        c.paint(body, label)
        glass = c.rect(x - vw * 0.35, y - vh * 0.9, x + vw * 0.35, y - vh * 0.6) & body
        c.image[glass] = c.image[glass] * 0.4 + 20  # windows: darker, same label
        for wx in (x - vw * 0.3, x + vw * 0.3):
            c.image[c.ellipse(wx, y - vh * 0.05, vw * 0.09, vh * 0.12) & body] = rng.uniform(10, 35)
    elif kind == "person":
        side = rng.choice([-1, 1])
        x = vx + side * road_half * rng.uniform(1.1, 1.9)
        ph = scale * rng.uniform(0.45, 0.6)
        if rng.random() < 0.3:  # a rider on a bicycle
            c.paint(c.ellipse(x, y - ph * 0.12, ph * 0.35, ph * 0.13) & ~c.ellipse(x, y - ph * 0.12, ph * 0.2,
                                                                                   ph * 0.06), BICYCLE)
            c.paint(c.rect(x - ph * 0.08, y - ph * 0.85, x + ph * 0.08, y - ph * 0.2), RIDER)
            c.paint(c.ellipse(x, y - ph * 0.93, ph * 0.07, ph * 0.08), RIDER)
        else:
            c.paint(c.rect(x - ph * 0.1, y - ph * 0.82, x + ph * 0.1, y), PERSON)
            c.paint(c.ellipse(x, y - ph * 0.9, ph * 0.08, ph * 0.09), PERSON)
    elif kind == "pole":
        side = rng.choice([-1, 1])
        x = vx + side * road_half * rng.uniform(1.05, 1.4)
        ph, pw = scale * rng.uniform(0.9, 1.4), max(1.0, scale * 0.025)
        top = y - ph
        c.paint(c.rect(x - pw, top, x + pw, y), POLE, texture=4)
        s = scale * rng.uniform(0.1, 0.16)
        if rng.random() < 0.6:
            sign = c.ellipse(x, top + s, s, s) if rng.random() < 0.5 else c.rect(x - s, top, x + s, top + 1.6 * s)
            c.paint(sign, SIGN, texture=5)
        else:
            c.paint(c.rect(x - s * 0.5, top, x + s * 0.5, top + 2.4 * s), LIGHT, texture=3)
            lamp = c.ellipse(x, top + s * rng.choice([0.5, 1.2, 1.9]), s * 0.35, s * 0.35)
            c.image[lamp] = rng.choice([(230, 40, 30), (240, 200, 30), (40, 220, 80)])
    elif kind == "fence":
        side = rng.choice([-1, 1])
        x0 = vx + side * road_half * 1.6
        x1 = x0 + side * w * rng.uniform(0.15, 0.4)
        band = c.rect(min(x0, x1), y - scale * 0.25, max(x0, x1), y)
        fence = band & ((np.sin(c.xx * 1.3) > -0.2) | (np.abs(c.yy - (y - scale * 0.2)) < 1.5))
        c.paint(fence, FENCE, texture=6)
    elif kind == "static":
        x = rng.uniform(0, w)
        r = scale * rng.uniform(0.06, 0.15)
        c.paint(c.ellipse(x, y - r, r * rng.uniform(0.8, 1.6), r), STATIC)


MARKER = ".cycleseg-synthetic"  # a folder holding it was written by make_synthetic, which may write into it again


def _require_ours(root: Path) -> None:
    """DataError when `root` holds files that make_synthetic did not write (a user's own dataset, say)."""
    if not root.is_dir() or (root / MARKER).is_file():
        return
    first = next(iter(sorted(root.iterdir())), None)
    if first is not None:
        raise DataError(f"{root}: not empty (holds {first.name}) and not written by make-synthetic; choose a new "
                        "or empty folder, or pass --overwrite to write the toy city over what is there")


def make_synthetic(root: str | Path, num_train: int = 240, num_val: int = 60, size: tuple[int, int] = (128, 256),
                   seed: int = 0, progress: bool = False, fmt: str = "cityscapes", colour_spread: float = 1.0,
                   overwrite: bool = False, scene: str = "city", colour_mode: str = "class") -> dict:
    """Write the toy city into `root`; returns {"train": n, "val": n, "root": str}.

    fmt: "cityscapes" (leftImg8bit/, gtFine/ with labelIds) or "folder" (images/<split>/*.jpg,
    labels/<split>/*.png with values 0..10 and void 11, classes.yaml: CAMVID_CLASSES).

    Args:
        root: output folder: new, empty, or one that make_synthetic wrote before (its files of the same names are
            overwritten); a folder holding anything else is refused unless `overwrite`.
        num_train, num_val: images per split, spread over the split's cities (CITIES).
        size: (H, W) of the images.
        seed: the same seed writes byte-identical files.
        colour_spread: scale of each object's deviation from its class colour (1 = the default city; 3 = objects
            whose colour the label map barely predicts: the watermark study of docs/study.md).
        scene: "city" (the street scenes) or "shapes" (`render_shapes`: the class is the shape).
        colour_mode: "class" (class colour + jitter) or "independent" (each object's colour uniform, whatever
            its class; colour_spread is then unused).

    Raises ConfigError for a negative number of images, DataError naming the path when `root` (or a folder
    above it) is a file or cannot be written, or when it holds files that make_synthetic did not write.
    """
    root = Path(root)
    height, width = size
    for split, count in (("training", num_train), ("validation", num_val)):
        if count < 0:
            raise ConfigError(f"number of {split} images must be >= 0, got {count}")
    if fmt not in ("cityscapes", "folder"):
        raise ConfigError(f"format must be cityscapes or folder, got {fmt!r}")
    if not (np.isfinite(colour_spread) and colour_spread >= 0):
        raise ConfigError(f"colour spread must be a finite number >= 0 (1 = default), got {colour_spread}")
    if scene not in SCENES:
        raise ConfigError(f"scene must be one of {', '.join(SCENES)}, got {scene!r}")
    if colour_mode not in COLOUR_MODES:
        raise ConfigError(f"colour mode must be one of {', '.join(COLOUR_MODES)}, got {colour_mode!r}")
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: exists and is not a folder; choose another output folder")
    if not overwrite:
        _require_ours(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / MARKER).write_text("written by cycleseg make-synthetic: it may write here again\n")
        _write_splits(root, {"train": num_train, "val": num_val}, height, width, seed, progress, fmt, colour_spread,
                      scene, colour_mode)
    except OSError as e:
        raise DataError(f"{e.filename or root}: cannot write ({e.strerror or e}); choose another output folder "
                        "(not inside a file) or fix its permissions") from None
    return {"train": num_train, "val": num_val, "root": str(root)}


def _write_splits(root: Path, counts: dict[str, int], height: int, width: int, seed: int,
                  progress: bool = False, fmt: str = "cityscapes", colour_spread: float = 1.0, scene: str = "city",
                  colour_mode: str = "class") -> None:
    render = render_shapes if scene == "shapes" else render_scene
    if fmt == "folder":
        root.mkdir(parents=True, exist_ok=True)
        lines = ["# The synthetic toy city as a folder dataset: 11 CamVid-like classes (cycleseg make-synthetic)",
                 "classes:"]
        lines += [f"  - {{name: {name}, value: {v}, color: [{', '.join(map(str, colour))}]}}"
                  for v, (name, _, colour) in enumerate(CAMVID_CLASSES)]
        lines += [f"void: [{CAMVID_VOID}]  # ego vehicle, static objects, ground: not evaluated", ""]
        (root / "classes.yaml").write_text("\n".join(lines))
    for split_index, (split, count) in enumerate(counts.items()):
        cities = CITIES[split]
        for i in tqdm(range(count), desc=f"make-synthetic {split}", unit="img", disable=not progress,
                      dynamic_ncols=True, leave=False):
            city = cities[i % len(cities)]
            rng = np.random.default_rng([seed, split_index, i])
            image, label = render(height, width, rng, colour_spread, colour_mode)
            stem = f"{city}_{i:06d}_000019"
            if fmt == "folder":  # CamVid-like: flat split folders, JPEG photos, label values 0..11
                for folder in (root / "images" / split, root / "labels" / split):
                    folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image, "RGB").save(root / "images" / split / f"{stem}.jpg", quality=95)
                Image.fromarray(_TO_CAMVID[label], "L").save(root / "labels" / split / f"{stem}.png", compress_level=1)
                continue
            image_dir = root / "leftImg8bit" / split / city
            label_dir = root / "gtFine" / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, "RGB").save(image_dir / f"{stem}{IMAGE_SUFFIX}", compress_level=1)
            Image.fromarray(label, "L").save(label_dir / f"{stem}{LABEL_SUFFIX}", compress_level=1)
