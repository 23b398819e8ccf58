"""One default for every reader, hints that name what the user can type, names that tell runs apart, and a sweep
that shows its plan (issue 36)."""

import inspect
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import cycleseg
from cycleseg.cli import main
from cycleseg.cli.parser import build_parser

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CYCLEGAN = str(CONFIGS / "cyclegan.yaml")
TINY = ["data.height=32", "data.width=64", "optim.epochs=1", "optim.decay_start_epoch=0", "train.progress=false"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_every_reader_of_a_run_defaults_to_last_pt():
    parser = build_parser()
    for argv in (["evaluate", "r"], ["predict", "r", "--out", "o"], ["diagnose", "r"], ["export", "r", "--onnx", "g"],
                 ["segment", "r", "x.jpg", "--out", "o"]):
        assert parser.parse_args(argv).checkpoint == "last.pt", argv[0]
    assert inspect.signature(cycleseg.load).parameters["checkpoint"].default == "last"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_train_on_cuda_without_a_gpu_names_the_config_key(tiny_data, tmp_path, capsys):
    assert main(["train", CYCLEGAN, "--data", str(tiny_data), "--out", str(tmp_path / "r"), *TINY,
                 "train.device=cuda"]) == 2
    line = _one_error_line(capsys)
    assert "no CUDA GPU" in line and "use train.device=cpu" in line and "--device" not in line
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_evaluate_on_cuda_without_a_gpu_names_the_flag(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--device", "cuda"]) == 2
    assert "use --device cpu" in _one_error_line(capsys)


def _name(capsys, *argv) -> str:
    assert main(["train", CYCLEGAN, "--dry-run", *argv]) == 0
    return yaml.safe_load(capsys.readouterr().out)["name"]


def test_a_run_is_named_by_the_overrides_that_make_it_another_model(capsys):
    assert _name(capsys, "noise.kind=quantize", "noise.bits=2", "data.height=64") == \
        "cyclegan noise.kind=quantize noise.bits=2"  # data.*: the same model, at another size
    assert _name(capsys, "data.height=64", "optim.epochs=4", "optim.decay_start_epoch=2") == "cyclegan"
    assert _name(capsys, "loss.alpha=0.3", "model.f_input=softmax") == "cyclegan loss.alpha=0.3 model.f_input=softmax"
    assert _name(capsys, "noise.kind=quantize", "noise.bits=2", "name=q2") == "q2"
    assert _name(capsys, "noise.kind=quantize", "noise.bits=2", "--name", "my-q2") == "my-q2"


def test_key_value_without_equals_gets_a_hint(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", CYCLEGAN, "--dry-run", "noise.bits", "2"])
    assert e.value.code == 2
    assert "did you mean noise.bits=2? (overrides are KEY=VALUE)" in _one_error_line(capsys)
    assert main(["train", CYCLEGAN, "noise.kind=quantize", "noise.bits", "2", "--dry-run"]) == 2
    assert "expected KEY=VALUE; did you mean noise.bits=2?" in _one_error_line(capsys)


def test_an_unknown_key_says_which_was_probably_meant(capsys):
    assert main(["train", CYCLEGAN, "--dry-run", "train.precison=fp32"]) == 2
    assert "unknown key 'train.precison' (did you mean 'train.precision'?)" in _one_error_line(capsys)


def test_sweep_dry_run_prints_the_plan_and_writes_nothing(tiny_data, trained_cycle_run, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", str(CONFIGS / "paper"), "--data", str(tiny_data), "--out", str(out), "--seeds", "2",
            "--only", "plain,quant2", "--dry-run", "optim.epochs=1", "optim.decay_start_epoch=0"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"[1/4] plain/seed0: train -> {out / 'plain' / 'seed0'} (1 epochs at 512x256, seed 0)"
    assert lines[3].startswith("[4/4] quant2/seed1: train") and "nothing written" in lines[-1]
    assert not out.exists()

    shutil.copytree(trained_cycle_run, out / "quant2")  # a run already there, trained with other settings
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["sweep", str(CONFIGS / "paper"), "--data", str(tiny_data), "--out", str(out), "--only", "quant2",
                 "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "[1/1] quant2: refused: " in printed and "--retrain" in printed
    assert sorted(p.name for p in out.rglob("*")) == before  # no sweep.json, no lock, nothing
