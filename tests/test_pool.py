"""The image history buffer (SPEC "Training protocol": capacity 50, until full every image is returned, then
with probability 1/2 a random stored image is returned and replaced by the new one)."""

import copy

import pytest
import torch

from cycleseg.core.pool import ImagePool


def tagged(ids):
    """A batch of (1, 2, 2) images whose every value is the image's id, so that images can be told apart."""
    return torch.tensor(ids, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def ids_of(batch):
    return [int(v) for v in batch[:, 0, 0, 0].tolist()]


def stored_ids(pool):
    return sorted(ids_of(torch.stack(pool.state_dict()["images"])))


def test_before_full_returns_inputs_and_stores_them():
    pool = ImagePool(capacity=6, seed=0)
    for step in range(3):
        batch = torch.randn(2, 3, 4, 4)
        out = pool.query(batch)
        assert torch.equal(out, batch)
        assert len(pool) == 2 * (step + 1)
    stored = torch.stack(pool.state_dict()["images"])
    assert stored.shape == (6, 3, 4, 4)


def test_stored_copies_are_not_aliases_of_the_input():
    pool = ImagePool(capacity=2, seed=0)
    batch = tagged([1, 2])
    pool.query(batch)
    batch.fill_(-7.0)
    assert stored_ids(pool) == [1, 2]


def test_after_full_half_are_swapped_with_stored_images():
    capacity, n_queries, batch = 10, 1000, 4
    pool = ImagePool(capacity=capacity, seed=123)
    pool.query(tagged(range(capacity)))
    mirror = set(range(capacity))  # ids the pool must hold
    next_id, swapped, total = capacity, 0, 0
    for _ in range(n_queries):
        new = list(range(next_id, next_id + batch))
        next_id += batch
        out = ids_of(pool.query(tagged(new)))
        for new_id, out_id in zip(new, out):
            total += 1
            if out_id != new_id:
                swapped += 1
                assert out_id in mirror  # a stored image, inserted earlier and still held
                mirror.remove(out_id)
                mirror.add(new_id)  # replaced by the new one
        assert len(pool) == capacity
        assert stored_ids(pool) == sorted(mirror)
    assert swapped / total == pytest.approx(0.5, abs=0.04)  # std ~ 0.008


def test_swapped_slot_is_uniform_over_the_pool():
    capacity = 5
    pool = ImagePool(capacity=capacity, seed=7)
    pool.query(tagged(range(capacity)))
    counts = [0] * capacity
    for i in range(capacity, capacity + 4000):
        before = [ids_of(im.unsqueeze(0))[0] for im in pool.state_dict()["images"]]
        out = ids_of(pool.query(tagged([i])))[0]
        if out != i:
            counts[before.index(out)] += 1
    expected = sum(counts) / capacity  # ~400 each, std ~ 18
    assert all(abs(c - expected) < 80 for c in counts), counts


def test_capacity_zero_passes_through():
    pool = ImagePool(capacity=0)
    for _ in range(5):
        batch = torch.randn(3, 3, 4, 4)
        assert torch.equal(pool.query(batch), batch)
    assert len(pool) == 0


def test_negative_capacity_rejected():
    with pytest.raises(ValueError):
        ImagePool(capacity=-1)


def _run(pool, start, n):
    return [ids_of(pool.query(tagged([i, i + 10_000]))) for i in range(start, start + n)]


def test_same_seed_same_sequence_other_seed_differs():
    a = _run(ImagePool(capacity=4, seed=3), 0, 200)
    b = _run(ImagePool(capacity=4, seed=3), 0, 200)
    c = _run(ImagePool(capacity=4, seed=4), 0, 200)
    assert a == b
    assert a != c


def test_state_dict_round_trip_continues_identically():
    pool = ImagePool(capacity=4, seed=11)
    _run(pool, 0, 30)
    state = copy.deepcopy(pool.state_dict())  # as if written to and read back from a checkpoint
    expected = _run(pool, 100, 50)

    restored = ImagePool(capacity=99, seed=999)
    restored.load_state_dict(state)
    assert restored.capacity == 4
    assert len(restored) == 4
    assert _run(restored, 100, 50) == expected
