"""Shared fixtures, made once per session: a tiny synthetic dataset in the Cityscapes layout, and a cycle run
trained on it."""

from pathlib import Path

import pytest
import torch

from cycleseg.data.synthetic import make_synthetic

torch.set_num_threads(2)

# Slow tests of test files that are being rewritten by others right now: marked here rather than in the file
# (move them into the file as @pytest.mark.slow when convenient). A renamed test is simply no longer marked.
SLOW_ELSEWHERE = {
    "test_resume.py": {
        "test_resume_in_process_is_exact",  # the 12-iteration reference run, then 3 interrupted ones
        "test_sigkill_at_random_moments_then_resume_is_bit_identical",  # 5 killed processes
        "test_sigterm_writes_a_checkpoint_and_exits_cleanly",  # 2 processes
        "test_checkpoint_of_another_model_fails_clearly",  # needs the reference run
        "test_best_checkpoint_tracks_validation_miou",
        "test_nan_loss_is_skipped_and_counted",
    },
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.originalname in SLOW_ELSEWHERE.get(item.path.name, ()):
            item.add_marker(pytest.mark.slow)


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
