"""The synthetic toy city: Cityscapes layout, valid labelIds, determinism, variety."""

import hashlib

import numpy as np
from PIL import Image

from cycleseg.data import LABEL_ID_TO_TRAIN_ID, list_samples
from cycleseg.data.synthetic import make_synthetic


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_label_ids(tmp_path):
    summary = make_synthetic(tmp_path / "d", num_train=6, num_val=4, size=(32, 64), seed=1)
    assert summary["train"] == 6 and summary["val"] == 4
    for split, n in (("train", 6), ("val", 4)):
        samples = list_samples(tmp_path / "d", split)
        assert len(samples) == n and len({s.city for s in samples}) >= 2
        for s in samples:
            image = Image.open(s.image_path)
            label = Image.open(s.label_path)
            assert image.mode == "RGB" and image.size == (64, 32)
            assert label.mode == "L" and label.size == (64, 32)
            assert (LABEL_ID_TO_TRAIN_ID[np.asarray(label)] >= 0).all()


def test_deterministic_for_a_seed(tmp_path):
    make_synthetic(tmp_path / "a", num_train=3, num_val=2, size=(32, 64), seed=5)
    make_synthetic(tmp_path / "b", num_train=3, num_val=2, size=(32, 64), seed=5)
    make_synthetic(tmp_path / "c", num_train=3, num_val=2, size=(32, 64), seed=6)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_image_i_does_not_depend_on_the_count(tmp_path):
    make_synthetic(tmp_path / "a", num_train=2, num_val=1, size=(32, 64), seed=0)
    make_synthetic(tmp_path / "b", num_train=5, num_val=1, size=(32, 64), seed=0)
    first = min((tmp_path / "a" / "leftImg8bit" / "train").rglob("*.png"))
    twin = tmp_path / "b" / first.relative_to(tmp_path / "a")
    assert first.read_bytes() == twin.read_bytes()


def test_classes_and_appearance_vary(tmp_path):
    make_synthetic(tmp_path / "d", num_train=24, num_val=1, size=(64, 128), seed=0)
    present, class_colours = set(), {}
    for s in list_samples(tmp_path / "d", "train"):
        train_ids = LABEL_ID_TO_TRAIN_ID[np.asarray(Image.open(s.label_path))]
        image = np.asarray(Image.open(s.image_path), np.float32)
        present |= set(np.unique(train_ids).tolist())
        for c in np.unique(train_ids):
            class_colours.setdefault(int(c), []).append(image[train_ids == c].mean(axis=0))
    assert len(present - {19}) >= 12  # at least 12 of the 19 Cityscapes classes
    assert 19 in present  # void ids (ego vehicle, parking, ...) that map to background
    # The same class has a different mean colour from image to image: images are not a function of labels.
    for c in (0, 2, 10, 13):  # road, building, sky, car
        colours = np.array(class_colours[c])
        assert len(colours) >= 3 and colours.std(axis=0).max() > 3.0


def _sky_red_means(colour_spread: float, n: int = 40) -> np.ndarray:
    """Mean red value of the sky of n scenes; the sky is one object: red = 120 + U(-35 k, 35 k) + shade + noise."""
    from cycleseg.data.synthetic import SKY, render_scene

    means = []
    for i in range(n):
        image, label = render_scene(32, 64, np.random.default_rng([0, 0, i]), colour_spread)
        means.append(image[label == SKY][:, 0].astype(np.float64).mean())
    return np.array(means)


def test_colour_spread_scales_the_object_colour_deviation():
    # U(-a, a) has standard deviation a / sqrt(3): 20.2 for the sky's a = 35, 60.6 at colour_spread 3 (120 +- 105
    # stays inside 0..255, so nothing is clipped). The shading adds a few units whatever the spread.
    spread0, spread1, spread3 = (_sky_red_means(k).std() for k in (0.0, 1.0, 3.0))
    assert spread0 < 8.0
    assert 14.0 < spread1 < 27.0
    assert 45.0 < spread3 < 75.0
    assert 2.3 < spread3 / spread1 < 3.5


def test_colour_spread_one_is_the_default_city(tmp_path):
    make_synthetic(tmp_path / "a", num_train=2, num_val=1, size=(32, 64), seed=3)
    make_synthetic(tmp_path / "b", num_train=2, num_val=1, size=(32, 64), seed=3, colour_spread=1.0)
    make_synthetic(tmp_path / "c", num_train=2, num_val=1, size=(32, 64), seed=3, colour_spread=3.0)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_refuses_a_folder_holding_a_users_dataset(tmp_path, capsys):
    from cycleseg.cli import main

    own = tmp_path / "mine"
    (own / "images" / "train").mkdir(parents=True)
    (own / "classes.yaml").write_text("classes: [my own]\n")
    (own / "images" / "train" / "a.jpg").write_bytes(b"my photo")
    before = {p: p.read_bytes() for p in own.rglob("*") if p.is_file()}
    assert main(["make-synthetic", str(own), "--format", "folder", "--train", "2", "--val", "1",
                 "--size", "64x32", "--quiet"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(own) in err[0] and "--overwrite" in err[0], err
    assert {p: p.read_bytes() for p in own.rglob("*") if p.is_file()} == before  # nothing written
    # its own folder it writes again (the Makefile regenerates data), and --overwrite writes over the user's
    ours = tmp_path / "ours"
    for _ in range(2):
        assert main(["make-synthetic", str(ours), "--train", "2", "--val", "1", "--size", "64x32", "--quiet"]) == 0
    assert main(["make-synthetic", str(own), "--format", "folder", "--train", "2", "--val", "1",
                 "--size", "64x32", "--quiet", "--overwrite"]) == 0
    assert (own / "labels" / "train").is_dir()
