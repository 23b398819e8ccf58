"""`cycleseg prepare`: the cache gives bit-identical batches, knows when it is stale, and training uses it."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from cycleseg.cli import main
from cycleseg.commands.train import train
from cycleseg.config import load_config
from cycleseg.data import CityscapesDataset, SplitDataset, open_source
from cycleseg.data.cache import (
    CachedDataset,
    cache_folder,
    cache_status,
    class_pixel_counts,
    open_dataset,
    prepare,
)
from cycleseg.errors import DataError
from cycleseg.runs import LAST, load_checkpoint

SIZE = (32, 64)  # (H, W) of training; the fixture's files are 64x128, so the cache really resizes
ERFNET_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "erfnet.yaml")


@pytest.fixture
def data(tiny_data, tmp_path):
    """A private copy of the tiny data set (8 train, 4 val images) upscaled to 128x64, with a test split."""
    root = tmp_path / "cs"
    for src in sorted(tiny_data.rglob("*.png")):
        dst = root / src.relative_to(tiny_data)
        dst.parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(src)
        resample = Image.NEAREST if image.mode == "L" else Image.BILINEAR
        image.resize((128, 64), resample).save(dst)
    for src in sorted((root / "leftImg8bit" / "val").rglob("*.png"))[:2]:  # a test split: images, no labels
        dst = root / "leftImg8bit" / "test" / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    return root


def test_cached_batches_are_bit_identical_to_the_png_path(data):
    assert prepare(data, SIZE, progress=False) == {"train": "built", "val": "built", "test": "built"}
    for split in ("train", "val", "test"):
        cached, png = CachedDataset(open_source(data), split, SIZE), CityscapesDataset(data, split, SIZE)
        assert len(cached) == len(png)
        for (xc, yc), (xp, yp) in zip(DataLoader(cached, batch_size=3), DataLoader(png, batch_size=3), strict=True):
            assert xc.dtype == xp.dtype == torch.float32 and yc.dtype == yp.dtype == torch.int64
            assert torch.equal(xc, xp) and torch.equal(yc, yp)
    # through worker processes too (each maps the arrays itself)
    workers = DataLoader(CachedDataset(open_source(data), "train", SIZE), batch_size=4, num_workers=2)
    png = DataLoader(CityscapesDataset(data, "train", SIZE), batch_size=4)
    for (xc, yc), (xp, yp) in zip(workers, png, strict=True):
        assert torch.equal(xc, xp) and torch.equal(yc, yp)


def test_cache_files_and_manifest(data):
    prepare(data, SIZE, splits=("train",), progress=False)
    folder = cache_folder(data, SIZE)
    assert folder == data / "cycleseg_cache" / "64x32"
    images = np.load(folder / "train_images.npy", mmap_mode="r")
    labels = np.load(folder / "train_labels.npy", mmap_mode="r")
    assert images.shape == (8, 32, 64, 3) and images.dtype == np.uint8
    assert labels.shape == (8, 32, 64) and labels.dtype == np.uint8 and labels.max() <= 19
    manifest = json.loads((folder / "train_manifest.json").read_text())
    assert manifest["height"] == 32 and manifest["width"] == 64 and manifest["num_images"] == 8
    first = manifest["files"][0]
    assert first["image"].startswith("leftImg8bit/train/") and first["label"].startswith("gtFine/train/")
    assert first["source_size"] == [128, 64] and len(first["image_sha256"]) == 64
    assert sum(manifest["class_pixels"]) == 8 * 32 * 64
    assert not list(folder.glob("*.tmp"))


def test_a_planted_tmp_link_in_the_cache_folder_is_not_written_through(data, tmp_path):
    """A shared cache folder may bring `train_images.npy.tmp -> a user's file`: prepare replaces the link."""
    folder = cache_folder(data, SIZE)
    folder.mkdir(parents=True)
    victims = {}
    for name in ("train_images.npy", "train_labels.npy", "train_manifest.json"):
        victims[name] = tmp_path / f"victim_{name}"
        victims[name].write_text("the user's file")
        (folder / f"{name}.tmp").symlink_to(victims[name])
    prepare(data, SIZE, splits=("train",), progress=False)
    assert all(v.read_text() == "the user's file" for v in victims.values())
    assert cache_status(data, "train", SIZE) == ("ok", "up to date") and not list(folder.glob("*.tmp"))


def test_status_missing_ok_stale(data):
    assert cache_status(data, "train", SIZE)[0] == "missing"
    prepare(data, SIZE, splits=("train",), progress=False)
    assert cache_status(data, "train", SIZE) == ("ok", "up to date")
    assert cache_status(data, "train", (16, 32))[0] == "missing"  # another size has its own cache

    # a new mtime with the same content (a copy, a touch): still valid, and recorded so the next check is fast
    image = sorted((data / "leftImg8bit" / "train").rglob("*.png"))[3]
    os.utime(image, ns=(1, 1))
    assert cache_status(data, "train", SIZE) == ("ok", "up to date")
    manifest = json.loads((cache_folder(data, SIZE) / "train_manifest.json").read_text())
    assert manifest["files"][3]["image_mtime_ns"] == 1

    # other content
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(image)
    status, reason = cache_status(data, "train", SIZE)
    assert status == "stale" and image.relative_to(data).as_posix() in reason and "changed since prepare" in reason


def test_stale_when_files_are_added_or_removed(data):
    prepare(data, SIZE, splits=("val",), progress=False)
    image = min((data / "leftImg8bit" / "val").rglob("*.png"))
    label = data / "gtFine" / "val" / image.parent.name / image.name.replace("leftImg8bit", "gtFine_labelIds")
    image.unlink()
    label.unlink()
    status, reason = cache_status(data, "val", SIZE)
    assert status == "stale" and "0 image(s) added and 1 removed" in reason and image.name in reason


def test_stale_when_built_by_another_pillow_or_format(data):
    prepare(data, SIZE, splits=("val",), progress=False)
    path = cache_folder(data, SIZE) / "val_manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "pillow": "1.0"}))
    assert cache_status(data, "val", SIZE)[1].startswith("built with Pillow 1.0")
    path.write_text(json.dumps({**manifest, "format": 0}))
    assert cache_status(data, "val", SIZE)[1].startswith("cache format 0")
    path.write_text("{not json")
    assert cache_status(data, "val", SIZE) == ("stale", "val_manifest.json is unreadable")


def test_open_dataset_modes(data, capsys):
    assert isinstance(open_dataset(data, "val", SIZE, cache="auto"), SplitDataset)  # no cache: PNGs
    with pytest.raises(DataError, match=r"val_manifest.json: missing cache for val at 64x32 .*data.cache=require; "
                                        rf"run `cycleseg prepare {data} --size 64x32`"):
        open_dataset(data, "val", SIZE, cache="require")
    prepare(data, SIZE, splits=("val",), progress=False)
    assert isinstance(open_dataset(data, "val", SIZE, cache="auto"), CachedDataset)
    assert isinstance(open_dataset(data, "val", SIZE, cache="off"), SplitDataset)

    image = sorted((data / "leftImg8bit" / "val").rglob("*.png"))[1]
    Image.fromarray(np.full((64, 128, 3), 200, np.uint8)).save(image)
    with pytest.raises(DataError, match="stale cache for val"):
        open_dataset(data, "val", SIZE, cache="require")
    rebuilt = open_dataset(data, "val", SIZE, cache="auto")  # auto rebuilds a stale cache
    assert "stale" in capsys.readouterr().err and isinstance(rebuilt, CachedDataset)
    assert torch.equal(rebuilt[1][0], CityscapesDataset(data, "val", SIZE)[1][0])
    assert cache_status(data, "val", SIZE)[0] == "ok"


def test_prepare_cli(data, capsys):
    assert main(["prepare", str(data), "--size", "64x32", "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "val: built" in out and str(cache_folder(data, SIZE)) in out
    assert main(["prepare", str(data), "--size", "64x32", "--split", "val"]) == 0
    assert "val: up to date" in capsys.readouterr().out
    assert main(["prepare", str(data), "--size", "64x32", "--split", "val", "--force"]) == 0
    assert "val: built" in capsys.readouterr().out
    assert main(["prepare", str(data), "--size", "60x30"]) == 2
    assert "multiples of 8" in capsys.readouterr().err


def test_prepare_names_a_corrupt_file_and_leaves_no_partial_cache(data, capsys):
    bad = sorted((data / "leftImg8bit" / "val").rglob("*.png"))[2]
    bad.write_bytes(bad.read_bytes()[:100])
    assert main(["prepare", str(data), "--size", "64x32", "--split", "val"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "corrupt" in err[0]
    folder = cache_folder(data, SIZE)
    assert not list(folder.glob("val_*"))


def test_class_pixel_counts_cached_and_png_agree(data):
    prepare(data, SIZE, splits=("train",), progress=False)
    cached, png = CachedDataset(open_source(data), "train", SIZE), CityscapesDataset(data, "train", SIZE)
    expected = np.bincount(torch.stack([png[i][1] for i in range(len(png))]).ravel().numpy(), minlength=20)
    assert class_pixel_counts(cached).tolist() == class_pixel_counts(png).tolist() == expected.tolist()
    subset = [0, 3, 5]
    expected = np.bincount(torch.stack([png[i][1] for i in subset]).ravel().numpy(), minlength=20)
    assert class_pixel_counts(Subset(cached, subset)).tolist() == expected.tolist()
    assert class_pixel_counts(Subset(png, subset)).tolist() == expected.tolist()


@pytest.mark.slow  # two training runs
def test_training_from_the_cache_is_identical(data, tmp_path):
    """The same run from the PNGs and from the cache ends with bit-identical weights and optimizer states."""
    common = [f"data.root={data}", "data.height=32", "data.width=64", "optim.batch_size=4", "optim.epochs=1",
              "optim.decay_start_epoch=0", "train.progress=false", "train.max_iters=2"]
    train(load_config(ERFNET_YAML, [*common, "data.cache=off"]), tmp_path / "png")
    prepare(data, SIZE, progress=False)
    train(load_config(ERFNET_YAML, [*common, "data.cache=require"]), tmp_path / "cache")
    a, b = load_checkpoint(tmp_path / "png" / LAST), load_checkpoint(tmp_path / "cache" / LAST)
    for key in a["models"]:
        assert torch.equal(a["models"][key], b["models"][key]), key
    for name, value in a["optimizers"][0]["state"][0].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["optimizers"][0]["state"][0][name])), name
