"""experiments.plan owns every rule of a sweep: patch one owner and every launcher follows it.

- `plan.decide` (skip / continue / retrain / new): the in-process launcher, the local launcher (its parent and its
  worker), and the Slurm launcher (what `submit_sweep` submits, what a multi-GPU task trains, what a task's
  child runs) all ask it;
- `plan.seed_dir`: the run folders of the sweep, of its status and of the Slurm tasks all follow it;
- `plan.snr_source` (the one parser of `noise.snr_db: from RUN`): the order of the sweep and of the Slurm
  tasks and arrays all follow it.

No run is trained: a patched decide says "done", and a Slurm launcher is not started (`_triage` / `_waves` are
what `submit_sweep` does before and between its submissions).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cycleseg.experiments import plan, slurm, sweep
from cycleseg.experiments.launchers import local, slurm_job

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"
GAUSS = "model: {kind: cyclegan}\nnoise: {kind: gaussian, snr_db: from quant2}\n"


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    """quant2 (demo) and a_gauss, whose SNR comes from quant2: alphabetically first, planned second."""
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "quant2.yaml").write_text((DEMO / "quant2.yaml").read_text())
    (folder / "a_gauss.yaml").write_text(GAUSS)
    return folder


@pytest.fixture
def data(tmp_path: Path) -> str:
    (tmp_path / "data").mkdir()
    return str(tmp_path / "data")


@pytest.fixture
def decided(monkeypatch) -> list[tuple[str, str, bool]]:
    """plan.decide patched to say "done" for every run; (who asked: run name, measure) in order."""
    asked: list[tuple[str, str, bool]] = []

    def done(spec: plan.RunSpec, retrain: bool, *, measure: bool = True) -> str:
        asked.append((spec.name, retrain, measure))
        return "done"

    monkeypatch.setattr(plan, "decide", done)
    return asked


def _run_sweep(configs: Path, out: Path, data: str, **kwargs) -> tuple[list[dict], list[str]]:
    lines: list[str] = []
    return sweep.run_sweep([configs], out, data_root=data, log=lines.append, **kwargs), lines


def test_every_launcher_follows_plan_decide(configs, data, tmp_path, decided, monkeypatch):
    monkeypatch.setattr(plan, "snr_source", lambda value: None)  # a_gauss's source is not trained: not resolved
    # in-process: run_one asks, measuring
    _, lines = _run_sweep(configs, tmp_path / "inproc", data)
    assert lines == ["[1/2] a_gauss: finished, skipped", "[2/2] quant2: finished, skipped"]
    assert decided == [("a_gauss", False, True), ("quant2", False, True)]
    assert not list((tmp_path / "inproc").rglob("last.pt"))  # nothing trained
    # local: the parent asks before starting anything, computing nothing; no process is started
    decided.clear()
    summary, lines = _run_sweep(configs, tmp_path / "local", data, launcher="local", retrain=True)
    assert [s["status_before"] for s in summary] == ["done", "done"]
    assert decided == [("a_gauss", True, False), ("quant2", True, False)]
    assert not list((tmp_path / "local" / local.LOGS).iterdir())
    # the local worker (a child process's work, here in this process)
    decided.clear()
    job = {"config": str(configs / "quant2.yaml"), "overrides": [f"data.root={data}"], "run_dir":
           str(tmp_path / "w" / "quant2"), "sweep_dir": str(tmp_path / "w"), "retrain": False, "prefix": "[1/1] q:"}
    assert local.worker_main([json.dumps(job)]) == 0 and decided == [("quant2", False, True)]
    # Slurm: what submit_sweep submits, what a multi-GPU task trains, what a task's child runs
    decided.clear()
    tasks = slurm.sweep_tasks([configs / "quant2.yaml"], tmp_path / "slurm", data_root=data)
    outcome, todo = slurm._triage(tasks, {}, log=lambda line: None)
    assert outcome["quant2"].state == "finished" and todo == []
    assert slurm_job._torchrun_plan(tasks[0])["mode"] is None  # done: nothing for torchrun to train
    slurm_job._run_worker(json.loads(json.dumps(vars(tasks[0]))), "[job 1] quant2:", None)
    assert decided == [("quant2", False, False), ("quant2", False, True), ("quant2", False, True)]
    monkeypatch.setattr(plan, "decide", lambda spec, retrain, measure=True: "retrain")
    assert slurm._triage(tasks, {}, log=lambda line: None)[1] == tasks  # to submit
    assert slurm_job._torchrun_plan(tasks[0])["mode"] == "retrain"


def test_every_run_folder_follows_plan_seed_dir(configs, data, tmp_path, decided, monkeypatch):
    monkeypatch.setattr(plan, "seed_dir", lambda seed: f"s{seed}")
    tasks = slurm.sweep_tasks([configs / "quant2.yaml", configs / "a_gauss.yaml"], tmp_path / "slurm", seeds=[1])
    slurm_dir = tmp_path / "slurm"
    assert [Path(t.run_dir) for t in tasks] == [slurm_dir / "quant2" / "s1", slurm_dir / "a_gauss" / "s1"]
    assert tasks[1].overrides[-1] == f'noise.snr_db="from {slurm_dir / "quant2" / "s1"}"'  # seed 1's source
    monkeypatch.setattr(plan, "resolve", lambda spec, measure=True: spec)  # quant2 is not trained: not measured
    out = tmp_path / "out"
    _run_sweep(configs, out, data, seeds=2)
    book = json.loads((out / "sweep.json").read_text())
    assert book["runs"] == ["quant2/s0", "a_gauss/s0", "quant2/s1", "a_gauss/s1"]
    assert sorted(p.name for p in (out / "quant2").iterdir()) == ["s0", "s1"]  # the folders run_one made
    assert [s.name for s in sweep.sweep_status(out)] == book["runs"]
    assert (plan.seed_of("s1"), plan.seed_of("seed1")) == (1, None)  # folder names read back the same way


def test_every_order_follows_the_one_snr_from_parser(configs, data, tmp_path, decided, monkeypatch):
    paths = [configs / "a_gauss.yaml", configs / "quant2.yaml"]
    assert [s.name for s in plan.plan(sweep.find_configs([configs]), tmp_path)] == ["quant2", "a_gauss"]
    tasks = slurm.sweep_tasks(paths, tmp_path / "slurm")
    assert [t.name for t in tasks] == ["quant2", "a_gauss"] and tasks[1].depends_on == "quant2"
    assert [[t.name for t in wave] for wave, _ in slurm._waves(tasks, tasks, {})] == [["quant2"], ["a_gauss"]]

    monkeypatch.setattr(plan, "snr_source", lambda value: None)  # no config takes its SNR from another now
    assert [e.name for e in sweep.find_configs([configs])] == ["a_gauss", "quant2"]
    specs = plan.plan(sweep.find_configs([configs]), tmp_path)
    assert [(s.name, s.depends_on) for s in specs] == [("a_gauss", None), ("quant2", None)]
    _, lines = _run_sweep(configs, tmp_path / "inproc", data)
    assert [line.split(":")[0] for line in lines] == ["[1/2] a_gauss", "[2/2] quant2"]
    _, lines = _run_sweep(configs, tmp_path / "local", data, launcher="local")
    assert [line.split(":")[0] for line in lines] == ["[1/2] a_gauss", "[2/2] quant2"]
    tasks = slurm.sweep_tasks(paths, tmp_path / "slurm")
    assert [(t.name, t.depends_on) for t in tasks] == [("a_gauss", None), ("quant2", None)]
    assert [[t.name for t in wave] for wave, _ in slurm._waves(tasks, tasks, {})] == [["a_gauss", "quant2"]]


def test_snr_source_reads_from_values_only():
    assert plan.snr_source("from quant2") == "quant2" and plan.snr_source("from  /abs/run ") == "/abs/run"
    assert [plan.snr_source(v) for v in (7.38, None, "quant2", "from ", 3)] == [None] * 5


def test_a_from_that_names_a_run_folder_by_its_absolute_path_waits_for_it(configs, tmp_path):
    (configs / "a_gauss.yaml").write_text(GAUSS.replace("from quant2", f"from {tmp_path / 'out' / 'quant2'}"))
    specs = plan.plan(sweep.find_configs([configs]), tmp_path / "out")
    assert [(s.name, s.depends_on) for s in specs] == [("quant2", None), ("a_gauss", "quant2")]
