"""The runs layer: nothing mislabelled, nothing lost (issue "One owner for the run directory").

Each test reproduces a case where, before the runs layer, results ended up under the wrong configuration or
work was lost, and checks the one-line error or the right result.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from cycleseg import runs
from cycleseg.cli import main
from cycleseg.data import list_samples
from cycleseg.runs import LAST, LOCK, load_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PLAIN = str(CONFIGS / "erfnet.yaml")
CYCLE = str(CONFIGS / "cyclegan.yaml")
TINY = ["data.height=32", "data.width=64", "optim.epochs=1", "optim.decay_start_epoch=0", "train.progress=false",
        "train.log_every=1"]


def _train(data, out, config=PLAIN, *extra):
    return main(["train", config, "--data", str(data), "--out", str(out), *TINY, *extra])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def cycle_run(trained_cycle_run, tmp_path):
    """A private copy of the session's finished 2-bit cycle run, evaluated, diagnosed and predicted (fakes of
    the files those commands write are enough here)."""
    run = tmp_path / "run"
    shutil.copytree(trained_cycle_run, run)
    runs.write_json(runs.artifact(run, "eval", "val"), {"miou": 12.0, "psnr_db": 17.0, "snr_db": 4.0, "iou": {}})
    for kind in ("official", "diagnose", "calibrate"):
        runs.write_json(runs.artifact(run, kind, "val"), {"old": True})
    runs.artifact(run, "diagnose_md", "val").write_text("old")
    (runs.artifact(run, "predictions", "val") / "labelIds").mkdir(parents=True)
    return run


def test_overwrite_removes_every_artifact_of_the_old_run(tiny_data, cycle_run, capsys):
    old = {p.name for p in cycle_run.iterdir()}
    assert {"best.pt", "eval_val.json", "predictions_val", "diagnose_val.md", "official_val.json"} <= old
    assert _train(tiny_data, cycle_run, PLAIN, "--overwrite") == 0
    left = {p.name for p in cycle_run.iterdir()}
    assert not left & {"eval_val.json", "official_val.json", "diagnose_val.json", "diagnose_val.md",
                       "calibrate_val.json", "predictions_val"}
    assert len(list(cycle_run.glob("events.out.tfevents.*"))) == 1  # only the new run's events
    assert load_checkpoint(cycle_run / "best.pt")["config"]["model"]["kind"] == "plain"
    capsys.readouterr()
    assert main(["table", str(cycle_run)]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert "plain ERFNet" in row and row.split()[-1] == "-"  # no PSNR of the old cycle run


def test_a_failed_data_check_writes_nothing(tiny_data, cycle_run, tmp_path, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in cycle_run.iterdir() if p.is_file() and p.name != LOCK}
    broken = tmp_path / "broken"
    shutil.copytree(tiny_data, broken)
    next((broken / "gtFine" / "val").rglob("*_labelIds.png")).unlink()
    assert _train(broken, cycle_run, PLAIN, "--overwrite") == 2
    assert "has no label" in _one_error_line(capsys)
    # (the lock file names its last holder: this train, which held the run while it checked the data)
    assert {p.name: p.stat().st_mtime_ns for p in cycle_run.iterdir() if p.is_file() and p.name != LOCK} == before
    # nor without --overwrite into a new folder
    assert _train(broken, tmp_path / "new", PLAIN) == 2
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("files", [["notes.txt"], ["config.yaml", "thesis.tex"]])
def test_a_folder_that_holds_no_run_is_never_emptied(tiny_data, tmp_path, capsys, files):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("keep me")
    assert _train(tiny_data, folder, PLAIN, "--overwrite") == 2
    assert "holds no run" in _one_error_line(capsys)
    assert all((folder / name).read_text() == "keep me" for name in files)


@pytest.mark.slow
def test_overwrite_keeps_the_users_own_files_in_a_run_folder(tiny_data, cycle_run):
    (cycle_run / "my_notes.txt").write_text("keep me")
    assert _train(tiny_data, cycle_run, PLAIN, "--overwrite") == 0
    assert (cycle_run / "my_notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_resume_with_fewer_batches_per_epoch_closes_the_epoch(tiny_data, tmp_path):
    """data.root may change on resume; an epoch now shorter than the batches already trained closes at once."""
    out = tmp_path / "run"
    assert _train(tiny_data, out, PLAIN, "optim.batch_size=2", "optim.epochs=2", "train.max_iters=3") == 0
    smaller = tmp_path / "smaller"
    shutil.copytree(tiny_data, smaller)
    for sample in list_samples(smaller, "train")[2:]:  # 2 images left: 1 batch per epoch
        sample.image_path.unlink()
        sample.label_path.unlink()
    assert main(["train", "--resume", str(out), "--data", str(smaller), "train.max_iters=null"]) == 0
    progress = load_checkpoint(out / LAST)["progress"]
    # epoch 0 had 3 of its now 1 batches: it closes; the run (now 2 x 1 iterations) is past its end: it finishes
    assert (progress["epoch"], progress["batch_in_epoch"], progress["step"], progress["validated_step"]) == (1, 0, 3, 3)
    assert runs.read_status(out)["state"] == "finished"


@pytest.mark.parametrize("key, value", [("noise.kind", "none"), ("data.height", 64), ("optim.lr", 0.5)])
def test_resume_refuses_an_edited_config_yaml(cycle_run, key, value, capsys):
    config = runs.read_yaml(cycle_run / "config.yaml")
    section, name = key.split(".")
    config[section][name] = value
    if key == "noise.kind":
        config["noise"]["bits"] = None
    runs.write_yaml(cycle_run / "config.yaml", config)
    assert main(["train", "--resume", str(cycle_run)]) == 2
    err = _one_error_line(capsys)
    assert f"config.yaml: {key} was changed to {value!r}" in err and "restore it" in err


@pytest.mark.parametrize("override", ["train.seed=5", "train.precision=bf16", "optim.lr=1e-3", "noise.bits=3"])
def test_resume_refuses_overrides_that_change_what_the_run_computes(cycle_run, override, capsys):
    assert main(["train", "--resume", str(cycle_run), override]) == 2
    err = _one_error_line(capsys)
    assert f"{override.split('=')[0]} cannot change when a run is resumed" in err


def test_resuming_a_finished_run_is_a_no_op_that_says_so(tiny_data, cycle_run, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in cycle_run.iterdir()}
    assert main(["train", "--resume", str(cycle_run), "--data", str(tiny_data)]) == 0
    assert "the run is finished" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in cycle_run.iterdir()} == before  # not a file touched
    assert json.loads((cycle_run / "metrics.json").read_text())["miou"] is not None


def test_evaluate_records_which_checkpoint_it_used(tiny_data, cycle_run):
    assert main(["evaluate", str(cycle_run), "--data", str(tiny_data), "--checkpoint", "best.pt"]) == 0
    record = runs.read_status(cycle_run)["evaluations"]["val"]
    assert record["checkpoint"] == "best.pt"
    assert record["step"] == load_checkpoint(cycle_run / "best.pt")["progress"]["step"]


@pytest.mark.slow
def test_a_data_error_mid_training_saves_the_run_first(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    samples = list_samples(data, "train")
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))  # epoch 0's order, seed 0
    image = samples[int(order[3])].image_path  # the 4th image trained: its PNG header passes, decoding fails
    image.write_bytes(image.read_bytes()[:200])
    out = tmp_path / "run"
    assert _train(data, out, PLAIN, "optim.batch_size=1", "train.checkpoint_every=0", "data.check=off",
                  "data.cache=off") == 2
    err = _one_error_line(capsys)
    assert image.name in err and "the run is saved at step 3" in err and f"--resume {out}" in err
    assert load_checkpoint(out / LAST)["progress"]["step"] == 3  # no checkpoint was due: 3 steps kept
    status = runs.read_status(out)
    assert status["state"] == "failed" and status["step"] == 3


@pytest.mark.slow
def test_a_run_stopped_mid_epoch_logs_its_validation_at_that_epoch(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert _train(tiny_data, out, PLAIN, "optim.batch_size=2", "train.max_iters=3") == 0
    validation = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "val/miou" in line]
    assert [(v["step"], v["epoch"]) for v in validation] == [(3, 0)]


@pytest.mark.slow
def test_sweep_refuses_a_finished_run_made_with_other_settings(tiny_data, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    args = ["sweep", PLAIN, "--data", str(tiny_data), "--out", str(sweep), *TINY]
    assert main(args) == 0
    assert main([*args, "data.height=64"]) == 2
    err = _one_error_line(capsys)
    assert "this run was made with data.height=32, the sweep now asks for 64" in err and "--retrain" in err
    assert main([*args, "data.height=64", "--retrain"]) == 0
    assert runs.read_yaml(sweep / "erfnet" / "config.yaml")["data"]["height"] == 64
    assert load_checkpoint(sweep / "erfnet" / LAST)["config"]["data"]["height"] == 64


def test_config_hash_ignores_only_the_resumable_keys():
    from cycleseg.config import load_config

    base = load_config(None)
    assert runs.config_hash(base) == runs.config_hash(load_config(None, ["train.max_iters=5", "data.root=/x"]))
    assert runs.config_hash(base) != runs.config_hash(load_config(None, ["train.seed=1"]))
    assert runs.config_difference(base, load_config(None, ["optim.lr=1e-3"])) == ("optim.lr", 2e-4, 1e-3)


@pytest.mark.slow
def test_every_command_reads_the_data_the_way_the_run_does(tiny_data, tmp_path, capsys):
    """data.cache=require and data.cache_dir hold for evaluate, calibrate, diagnose and predict alike."""
    from cycleseg.data.cache import prepare

    data, cache = tmp_path / "data", tmp_path / "cache"
    shutil.copytree(tiny_data, data)
    prepare(data, (32, 64), cache_dir=cache)
    run = tmp_path / "run"
    assert _train(data, run, CYCLE, "noise.kind=quantize", "noise.bits=2", "train.max_iters=1", "data.cache=require",
                  f"data.cache_dir={cache}") == 0
    shutil.rmtree(cache)
    commands = [["evaluate"], ["calibrate"], ["diagnose", "--max-images", "2"],
                ["predict", "--out", str(tmp_path / "preds")]]
    for command in commands:
        capsys.readouterr()
        assert main([command[0], str(run), "--data", str(data), *command[1:]]) == 2, command
        err = _one_error_line(capsys)
        assert "data.cache=require" in err and f"cycleseg prepare {data}" in err, err
