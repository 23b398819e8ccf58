"""Shared fixtures: a tiny synthetic dataset in the Cityscapes layout, made once per session."""

import pytest
import torch

from cycleseg.synthetic import make_synthetic

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """8 train and 4 val images of 64x32 (W x H) in the Cityscapes layout."""
    root = tmp_path_factory.mktemp("data") / "toycity"
    make_synthetic(root, num_train=8, num_val=4, size=(32, 64), seed=0)
    return root
