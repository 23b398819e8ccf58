"""runs.summary, the one reader of a run: its states, which results file counts (fresh eval, metrics.json on val),
the errors of `cycleseg table`, and that every reader (report, table, sweep status, runs.finished) follows it.

Runs are constructed by hand (config.yaml, run.json, metrics.json, eval_<split>.json with known numbers); the
tests of a decision patch its one owner in cycleseg.runs.summary and check that every reader changes with it.
"""

import json
import sys
from pathlib import Path

import pytest
import yaml

from cycleseg import runs
from cycleseg.cli import main
from cycleseg.config import Config
from cycleseg.errors import RunError
from cycleseg.experiments import sweep
from cycleseg.report import collect_runs, format_table

OWNER = sys.modules["cycleseg.runs.summary"]  # `runs.summary` is the function; the module owns the rule


def make_run(run_dir: Path, state: str | None = "finished", step: int = 12, evaluated: dict[str, int] | None = None,
             metrics: float | None = 30.0, evals: dict[str, float] | None = None) -> Path:
    """A run folder: config.yaml; run.json in `state` at `step` (None: a run from before run.json), its
    evaluations at the steps `evaluated` gives; metrics.json with mIoU `metrics`; eval_<split>.json per `evals`."""
    run_dir.mkdir(parents=True)
    cfg = Config()
    cfg.name = run_dir.name
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if state is not None:
        record = {"state": state, "step": step, "message": None,
                  "evaluations": {s: {"checkpoint": "last.pt", "step": k} for s, k in (evaluated or {}).items()}}
        (run_dir / "run.json").write_text(json.dumps(record))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps({"miou": metrics, "psnr_db": None, "snr_db": None}))
    for split, miou in (evals or {}).items():
        (run_dir / f"eval_{split}.json").write_text(json.dumps({"miou": miou, "psnr_db": None, "snr_db": None}))
    return run_dir


