"""Seeds as a sweep axis, the statistics in table and report, `sweep status`, and the local launcher.

The layout, the statistics and the status are checked on constructed sweep folders (run directories written
by hand with known numbers); the slow tests train tiny runs: a seeded sweep whose Gaussian runs take the SNR
of the same seed's quantizer, two runs at once against the same runs one after another, and a local-launcher
sweep stopped by SIGTERM and started again.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cycleseg.cli import main
from cycleseg.config import load_config
from cycleseg.errors import ConfigError, RunError
from cycleseg.experiments import plan, sweep
from cycleseg.report import build_report, collect_runs, format_table, load_paper_table, paired_rows, table2_rows

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"


def _paper_text(path: Path) -> str:
    """A configs/paper row's text for a copy in another folder: its `base:` made absolute, so that the copy
    finds configs/paper/_base.yaml wherever it is written."""
    return path.read_text().replace("base: _base.yaml", f"base: {PAPER / '_base.yaml'}")
TINY = ["data.height=32", "data.width=64", "optim.batch_size=2", "optim.epochs=1", "optim.decay_start_epoch=0",
        "train.progress=false", "train.log_every=1", "train.precision=fp32"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _fake_run(run_dir: Path, config: str, seed: int | None, miou: float | None, psnr: float | None = None,
              snr: float | None = None, state: str = "finished", log: list[dict] | None = None) -> Path:
    """A run directory as train + evaluate leave it (config.yaml, run.json, metrics.json, eval_val.json)."""
    cfg = load_config(PAPER / f"{config}.yaml", [f"train.seed={seed}"] if seed is not None else []).to_dict()
    cfg["name"] = config
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    status = {"state": state, "step": 12, "message": None, "evaluations": {}}
    if state == "finished":
        results = {"miou": miou, "psnr_db": psnr, "snr_db": snr, "iou": {"road": miou, "sky": 2 * miou}}
        (run_dir / "metrics.json").write_text(json.dumps(results))
        (run_dir / "eval_val.json").write_text(json.dumps(results))
        status["evaluations"] = {"val": {"checkpoint": "last.pt", "step": 12}}
    (run_dir / "run.json").write_text(json.dumps(status))
    if log is not None:
        (run_dir / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    return run_dir


@pytest.fixture
def seeded_sweep(tmp_path):
    """3 seeds of plain, nonoise and quant2 with known mIoUs; gauss_7.38: seed 0 finished, seed 1 still running."""
    out = tmp_path / "sweep"
    values = {"plain": [1.0, 2.0, 3.0], "nonoise": [10.0, 20.0, 30.0], "quant2": [11.1, 20.9, 31.0]}
    for name, mious in values.items():
        for seed, miou in enumerate(mious):
            psnr = None if name == "plain" else 15.0 + seed
            log = [{"step": s, "epoch": 0, "loss/G/seg": 2.0 - s / 10 + seed / 10} for s in range(1, 5)]
            log.append({"step": 4, "epoch": 0, "val/miou": miou})
            _fake_run(out / name / f"seed{seed}", name, seed, miou, psnr, 7.0 if name == "quant2" else None, log=log)
    _fake_run(out / "gauss_7.38" / "seed0", "gauss_7.38", 0, 12.0, 14.0, 7.38)
    _fake_run(out / "gauss_7.38" / "seed1", "gauss_7.38", 1, None, state="running")
    runs = [f"{n}/seed{s}" for s in range(3) for n in ("plain", "nonoise", "quant2", "gauss_7.38")]
    (out / "sweep.json").write_text(json.dumps({"runs": runs, "configs": ["plain", "nonoise", "quant2", "gauss_7.38"],
                                                "seeds": 3, "state": {}}))
    return out


def test_seeded_layout_is_found_in_sweep_order(seeded_sweep):
    found = sweep.find_runs(seeded_sweep)
    assert [(g, s) for g, s, _ in found][:4] == [("plain", 0), ("plain", 1), ("plain", 2), ("nonoise", 0)]
    assert found[-1][:2] == ("gauss_7.38", 1)
    assert sweep.expand_runs([seeded_sweep / "quant2"]) == [("quant2", k, seeded_sweep / "quant2" / f"seed{k}")
                                                            for k in range(3)]
    assert sweep.expand_runs([seeded_sweep / "quant2" / "seed2"]) == [("quant2", 2, seeded_sweep / "quant2" / "seed2")]
    assert len(sweep.expand_runs([seeded_sweep])) == 11


def test_table2_rows_give_mean_interval_and_paired_difference(seeded_sweep):
    records = collect_runs(seeded_sweep)
    assert [r.name for r in records if r.results is None] == ["gauss_7.38/seed1"]  # running: no numbers
    rows = {r["run"]: r for r in table2_rows(records, load_paper_table())}
    plain = rows["plain"]
    assert plain["seeds"] == 3 and plain["miou"] == pytest.approx(2.0)
    assert plain["miou_ci"].half_width == pytest.approx(4.302653 / 3**0.5, abs=1e-5)  # 2.484
    assert plain["diff_miou"] == pytest.approx(2.0 - 40.2)  # our mean minus the paper
    assert plain["miou_seeds"] == {0: 1.0, 1: 2.0, 2: 3.0}
    assert rows["gauss_7.38"]["seeds"] == 1 and rows["gauss_7.38"]["miou_ci"].half_width is None
    paired = {p["run"]: p for p in paired_rows(records)}
    assert set(paired) == {"quant2", "gauss_7.38"} and paired["quant2"]["reference"] == "nonoise"
    q = paired["quant2"]["miou"]
    assert q.seeds == (0, 1, 2) and q.interval.mean == pytest.approx(1.0) and q.interval.sd == pytest.approx(0.1)
    assert q.excludes_zero  # 1.0 ± 0.25: the seeds' large shared spread is paired away
    assert paired["quant2"]["psnr_db"].interval.mean == pytest.approx(0.0)  # the same PSNR per seed
    assert paired["gauss_7.38"]["miou"].seeds == (0,) and not paired["gauss_7.38"]["miou"].excludes_zero


def test_report_of_a_seeded_sweep_still_running(seeded_sweep, tmp_path):
    md_path, html_path = build_report(seeded_sweep, data_root=tmp_path / "no-data")
    md = md_path.read_text()
    assert "| plain | plain ERFNet | 3 | – | – | 2.0 ± 2.5 (1.0, 2.0, 3.0) | 40.2 | -38.2 |" in md
    assert "| nonoise | CycleGAN, no noise | 3 | – | – | 20.0 ± 24.8 (10.0, 20.0, 30.0) |" in md
    assert "| gauss_7.38 | Gaussian 7.38 dB | 1 | 7.38 | 7.38 | 12.0 | 38.9 |" in md  # one seed: no interval
    assert "## Noise rows against nonoise, paired by seed" in md
    assert "| quant2 | quantize 2 bit | 3 | +1.0 ± 0.2 | [+0.8, +1.2] * |" in md
    assert "| gauss_7.38 | Gaussian 7.38 dB | 1 | +2.0 | – |" in md
    assert "## Missing runs" in md and "gauss_7.38/seed1 (running" in md
    assert "error bars: its 95 % interval" in md
    for fig in ("class_iou", "curves_plain", "curves_nonoise", "curves_quant2"):
        assert (seeded_sweep / "report_files" / f"{fig}.png").stat().st_size > 1000
    assert "quant2/seed2: config" in md  # every run's config
    assert html_path.read_text().count("data:image/png;base64,") == 4  # Figure 4 and 3 configs' curves


def test_text_table_of_a_seeded_sweep(seeded_sweep):
    text = format_table([seeded_sweep])
    lines = text.splitlines()
    plain = next(line for line in lines if line.startswith("plain "))
    assert "2.0 ± 2.5" in plain and plain.rstrip().endswith("1.0 2.0 3.0")
    quant = [line for line in lines if line.startswith("quant2 ")]
    assert len(quant) == 2 and "+1.0 ± 0.2 *" in quant[1]  # the row, then its paired difference
    assert lines[-1] == "missing (not finished, left out): gauss_7.38/seed1 (running)"
    assert main(["table", str(seeded_sweep / "plain"), str(seeded_sweep / "nonoise")]) == 0


def test_one_seed_per_config_looks_as_without_seeds(tmp_path, capsys):
    plain, seeded = tmp_path / "plain", tmp_path / "seeded"
    for name, miou in (("nonoise", 20.0), ("quant2", 22.0)):
        _fake_run(plain / name, name, None, miou, 15.0, 7.0 if name == "quant2" else None)
        _fake_run(seeded / name / "seed0", name, 0, miou, 15.0, 7.0 if name == "quant2" else None)
    tables = []
    for out in (plain, seeded):
        assert main(["table", str(out)]) == 0
        tables.append(capsys.readouterr().out)
        md = build_report(out, data_root=tmp_path / "no-data")[0].read_text()
        assert "| run | row of Table 2 | SNR dB | paper | mIoU % |" in md and "paired by seed" not in md
        assert "| quant2 | quantize 2 bit | 7.00 | 7.38 | 22.0 | 45.1 | -23.1 |" in md
    assert tables[0] == tables[1]
    assert main(["table", str(plain / "nonoise"), str(plain / "quant2")]) == 0  # run directories: as always
    assert capsys.readouterr().out == tables[0]


def test_sweep_status_of_every_state(tmp_path, capsys):
    out = tmp_path / "sweep"
    host = socket.gethostname()
    _fake_run(out / "a" / "seed0", "plain", 0, 20.5)
    _fake_run(out / "b" / "seed0", "nonoise", 0, None, state="running",
              log=[{"step": 6, "epoch": 0, "loss/G/total": 2.25}, {"step": 7, "epoch": 0, "loss/G/total": 1.5}])
    failed = _fake_run(out / "c" / "seed0", "quant2", 0, None, state="failed")
    status = json.loads((failed / "run.json").read_text())
    (failed / "run.json").write_text(json.dumps({**status, "message": "DataError: x.png: truncated"}))
    _fake_run(out / "e" / "seed0", "quant2", 0, None, state="interrupted")
    book = {"b/seed0": {"state": "running", "pid": os.getpid(), "host": host, "log": str(out / "logs" / "b.seed0.log")},
            "c/seed0": {"state": "failed", "pid": 1, "host": host, "log": str(out / "logs" / "c.seed0.log"),
                        "error": "DataError: x.png: truncated"},
            "f/seed0": {"state": "failed", "pid": 1, "host": host, "log": str(out / "logs" / "f.seed0.log"),
                        "error": "ConfigError: noise.snr_db 'from nowhere': no trained run"}}
    (out / "sweep.json").write_text(json.dumps({"runs": ["a/seed0", "b/seed0", "c/seed0", "d/seed0", "e/seed0",
                                                         "f/seed0"], "configs": list("abcdef"), "state": book}))
    states = {s.name: s for s in sweep.sweep_status(out)}
    assert {n: s.state for n, s in states.items()} == {
        "a/seed0": "finished", "b/seed0": "running", "c/seed0": "failed", "d/seed0": "pending",
        "e/seed0": "interrupted", "f/seed0": "failed"}
    assert (states["b/seed0"].step, states["b/seed0"].loss, states["b/seed0"].pid) == (7, 1.5, os.getpid())
    assert main(["sweep", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].endswith("6 runs, 1 finished, 1 running, 1 interrupted, 2 failed, 1 pending; "
                                         "no sweep process running")
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert "finished" in lines["a/seed0"] and "mIoU 20.5 %" in lines["a/seed0"]
    assert f"step 7, loss 1.5, pid {os.getpid()}" in lines["b/seed0"]
    assert "step 12: DataError: x.png: truncated; log " + str(out / "logs" / "c.seed0.log") in lines["c/seed0"]
    assert "ConfigError: noise.snr_db 'from nowhere'" in lines["f/seed0"] and "f.seed0.log" in lines["f/seed0"]
    assert lines["d/seed0"].split()[1] == "pending"
    assert "a rerun of the sweep continues it" in lines["e/seed0"]
    assert main(["sweep-status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[1]["pid"] == os.getpid()
    # the same for a sweep without seeds, and a run whose process is gone is no longer running
    plain = tmp_path / "plain"
    _fake_run(plain / "b", "nonoise", None, None, state="running")
    (plain / "sweep.json").write_text(json.dumps({"runs": ["b", "z"], "state": {"b": {**book["b/seed0"],
                                                                                     "pid": 2**22 + 12345}}}))
    assert [(s.name, s.state) for s in sweep.sweep_status(plain)] == [("b", "interrupted"), ("z", "pending")]


def test_sweep_help_and_status_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    help_text = capsys.readouterr().out
    assert "cycleseg sweep status SWEEP_DIR" in help_text and "--seeds N" in help_text and "--jobs N" in help_text
    assert main(["sweep", "status", str(tmp_path / "nowhere")]) == 2
    assert "sweep folder not found" in capsys.readouterr().err


def test_seeds_plan_takes_the_snr_of_the_same_seed(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "quant2.yaml").write_text(_paper_text(PAPER / "quant2.yaml"))
    gauss = _paper_text(PAPER / "gauss_7.38.yaml")
    (configs / "a_gauss.yaml").write_text(gauss.replace("snr_db: 7.38", "snr_db: from quant2"))
    (configs / "b_gauss.yaml").write_text(gauss.replace("snr_db: 7.38", "snr_db: from a_gauss"))  # a chain
    entries = plan.order(sweep.find_configs([configs]))
    assert [e.name for e in entries] == ["quant2", "a_gauss", "b_gauss"]  # each after its SNR source
    specs = plan.plan(sweep.find_configs([configs]), tmp_path / "out", seeds=2)
    assert [s.name for s in specs] == ["quant2/seed0", "a_gauss/seed0", "b_gauss/seed0", "quant2/seed1",
                                       "a_gauss/seed1", "b_gauss/seed1"]
    assert [s.index for s in specs] == [1, 2, 3, 4, 5, 6]
    gauss1 = specs[4]
    assert gauss1.depends_on == "quant2/seed1" and gauss1.config.train.seed == 1 and gauss1.seed == 1
    assert gauss1.config.noise.snr_db == f"from {tmp_path / 'out' / 'quant2' / 'seed1'}"
    assert gauss1.run_dir == tmp_path / "out" / "a_gauss" / "seed1" and gauss1.config_name == "a_gauss"
    assert specs[5].depends_on == "a_gauss/seed1"
    unseeded = plan.plan(entries, tmp_path / "out", seeds=None)
    assert unseeded[1].depends_on == "quant2" and unseeded[1].config.noise.snr_db == "from quant2"
    (configs / "quant2.yaml").write_text(gauss.replace("snr_db: 7.38", "snr_db: from b_gauss"))
    with pytest.raises(ConfigError, match="take their SNR from each other"):
        plan.plan(sweep.find_configs([configs]), tmp_path / "out")


def test_sweep_refuses_before_training(tmp_path, tiny_data):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "nonoise.yaml").write_text(_paper_text(PAPER / "nonoise.yaml"))
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="--seeds sets train.seed"):
        sweep.run_sweep([configs], out, ["train.seed=3"], seeds=2)
    with pytest.raises(ConfigError, match="need --launcher local"):
        sweep.run_sweep([configs], out, jobs=2, data_root=str(tiny_data))
    _fake_run(out / "nonoise", "nonoise", None, 1.0)  # a sweep without seeds ...
    with pytest.raises(RunError, match="holds a run made without --seeds"):
        sweep.run_sweep([configs], out, seeds=2, data_root=str(tiny_data))
    seeded = tmp_path / "seeded"
    _fake_run(seeded / "nonoise" / "seed0", "nonoise", 0, 1.0)  # ... and one with
    with pytest.raises(RunError, match="pass --seeds again"):
        sweep.run_sweep([configs], seeded, data_root=str(tiny_data))
    (seeded / "sweep.json").write_text(json.dumps({"state": {"nonoise/seed0": {
        "state": "running", "pid": os.getppid(), "host": socket.gethostname()}}}))  # a child left by a killed sweep
    with pytest.raises(RunError, match=f"still being trained by process {os.getppid()} of an earlier sweep"):
        sweep.run_sweep([configs], seeded, seeds=1, data_root=str(tiny_data))
    (seeded / "sweep.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(RunError, match=f"another sweep \\(pid {os.getppid()}\\) is running"):
        sweep.run_sweep([configs], seeded, seeds=1, data_root=str(tiny_data))


def test_a_failing_run_of_the_local_launcher_is_reported(tmp_path, tiny_data, capsys):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "gauss.yaml").write_text(_paper_text(PAPER / "gauss_7.38.yaml").replace("snr_db: 7.38",
                                                                                        "snr_db: from nowhere"))
    out = tmp_path / "out"
    code = main(["sweep", str(configs), "--data", str(tiny_data), "--out", str(out), "--launcher", "local", *TINY])
    captured = capsys.readouterr()
    assert code == 2 and "1 of 1 runs failed (gauss)" in captured.err
    assert "[1/1] gauss: failed (exit 2)" in captured.out and "no trained run at nowhere" in captured.out
    (state,) = sweep.sweep_status(out)
    assert state.state == "failed" and "no trained run at nowhere" in state.error
    assert state.log == str(out / "logs" / "gauss.log") and "no trained run" in Path(state.log).read_text()
    assert not (out / "sweep.lock").exists()


# ------------------------------------------------------------------------------------------ trained sweeps

def _configs(tmp_path: Path, names: dict[str, str]) -> Path:
    folder = tmp_path / "configs"
    folder.mkdir()
    for new, old in names.items():
        text = _paper_text(PAPER / f"{old}.yaml").replace(f"name: {old}", f"name: {new}")
        (folder / f"{new}.yaml").write_text(text.replace("snr_db: 7.38", "snr_db: from quant2"))
    return folder


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cycleseg.cli", *args], capture_output=True, text=True,
                          timeout=600, check=False, env=ONE_THREAD, **kwargs)


@pytest.mark.slow  # 4 tiny runs and 2 more processes
def test_seeded_sweep_gaussian_takes_the_snr_of_its_seed(tmp_path, tiny_data):
    configs = _configs(tmp_path, {"quant2": "quant2", "gauss_7.38": "gauss_7.38"})
    out = tmp_path / "out"
    args = ["sweep", str(configs), "--data", str(tiny_data), "--out", str(out), "--seeds", "2", *TINY,
            "train.max_iters=2"]
    first = _cli(*args)
    assert first.returncode == 0, first.stderr
    assert "[2/4] gauss_7.38/seed0: training" in first.stdout and "[3/4] quant2/seed1: training" in first.stdout
    for seed in (0, 1):
        measured = json.loads((out / "quant2" / f"seed{seed}" / "calibrate_val.json").read_text())["snr_db"]
        saved = yaml.safe_load((out / "gauss_7.38" / f"seed{seed}" / "config.yaml").read_text())
        assert saved["train"]["seed"] == seed and saved["noise"]["snr_db"] == pytest.approx(measured, abs=1e-4)
    seeds = [yaml.safe_load((out / "quant2" / f"seed{k}" / "config.yaml").read_text()) for k in (0, 1)]
    assert seeds[0]["noise"] == seeds[1]["noise"] and (seeds[0]["train"]["seed"], seeds[1]["train"]["seed"]) == (0, 1)
    m = [json.loads((out / "quant2" / f"seed{k}" / "eval_val.json").read_text())["miou"] for k in (0, 1)]
    assert "± " in first.stdout and f"{m[0]:.1f} {m[1]:.1f}" in first.stdout  # the seeded table
    second = _cli(*args)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("finished, skipped") == 4
    assert [s.state for s in sweep.sweep_status(out)] == ["finished"] * 4


@pytest.mark.slow  # 2 tiny runs twice: one after another, then at once
def test_local_launcher_runs_two_at_once_with_the_same_results(tmp_path, tiny_data):
    configs = _configs(tmp_path, {"a_plain": "plain", "b_nonoise": "nonoise"})
    common = ["--data", str(tiny_data), *TINY, "train.max_iters=3"]
    sequential = _cli("sweep", str(configs), "--out", str(tmp_path / "seq"), *common)
    assert sequential.returncode == 0, sequential.stderr
    parallel = _cli("sweep", str(configs), "--out", str(tmp_path / "par"), "--launcher", "local", "--jobs", "2",
                    *common)
    assert parallel.returncode == 0, parallel.stderr
    lines = parallel.stdout.splitlines()
    assert lines[0].startswith("[1/2] a_plain: training (pid ") and "1 thread)" in lines[0]
    assert lines[1].startswith("[2/2] b_nonoise: training (pid ")  # started before the first finished
    assert any(line.startswith("[1/2] a_plain: finished in ") for line in lines)
    book = json.loads((tmp_path / "par" / "sweep.json").read_text())["state"]
    a, b = book["a_plain"], book["b_nonoise"]
    assert max(a["started"], b["started"]) < min(a["ended"], b["ended"])  # they ran at the same time
    assert a["pid"] != b["pid"] and a["log"].endswith("logs/a_plain.log")
    assert "a_plain: training" in Path(a["log"]).read_text()
    for name in ("a_plain", "b_nonoise"):
        ours = json.loads((tmp_path / "par" / name / "eval_val.json").read_text())
        theirs = json.loads((tmp_path / "seq" / name / "eval_val.json").read_text())
        assert (ours["miou"], ours["psnr_db"], ours["iou"]) == (theirs["miou"], theirs["psnr_db"], theirs["iou"])


@pytest.mark.slow  # a local-launcher sweep stopped by SIGTERM, then started again
def test_local_launcher_stops_cleanly_and_a_rerun_continues(tmp_path, tiny_data):
    configs = _configs(tmp_path, {"a_nonoise": "nonoise", "b_quant2": "quant2", "c_plain": "plain"})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cycleseg.cli", "sweep", str(configs), "--data", str(tiny_data), "--out", str(out),
           "--launcher", "local", "--jobs", "2", *TINY, "optim.epochs=2", "optim.decay_start_epoch=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    deadline = time.time() + 240
    logs = [out / name / "log.jsonl" for name in ("a_nonoise", "b_quant2")]
    while not all(p.is_file() and p.read_text().count('"lr"') >= 2 for p in logs):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.1)
    running = {s.name: s for s in sweep.sweep_status(out)}
    assert running["a_nonoise"].state == running["b_quant2"].state == "running"
    assert running["c_plain"].state == "pending" and running["a_nonoise"].pid
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "continue the sweep with the same command" in stderr and "Traceback" not in stderr
    assert "1 not started" in stderr
    assert "stopping: 2 running runs save their last.pt and stop; 1 not started" in stdout
    for name in ("a_nonoise", "b_quant2"):
        assert json.loads((out / name / "run.json").read_text())["state"] == "interrupted"
        assert (out / name / "last.pt").is_file()
    assert [s.state for s in sweep.sweep_status(out)] == ["interrupted", "interrupted", "pending"]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, env=ONE_THREAD)
    assert again.returncode == 0, again.stderr
    assert "[1/3] a_nonoise: continuing" in again.stdout and "[3/3] c_plain: training" in again.stdout
    steps = [json.loads(line)["step"] for line in (out / "a_nonoise" / "log.jsonl").read_text().splitlines()
             if '"lr"' in line]
    assert steps == list(range(1, 9))  # continued, no step twice
    assert [s.state for s in sweep.sweep_status(out)] == ["finished"] * 3


def test_table_of_run_directories_says_how_far_seeds_land(tmp_path, capsys):
    """`cycleseg table A B C` where A and B differ only in train.seed (the demo's two quant2 seeds): they are
    labelled by seed and a line gives their spread; C, another config, is not part of it."""
    import yaml

    from cycleseg.config import Config

    def run(name: str, seed: int, miou: float, noise: str = "quantize") -> Path:
        cfg = Config()
        cfg.name, cfg.train.seed, cfg.noise.kind = name, seed, noise
        cfg.noise.bits = 2 if noise == "quantize" else None
        d = tmp_path / f"{name}-{seed}"
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
        (d / "metrics.json").write_text(json.dumps({"miou": miou, "psnr_db": 14.0, "snr_db": 4.5}))
        return d

    dirs = [run("demo-quant2", 0, 16.7), run("demo-quant2", 1, 18.9), run("demo-cyclegan", 0, 19.2, "none")]
    assert main(["table", *map(str, dirs)]) == 0
    out = capsys.readouterr().out
    assert "demo-quant2 seed 0" in out and "demo-quant2 seed 1" in out and "demo-cyclegan seed" not in out
    assert ("seed spread: demo-quant2 at seeds 0, 1 lands 16.7 to 18.9 mIoU (2.2 points apart)" in out), out
    assert out.count("seed spread") == 1


def _fake_watermark(run_dir: Path, gaps: tuple[float, float], share: float = 0.1, miou: float = 30.0) -> None:
    """RUN/diagnose_val_training.json as `diagnose --along-training` writes it: two checkpoints, steps 60 and 120."""
    points = [{"step": step, "checkpoint": f"epoch_{k:04d}.pt", "psnr_db": 15.0, "watermark_gap_db": gap + 1.0,
               "class_mean_gap_db": gap, "split_mean_gap_db": gap + 0.5, "sensitivity_psnr_db": {"30": 14.0},
               "unexplained_share": share,
               "miou": miou, "num_images": 4} for k, (step, gap) in enumerate(zip((60, 120), gaps), 1)]
    (run_dir / "diagnose_val_training.json").write_text(json.dumps({"run": run_dir.parent.name, "points": points}))


def test_watermark_along_training_gets_intervals_and_a_paired_difference(seeded_sweep):
    """The report's watermark table on constructed diagnose files: nonoise ends at gaps 1, 2, 3 dB (mean 2, 95 %
    half-width t(0.975, 2) / sqrt(3) = 2.484); quant2 at 0.0, 0.8, 1.9, (0.90 ± 4.3027 * 0.9539 / sqrt(3) = 2.37), so quant2 - nonoise, paired by seed, is
    -1.0, -1.2, -1.1: mean -1.1, sd 0.1, half-width 4.3027 * 0.1 / sqrt(3) = 0.2484, which excludes 0."""
    from cycleseg.report import group_runs, plot_watermark_training, watermark_rows, watermark_training

    for seed, (end_n, end_q) in enumerate(zip((1.0, 2.0, 3.0), (0.0, 0.8, 1.9))):
        _fake_watermark(seeded_sweep / "nonoise" / f"seed{seed}", (0.5, end_n), share=0.2 + seed / 100)
        _fake_watermark(seeded_sweep / "quant2" / f"seed{seed}", (0.1, end_q))
    curves = watermark_training(group_runs(collect_runs(seeded_sweep)))
    assert sorted(curves) == ["nonoise", "quant2"] and sorted(curves["quant2"]) == [0, 1, 2]
    rows = {r["run"]: r for r in watermark_rows(curves)}
    nonoise, quant2 = rows["nonoise"], rows["quant2"]
    assert nonoise["step"] == 120 and nonoise["seeds"] == 3
    assert nonoise["class_mean_gap_db"].mean == pytest.approx(2.0)
    assert nonoise["class_mean_gap_db"].half_width == pytest.approx(2.4841, abs=1e-4)
    assert nonoise["unexplained_share"].mean == pytest.approx(21.0)  # shown in %
    assert nonoise["class_mean_gap_vs_reference"] is None
    diff = quant2["class_mean_gap_vs_reference"]
    assert diff.seeds == (0, 1, 2) and diff.interval.mean == pytest.approx(-1.1)
    assert diff.interval.half_width == pytest.approx(0.2484, abs=1e-4) and diff.excludes_zero
    fig = plot_watermark_training(curves)
    line = next(ln for ln in fig.axes[0].lines if ln.get_label().startswith("nonoise"))
    assert list(line.get_xdata()) == [60, 120] and list(line.get_ydata()) == pytest.approx([0.5, 2.0])

    # the mechanism contrasts: the split-mean gap differs by the same -1.0, -1.2, -1.1 (t = -1.1 / (0.1 / sqrt(3)),
    # df 2: P(T < t) = 1/2 + t / (2 sqrt(2 + t^2)), p twice that); detectable (4.3027 + 1.0607) 0.1 / sqrt(3)
    from cycleseg.report import mechanism_contrasts

    contrasts = {(c["run"], c["metric"]): c for c in mechanism_contrasts(group_runs(collect_runs(seeded_sweep)), curves)}
    split = contrasts[("quant2", "split_mean_gap_db")]
    t = -1.1 / (0.1 / 3 ** 0.5)
    assert split["difference"].interval.mean == pytest.approx(-1.1)
    assert split["p"] == pytest.approx(2 * (0.5 + t / (2 * (2 + t * t) ** 0.5)), rel=1e-4)
    assert split["detectable"] == pytest.approx((4.302653 + 1.060660) * 0.1 / 3 ** 0.5, rel=1e-5)
    assert contrasts[("quant2", "psnr_db")]["p"] == 1.0  # every seed's F PSNR 15.0 in both: no difference at all
    family = sum(c["p"] is not None for c in contrasts.values())  # one seed (gauss_7.38) gives no p
    assert family >= 3 and split["p"] <= split["p_holm"] <= family * split["p"] + 1e-12
    assert ("plain", "miou") in contrasts and all(run != "nonoise" for run, _ in contrasts)  # nonoise: the reference
    assert contrasts[("plain", "miou")]["difference"].interval.mean == pytest.approx(-18.0)  # (1, 2, 3) - (10, 20, 30)

    md, _ = build_report(seeded_sweep)
    text = md.read_text()
    assert "## Paired contrasts" in text
    assert "## The watermark along training" in text and "watermark_training.png" in text
    assert "| quant2 | 3 | 120 | 0.90 ± 2.37 (0.00, 0.80, 1.90) | 1.40 ± 2.37 (0.50, 1.30, 2.40) |" in text
    assert "-1.10 ± 0.25 | [-1.35, -0.85] * |" in text


def test_report_counts_finished_runs_while_later_seeds_are_pending(tmp_path):
    """Seed 0 of two configs finished, seed 1 of both not started (in sweep.json, not on disk): 2 runs, not
    2 - 2 pending = 0 (the count once subtracted every missing run from the runs on disk)."""
    out = tmp_path / "sweep"
    for name, miou in (("nonoise", 20.0), ("quant2", 22.0)):
        _fake_run(out / name / "seed0", name, 0, miou, 15.0, 7.0 if name == "quant2" else None)
    (out / "sweep.json").write_text(json.dumps({"runs": [f"{n}/seed{s}" for s in range(2) for n in ("nonoise", "quant2")],
                                                "configs": ["nonoise", "quant2"], "seeds": 2, "state": {}}))
    text = build_report(out)[0].read_text()
    assert f"2 runs in {out}" in text
    assert "nonoise/seed1 (pending)" in text and "quant2/seed1 (pending)" in text
