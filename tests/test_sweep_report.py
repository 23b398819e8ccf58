"""Every experiment with one command: paper configs, calibrate, sweep (interrupted and continued), report."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from cycleseg.cli import main
from cycleseg.commands.calibrate import calibrate_run
from cycleseg.commands.evaluate import load_run
from cycleseg.config import load_config
from cycleseg.config_files import read_config_file
from cycleseg.data import CityscapesDataset
from cycleseg.errors import ConfigError, RunError
from cycleseg.experiments.sweep import find_configs
from cycleseg.report import build_report, collect_runs, load_paper_table, table2_key, table2_rows
from system_deps import chromium_command

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"


def _paper_text(path: Path) -> str:
    """A configs/paper row's text for a copy in another folder: its `base:` made absolute, so that the copy
    finds configs/paper/_base.yaml wherever it is written."""
    return path.read_text().replace("base: _base.yaml", f"base: {PAPER / '_base.yaml'}")
TINY = ["data.height=32", "data.width=64", "optim.batch_size=2", "optim.epochs=4", "optim.decay_start_epoch=2",
        "train.progress=false", "train.log_every=1", "train.eval_every=2", "train.checkpoint_every=0"]
# Renamed copies of three paper configs so that the sweep order (by name) puts a cycle model second: it is
# the one interrupted, and its 16 iterations leave time for the signal to land.
SWEEP = {"a_plain": "plain", "b_nonoise": "nonoise", "c_quant2": "quant2"}


def test_paper_configs_are_the_rows_of_table_2():
    """One config per row of Table 2 (and the -20 dB run of the text), every value the paper's."""
    keys = set()
    for path in sorted(PAPER.glob("[!_]*.yaml")):  # _base.yaml: the rows' common part
        raw = read_config_file(path)  # with its base
        assert {"data", "model", "noise", "loss", "optim", "train"} <= raw.keys(), path  # every section explicit
        cfg = load_config(path)
        assert (cfg.data.height, cfg.data.width) == (256, 512)
        assert (cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2, cfg.optim.batch_size) == (2e-4, 0.5, 0.999, 4)
        assert (cfg.optim.epochs, cfg.optim.decay_start_epoch, cfg.optim.pool_size) == (200, 100, 50)
        assert (cfg.loss.alpha, cfg.loss.beta, cfg.loss.gamma) == (0.5, 1 / 11, 20 / 31)
        assert cfg.name == path.stem
        keys.add(table2_key(cfg.to_dict()))
    assert keys == {row["key"] for row in load_paper_table()}


def test_paper_table_holds_the_values_of_spec():
    rows = {r["key"]: r for r in load_paper_table()}
    assert rows["quantize:2"] == {"key": "quantize:2", "label": "quantize 2 bit", "snr_db": 7.38, "miou": 45.1,
                                  "psnr_db": 25.30}
    assert rows["plain"]["miou"] == 40.2 and rows["plain"]["psnr_db"] is None
    assert rows["gaussian:-20"]["miou"] is None and rows["gaussian:-20"]["psnr_db"] == 18.74
    assert len(rows) == 16


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    for new, old in SWEEP.items():
        text = _paper_text(PAPER / f"{old}.yaml").replace(f"name: {old}", f"name: {new}")
        (folder / f"{new}.yaml").write_text(text)
    return folder


def _sweep_cmd(configs, data, out):
    return [sys.executable, "-m", "cycleseg.cli", "sweep", str(configs), "--data", str(data), "--out", str(out),
            *TINY]


def _steps(log: Path) -> list[int]:
    if not log.exists():
        return []
    return [json.loads(line)["step"] for line in log.read_text().splitlines() if line.endswith("}") and '"lr"' in line]


