"""`cycleseg.load(...).segment(...)` and `cycleseg segment` on photos of any size: checked against G run by hand."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F_
from PIL import Image

import cycleseg
from cycleseg.cli import main
from cycleseg.data import CITYSCAPES, image_to_tensor
from cycleseg.errors import DataError, RunError
from cycleseg.runs import load_run


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of JPEGs (and one grey PNG) of mixed sizes, one of them in a subfolder."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    sizes = {"wide.jpg": (24, 80), "tall.jpg": (70, 30), "sub/odd.jpeg": (33, 47)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name, quality=95)
    Image.fromarray(rng.integers(0, 256, (32, 64), dtype=np.uint8)).save(root / "grey.png")
    return root


def _scores_by_hand(run_dir, photo: Image.Image, checkpoint: str = "last.pt") -> torch.Tensor:
    """G's class scores (S, H0, W0) computed here: resize to the training size, G in fp32 (NCHW), upsample."""
    models, cfg = load_run(run_dir, "cpu", checkpoint)
    rgb = photo.convert("RGB").resize((cfg.data.width, cfg.data.height), Image.BILINEAR)
    with torch.no_grad():
        logits = models.G(image_to_tensor(np.asarray(rgb))[None])
    return F_.interpolate(logits, size=(photo.height, photo.width), mode="bilinear", align_corners=False)[0]


def _by_hand(run_dir, photo: Image.Image) -> np.ndarray:
    return _scores_by_hand(run_dir, photo).argmax(0).numpy().astype(np.uint8)


def _agree(labels: np.ndarray, scores: torch.Tensor) -> bool:
    """labels are the argmax of scores wherever the top two classes are more than 1e-6 apart (channels_last
    and NCHW convolutions may differ in the last bits, which only matters at near-ties)."""
    top2 = scores.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-6).numpy()
    return bool(np.array_equal(labels[clear], scores.argmax(0).numpy()[clear])) and clear.mean() > 0.5


def test_load_segment_matches_G_by_hand_on_mixed_sizes(trained_cycle_run, photos):
    model = cycleseg.load(trained_cycle_run, precision="fp32")  # last.pt by default, as every command
    assert model.classes is CITYSCAPES and model.size == (32, 64)
    for path in sorted(photos.rglob("*.*")):
        photo = Image.open(path)
        labels = model.segment(photo)
        assert labels.shape == (photo.height, photo.width) and labels.dtype == np.uint8
        expected = _scores_by_hand(trained_cycle_run, photo)
        assert torch.allclose(model.scores(photo), expected, atol=1e-4, rtol=1e-4), path.name
        assert _agree(labels, expected), path.name
    array = np.asarray(Image.open(photos / "wide.jpg"))
    assert np.array_equal(model.segment(array), model.segment(Image.open(photos / "wide.jpg")))  # arrays too


def test_reconstruct_overlay_and_bad_inputs(trained_cycle_run, photos):
    model = cycleseg.load(trained_cycle_run, checkpoint="last", precision="fp32")
    photo = Image.open(photos / "tall.jpg")
    rec = model.reconstruct(photo)
    assert rec.shape == (70, 30, 3) and rec.dtype == np.uint8
    overlay = model.overlay(photo, model.segment(photo), alpha=1.0)
    assert np.array_equal(overlay, CITYSCAPES.palette[model.segment(photo)])  # alpha 1: the colours alone
    with pytest.raises(DataError, match="expected uint8"):
        model.segment(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(RunError, match="checkpoint not found .*pass checkpoint='last', 'best' or a file name"):
        cycleseg.load(trained_cycle_run, checkpoint="epoch_0007.pt")


@pytest.mark.slow
def test_segment_cli_writes_labels_colours_overlays(trained_cycle_run, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(trained_cycle_run), str(photos), "--out", str(out), "--precision", "fp32",
                 "--checkpoint", "best"]) == 0
    assert "of 4 images" in capsys.readouterr().out
    summary = json.loads((out / "segment.json").read_text())
    assert summary["num_images"] == 4 and summary["classes"][0] == "road"
    photo = Image.open(photos / "sub" / "odd.jpeg")
    written = np.asarray(Image.open(out / "labels" / "sub" / "odd.png"))  # Cityscapes labelIds
    labels = CITYSCAPES.lookup[written]
    assert _agree(labels, _scores_by_hand(trained_cycle_run, photo, "best.pt"))
    assert np.array_equal(written, CITYSCAPES.class_values[labels])
    colour = np.asarray(Image.open(out / "color" / "sub" / "odd.png"))
    assert np.array_equal(colour, CITYSCAPES.palette[labels])
    assert Image.open(out / "overlay" / "sub" / "odd.jpg").size == photo.size


@pytest.mark.slow
def test_segment_cli_errors_are_one_line(trained_cycle_run, photos, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    twin = tmp_path / "twin"
    twin.mkdir()
    Image.open(photos / "wide.jpg").save(twin / "wide.png")
    cases = [([str(tmp_path / "missing.jpg")], "no such image file or folder"),
             ([str(empty)], "no images"),
             ([str(broken)], "unreadable or corrupt image"),
             ([str(photos / "wide.jpg"), str(twin)], "would overwrite the output of")]
    for inputs, message in cases:
        code = main(["segment", str(trained_cycle_run), *inputs, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and message in err[0], (inputs, err)


def test_a_checkpoint_from_a_run_of_other_classes_is_one_line(trained_cycle_run, photos, tmp_path, capsys):
    """A 12-class run whose last.pt was copied in from a 20-class run: refused naming the file (was IndexError)."""
    import shutil

    from cycleseg.data.classes import load_classes
    from cycleseg.data.synthetic import make_synthetic
    from cycleseg.runs import write_yaml

    run = tmp_path / "run"
    shutil.copytree(trained_cycle_run, run)
    camvid = make_synthetic(tmp_path / "camvid", num_train=1, num_val=0, size=(32, 64), fmt="folder")["root"]
    write_yaml(run / "classes.yaml", load_classes(f"{camvid}/classes.yaml").to_dict())  # the run's: 11 + void
    code = main(["segment", str(run), str(photos / "wide.jpg"), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and str(run / "last.pt") in err[0] and "20 classes" in err[0], err
    with pytest.raises(RunError, match="12"):
        cycleseg.load(run)
    assert not (tmp_path / "o").exists()
