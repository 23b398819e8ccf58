"""The data opened once (issue 23): one `train` or `prepare` walks each split's folders once (source.scan_split,
the one function that reads them) and reads classes.yaml once, however many steps use the split (the class
table, the data check, the labelled choice, the cache check and build, the datasets, the class weights)."""

import collections
import shutil
from pathlib import Path

import pytest

import cycleseg.data.source as source_module
from cycleseg.commands.train import train
from cycleseg.config import load_config
from cycleseg.data import open_source, open_split
from cycleseg.data.cache import prepare
from cycleseg.data.synthetic import make_synthetic

ERFNET_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "erfnet.yaml")
CYCLEGAN_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "cyclegan.yaml")
TINY = ["data.height=32", "data.width=64", "optim.batch_size=4", "optim.epochs=1", "optim.decay_start_epoch=0",
        "train.progress=false", "train.max_iters=1", "train.precision=fp32", "model.arch=resnet_small"]


@pytest.fixture
def walks(monkeypatch):
    """Counts the walks of each split's folders (and the reads of classes.yaml under "classes.yaml")."""
    counts: collections.Counter = collections.Counter()
    scan, load_classes = source_module.scan_split, source_module.load_classes

    def counting_scan(root, fmt, split):
        counts[split] += 1
        return scan(root, fmt, split)

    def counting_classes(path):
        counts["classes.yaml"] += 1
        return load_classes(path)

    monkeypatch.setattr(source_module, "scan_split", counting_scan)
    monkeypatch.setattr(source_module, "load_classes", counting_classes)
    return counts


@pytest.fixture
def data(tiny_data, tmp_path):
    return Path(shutil.copytree(tiny_data, tmp_path / "data", ignore=shutil.ignore_patterns("cycleseg_cache")))


@pytest.mark.parametrize("cache", ["off", "stale", "prepared"])
def test_train_walks_each_split_once(data, tmp_path, walks, cache, capsys):
    """A plain run with class weights and the full data check: from the PNGs, rebuilding a stale cache, or from
    the prepared cache (val: no cache, read from the PNGs)."""
    if cache != "off":
        prepare(data, (32, 64), progress=False)
        (data / "cycleseg_cache" / "64x32" / "val_manifest.json").unlink()
        if cache == "stale":
            (data / "cycleseg_cache" / "64x32" / "train_images.npy").unlink()
        walks.clear()
    cfg = load_config(ERFNET_YAML, [*TINY, f"data.root={data}", "loss.class_weights=enet", "data.check=full",
                                    f"data.cache={'off' if cache == 'off' else 'auto'}"])
    train(cfg, tmp_path / "run")
    assert walks == {"train": 1, "val": 1}
    assert ("is stale" in capsys.readouterr().err) == (cache == "stale")


def test_semi_supervised_train_walks_each_split_once(data, tmp_path, walks):
    """The labelled choice, the check that skips unlabelled labels, the cache check and the unpaired label maps."""
    prepare(data, (32, 64), splits=("train",), progress=False)
    walks.clear()
    cfg = load_config(CYCLEGAN_YAML, [*TINY, f"data.root={data}", "data.labelled=1/2", "optim.batch_size=2",
                                      "data.unpaired_labels=gtFine/val"])
    train(cfg, tmp_path / "run")
    assert walks == {"train": 1, "val": 1}


def test_a_folder_dataset_reads_its_classes_once(tmp_path, walks):
    root = tmp_path / "camvid"
    make_synthetic(root, num_train=4, num_val=2, size=(32, 64), seed=0, fmt="folder")
    train(load_config(ERFNET_YAML, [*TINY, f"data.root={root}", "data.cache=off"]), tmp_path / "run")
    assert walks == {"train": 1, "val": 1, "classes.yaml": 1}


def test_prepare_walks_each_split_once(data, walks):
    """Building, then finding every cache up to date: one walk per split each time."""
    assert prepare(data, (32, 64), progress=False) == {"train": "built", "val": "built"}
    assert walks == {"train": 1, "val": 1}
    walks.clear()
    assert prepare(data, (32, 64), progress=False) == {"train": "up to date", "val": "up to date"}
    assert walks == {"train": 1, "val": 1}


def test_open_split_with_an_opened_source_walks_nothing_again(data, walks):
    cfg = load_config(ERFNET_YAML, [*TINY, f"data.root={data}"])
    source = open_source(data)
    for _ in range(3):
        assert len(open_split(cfg, "val", source=source)) == 4
    assert walks == {"val": 1}
    assert len(open_split(cfg, "val")) == 4  # without it: opened (and walked) again, as before
    assert walks == {"val": 2}
