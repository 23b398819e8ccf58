"""A run finds its own data: it records its data folder as an absolute path (run.json keeps the user's spelling),
the commands on a run take --data as an override of that folder, not a requirement, and a recorded folder that is
gone is one line naming the run, the folder and --data."""

from pathlib import Path

import pytest
import yaml

from cycleseg import runs
from cycleseg.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PLAIN = str(CONFIGS / "erfnet.yaml")
# 8 images in batches of 4: 2 iterations per epoch, 4 in all; the first session stops after 2
TINY = ["data.height=32", "data.width=64", "optim.epochs=2", "optim.decay_start_epoch=1", "train.progress=false"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.slow  # trains 4 iterations in two sessions
def test_a_run_finds_its_data_from_another_working_directory(tiny_data, tmp_path, monkeypatch, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "d").symlink_to(tiny_data)  # `--data d`, relative to the folder training started in
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path / "a")
    assert main(["train", PLAIN, "--data", "d", "--out", str(run), *TINY, "train.max_iters=2"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["root"] == str(tmp_path / "a" / "d")
    assert runs.read_status(run)["data_root_as_given"] == "d"

    monkeypatch.chdir(tmp_path / "b")
    assert main(["train", "--resume", str(run), "train.max_iters=4"]) == 0  # no --data: the recorded folder
    assert runs.read_json(run / "metrics.json")["iterations"] == 4
    assert main(["evaluate", str(run), "--precision", "fp32"]) == 0
    assert runs.read_json(run / "eval_val.json")["num_images"] == 4
    capsys.readouterr()

    (tmp_path / "a" / "d").unlink()  # the data moved
    for args in (["evaluate", str(run)], ["predict", str(run), "--out", str(tmp_path / "p")],
                 ["calibrate", str(run)]):
        assert main(args) == 2, args
        err = _one_error_line(capsys)
        assert f"{run}: the data folder it was trained on, {tmp_path / 'a' / 'd'} (given as d), is not there" in err
        assert "pass the data with --data DIR" in err and "make-synthetic" not in err
    assert main(["evaluate", str(run), "--data", str(tiny_data), "--precision", "fp32"]) == 0  # --data overrides


def test_a_run_without_config_or_checkpoint_asks_for_data(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    assert "no config.yaml or last.pt, so no recorded data folder; pass the data with --data DIR" in \
        _one_error_line(capsys)
