"""`--resume` with a longer schedule or more iterations extends a run; a run with nothing left says why and
touches nothing (issue 36)."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from cycleseg import runs
from cycleseg.cli import main
from cycleseg.runs import LAST, load_checkpoint

PLAIN = str(Path(__file__).resolve().parents[1] / "configs" / "erfnet.yaml")
# 8 images in batches of 4: 2 iterations per epoch; a constant LR until epoch 2
TINY = ["data.height=32", "data.width=64", "optim.decay_start_epoch=2", "train.progress=false", "train.log_every=1"]

pytestmark = pytest.mark.slow  # trains 18 iterations in all


def _train(data, out, *extra):
    return main(["train", PLAIN, "--data", str(data), "--out", str(out), *TINY, *extra])


def test_a_longer_schedule_on_resume_ends_where_a_run_started_with_it_ends(tiny_data, tmp_path, capsys):
    reference = tmp_path / "reference"
    assert _train(tiny_data, reference, "optim.epochs=4") == 0
    out = tmp_path / "run"
    assert _train(tiny_data, out, "optim.epochs=2") == 0  # finished: 2 epochs, still before the decay
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["train", "--resume", str(out)]) == 0
    assert "trained its whole schedule, optim.epochs=2 (4 iterations)" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing touched, no second events file

    assert main(["train", "--resume", str(out), "optim.epochs=4"]) == 0
    assert runs.read_json(out / "metrics.json")["iterations"] == 8
    a, b = load_checkpoint(out / LAST), load_checkpoint(reference / LAST)
    assert all(torch.equal(a["models"][k], b["models"][k]) for k in b["models"])
    assert a["config"]["optim"]["epochs"] == 4 and yaml.safe_load((out / "config.yaml").read_text())["optim"]["epochs"] == 4
    assert runs.read_status(out)["config_sha256"] == runs.read_status(reference)["config_sha256"]
    assert len(list(out.glob("events.out.tfevents.*"))) == 2  # the first session's and the extension's


def test_a_schedule_that_would_change_trained_epochs_is_refused(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(tiny_data, out, "optim.epochs=4", "train.max_iters=4") == 0  # 2 epochs, constant LR
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "optim.epochs=4", "optim.decay_start_epoch=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "would change the learning rate of epoch 1" in err and "--init-from" in err and len(err.splitlines()) == 1
    assert main(["train", "--resume", str(out), "train.max_iters=3"]) == 0  # below the step it reached
    assert "finished at 4 iterations, where train.max_iters=3 stops it; nothing to do" in capsys.readouterr().out
    assert main(["train", "--resume", str(out), "train.max_iters=6"]) == 0  # more iterations: extended
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines() if '"lr"' in line]
    assert steps == list(range(1, 7))
