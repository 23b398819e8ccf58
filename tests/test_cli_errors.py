"""Bad input: one clear line on stderr, a non-zero exit, no traceback."""

import contextlib
import io
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

CYCLEGAN_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "cyclegan.yaml")
TINY = ["data.height=32", "data.width=64", "optim.epochs=1", "optim.decay_start_epoch=0", "train.progress=false"]


def run_cli(*args):
    """`cycleseg ARGS` in this process (cycleseg.cli.main): no interpreter and torch start-up per call.

    Returns what a subprocess would (returncode, stdout, stderr). An exception escaping main() fails the test
    (where a subprocess would print a traceback); test_entry_point_error_is_one_line runs the real command.
    """
    from cycleseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse exits itself on usage errors
            code = e.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_data_folder(tmp_path):
    r = run_cli("train", CYCLEGAN_YAML, "--data", tmp_path / "nowhere", "--out", tmp_path / "run", *TINY)
    assert_one_line_error(r, "nowhere")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_image_without_label(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    label = min((data / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    label.unlink()
    image_name = label.name.replace("_gtFine_labelIds.png", "_leftImg8bit.png")
    r = run_cli("evaluate", "nowhere", "--data", data)  # run dir checked first
    assert_one_line_error(r, "nowhere")
    r = run_cli("train", CYCLEGAN_YAML, "--data", data, "--out", tmp_path / "run", *TINY)
    assert_one_line_error(r, image_name)


@pytest.mark.parametrize("override, needle", [
    ("noise.colour=red", "unknown key 'noise.colour'"),
    ("optim.epochs=many", "optim.epochs must be int"),
    ("noise.kind=pink", "noise.kind must be one of"),
    ("noise.bits=0", "noise.bits"),
    ("noise.bits=9", "noise.bits"),
])
def test_bad_config_values(tmp_path, override, needle):
    extra = ["noise.kind=quantize"] if override.startswith("noise.bits") else []
    r = run_cli("train", CYCLEGAN_YAML, "--out", tmp_path / "run", *extra, override)
    assert_one_line_error(r, needle)


def test_missing_config_file(tmp_path):
    r = run_cli("train", tmp_path / "nope.yaml", "--out", tmp_path / "run")
    assert_one_line_error(r, "nope.yaml")


@pytest.mark.slow  # a process of its own (test_integration.py checks `--help` the same way in the fast tier)
def test_entry_point_error_is_one_line(tmp_path):
    """The installed command path, `python -m cycleseg.cli`, in a process of its own: exit code 2, one line."""
    r = subprocess.run([sys.executable, "-m", "cycleseg.cli", "train", str(tmp_path / "nope.yaml"), "--out",
                        str(tmp_path / "run")], capture_output=True, text=True, check=False)
    assert r.returncode == 2
    assert_one_line_error(r, "nope.yaml")


def test_evaluate_missing_checkpoint(tmp_path, tiny_data):
    (tmp_path / "empty_run").mkdir()
    r = run_cli("evaluate", tmp_path / "empty_run", "--data", tiny_data)
    assert_one_line_error(r, "last.pt")


def test_evaluate_corrupt_checkpoint(tmp_path, tiny_data):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"not a checkpoint at all")
    r = run_cli("evaluate", run, "--data", tiny_data)
    assert_one_line_error(r, "last.pt", "corrupt")


def test_make_synthetic_bad_size(tmp_path):
    r = run_cli("make-synthetic", tmp_path / "d", "--size", "100x7")
    assert_one_line_error(r, "--size")


def test_dry_run_prints_resolved_config(tmp_path):
    r = run_cli("train", CYCLEGAN_YAML, "--out", tmp_path / "run", "--dry-run", "noise.kind=quantize",
                "noise.bits=3")
    assert r.returncode == 0 and "bits: 3" in r.stdout
    assert not Path(tmp_path / "run").exists()


# ------------------------------------------------------------------------------ in-process: cycleseg.cli.main

QUANT2_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "demo" / "quant2.yaml")


def main_error(capsys, *argv, code=2):
    """Run cycleseg.cli.main in-process; assert exit `code` and exactly one line on stderr; return that line."""
    from cycleseg.cli import main

    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def copy_run(run, tmp_path):
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


def test_unknown_label_id_in_a_worker_is_one_line(tiny_data, tmp_path, capsys):
    """A DataError raised in a DataLoader worker reaches the user as its own line, not the worker's traceback."""
    import shutil

    import numpy as np
    from PIL import Image

    data = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    label = min((data / "gtFine" / "train").rglob("*_gtFine_labelIds.png"))
    ids = np.array(Image.open(label))
    ids[0, 0] = 250
    Image.fromarray(ids, "L").save(label)
    line = main_error(capsys, "train", QUANT2_YAML, "--data", data, "--out", tmp_path / "r", *TINY,
                      "data.num_workers=1", "data.check=off")
    assert line.startswith("cycleseg train: error: ")
    assert label.name in line and "250" in line
    assert len(line) < 400, line


def test_worker_traceback_is_flattened_for_every_command(monkeypatch, capsys):
    """cli.main prints the original message of an error re-raised from a DataLoader worker, whatever the command."""
    from torch._utils import ExceptionWrapper

    from cycleseg import cli
    from cycleseg.errors import DataError

    def failing_command(args):
        try:
            raise DataError("/data/x_gtFine_labelIds.png: unknown Cityscapes labelIds [250]")
        except DataError:
            ExceptionWrapper(where="in DataLoader worker process 0").reraise()

    monkeypatch.setitem(cli.COMMANDS, "table", failing_command)
    line = main_error(capsys, "table", "somewhere")
    assert line == "cycleseg table: error: /data/x_gtFine_labelIds.png: unknown Cityscapes labelIds [250]"


def test_train_out_is_a_file(tiny_data, tmp_path, capsys):
    (tmp_path / "taken").write_text("not a run")
    line = main_error(capsys, "train", QUANT2_YAML, "--data", tiny_data, "--out", tmp_path / "taken", *TINY)
    assert str(tmp_path / "taken") in line and "not a folder" in line and "--out" in line


def test_resolve_device_rejects_unknown_names():
    from cycleseg.core.models import resolve_device
    from cycleseg.errors import ConfigError

    assert resolve_device("cpu").type == "cpu"
    for name in ("gpu", "cuda:x", "cuda:", "CPU"):
        with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
            resolve_device(name)


@pytest.mark.parametrize("command", ["evaluate", "predict", "diagnose", "calibrate"])
def test_unknown_device_flag(command, trained_cycle_run, tiny_data, tmp_path, capsys):
    run = copy_run(trained_cycle_run, tmp_path)
    extra = ["--out", tmp_path / "pred"] if command == "predict" else []
    line = main_error(capsys, command, run, "--data", tiny_data, "--device", "gpu", *extra)
    assert "'gpu'" in line and "auto, cpu, cuda or cuda:N" in line
    assert not (tmp_path / "pred").exists()


def test_unknown_device_flag_of_report(tmp_path, capsys):
    line = main_error(capsys, "report", tmp_path, "--device", "cuda:first")
    assert "'cuda:first'" in line and "auto, cpu, cuda or cuda:N" in line


@pytest.mark.parametrize("device", ["gpu", "cuda:x"])
def test_unknown_train_device(device, tiny_data, tmp_path, capsys):
    line = main_error(capsys, "train", QUANT2_YAML, "--data", tiny_data, "--out", tmp_path / "r", *TINY,
                      f"train.device={device}")
    assert "train.device" in line and "auto, cpu, cuda or cuda:N" in line
    assert not (tmp_path / "r").exists()


def test_export_without_the_onnx_extra(trained_cycle_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    for flags in ([], ["--no-check"]):
        line = main_error(capsys, "export", trained_cycle_run, "--onnx", tmp_path / "g.onnx", *flags)
        assert "pip install 'cycleseg[onnx]'" in line
    assert not (tmp_path / "g.onnx").exists()


def test_export_under_a_file(trained_cycle_run, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    line = main_error(capsys, "export", trained_cycle_run, "--onnx", tmp_path / "file" / "sub" / "g.onnx")
    assert str(tmp_path / "file") + ":" in line and "not a folder" in line
    line = main_error(capsys, "export", trained_cycle_run, "--onnx", tmp_path)
    assert "is a folder" in line


def test_export_into_a_missing_folder(trained_cycle_run, tmp_path, capsys):
    pytest.importorskip("onnx")
    from cycleseg.cli import main

    out = tmp_path / "new" / "deeper" / "g.onnx"
    assert main(["export", str(trained_cycle_run), "--onnx", str(out), "--no-check"]) == 0
    assert out.stat().st_size > 0 and str(out) in capsys.readouterr().out


def fake_run(path, metrics=None, name="fake"):
    """A run directory as `table` reads it: config.yaml and metrics.json."""
    import json

    path.mkdir()
    (path / "config.yaml").write_text(f"name: {name}\nmodel: {{kind: cyclegan}}\nnoise: {{kind: quantize, bits: 2}}\n")
    (path / "metrics.json").write_text(json.dumps(metrics or {"miou": 40.0, "psnr_db": 20.0, "snr_db": 5.0}))
    return path


def test_table_corrupt_eval_json(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    (run / "eval_val.json").write_text('{"miou": 4')  # truncated
    line = main_error(capsys, "table", run)
    assert str(run / "eval_val.json") in line and "not readable JSON" in line


def test_table_corrupt_config(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    (run / "config.yaml").write_text("name: [unclosed\n")
    line = main_error(capsys, "table", run)
    assert str(run / "config.yaml") in line and "not readable YAML" in line


def test_table_split_without_eval_file(tmp_path, capsys):
    from cycleseg.cli import main

    run = fake_run(tmp_path / "run")
    line = main_error(capsys, "table", run, "--split", "nonexistent")
    assert "no eval_nonexistent.json;" in line and f"cycleseg evaluate {run}" in line and "--split train" in line
    line = main_error(capsys, "table", run, "--split", "train")  # metrics.json is val: no fallback for train
    assert "no eval_train.json;" in line and "metrics.json" not in line and "--split train`" in line
    assert main(["table", str(run)]) == 0  # val falls back to metrics.json (train's final validation)
    assert "40.0" in capsys.readouterr().out


@pytest.mark.parametrize("flags, needle", [
    (["--train", "-1"], "--train -1"),
    (["--train", "0"], "--train 0"),
    (["--val", "-1"], "--val -1"),
    (["--colour-spread", "-1"], "--colour-spread -1.0"),
    (["--colour-spread", "nan"], "--colour-spread nan"),
])
def test_make_synthetic_bad_counts(flags, needle, tmp_path, capsys):
    line = main_error(capsys, "make-synthetic", tmp_path / "d", "--size", "64x32", *flags)
    assert needle in line
    assert not (tmp_path / "d").exists()


def test_make_synthetic_onto_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    line = main_error(capsys, "make-synthetic", tmp_path / "file", "--size", "64x32", "--train", "1", "--val", "0")
    assert str(tmp_path / "file") + ":" in line and "not a folder" in line
    line = main_error(capsys, "make-synthetic", tmp_path / "file" / "sub", "--size", "64x32", "--train", "1")
    assert str(tmp_path / "file") in line and "cannot write" in line


def test_report_missing_data_folder(tmp_path, capsys):
    line = main_error(capsys, "report", tmp_path, "--data", tmp_path / "MISSING")
    assert str(tmp_path / "MISSING") + ":" in line and "not found" in line and "--data" in line
    assert not (tmp_path / "report.md").exists()


# Messages that point at the real cause.

from cycleseg.cli import main

CYCLEGAN = "configs/cyclegan.yaml"


@pytest.mark.parametrize("args, needle", [
    (["optim.lr=nan"], "command line: optim.lr must be a finite number, got 'nan'"),
    (["optim.lr=-inf"], "command line: optim.lr must be a finite number"),
    (["noise.bits=3"], "command line: noise.bits is only used with noise.kind=quantize"),
    (["optim.lrr=1"], "command line: unknown key 'optim.lrr'"),
    (["optim.epochs=4"], "set optim.decay_start_epoch too (the paper decays over the second half: "
                         + "optim.decay_start_epoch=2)"),
])
def test_messages_point_at_the_real_cause(capsys, args, needle):
    assert main(["train", CYCLEGAN, "--dry-run", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    if args[0].startswith("optim.lr"):
        assert "cyclegan.yaml" not in err  # the value came from the command line, not from the file


def test_an_unknown_flag_points_at_the_subcommands_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", CYCLEGAN, "--dry-run", "--foo"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "cycleseg train: error: unrecognized arguments: --foo (see cycleseg train --help)"


def test_yaml_syntax_error_gives_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1e-3\n  epochs: [4\n")
    assert main(["train", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{bad}:4:1: not valid YAML" in err and len(err.splitlines()) == 1, err


def test_dry_run_needs_no_out(capsys):
    assert main(["train", CYCLEGAN, "--dry-run", "noise.kind=quantize", "noise.bits=2"]) == 0
    assert "kind: quantize" in capsys.readouterr().out


def test_calibrate_takes_the_noise_after_its_options(trained_cycle_run, tiny_data, capsys):
    """`calibrate RUN --data D kind=quantize bits=1`, as the README writes it."""
    assert main(["calibrate", str(trained_cycle_run), "--data", str(tiny_data), "kind=quantize", "bits=1"]) == 0
    assert "kind=quantize, bits=1" in capsys.readouterr().out


@pytest.mark.parametrize("launcher", ["inprocess", "slurm"])
def test_sweep_checks_seeds_and_data_before_planning(launcher, tmp_path):
    """Issue 23's escapes: --seeds 1000000 with a missing --data was planned run by run (~100 minutes to the error)."""
    import time

    out, missing = tmp_path / "sweep", tmp_path / "no-data"
    start = time.monotonic()
    result = run_cli("sweep", "configs/paper", "--out", out, "--data", missing, "--seeds", "1000000",
                     "--launcher", launcher)
    assert_one_line_error(result, "--seeds 1000000", "1 to 1000")
    result = run_cli("sweep", "configs/paper", "--out", out, "--data", missing, "--seeds", "3",
                     "--launcher", launcher)
    assert_one_line_error(result, str(missing), "data folder not found", "--data")
    assert time.monotonic() - start < 20 and not out.exists()  # nothing planned, nothing written


def test_sweep_on_slurm_without_slurm_is_one_line(tiny_data, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # submitit is installed, sbatch and srun are not
    out = tmp_path / "sweep"
    result = run_cli("sweep", "configs/paper", "--only", "nonoise", "--out", out, "--data", tiny_data,
                     "--launcher", "slurm")
    assert_one_line_error(result, "no Slurm on this machine", "sbatch and srun not found", "--launcher local")
    assert not (out / "slurm").exists()
