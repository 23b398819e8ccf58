"""End to end through the CLI: make-synthetic -> train (every model kind) -> evaluate -> table."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cycleseg.cli import main
from cycleseg.data import CLASS_NAMES

CYCLEGAN_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "cyclegan.yaml")
# 4 of the 8 training images, batch 2: 2 iterations per epoch, 4 in 2 epochs; all 4 validation images.
TINY = ["data.height=32", "data.width=64", "optim.batch_size=2", "optim.epochs=2", "optim.decay_start_epoch=0",
        "data.max_train_images=4", "train.progress=false", "train.log_every=1", "train.eval_every=1"]

RUNS = {
    "plain": ["model.kind=plain"],
    "none": [],
    "max_only": ["noise.kind=max_only"],
    "quantize": ["noise.kind=quantize", "noise.bits=2"],
    "gaussian": ["noise.kind=gaussian", "noise.snr_db=7.38"],
    "gaussian_eq13": ["noise.kind=gaussian", "noise.snr_db=7.38", "noise.sigma_rule=paper_eq13"],
}


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """Each model kind trained for 2 epochs (4 iterations) on the tiny dataset."""
    base = tmp_path_factory.mktemp("runs")
    for name, overrides in RUNS.items():
        out = base / name
        assert main(["train", CYCLEGAN_YAML, "--data", str(tiny_data), "--out", str(out),
                     f"name={name}", *TINY, *overrides]) == 0
    return base


@pytest.mark.slow  # the `trained` fixture: 6 runs of 2 epochs
@pytest.mark.parametrize("name", list(RUNS))
def test_train_writes_run_files(trained, name):
    run = trained / name
    for f in ("config.yaml", "log.jsonl", "last.pt", "metrics.json"):
        assert (run / f).is_file(), f
    assert list(run.glob("events.out.tfevents.*")), "TensorBoard event file missing"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["name"] == name and config["data"]["height"] == 32
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "lr" in r]
    assert [r["step"] for r in steps] == list(range(1, 5))  # 4 training images / batch 2 * 2 epochs
    assert all(math.isfinite(r["loss/G/seg"]) for r in steps)
    assert steps[0]["lr"] == pytest.approx(2e-4) and steps[-1]["lr"] == pytest.approx(1e-4)  # decay in epoch 1
    if name != "plain":
        assert all(k in steps[0] for k in ("loss/G/rec_x", "loss/G/adv", "loss/G/rec_y", "loss/D/total"))
    assert sum("val/miou" in r for r in lines) == 2  # validated after each epoch
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["iterations"] == 4 and metrics["num_images"] == 4


@pytest.mark.slow  # the `trained` fixture: 6 runs of 2 epochs
@pytest.mark.parametrize("name", list(RUNS))
def test_evaluate_writes_eval_json(trained, tiny_data, name, capsys):
    run = trained / name
    assert main(["evaluate", str(run), "--data", str(tiny_data)]) == 0
    printed = capsys.readouterr().out
    assert "traffic sign" in printed and "mIoU" in printed
    result = json.loads((run / "eval_val.json").read_text())
    assert {"miou", "iou", "psnr_db", "snr_db", "num_images"} <= set(result)
    assert list(result["iou"]) == list(CLASS_NAMES[:19]) and result["num_images"] == 4
    assert 0 <= result["miou"] <= 100
    if name == "plain":
        assert result["psnr_db"] is None and result["snr_db"] is None
    else:
        assert result["psnr_db"] > 0
    if name in ("plain", "none"):
        assert result["snr_db"] is None  # no noise: infinite SNR
    elif name == "gaussian":
        assert result["snr_db"] == pytest.approx(7.38, abs=0.05)
    elif name == "gaussian_eq13":
        assert result["snr_db"] == pytest.approx(7.38 - 10 * math.log10(20), abs=0.05)
    else:
        assert math.isfinite(result["snr_db"])


@pytest.mark.slow  # the `trained` fixture: 6 runs of 2 epochs
def test_evaluate_is_reproducible_with_gaussian_noise(trained, tiny_data):
    run = trained / "gaussian"
    (run / "eval_val.json").unlink(missing_ok=True)  # written by this test, not an earlier one
    assert main(["evaluate", str(run), "--data", str(tiny_data)]) == 0
    first = (run / "eval_val.json").read_text()
    assert main(["evaluate", str(run), "--data", str(tiny_data)]) == 0
    assert (run / "eval_val.json").read_text() == first


@pytest.mark.slow  # the `trained` fixture: 6 runs of 2 epochs
def test_table_lists_runs(trained, capsys):
    assert main(["table", *(str(trained / n) for n in ("plain", "none", "quantize"))]) == 0
    out = capsys.readouterr().out
    assert "plain ERFNet" in out and "quantize 2 bit" in out and "mIoU" in out


@pytest.mark.slow  # the `trained` fixture: 6 runs of 2 epochs
def test_refuses_to_overwrite_a_run(trained, tiny_data, capsys):
    assert main(["train", CYCLEGAN_YAML, "--data", str(tiny_data), "--out", str(trained / "plain"),
                 *TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_cli_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "cycleseg.cli", "train", "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "noise.kind=quantize" in out.stdout and "quantize" in out.stdout
