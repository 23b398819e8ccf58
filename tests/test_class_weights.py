"""Class-balanced cross entropy (loss.class_weights=enet), off by default as in the paper (issue 4)."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F_

from cycleseg.commands.train import train
from cycleseg.config import Config, load_config
from cycleseg.core.losses import enet_class_weights, segmentation_loss
from cycleseg.data import CityscapesDataset
from cycleseg.data.cache import prepare
from cycleseg.errors import ConfigError

ERFNET_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "erfnet.yaml")


def test_default_is_the_papers_unweighted_loss():
    assert Config().loss.class_weights == "none"


def test_enet_formula():
    counts = torch.tensor([50, 30, 20, 0])
    expected = [1 / math.log(1.02 + p) for p in (0.5, 0.3, 0.2, 0.0)]
    assert enet_class_weights(counts).tolist() == pytest.approx(expected, rel=1e-6)
    assert enet_class_weights(counts)[3] == pytest.approx(50.5, abs=0.01)  # absent class: the largest weight


def test_weighted_cross_entropy_by_hand():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 4, 3, 5), torch.randint(0, 4, (2, 3, 5))
    weights = torch.tensor([1.0, 2.0, 0.5, 4.0])
    log_p = F_.log_softmax(logits, dim=1).gather(1, labels[:, None])[:, 0]
    w = weights[labels]
    expected = -(w * log_p).sum() / w.sum()
    assert torch.allclose(segmentation_loss(logits, labels, weight=weights), expected)
    assert torch.allclose(segmentation_loss(logits, labels), -log_p.mean())


def test_bad_value_is_a_config_error():
    with pytest.raises(ConfigError, match="loss.class_weights must be one of none, enet, got 'median'"):
        load_config(None, ["loss.class_weights=median"])


@pytest.mark.parametrize("cached", [False, True], ids=["png", "cache"])
def test_training_with_enet_weights(tiny_data, tmp_path, cached):
    data = tiny_data
    if cached:  # the weights come from the cache's class counts; they must equal the PNG path's
        data = tmp_path / "data"
        shutil.copytree(tiny_data, data)
        prepare(data, (32, 64), progress=False)
    cfg = load_config(ERFNET_YAML, [f"data.root={data}", "data.height=32", "data.width=64", "optim.epochs=1",
                                    "optim.decay_start_epoch=0", "train.progress=false", "train.max_iters=1",
                                    "loss.class_weights=enet", f"data.cache={'require' if cached else 'off'}"])
    train(cfg, tmp_path / "run")
    written = json.loads((tmp_path / "run" / "class_weights.json").read_text())
    train_set = CityscapesDataset(tiny_data, "train", (32, 64))
    counts = np.bincount(torch.stack([train_set[i][1] for i in range(len(train_set))]).ravel().numpy(), minlength=20)
    assert written["pixels"] == counts.tolist()
    p = counts / counts.sum()
    assert written["weights"] == pytest.approx((1 / np.log(1.02 + p)).tolist(), rel=1e-6)
