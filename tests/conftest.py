"""Shared fixtures, made once per session: a tiny synthetic dataset in the Cityscapes layout, and a cycle run
trained on it."""

import os
from pathlib import Path

import pytest
import torch

from cycleseg.data.synthetic import make_synthetic

# Two threads per test process, or fewer when the tests are pinned to fewer cores (`taskset -c 1 make test` beside
# a study on core 0) or shared among pytest-xdist workers (`make test` runs `pytest -n auto`): more threads than
# cores makes OpenMP spin and the tests crawl. The processes the tests start get the same number (OMP_NUM_THREADS),
# so that a run trained in a subprocess is bit-identical to one trained here. No test module sets its own.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, _CORES // _WORKERS))
torch.set_num_threads(THREADS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)

# The longest files first (measured with --durations=0): under `pytest -n auto --dist loadfile` a file runs whole
# on one worker, and a long file handed out last would keep one worker busy while the other sits idle. Only the
# order of the files changes, and no test depends on it.
LONGEST_FIRST = ("test_slurm.py", "test_docs.py", "test_sweep_seeds.py", "test_kill_anywhere.py", "test_resume.py",
                 "test_run_lock.py", "test_sweep_report.py", "test_semi.py", "test_progress.py", "test_integration.py",
                 "test_diagnose_training.py", "test_distributed.py", "test_comforts.py", "test_diagnostics.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: within a file, the order is kept


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
    before = _listing(out)
    yield out
    assert _listing(out) == before, "a test modified the shared trained_cycle_run (copy it first)"


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder`: relative path -> (size, mtime_ns)."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


from slurm_fixture import slurm_cluster  # noqa: F401 -- the one-node Slurm cluster of the `slurm` tests
