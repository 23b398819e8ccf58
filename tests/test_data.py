"""Cityscapes-layout reader: label table, file pairing, decoding, resizing, and its errors."""

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import labels as cs_labels
from PIL import Image

from cycleseg.data import (
    BACKGROUND,
    CLASS_NAMES,
    LABEL_ID_TO_TRAIN_ID,
    PALETTE,
    TRAIN_ID_TO_LABEL_ID,
    CityscapesDataset,
    colorize,
    label_ids_to_train_ids,
    list_samples,
    load_image,
    load_label,
)
from cycleseg.errors import DataError


@pytest.mark.parametrize("label", [lab for lab in cs_labels if lab.id >= 0], ids=lambda lab: lab.name)
def test_every_cityscapes_label_id_maps_to_its_train_id(label):
    expected = label.trainId if label.trainId not in (255, -1) else 19
    got = label_ids_to_train_ids(np.array([[label.id]], np.uint8))
    assert got.item() == expected and got.dtype == np.int64


def test_known_ids_by_hand():
    ids = np.array([[7, 8, 11, 23, 24, 26, 33, 0, 1, 4, 9, 29]], np.uint8)
    assert label_ids_to_train_ids(ids).tolist() == [[0, 1, 2, 10, 11, 13, 18, 19, 19, 19, 19, 19]]


@pytest.mark.parametrize("bad", [34, 50, 254, 255])
def test_unknown_label_id_is_an_error(bad):
    with pytest.raises(DataError, match=f"unknown Cityscapes labelIds \\[{bad}\\]"):
        label_ids_to_train_ids(np.array([[7, bad]], np.uint8), "x.png")


def test_tables():
    assert len(CLASS_NAMES) == 20 and CLASS_NAMES[0] == "road" and CLASS_NAMES[18] == "bicycle"
    assert CLASS_NAMES[BACKGROUND] == "background"
    assert PALETTE.shape == (20, 3) and tuple(PALETTE[0]) == (128, 64, 128) and tuple(PALETTE[19]) == (0, 0, 0)
    # labelId -> trainId -> labelId is the identity on the 19 evaluated classes
    assert all(LABEL_ID_TO_TRAIN_ID[TRAIN_ID_TO_LABEL_ID[t]] == t for t in range(19))
    assert colorize(np.array([[0, 19]])).tolist() == [[[128, 64, 128], [0, 0, 0]]]


def _write(root, split, city, name, image=True, label=True, size=(8, 16), label_value=7):
    h, w = size
    if image:
        d = root / "leftImg8bit" / split / city
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(d / f"{name}_leftImg8bit.png")
    if label:
        d = root / "gtFine" / split / city
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w), label_value, np.uint8), "L").save(d / f"{name}_gtFine_labelIds.png")


def test_list_samples_pairs_sorted(tmp_path):
    for city, name in [("b", "b_000001_000019"), ("a", "a_000002_000019"), ("a", "a_000001_000019")]:
        _write(tmp_path, "val", city, name)
    samples = list_samples(tmp_path, "val")
    assert [s.name for s in samples] == ["a_000001_000019", "a_000002_000019", "b_000001_000019"]
    assert all(s.label_path.name == s.name + "_gtFine_labelIds.png" for s in samples)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="data folder not found.*make-synthetic"):
        list_samples(tmp_path / "nope", "train")


def test_missing_split_folder(tmp_path):
    _write(tmp_path, "train", "a", "a_1")
    with pytest.raises(DataError, match="leftImg8bit/val"):
        list_samples(tmp_path, "val")


def test_empty_split(tmp_path):
    (tmp_path / "leftImg8bit" / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="the split is empty"):
        list_samples(tmp_path, "val")


def test_image_without_label_names_the_image(tmp_path):
    _write(tmp_path, "val", "a", "a_1")
    _write(tmp_path, "val", "a", "a_2", label=False)
    with pytest.raises(DataError, match="a_2_leftImg8bit.png: image has no label"):
        list_samples(tmp_path, "val")


def test_label_without_image_names_the_label(tmp_path):
    _write(tmp_path, "val", "a", "a_1")
    _write(tmp_path, "val", "a", "a_3", image=False)
    with pytest.raises(DataError, match="a_3_gtFine_labelIds.png: label has no image"):
        list_samples(tmp_path, "val")


def test_test_split_needs_no_labels(tmp_path):
    _write(tmp_path, "test", "a", "a_1", label=False)
    ds = CityscapesDataset(tmp_path, "test", (8, 16))
    image, labels = ds[0]
    assert image.shape == (3, 8, 16) and (labels == -1).all()


def test_unknown_split(tmp_path):
    with pytest.raises(DataError, match="unknown split"):
        list_samples(tmp_path, "training")


def test_corrupt_png_names_the_file(tmp_path):
    bad = tmp_path / "bad_leftImg8bit.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="bad_leftImg8bit.png: unreadable or corrupt"):
        load_image(bad, (8, 16))


def test_rgb_label_is_rejected(tmp_path):
    path = tmp_path / "x_gtFine_labelIds.png"
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(path)
    with pytest.raises(DataError, match="mode RGB"):
        load_label(path, (8, 16))


def test_load_image_scales_to_minus_one_one_and_resizes_bilinearly(tmp_path):
    array = np.zeros((4, 8, 3), np.uint8)
    array[:, 4:] = 255
    path = tmp_path / "i.png"
    Image.fromarray(array).save(path)
    same = load_image(path, (4, 8))
    assert same.dtype == torch.float32 and same.shape == (3, 4, 8)
    assert same.min() == -1 and same.max() == 1
    resized = load_image(path, (2, 4))
    expected = np.asarray(Image.fromarray(array).resize((4, 2), Image.BILINEAR), np.float32) / 127.5 - 1
    assert torch.allclose(resized, torch.from_numpy(expected).permute(2, 0, 1))
    assert ((resized > -1) & (resized < 1)).any()  # bilinear mixes the two halves at the edge


def test_load_label_nearest_keeps_only_present_ids(tmp_path):
    ids = np.zeros((8, 16), np.uint8)
    ids[:, :5] = 7  # road
    ids[:, 5:11] = 26  # car
    ids[:, 11:] = 23  # sky
    path = tmp_path / "l_gtFine_labelIds.png"
    Image.fromarray(ids, "L").save(path)
    small = load_label(path, (4, 6))
    assert small.dtype == torch.int64 and small.shape == (4, 6)
    assert set(small.unique().tolist()) <= {0, 13, 10}
    expected = label_ids_to_train_ids(np.asarray(Image.fromarray(ids, "L").resize((6, 4), Image.NEAREST)))
    assert small.tolist() == expected.tolist()


def test_unknown_label_in_file_names_the_file(tmp_path):
    _write(tmp_path, "val", "a", "a_1", label_value=99)
    ds = CityscapesDataset(tmp_path, "val", (8, 16))
    with pytest.raises(DataError, match="a_1_gtFine_labelIds.png: unknown Cityscapes labelIds \\[99\\]"):
        ds[0]


def test_dataset_items(tiny_data):
    ds = CityscapesDataset(tiny_data, "train", (32, 64))
    assert len(ds) == 8
    image, labels = ds[0]
    assert image.shape == (3, 32, 64) and image.dtype == torch.float32
    assert labels.shape == (32, 64) and labels.dtype == torch.int64
    assert 0 <= labels.min() and labels.max() <= 19
