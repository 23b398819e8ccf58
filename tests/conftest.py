"""Shared fixtures, made once per session: a tiny synthetic dataset in the Cityscapes layout, and a cycle run
trained on it."""

import os
from pathlib import Path

import pytest
import torch

from cycleseg.data.synthetic import make_synthetic

# Two threads, or fewer when the tests are pinned to fewer cores (`taskset -c 1 make test` beside a study on core 0)
# or shared among pytest-xdist workers (`pytest -n 2`, not the default: measured slower here, see the closing note
# of issue 23): more threads than cores makes OpenMP spin and the tests crawl.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, _CORES // _WORKERS))
torch.set_num_threads(THREADS)
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)



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