def _table(capsys, *args) -> tuple[int, str, str]:
    code = main(["table", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------------ the rule

def test_states_and_the_results_file_that_counts(tmp_path):
    done = make_run(tmp_path / "done", evaluated={"val": 12}, evals={"val": 41.0})
    s = runs.summary(done)
    assert (s.state, s.step, s.results_path.name, s.results["miou"], s.stale) == ("done", 12, "eval_val.json", 41.0,
                                                                                  None)
    assert s.config["name"] == "done" and s.record["state"] == "finished"
    trained = make_run(tmp_path / "trained")
    assert (runs.summary(trained).state, runs.summary(trained).results["miou"]) == ("trained", 30.0)  # metrics.json
    running = make_run(tmp_path / "running", state="running", metrics=None, evals={"val": 41.0})
    assert (runs.summary(running).state, runs.summary(running).results) == ("interrupted", None)
    assert runs.summary(tmp_path / "nothing").state == "new" and runs.summary(tmp_path / "nothing").config == {}


def test_an_evaluation_older_than_the_last_step_is_stale(tmp_path):
    run = make_run(tmp_path / "run", step=20, evaluated={"val": 12, "train": 12}, evals={"val": 41.0, "train": 60.0})
    val = runs.summary(run)
    assert val.state == "trained" and val.stale == run / "eval_val.json"
    assert val.results_path == run / "metrics.json" and val.results["miou"] == 30.0  # val: train's final validation
    train = runs.summary(run, "train")
    assert train.results is None and train.evaluated_step == 12  # no fallback off val
    with pytest.raises(RunError, match=r"eval_train.json is stale \(evaluated at step 12, the run is at step 20\)"):
        train.require_results()


def test_a_run_from_before_run_json_counts_its_files(tmp_path):
    old = make_run(tmp_path / "old", state=None, evals={"val": 41.0, "train": 50.0})
    assert runs.summary(old).state == "done" and runs.summary(old, "train").results["miou"] == 50.0
    assert not runs.finished(old)  # finished: what run.json records (train --resume reads it)
    no_metrics = make_run(tmp_path / "bare", state=None, metrics=None, evals={"val": 41.0})
    assert runs.summary(no_metrics).state == "new" and runs.summary(no_metrics).results is None


def test_results_are_read_when_asked_and_must_be_an_object(tmp_path):
    run = make_run(tmp_path / "run", evaluated={"val": 12}, evals={"val": 41.0})
    (run / "eval_val.json").write_text("[1, 2]")
    s = runs.summary(run)  # the state needs no results file
    assert s.state == "done"
    with pytest.raises(RunError, match=r"eval_val.json: expected a JSON object of metrics, got list"):
        s.require_results()


# ---------------------------------------------------------------------------------------- cycleseg table

def test_table_names_what_to_run_for_a_run_without_results(tmp_path, capsys):
    running = make_run(tmp_path / "running", state="interrupted", metrics=None, evals={"val": 41.0})
    code, _, err = _table(capsys, running)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "training not finished (interrupted, step 12)" in err and f"cycleseg train --resume {running}" in err
    stale = make_run(tmp_path / "stale", step=20, evaluated={"train": 12}, evals={"train": 60.0})
    code, _, err = _table(capsys, stale, "--split", "train")
    assert code == 2 and "eval_train.json is stale" in err and f"cycleseg evaluate {stale} --data DIR --split train"\
        in err
    code, out, _ = _table(capsys, stale)  # val: metrics.json at the last step
    assert code == 0 and " 30.0 " in out


# ------------------------------------------------- one owner per decision: patch it, every reader follows

@pytest.fixture
def evaluated(tmp_path):
    """A sweep folder of one finished run evaluated at its last step: eval_val.json says 41.0, metrics.json 30.0."""
    make_run(tmp_path / "sweep" / "nonoise", evaluated={"val": 12, "train": 12}, evals={"val": 41.0, "train": 60.0})
    return tmp_path / "sweep"


def _miou(text: str) -> str:
    """The mIoU cell of a text table's first row (the column before PSNR), or the text itself without a row."""
    lines = text.strip().splitlines()
    return lines[1].split()[-2] if len(lines) > 1 and lines[1].strip() else text.strip()


def _readers(sweep_dir: Path, capsys) -> dict[str, str]:
    """What each reader of a run shows for the sweep's run: report, table (val, train), sweep status."""
    run = sweep_dir / "nonoise"
    record = collect_runs(sweep_dir)[0]
    _, table_val, err_val = _table(capsys, run)
    _, table_train, err_train = _table(capsys, run, "--split", "train")
    state = sweep.sweep_status(sweep_dir)[0]
    return {"report": str(record.value("miou")), "table": _miou(table_val or err_val),
            "table_train": _miou(table_train or err_train), "format_table": _miou(format_table([sweep_dir])),
            "run_status": sweep.run_status(run), "status": f"{state.state}: {state.detail}"}


def test_freshness_has_one_owner(evaluated, capsys, monkeypatch):
    before = _readers(evaluated, capsys)
    assert before == {"report": "41.0", "table": "41.0", "table_train": "60.0", "format_table": "41.0",
                      "run_status": "done", "status": "finished: mIoU 41.0 %"}
    monkeypatch.setattr(OWNER, "evaluation_is_fresh", lambda record, split: False)  # every evaluation stale
    after = _readers(evaluated, capsys)
    assert after["report"] == after["table"] == after["format_table"] == "30.0"  # train's metrics.json instead
    assert "eval_train.json is stale" in after["table_train"]
    assert after["run_status"] == "trained"
    assert after["status"] == "finished: mIoU 30.0 % (train's validation; not evaluated yet)"


def test_finished_has_one_owner(evaluated, capsys, monkeypatch):
    monkeypatch.setattr(OWNER, "is_trained", lambda run_dir, record: False)  # no run counts as trained
    after = _readers(evaluated, capsys)
    assert after["report"] == "None" and after["run_status"] == "interrupted"
    assert "training not finished" in after["table"] and "training not finished" in after["table_train"]
    assert "missing (not finished, left out): nonoise" in after["format_table"]
    assert after["status"].startswith("interrupted")
    assert not runs.finished(evaluated / "nonoise")  # and `train --resume` would continue it
