"""Bad input: one clear line on stderr, a non-zero exit, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

CYCLEGAN_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "cyclegan.yaml")
TINY = ["data.height=32", "data.width=64", "optim.epochs=1", "optim.decay_start_epoch=0", "train.progress=false"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cycleseg.cli", *map(str, args)], capture_output=True, text=True, check=False,
                          cwd=cwd)


def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_data_folder(tmp_path):
    r = run_cli("train", CYCLEGAN_YAML, "--data", tmp_path / "nowhere", "--out", tmp_path / "run", *TINY)
    assert_one_line_error(r, "nowhere")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_image_without_label(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    label = min((data / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    label.unlink()
    image_name = label.name.replace("_gtFine_labelIds.png", "_leftImg8bit.png")
    r = run_cli("evaluate", "nowhere", "--data", data)  # run dir checked first
    assert_one_line_error(r, "nowhere")
    r = run_cli("train", CYCLEGAN_YAML, "--data", data, "--out", tmp_path / "run", *TINY)
    assert_one_line_error(r, image_name)


@pytest.mark.parametrize("override, needle", [
    ("noise.colour=red", "unknown key 'noise.colour'"),
    ("optim.epochs=many", "optim.epochs must be int"),
    ("noise.kind=pink", "noise.kind must be one of"),
    ("noise.bits=0", "noise.bits"),
    ("noise.bits=9", "noise.bits"),
])
def test_bad_config_values(tmp_path, override, needle):
    extra = ["noise.kind=quantize"] if override.startswith("noise.bits") else []
    r = run_cli("train", CYCLEGAN_YAML, "--out", tmp_path / "run", *extra, override)
    assert_one_line_error(r, needle)


def test_missing_config_file(tmp_path):
    r = run_cli("train", tmp_path / "nope.yaml", "--out", tmp_path / "run")
    assert_one_line_error(r, "nope.yaml")


def test_evaluate_missing_checkpoint(tmp_path, tiny_data):
    (tmp_path / "empty_run").mkdir()
    r = run_cli("evaluate", tmp_path / "empty_run", "--data", tiny_data)
    assert_one_line_error(r, "last.pt")


def test_evaluate_corrupt_checkpoint(tmp_path, tiny_data):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"not a checkpoint at all")
    r = run_cli("evaluate", run, "--data", tiny_data)
    assert_one_line_error(r, "last.pt", "corrupt")


def test_make_synthetic_bad_size(tmp_path):
    r = run_cli("make-synthetic", tmp_path / "d", "--size", "100x7")
    assert_one_line_error(r, "--size")


def test_dry_run_prints_resolved_config(tmp_path):
    r = run_cli("train", CYCLEGAN_YAML, "--out", tmp_path / "run", "--dry-run", "noise.kind=quantize",
                "noise.bits=3")
    assert r.returncode == 0 and "bits: 3" in r.stdout
    assert not Path(tmp_path / "run").exists()
