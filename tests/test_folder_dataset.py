"""Folder datasets (images/, labels/, classes.yaml) and class tables: the Cityscapes table against
cityscapesscripts, classes.yaml errors, and a generated 11-class CamVid-like dataset through check-data,
prepare, train, evaluate, predict and report with its own class names and colours."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cycleseg.cli import main
from cycleseg.data import CITYSCAPES, LABEL_ID_TO_TRAIN_ID, load_classes, open_source
from cycleseg.data.cache import cache_status, prepare
from cycleseg.data.source import list_folder_samples
from cycleseg.data.synthetic import CAMVID_CLASSES, make_synthetic
from cycleseg.errors import DataError

CAMVID_NAMES = [name for name, _, _ in CAMVID_CLASSES]


@pytest.fixture(scope="module")
def camvid(tmp_path_factory):
    """8 train and 4 val images of 64x32, JPEG photos and PNG labels, 11 classes and void."""
    root = tmp_path_factory.mktemp("folder") / "camvid"
    make_synthetic(root, num_train=8, num_val=4, size=(32, 64), seed=0, fmt="folder")
    return root


@pytest.fixture(scope="module")
def camvid_run(camvid, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "camvid_quant2"
    assert main(["train", "configs/demo/quant2.yaml", "--data", str(camvid), "--out", str(out), "data.height=32",
                 "data.width=64", "optim.epochs=1", "optim.decay_start_epoch=0", "train.progress=false",
                 "train.precision=fp32"]) == 0
    return out


def test_cityscapes_table_is_the_official_one():
    # Every labelId of cityscapesscripts maps to its trainId (void ids to background 19), value by value.
    from cityscapesscripts.helpers.labels import labels

    for lab in labels:
        if 0 <= lab.id < 256:
            expected = lab.trainId if 0 <= lab.trainId < 255 else 19
            assert CITYSCAPES.lookup[lab.id] == expected == LABEL_ID_TO_TRAIN_ID[lab.id], lab.name
    assert CITYSCAPES.num_classes == 20 and CITYSCAPES.num_evaluated == 19
    assert CITYSCAPES.names[0] == "road" and CITYSCAPES.class_values[0] == 7 and CITYSCAPES.class_values[19] == 0


def test_generated_folder_dataset_layout(camvid):
    source = open_source(camvid)  # auto: a classes.yaml makes it a folder dataset
    assert source.format == "folder"
    assert list(source.classes.names) == CAMVID_NAMES + ["void"] and source.classes.num_evaluated == 11
    samples = list_folder_samples(camvid, "train")
    assert len(samples) == 8 and all(s.image_path.suffix == ".jpg" for s in samples)
    assert all(s.label_path.with_suffix("").name == s.image_path.with_suffix("").name for s in samples)
    values = np.unique(np.concatenate([np.asarray(Image.open(s.label_path)).ravel() for s in samples]))
    assert set(values.tolist()) <= set(range(12)) and 11 in values  # the void value appears and is known


@pytest.mark.parametrize("text, message", [
    ("classes: []\n", "expected a `classes:` list"),
    ("classes:\n  - {name: a, value: 1}\n  - {name: b, value: 1}\n", "label value 1 belongs to both 'a' and 'b'"),
    ("classes:\n  - {name: a, value: 300}\n", "label values must be integers 0..255"),
    ("classes:\n  - {name: a, value: 1, color: [1, 2]}\n  - {name: b, value: 2}\n", "color must be [R, G, B]"),
    ("classes:\n  - {name: a, value: 1}\n  - {name: a, value: 2}\n", "class names repeat"),
    ("classes:\n  - {name: a, value: 1}\n", "needs at least 2 classes"),
    ("classes:\n  - {name: a, value: 1\n", "not valid YAML"),
    ("classes:\n  - {name: a, value: 1}\nextra: 1\n", "unknown key(s) extra"),
])
def test_classes_yaml_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "classes.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        load_classes(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value)


def test_classes_yaml_not_utf8_is_one_line_naming_the_file(camvid, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(camvid, root)
    table = (root / "classes.yaml").read_text().replace("name: sky", "name: ciel bleu \u00e9t\u00e9")
    (root / "classes.yaml").write_bytes(table.encode("latin-1"))  # a Windows editor's default, not UTF-8
    with pytest.raises(DataError, match="not UTF-8 text .*save the file as UTF-8"):
        load_classes(root / "classes.yaml")
    assert main(["check-data", str(root)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(root / "classes.yaml") in err[0] and "UTF-8" in err[0], err


def test_check_data_names_an_unknown_label_value_and_an_unpaired_image(camvid, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(camvid, root)
    label = min((root / "labels" / "train").glob("*.png"))
    values = np.asarray(Image.open(label)).copy()
    values[0, :3] = 42
    Image.fromarray(values, "L").save(label)
    extra = root / "images" / "val" / "lonely.jpg"
    shutil.copy(min((root / "images" / "val").glob("*.jpg")), extra)
    assert main(["check-data", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert any(str(label) in line and "label values [42] are not in" in line for line in err), err
    assert any(str(extra) in line and "image has no label" in line for line in err), err


def test_cache_of_a_folder_dataset_goes_stale_when_classes_change(camvid, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(camvid, root)
    prepare(root, (32, 64), progress=False)
    assert cache_status(root, "train", (32, 64))[0] == "ok"
    table = (root / "classes.yaml").read_text().replace("void: [11]", "void: [11, 200]")
    (root / "classes.yaml").write_text(table)
    status, why = cache_status(root, "train", (32, 64))
    assert status == "stale" and "other classes" in why


@pytest.mark.slow
def test_train_evaluate_predict_use_the_datasets_classes(camvid, camvid_run, tmp_path, capsys):
    metrics = json.loads((camvid_run / "metrics.json").read_text())
    assert list(metrics["iou"]) == CAMVID_NAMES  # the 11 evaluated classes, void left out
    saved = json.loads(json.dumps(__import__("yaml").safe_load((camvid_run / "config.yaml").read_text())))
    assert saved["model"]["num_classes"] == 12  # resolved from the data
    assert main(["evaluate", str(camvid_run), "--data", str(camvid), "--json", "--full-res"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert list(results["iou"]) == CAMVID_NAMES and list(results["full_res"]["iou"]) == CAMVID_NAMES

    out = tmp_path / "pred"
    assert main(["predict", str(camvid_run), "--data", str(camvid), "--out", str(out)]) == 0
    labels = sorted((out / "labels").glob("*.png"))
    colours = sorted((out / "color").glob("*.png"))
    assert len(labels) == len(colours) == 4
    values = np.asarray(Image.open(labels[0]))
    assert set(np.unique(values).tolist()) <= set(range(12))  # the dataset's own label values
    table = open_source(camvid).classes
    rgb = np.asarray(Image.open(colours[0]).convert("RGB"))
    assert np.array_equal(rgb, table.palette[table.lookup[values]])  # its own colours, pixel by pixel


@pytest.mark.slow
def test_evaluate_refuses_data_with_other_classes(camvid_run, tiny_data, capsys):
    assert main(["evaluate", str(camvid_run), "--data", str(tiny_data)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tiny_data}: its 20 classes" in err[0] and "not the 12 the run" in err[0], err


@pytest.mark.slow
def test_report_shows_the_datasets_class_names(camvid, camvid_run, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.copytree(camvid_run, sweep / "quant2")
    assert main(["evaluate", str(sweep / "quant2"), "--data", str(camvid)]) == 0
    assert main(["report", str(sweep), "--data", str(camvid), "--examples", "1"]) == 0
    files = sweep / "report_files"
    assert (files / "class_iou.png").is_file() and (files / "examples.png").is_file()  # Figures 4 and 3
    from cycleseg.report import _class_names, collect_runs

    assert _class_names(collect_runs(sweep)) == CAMVID_NAMES  # Figure 4's bars: the dataset's classes
