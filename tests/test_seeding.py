"""The one seed-mixing rule (core/seeding.py, issue 23): hand-computed values, the numbers every caller had before
it (runs stay bit-identical), and every caller going through it."""

import random

import pytest
import torch

from cycleseg.commands import train_data
from cycleseg.commands.state import Progress, TrainState
from cycleseg.config import load_config
from cycleseg.core import seeding
from cycleseg.core.augment import augment_generator
from cycleseg.core.seeding import mix_seed
from cycleseg.data import semi
from cycleseg.data.cityscapes import Sample


def test_mix_seed_hand_computed():
    assert mix_seed(5) == 5
    assert mix_seed(3, 7) == 3_000_016  # 3 * 1_000_003 + 7
    assert mix_seed(2, 5, 9) == 2_000_017_000_042  # (2 * 1_000_003 + 5) * 1_000_003 + 9
    assert mix_seed(4, 1, multiplier=100_003, modulus=None) == 400_013
    assert mix_seed(2**62, 1, multiplier=4) == 1  # (2**64 + 1) mod 2**63
    assert mix_seed(2**62, 1, multiplier=4, modulus=None) == 2**64 + 1
    assert mix_seed(-1, 0) == 2**63 - 1_000_003  # reduced into [0, 2**63): a valid manual_seed
    with pytest.raises(ValueError):
        mix_seed()


@pytest.mark.parametrize("seed", [0, 1, 7, 123_456_789, 2**62 + 11, -3])
def test_callers_keep_their_numbers(seed):
    """The expressions each caller had before the rule existed, written out."""
    for epoch, batch, rank, stream in [(0, 0, 0, 0), (3, 17, 1, 0), (2, 5, 3, 1), (9, 1, 0, 2)]:
        key = (((seed * 1_000_003 + epoch) * 1_000_003 + batch) * 1_009 + rank) % (2**63)
        if stream:
            key = (key * 1_000_003 + stream) % (2**63)
        assert augment_generator(seed, epoch, batch, rank, stream).initial_seed() == key
    assert mix_seed(seed, 7) == (seed * 1_000_003 + 7) % 2**63  # data.semi: the labelled choice
    assert mix_seed(seed, 4) == (seed * 1_000_003 + 4) % 2**63  # data.semi: pass 4 of a stream
    assert mix_seed(seed, 3, multiplier=100_003, modulus=None) == seed * 100_003 + 3  # train: the epoch order
    assert mix_seed(seed, 2, multiplier=1_009, modulus=None) == seed * 1_009 + 2  # train: the backward stream
    assert mix_seed(1, seed + 1, modulus=None) == seed + 1 + 1_000_003  # state: D_Y's pool


def test_every_caller_goes_through_the_one_rule(monkeypatch, tiny_data):
    """Replace the rule: the augmentation, the labelled choice, the streams, the epoch order and D_Y's pool all
    change with it."""
    calls = []

    def fake(*parts, **kwargs):
        calls.append(parts)
        return 4242

    monkeypatch.setattr(seeding, "mix_seed", fake)
    expected = torch.randperm(6, generator=torch.Generator().manual_seed(4242)).tolist()
    assert augment_generator(1, 2, 3).initial_seed() == 4242
    assert augment_generator(1, 2, 3, stream=1).initial_seed() == 4242
    assert semi.stream_indices(6, 9, range(6)) == expected
    samples = [Sample(tiny_data / f"{i}.png", tiny_data / f"{i}_l.png", "c", str(i)) for i in range(6)]
    assert semi._drawn(0.5, samples, 9, tiny_data) == expected[:3]
    cfg = load_config(None, ["model.num_classes=20", "data.labelled=1/2", "optim.batch_size=1", "data.num_workers=0",
                             "model.arch=resnet_small", "optim.pool_size=2"])
    loader = train_data.epoch_batches(list(range(6)), cfg, Progress(), total=6)
    assert list(loader.dataset.indices) == expected
    calls.clear()
    state = TrainState(cfg, torch.device("cpu"))
    assert state.pool_y.rng.getstate() == random.Random(4242).getstate()
    assert calls, "TrainState did not mix D_Y's pool seed through the rule"
