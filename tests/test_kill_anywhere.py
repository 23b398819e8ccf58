"""A run killed at any moment and resumed ends in the state of a run that never stopped (issue 17).

One run is trained, and at each of 13 precise moments its folder is copied as a kill there would leave it on
disk (nothing unwinds, nothing is saved: as with SIGKILL): start-up, inside a step, inside a checkpoint write
(after the temporary file, before the rename), at an epoch end (before and after the LR-schedule step), inside a
validation (the final one included), inside the best.pt write, between the last checkpoint and metrics.json,
and while run.json is marked finished. Each copy is resumed with `cycleseg train --resume` to the end, and
last.pt (progress, schedulers, optimizer param groups and states, weights, pool), best.pt and metrics.json are
compared with the run that went on (copying files does not change what it computes). One run for 13 moments,
not 13 runs: `tests/test_resume.py` adds real SIGKILLs at random moments.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import cycleseg.commands.train as train_module
import cycleseg.fileio as fileio_module
import cycleseg.runs as runs_module
from cycleseg.cli import main
from cycleseg.commands.state import TrainState
from cycleseg.runs import BEST, LAST, load_checkpoint

pytestmark = pytest.mark.slow

CYCLEGAN_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "cyclegan.yaml")
# 8 images / batch 4 = 2 iterations per epoch, 3 epochs = 6 iterations, validated every epoch; a checkpoint after
# every iteration, so that the last step's checkpoint precedes the final epoch end and validation (issue 17).
TINY = ["train.precision=fp32", "data.height=32", "data.width=64", "optim.epochs=3", "optim.decay_start_epoch=1", "optim.pool_size=3",
        "noise.kind=gaussian", "noise.snr_db=5", "train.progress=false", "train.log_every=1", "train.eval_every=1",
        "train.checkpoint_every=1"]


def _train(data, out, *extra):
    return main(["train", CYCLEGAN_YAML, "--data", str(data), "--out", str(out), *TINY, *extra])


def _on_call(monkeypatch, owner, name, n, when, after, action):
    """Call `action()` at the n-th call of owner.name (counting calls for which `when` holds), before the call
    or, with `after`, once it has returned."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        hit = when(*args, **kwargs)
        if hit:
            calls["n"] += 1
            if calls["n"] == n and not after:
                action()
        result = real(*args, **kwargs)
        if hit and calls["n"] == n and after:
            action()
        return result

    monkeypatch.setattr(owner, name, wrapper)


def _named(file_name):
    return lambda path, *a, **k: Path(path).name == file_name


MOMENTS = {
    "start-up, before the first checkpoint": (TrainState, "__init__", 1, None, False),
    "inside step 3": (train_module, "generator_step", 3, None, False),
    "inside the last step": (train_module, "generator_step", 6, None, False),
    "inside a checkpoint write": (fileio_module.os, "replace", 4, lambda a, b: Path(b).name == LAST, False),
    "inside the last step's checkpoint write": (fileio_module.os, "replace", 9, lambda a, b: Path(b).name == LAST,
                                                False),
    "inside the last checkpoint write": (fileio_module.os, "replace", 10, lambda a, b: Path(b).name == LAST, False),
    "at an epoch end, before the schedule step": (TrainState, "close_epoch", 2, None, False),
    "at the last epoch end, after the schedule step": (TrainState, "close_epoch", 3, None, True),
    "inside a validation": (train_module, "evaluate_models", 2, None, False),
    "inside the final validation": (train_module, "evaluate_models", 3, None, False),
    "inside the best.pt write": (fileio_module.os, "replace", 1, lambda a, b: Path(b).name == BEST, False),
    "between the last checkpoint and metrics.json": (runs_module, "write_json", 1, _named("metrics.json"), False),
    "after metrics.json, before run.json says finished": (runs_module, "set_status", 1,
                                                          lambda run_dir, state, *a, **k: state == "finished", False),
}


@pytest.fixture(scope="module")
def killed(tiny_data, tmp_path_factory):
    """({moment: the run folder as a kill at that moment leaves it}, the run that went on to its end)."""
    base = tmp_path_factory.mktemp("killed")
    out, copies = base / "run", {}

    def copy(moment):
        copies[moment] = shutil.copytree(out, base / re.sub(r"\W+", "_", moment))

    with pytest.MonkeyPatch.context() as m:
        for moment, (owner, name, n, when, after) in MOMENTS.items():
            _on_call(m, owner, name, n, when or (lambda *a, **k: True), after, lambda moment=moment: copy(moment))
        assert _train(tiny_data, out) == 0
    assert set(copies) == set(MOMENTS), set(MOMENTS) - set(copies)
    return copies, out


@pytest.fixture(scope="module")
def uninterrupted(killed):
    return killed[1]


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_killed_then_resumed_ends_like_the_uninterrupted_run(killed, tmp_path, moment):
    copies, uninterrupted = killed
    out = shutil.copytree(copies[moment], tmp_path / "run")
    assert main(["train", "--resume", str(out)]) == 0
    _assert_same_end(out, uninterrupted)


@pytest.mark.parametrize("call", [2, 3])  # a validation between epochs, and the final one
def test_a_data_error_during_validation_then_resumed_ends_the_same(tiny_data, tmp_path, uninterrupted, monkeypatch,
                                                                   call):
    """The run saves itself on a data error; the validation it was in runs first when it is resumed."""
    from cycleseg.errors import DataError

    real, calls = train_module.evaluate_models, {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise DataError("val/some_image.png: truncated PNG")
        return real(*args, **kwargs)

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(train_module, "evaluate_models", failing)
        assert _train(tiny_data, out) == 2
    assert main(["train", "--resume", str(out)]) == 0
    _assert_same_end(out, uninterrupted)


def _assert_same_end(out: Path, uninterrupted: Path) -> None:
    for checkpoint in (LAST, BEST):
        a, b = load_checkpoint(out / checkpoint), load_checkpoint(uninterrupted / checkpoint)
        assert a["progress"] | {"train_seconds": 0} == b["progress"] | {"train_seconds": 0}, checkpoint
        if checkpoint == BEST:  # weights only (issue 14): weights, step and metrics, no optimizer, schedule or pool
            assert "optimizers" not in a and (a["step"], a["metrics"]) == (b["step"], b["metrics"])
            assert all(torch.equal(a["models"][k], b["models"][k]) for k in b["models"]), checkpoint
            continue
        assert a["schedulers"] == b["schedulers"], checkpoint
        for oa, ob in zip(a["optimizers"], b["optimizers"], strict=True):
            assert oa["param_groups"] == ob["param_groups"], checkpoint
            for sa, sb in zip(oa["state"].values(), ob["state"].values(), strict=True):
                assert all(torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])) for k in sa), checkpoint
        assert all(torch.equal(a["models"][k], b["models"][k]) for k in b["models"]), checkpoint
        assert all(torch.equal(x, y) for x, y in zip(a["pool"]["images"], b["pool"]["images"], strict=True))
    metrics, reference = (json.loads((d / "metrics.json").read_text()) for d in (out, uninterrupted))
    assert metrics | {"train_seconds": 0} == reference | {"train_seconds": 0}
    assert metrics["miou"] is not None and metrics["psnr_db"] is not None
    assert json.loads((out / "run.json").read_text())["state"] == "finished"
    validations = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "val/miou" in line]
    assert [(v["step"], v["epoch"]) for v in validations] == [(2, 0), (4, 1), (6, 2)]  # each once, none lost
