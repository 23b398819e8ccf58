"""Shared fixtures, made once per session: a tiny synthetic dataset in the Cityscapes layout, and a cycle run
trained on it."""

from pathlib import Path

import pytest
import torch

from cycleseg.data.synthetic import make_synthetic

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """8 train and 4 val images of 64x32 (W x H) in the Cityscapes layout."""
    root = tmp_path_factory.mktemp("data") / "toycity"
    make_synthetic(root, num_train=8, num_val=4, size=(32, 64), seed=0)
    return root


@pytest.fixture(scope="session")
def trained_cycle_run(tiny_data, tmp_path_factory):
    """Run directory of a finished 1-epoch CycleGAN run (2-bit quantization noise) on `tiny_data`.

    Shared by the whole session: never modify it in a test; copy it first (shutil.copytree).
    """
    from cycleseg.cli import main

    out = tmp_path_factory.mktemp("runs") / "quant2"
    config = Path(__file__).resolve().parents[1] / "configs" / "demo" / "quant2.yaml"
    assert main(["train", str(config), "--data", str(tiny_data), "--out", str(out), "data.height=32",
                 "data.width=64", "optim.epochs=1", "optim.decay_start_epoch=0", "train.progress=false"]) == 0
    return out
