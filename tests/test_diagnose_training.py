"""`diagnose --along-training`: the watermark measures of every kept checkpoint, as curves over steps."""

import json
import shutil

import pytest

from cycleseg.cli import main
from cycleseg.commands.diagnose import diagnose_run, diagnose_training, training_checkpoints

pytestmark = pytest.mark.slow  # every test trains a run


@pytest.fixture(scope="module")
def kept_run(tiny_data, tmp_path_factory):
    """A 2-epoch quant2 run that kept both epochs' checkpoints."""
    out = tmp_path_factory.mktemp("runs") / "kept"
    assert main(["train", "configs/demo/quant2.yaml", "--data", str(tiny_data), "--out", str(out), "data.height=32",
                 "data.width=64", "optim.epochs=2", "optim.decay_start_epoch=1", "train.keep_checkpoints=2",
                 "train.progress=false", "train.precision=fp32"]) == 0
    return out


def test_checkpoints_in_step_order_one_per_step(kept_run):
    found = training_checkpoints(kept_run)
    assert [name for _, name in found] == ["epoch_0001.pt", "epoch_0002.pt"]  # last.pt is epoch 2's step: once
    assert [step for step, _ in found] == [2, 4]  # 8 images, batch 4: 2 iterations per epoch


def test_curve_points_are_each_checkpoints_own_diagnosis(kept_run, tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(kept_run, run)
    assert main(["diagnose", str(run), "--data", str(tiny_data), "--along-training", "--max-images", "2"]) == 0
    assert "step       2: watermark gap" in capsys.readouterr().out
    curve = json.loads((run / "diagnose_val_training.json").read_text())
    assert (run / "diagnose_val_training.png").is_file() and curve["snrs_db"] == [30.0, 20.0, 10.0]
    assert [p["step"] for p in curve["points"]] == [2, 4]
    # The first point, recomputed by the single-checkpoint diagnosis of epoch_0001.pt: the same numbers.
    single = diagnose_run(run, tiny_data, checkpoint="epoch_0001.pt", max_images=2, snrs=(30.0, 20.0, 10.0),
                          num_examples=1)
    first = curve["points"][0]
    assert first["watermark_gap_db"] == pytest.approx(single["watermark_gap"]["gap_db"]["decision"], abs=1e-9)
    assert first["class_mean_gap_db"] == pytest.approx(single["watermark_gap"]["gap_db"]["class_mean"], abs=1e-9)
    assert first["split_mean_gap_db"] == pytest.approx(single["watermark_gap"]["gap_db"]["split_class_mean"], abs=1e-9)
    assert first["sensitivity_psnr_db"]["20"] == pytest.approx(single["sensitivity"]["points"][1]["psnr_db"], abs=1e-9)
    assert first["unexplained_share"] == pytest.approx(single["energy"]["logits"]["unexplained_share"], abs=1e-12)
    assert first["miou"] == pytest.approx(single["miou"], abs=1e-9)


def test_again_overwrite_removes_the_curve(kept_run, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(kept_run, run)
    diagnose_training(run, tiny_data, max_images=1)
    assert main(["train", "configs/demo/quant2.yaml", "--data", str(tiny_data), "--out", str(run), "--overwrite",
                 "data.height=32", "data.width=64", "optim.epochs=1", "optim.decay_start_epoch=0",
                 "train.progress=false", "train.max_iters=1"]) == 0
    assert not (run / "diagnose_val_training.json").exists()  # an old run's curve never outlives it


def test_keep_every_spaces_the_kept_checkpoints(tiny_data, tmp_path):
    out = tmp_path / "spaced"
    assert main(["train", "configs/demo/quant2.yaml", "--data", str(tiny_data), "--out", str(out), "data.height=32",
                 "data.width=64", "optim.epochs=4", "optim.decay_start_epoch=2", "train.keep_checkpoints=10",
                 "train.keep_every=2", "train.progress=false", "train.precision=fp32"]) == 0
    assert sorted(p.name for p in out.glob("epoch_*.pt")) == ["epoch_0002.pt", "epoch_0004.pt"]
    assert [step for step, _ in training_checkpoints(out)] == [4, 8]
