"""Two processes on the CPU (torchrun, gloo): parameters stay identical, validation equals one process."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from cycleseg.commands.evaluate import evaluate_models, load_run
from cycleseg.commands.train import train
from cycleseg.config import load_config
from cycleseg.data import CityscapesDataset

CYCLEGAN_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "cyclegan.yaml")
# quantize noise: deterministic, so the distributed and the single-process validation see the same inputs to F
TINY = ["data.height=32", "data.width=64", "optim.batch_size=2", "optim.epochs=2", "optim.decay_start_epoch=1",
        "noise.kind=quantize", "noise.bits=2", "train.progress=false", "train.log_every=1", "train.eval_every=1",
        "train.precision=fp32", "train.checkpoint_every=0"]


# Every test here needs the 2-process torchrun run (or a second training run beside it).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ddp_run(tiny_data, tmp_path_factory):
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun not found")
    out = tmp_path_factory.mktemp("ddp") / "run"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "cycleseg.cli", "train", CYCLEGAN_YAML,
           "--data", str(tiny_data), "--out", str(out), *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_parameters_stay_identical_across_ranks(ddp_run):
    out, proc = ddp_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch"] == 4
    hashes = metrics["parameter_sha256"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    # 8 images, 2 processes, batch 2 per process: 2 iterations per epoch, 4 in all
    assert metrics["iterations"] == 4
    assert "2 processes, batch 2 per process, global batch 4" in proc.stdout + proc.stderr


def test_the_two_ranks_trained_on_different_images_and_changed_the_weights(ddp_run, tiny_data, tmp_path):
    """Against a single-process run of the same config: the weights moved, and not as one process moves them."""
    out, _ = ddp_run
    single = tmp_path / "single"
    train(load_config(CYCLEGAN_YAML, [*TINY, f"data.root={tiny_data}"]), single)
    ddp = torch.load(out / "last.pt", weights_only=False)["models"]
    one = torch.load(single / "last.pt", weights_only=False)["models"]
    changed = [k for k in one if one[k].is_floating_point() and not torch.equal(ddp[k], one[k])]
    assert len(changed) > len(one) // 2


def test_distributed_validation_equals_single_process(ddp_run, tiny_data):
    out, _ = ddp_run
    distributed_miou = json.loads((out / "metrics.json").read_text())["miou"]
    models, cfg = load_run(out, torch.device("cpu"))
    loader = DataLoader(CityscapesDataset(tiny_data, "val", (32, 64)), batch_size=2)
    single = evaluate_models(models, loader, torch.device("cpu"), seed=cfg.train.seed)
    assert distributed_miou == pytest.approx(single["miou"], abs=1e-9)
    distributed_psnr = json.loads((out / "metrics.json").read_text())["psnr_db"]
    assert distributed_psnr == pytest.approx(single["psnr_db"], abs=1e-4)
