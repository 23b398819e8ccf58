"""A run killed at any moment and resumed ends in the state of a run that never stopped (issue 17).

A kill is simulated in process by raising `Killed` (a BaseException, which train() does not catch, so nothing
is saved or marked: as with SIGKILL) at one precise point: start-up, inside a step, inside a checkpoint write
(after the temporary file, before the rename), at an epoch end (before and after the LR-schedule step), inside a
validation (the final one included), inside the best.pt write, between the last checkpoint and metrics.json,
and while run.json is marked finished. Then `cycleseg train --resume` runs to the end, and last.pt (progress,
schedulers, optimizer param groups and states, weights, pool), best.pt and metrics.json are compared with an
uninterrupted run. `tests/test_resume.py` adds real SIGKILLs at random moments.
"""

import json
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


class Killed(BaseException):
    """The process dies here."""


def _train(data, out, *extra):
    return main(["train", CYCLEGAN_YAML, "--data", str(data), "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    assert _train(tiny_data, out) == 0
    return out


def _kill_on_call(monkeypatch, owner, name, n, when=lambda *a, **k: True, after=False):
    """Raise Killed at the n-th call of owner.name (counting calls for which `when` holds), before the call
    or, with `after`, once it has returned."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        if when(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n and not after:
                raise Killed(name)
        result = real(*args, **kwargs)
        if when(*args, **kwargs) and calls["n"] == n and after:
            raise Killed(name)
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


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_killed_then_resumed_ends_like_the_uninterrupted_run(tiny_data, tmp_path, uninterrupted, monkeypatch, moment):
    owner, name, n, when, after = MOMENTS[moment]
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _kill_on_call(m, owner, name, n, when or (lambda *a, **k: True), after)
        with pytest.raises(Killed):
            _train(tiny_data, out)
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
