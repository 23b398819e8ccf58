"""`cycleseg check-data`: one line per problem naming the file, a non-zero exit, and the summary (issue 4)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cycleseg.cli import main
from cycleseg.data.cache import prepare
from cycleseg.data.check import check_data, require_valid
from cycleseg.errors import DataError

H, W = 8, 16
ERFNET_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "erfnet.yaml")


def _label_ids(h=H, w=W):
    ids = np.full((h, w), 7, np.uint8)  # road
    ids[: h // 2] = 23  # sky
    ids[0, 0] = 0  # unlabeled -> background
    return ids


def write_pair(root, split, city, index, size=(H, W), image=True, label=True, ids=None, image_mode="RGB"):
    """One image and its labelIds in the Cityscapes layout; returns (image path, label path)."""
    h, w = size
    name = f"{city}_{index:06d}_000019"
    image_path = root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"
    label_path = root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"
    if image:
        image_path.parent.mkdir(parents=True, exist_ok=True)
        rgb = np.random.default_rng(index).integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb, "RGB").convert(image_mode).save(image_path)
    if label:
        label_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_label_ids(h, w) if ids is None else ids, "L").save(label_path)
    return image_path, label_path


@pytest.fixture
def data(tmp_path):
    """A valid folder: train (two cities, 3 images), val (one city, 2 images)."""
    root = tmp_path / "cs"
    for i, city in enumerate(["alpha", "alpha", "beta"]):
        write_pair(root, "train", city, i)
    for i in range(2):
        write_pair(root, "val", "gamma", i)
    return root


def run_check(capsys, root, *args):
    code = main(["check-data", str(root), *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def assert_one_problem(capsys, root, needles, *args):
    code, out, err = run_check(capsys, root, *args)
    assert code == 1, (out, err)
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    assert "1 problem found" in out
    return err[0]


def test_valid_folder_summary(data, capsys):
    code, out, err = run_check(capsys, data)
    assert code == 0 and err == []
    assert "no problems found" in out
    lines = out.splitlines()
    assert any(line.split()[:4] == ["train", "2", "3", "3"] for line in lines)  # cities, images, labels
    assert any(line.split()[:4] == ["val", "1", "2", "2"] for line in lines)
    assert "image size: 16x8" in out
    # class pixel frequencies: half road, half sky but for one pixel of background
    sky = next(line for line in lines if line.startswith("sky"))
    road = next(line for line in lines if line.startswith("road"))
    background = next(line for line in lines if line.startswith("background"))
    assert road.split()[1:] == ["50.00", "50.00"]
    assert sky.split()[1:] == [f"{100 * 63 / 128:.2f}"] * 2
    assert background.split()[1:] == [f"{100 / 128:.2f}"] * 2


def test_missing_label(data, capsys):
    image, _label = write_pair(data, "train", "beta", 7, label=False)
    line = assert_one_problem(capsys, data, [str(image), "image has no label", "beta_000007_000019_gtFine_labelIds"])
    assert line.startswith(str(image))


def test_extra_label(data, capsys):
    _, label = write_pair(data, "val", "gamma", 9, image=False)
    assert_one_problem(capsys, data, [str(label), "label has no image"])


def test_corrupt_png_header(data, capsys):
    image = next((data / "leftImg8bit" / "val").rglob("*.png"))
    image.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert_one_problem(capsys, data, [str(image), "unreadable or corrupt PNG"], "--fast")


def test_truncated_png_is_found_by_the_full_check_only(data, capsys):
    image = next((data / "leftImg8bit" / "train").rglob("*.png"))
    image.write_bytes(image.read_bytes()[:80])  # header intact, pixel data cut off
    code, _, err = run_check(capsys, data, "--fast")
    assert code == 0 and err == []
    assert_one_problem(capsys, data, [str(image), "unreadable or corrupt PNG"])


def test_wrong_image_size_full_resolution(tmp_path, capsys):
    """Real Cityscapes sizes: 2048x1024 images, one of them 1024x512."""
    root = tmp_path / "cs"
    for i in range(2):
        write_pair(root, "train", "alpha", i, size=(1024, 2048))
    small, _ = write_pair(root, "train", "alpha", 2, size=(512, 1024))
    write_pair(root, "val", "gamma", 0, size=(1024, 2048))
    line = assert_one_problem(capsys, root, [str(small), "image is 1024x512, expected 2048x1024",
                                             "the other 3 images"], "--fast")
    assert line.startswith(f"{small}: ")  # its label has the image's size, so that is not a problem
    # with the size given, every image of another size is named, each on its own line
    code, _, err = run_check(capsys, root, "--fast", "--expect-size", "1024x512")
    assert code == 1 and len(err) == 3 and all("expected 1024x512 (the expected size)" in e for e in err)


def test_label_size_differs_from_its_image(data, capsys):
    _, label = write_pair(data, "val", "gamma", 0)
    Image.fromarray(_label_ids(4, 8), "L").save(label)
    assert_one_problem(capsys, data, [str(label), "label is 8x4 but its image is 16x8"], "--fast")


def test_wrong_image_mode(data, capsys):
    image, _ = write_pair(data, "train", "alpha", 0, image_mode="RGBA")
    assert_one_problem(capsys, data, [str(image), "image has mode RGBA, expected RGB"], "--fast")


def test_wrong_label_mode(data, capsys):
    _, label = write_pair(data, "train", "alpha", 0)
    Image.fromarray(np.zeros((H, W, 3), np.uint8), "RGB").save(label)  # a colour PNG under a labelIds name
    assert_one_problem(capsys, data, [str(label), "label has mode RGB", "not *_color.png"], "--fast")


def test_unknown_label_id_is_found_by_the_full_check_only(data, capsys):
    ids = _label_ids()
    ids[3, 3], ids[4, 4] = 99, 250
    _, label = write_pair(data, "val", "gamma", 1, ids=ids)
    code, _, err = run_check(capsys, data, "--fast")
    assert code == 0 and err == []
    assert_one_problem(capsys, data, [str(label), "unknown Cityscapes labelIds [99, 250]"])


def test_empty_split(data, capsys):
    shutil.rmtree(data / "leftImg8bit" / "val")
    shutil.rmtree(data / "gtFine" / "val")
    (data / "leftImg8bit" / "val" / "gamma").mkdir(parents=True)
    assert_one_problem(capsys, data, [str(data / "leftImg8bit" / "val"), "the split is empty"])


def test_missing_split(data, capsys):
    shutil.rmtree(data / "leftImg8bit" / "val")
    assert_one_problem(capsys, data, [str(data / "leftImg8bit" / "val"), "split folder not found"])


def test_stale_cache(data, capsys):
    prepare(data, (H, W), progress=False)
    code, out, _err = run_check(capsys, data)
    assert code == 0 and "cache 16x8 train: up to date" in out
    image, _ = write_pair(data, "train", "beta", 2)  # the same name with other pixels
    rgb = np.zeros((H, W, 3), np.uint8)
    Image.fromarray(rgb).save(image)
    line = assert_one_problem(capsys, data, ["train_manifest.json", "stale cache for 16x8",
                                             "beta/beta_000002_000019_leftImg8bit.png changed since prepare",
                                             f"cycleseg prepare {data} --size 16x8"])
    assert line.startswith(str(data / "cycleseg_cache" / "16x8" / "train_manifest.json"))


def test_file_in_the_wrong_city_folder(data, capsys):
    image, label = write_pair(data, "train", "alpha", 5)
    moved = image.parent.parent / "beta" / image.name
    image.rename(moved)
    label.rename(label.parent.parent / "beta" / label.name)
    assert_one_problem(capsys, data, [str(moved), "does not start with its city folder's name 'beta'_"], "--fast")


def test_real_cityscapes_cities(tmp_path, capsys):
    """A folder with official city names: each split needs its cities, and none of another split."""
    root = tmp_path / "cs"
    write_pair(root, "val", "frankfurt", 0)
    write_pair(root, "val", "lindau", 0)
    write_pair(root, "val", "munster", 0)
    write_pair(root, "train", "aachen", 0)
    report = check_data(root, ("val",), full=False)
    assert report.ok, report.problems
    write_pair(root, "val", "zurich", 0)  # a train city
    report = check_data(root, ("val",), full=False)
    expected = (f"{root / 'leftImg8bit' / 'val' / 'zurich'}: city zurich belongs to the Cityscapes train split, "
                "not val; move it back to leftImg8bit/train/")
    assert [str(p) for p in report.problems] == [expected]
    report = check_data(root, ("train",), full=False)
    assert len(report.problems) == 17 and all("city folder missing" in str(p) for p in report.problems)


def test_several_problems_one_line_each(data, capsys):
    write_pair(data, "train", "beta", 7, label=False)
    write_pair(data, "val", "gamma", 9, image=False)
    code, out, err = run_check(capsys, data)
    assert code == 1 and len(err) == 2 and "2 problems found" in out


def test_missing_data_folder(tmp_path, capsys):
    code, _, err = run_check(capsys, tmp_path / "nowhere")
    assert code == 1 and len(err) == 1 and "data folder not found" in err[0]


def test_bad_expect_size_is_a_one_line_error(data, capsys):
    code, _, err = run_check(capsys, data, "--expect-size", "big")
    assert code == 2 and len(err) == 1 and "--expect-size" in err[0]


def test_require_valid_for_train(data):
    require_valid(data, ("train", "val"))
    ids = _label_ids()
    ids[0, 1] = 99
    write_pair(data, "val", "gamma", 1, ids=ids)
    require_valid(data, ("train", "val"), full=False)  # the fast path reads headers only
    with pytest.raises(DataError, match="unknown Cityscapes labelIds"):
        require_valid(data, ("train", "val"), full=True)
    write_pair(data, "train", "beta", 7, label=False)
    with pytest.raises(DataError, match=r"image has no label .* \(1 more problem; list them with `cycleseg check-data"):
        require_valid(data, ("train", "val"), full=True)


def test_train_runs_the_checks(data, tmp_path, capsys):
    ids = _label_ids()
    ids[0, 1] = 99
    _, label = write_pair(data, "val", "gamma", 1, ids=ids)
    tiny = [ERFNET_YAML, "--data", str(data), "data.height=32", "data.width=64", "optim.epochs=1",
            "optim.decay_start_epoch=0", "train.progress=false", "train.max_iters=1"]
    assert main(["train", *tiny, "--out", str(tmp_path / "run"), "data.check=full"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(label) in err[0] and "unknown Cityscapes labelIds [99]" in err[0]
    assert not (tmp_path / "run" / "last.pt").exists()