@pytest.fixture(scope="module")
def interrupted_sweep(configs, tiny_data, tmp_path_factory):
    """A sweep stopped by SIGTERM during its second run, then started again with the same command."""
    out = tmp_path_factory.mktemp("sweep")
    proc = subprocess.Popen(_sweep_cmd(configs, tiny_data, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 180
    while proc.poll() is None and len(_steps(out / "b_nonoise" / "log.jsonl")) < 2:
        assert time.time() < deadline, "the second run never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    first_out, first_err = proc.communicate(timeout=120)
    first_done = (out / "a_plain" / "metrics.json").stat().st_mtime_ns
    interrupted_at = json.loads(json.dumps(_steps(out / "b_nonoise" / "log.jsonl")))
    second = subprocess.run(_sweep_cmd(configs, tiny_data, out), capture_output=True, text=True, timeout=600,
                            check=False)
    return {"out": out, "first": (proc.returncode, first_out, first_err), "second": second,
            "first_done_mtime": first_done, "interrupted_at": interrupted_at}


@pytest.mark.slow  # the interrupted sweep: 3 runs, 2 processes
def test_interrupted_sweep_continues_and_skips_finished_runs(interrupted_sweep):
    out = interrupted_sweep["out"]
    code, _, err = interrupted_sweep["first"]
    assert code == 128 + signal.SIGTERM, err
    assert "continue the sweep with the same command" in err and "Traceback" not in err
    assert interrupted_sweep["interrupted_at"], "the second run had trained nothing when it was stopped"

    second = interrupted_sweep["second"]
    assert second.returncode == 0, second.stderr
    assert "[1/3] a_plain: finished, skipped" in second.stdout
    assert "[2/3] b_nonoise: continuing from step" in second.stdout
    assert "[3/3] c_quant2: training" in second.stdout
    assert (out / "a_plain" / "metrics.json").stat().st_mtime_ns == interrupted_sweep["first_done_mtime"]
    assert _steps(out / "b_nonoise" / "log.jsonl") == list(range(1, 17))  # continued, no step trained twice
    for name in SWEEP:
        assert json.loads((out / name / "eval_val.json").read_text())["num_images"] == 4
    assert json.loads((out / "sweep.json").read_text())["pending"] == []


@pytest.mark.slow  # the interrupted sweep: 3 runs, 2 processes
def test_report_lists_every_run_beside_the_paper(interrupted_sweep):
    out = interrupted_sweep["out"]
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    for name, label in (("a_plain", "plain ERFNet"), ("b_nonoise", "CycleGAN, no noise"),
                        ("c_quant2", "quantize 2 bit")):
        assert f"| {name} | {label} |" in md
    assert "| 45.1 |" in md and "| 25.30 |" in md  # the paper's 2-bit mIoU and PSNR sit beside ours
    for fig in ("class_iou", "examples", "curves_a_plain", "curves_b_nonoise", "curves_c_quant2"):
        assert (out / "report_files" / f"{fig}.png").stat().st_size > 1000
        assert f"report_files/{fig}.png" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "src=\"report_files" not in page  # self-contained
    assert "torch" in page and "pool_size: 50" in page  # software versions and configs


@pytest.mark.slow  # the interrupted sweep: 3 runs, 2 processes
def test_table2_rows_compute_the_differences(interrupted_sweep):
    runs = collect_runs(interrupted_sweep["out"])
    rows = {r["run"]: r for r in table2_rows(runs, load_paper_table())}
    ours = json.loads((interrupted_sweep["out"] / "c_quant2" / "eval_val.json").read_text())
    assert rows["c_quant2"]["diff_miou"] == pytest.approx(ours["miou"] - 45.1)
    assert rows["c_quant2"]["diff_psnr_db"] == pytest.approx(ours["psnr_db"] - 25.30)
    assert rows["a_plain"]["psnr_db"] is None and rows["a_plain"]["diff_psnr_db"] is None
    assert [r["run"] for r in table2_rows(runs, load_paper_table())] == ["a_plain", "b_nonoise", "c_quant2"]


@pytest.mark.slow  # the interrupted sweep: 3 runs, 2 processes
def test_sweep_refuses_to_continue_a_run_with_other_settings(interrupted_sweep, configs, tiny_data, tmp_path,
                                                             capsys):
    out = tmp_path / "sweep"
    shutil.copytree(interrupted_sweep["out"] / "b_nonoise", out / "b_nonoise")
    (out / "b_nonoise" / "metrics.json").unlink()  # as if interrupted
    steps_before = _steps(out / "b_nonoise" / "log.jsonl")
    code = main(["sweep", str(configs / "b_nonoise.yaml"), "--data", str(tiny_data), "--out", str(out),
                 *[t.replace("optim.epochs=4", "optim.epochs=5") for t in TINY]])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "b_nonoise: this run was made with optim.epochs=4, the sweep now asks for 5" in err, err
    assert _steps(out / "b_nonoise" / "log.jsonl") == steps_before  # nothing trained


def test_find_configs_puts_runs_with_snr_from_last_and_checks_names(tmp_path):
    (tmp_path / "a_gauss.yaml").write_text("noise: {kind: gaussian, snr_db: from z_quant}\n")
    (tmp_path / "z_quant.yaml").write_text("noise: {kind: quantize, bits: 2}\n")
    assert [e.name for e in find_configs([tmp_path])] == ["z_quant", "a_gauss"]
    with pytest.raises(ConfigError, match="--only nope: no such config"):
        find_configs([tmp_path], only=["nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no \*\.yaml configs"):
        find_configs([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="missing: config file or folder not found"):
        find_configs([tmp_path / "missing"])


def _direct_quantizer_snr(G, images, bits):
    """An independent computation: nearest of 2^bits levels on [-1, 1], SNR of eq. 11 per image, mean."""
    levels = torch.linspace(-1, 1, 2**bits)
    with torch.no_grad():
        logits = G(images).double()
    quantized = levels.double()[(logits.unsqueeze(-1) - levels.double()).abs().argmin(-1)]
    signal_energy = logits.pow(2).sum(dim=(1, 2, 3))
    noise_energy = (logits - quantized).pow(2).sum(dim=(1, 2, 3))
    return (10 * torch.log10(signal_energy / noise_energy)).mean().item()


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_calibrate_matches_a_direct_computation(trained_cycle_run, tiny_data, bits):
    run = trained_cycle_run  # a 2-bit run; calibrate_run with noise overrides writes nothing into it
    result = calibrate_run(run, tiny_data, noise_overrides=["kind=quantize", f"bits={bits}"], device="cpu")
    models, cfg = load_run(run, torch.device("cpu"))
    models.eval()
    dataset = CityscapesDataset(tiny_data, "val", (cfg.data.height, cfg.data.width))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    assert result["num_images"] == 4
    assert result["snr_db"] == pytest.approx(_direct_quantizer_snr(models.G, images, bits), abs=1e-3)


@pytest.mark.slow  # trains a Gaussian run
def test_snr_from_a_run_gives_a_gaussian_run_at_that_snr(trained_cycle_run, tiny_data, tmp_path, capsys):
    base = tmp_path
    shutil.copytree(trained_cycle_run, base / "c_quant2")  # a 2-bit run; calibrate writes into it
    assert main(["calibrate", str(base / "c_quant2"), "--data", str(tiny_data)]) == 0
    measured = json.loads((base / "c_quant2" / "calibrate_val.json").read_text())["snr_db"]
    assert f"SNR {measured:.2f} dB" in capsys.readouterr().out
    config = PAPER / "gauss_7.38.yaml"
    assert main(["train", str(config), "--data", str(tiny_data), "--out", str(base / "gauss_from_q2"),
                 "noise.snr_db=from c_quant2", *TINY, "optim.epochs=1", "optim.decay_start_epoch=0"]) == 0
    saved = yaml.safe_load((base / "gauss_from_q2" / "config.yaml").read_text())
    assert saved["noise"]["snr_db"] == pytest.approx(measured, abs=1e-4)
    evaluated = json.loads((base / "gauss_from_q2" / "metrics.json").read_text())
    assert evaluated["snr_db"] == pytest.approx(measured, abs=0.05)  # the Gaussian run measures that SNR


def test_snr_from_a_missing_run_is_a_clear_error(tiny_data, tmp_path, capsys):
    code = main(["train", str(PAPER / "gauss_7.38.yaml"), "--data", str(tiny_data), "--out", str(tmp_path / "g"),
                 "noise.snr_db=from nowhere", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "no trained run at nowhere" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # the interrupted sweep: 3 runs, 2 processes
def test_calibrate_needs_a_noise(interrupted_sweep, tiny_data):
    with pytest.raises(RunError, match="infinite SNR"):
        calibrate_run(interrupted_sweep["out"] / "b_nonoise", tiny_data, device="cpu")


@pytest.mark.slow  # the interrupted sweep: 3 runs, 2 processes
def test_html_report_renders_in_a_headless_browser(interrupted_sweep, tmp_path):
    browser = chromium_command(tmp_path / "profile")  # skips where Chromium cannot be installed (system_deps)
    out = interrupted_sweep["out"]
    build_report(out)
    cmd = [*browser, "--virtual-time-budget=10000", "--dump-dom", (out / "report.html").as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'data-images="5/5"' in result.stdout  # every embedded figure decoded by the browser
    assert "Uncaught" not in result.stderr


@pytest.mark.slow  # the interrupted sweep: 3 runs, 2 processes
def test_report_includes_diagnostics_when_present(interrupted_sweep, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(interrupted_sweep["out"], out)
    run = out / "b_nonoise"
    (run / "diagnose_val").mkdir()
    Image.new("RGB", (64, 32), (200, 30, 30)).save(run / "diagnose_val" / "gap.png")  # as `diagnose` writes figures
    (run / "diagnose_val.md").write_text("# Diagnostics\nwatermark gap 1.23 dB\n")
    build_report(out)
    md = (out / "report.md").read_text()
    assert "## Diagnostics: the watermarks" in md and "watermark gap 1.23 dB" in md
    assert "b_nonoise/diagnose_val/gap.png" in md
