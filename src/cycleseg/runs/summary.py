"""One reader of a run: its state, step, config, run.json record and fresh results, decided in one place.

`summary(RUN, split)` is what the report, `cycleseg table`, `cycleseg sweep` (status and the skip of a finished
run) and the Slurm launcher read; none of them decides on its own which results file counts. The rule:

- trained: run.json says "finished" and metrics.json (train's final validation) is there; a run from before
  run.json: no run.json and metrics.json there.
- eval_<split>.json counts when the run is trained and the evaluation is fresh: run.json's
  evaluations[split].step equals the run's step (a run without run.json: always), so that an evaluation of an
  older checkpoint (before a resume trained on) is never read as the run's result.
- on val, train's metrics.json stands in when there is no fresh eval_val.json.

state: "done" (trained, fresh eval_<split>.json), "trained" (trained, none), "interrupted" (created, not
finished: run.json or last.pt there) or "new".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cycleseg.errors import RunError
from cycleseg.runs.files import read_json, read_status, read_yaml
from cycleseg.runs.paths import CONFIG, LAST, METRICS, STATUS, artifact

__all__ = ["RunSummary", "evaluation_is_fresh", "summary"]


@dataclass
class RunSummary:
    """What one run directory holds for `split`: state, step, run.json record and, read on first use, its config
    and results (results_path says which file they come from; None when the run has none that count)."""

    run_dir: Path
    split: str
    state: str  # "new" | "interrupted" | "trained" | "done"
    record: dict[str, Any]  # run.json; {} for a run from before run.json (or no run)
    results_path: Path | None  # the fresh eval_<split>.json, else (val) metrics.json, else None
    stale: Path | None = None  # an eval_<split>.json that is there but older than the run's last step

    @property
    def step(self) -> int | None:
        """The training step run.json records (None without run.json)."""
        return self.record.get("step")

    @property
    def trained(self) -> bool:
        return self.state in ("trained", "done")

    @property
    def evaluated_step(self) -> int | None:
        """The training step of the checkpoint eval_<split>.json was computed from (run.json), or None."""
        return ((self.record.get("evaluations") or {}).get(self.split) or {}).get("step")

    @functools.cached_property
    def config(self) -> dict[str, Any]:
        """config.yaml as a plain dict; {} when the run has none. RunError naming the file when it is corrupt."""
        path = self.run_dir / CONFIG
        return read_yaml(path) if path.is_file() else {}

    @functools.cached_property
    def results(self) -> dict[str, Any] | None:
        """The metrics of `results_path` (miou, psnr_db, snr_db, iou, ...); None when no results count.
        RunError naming the file when it is not readable or not a JSON object."""
        if self.results_path is None:
            return None
        data = read_json(self.results_path)
        if not isinstance(data, dict):
            raise RunError(f"{self.results_path}: expected a JSON object of metrics, got {type(data).__name__}; "
                           "rerun the command that writes it")
        return data

    def require_results(self) -> dict[str, Any]:
        """The results, or RunError in one line: why the run has none that count on this split, and what to run."""
        if self.results is not None:
            return self.results
        raise RunError(self.why_no_results())

    def why_no_results(self) -> str:
        """The one line `cycleseg table` prints for a run without results: unfinished, stale or not evaluated."""
        run, split = self.run_dir, self.split
        evaluate = f"`cycleseg evaluate {run} --data DIR --split {split}`"
        if self.state == "new":
            return (f"{run}: holds no trained run (no {STATUS} or {METRICS}); train one with `cycleseg train "
                    f"CONFIG --out {run}`, then run {evaluate}")
        if not self.trained:
            state = self.record.get("state") or "interrupted"
            at = f", step {self.step}" if self.step else ""
            return (f"{run}: training not finished ({state}{at}), so no results on {split} count yet; finish it "
                    f"with `cycleseg train --resume {run}`, then run {evaluate}")
        name = artifact(run, "eval", split).name
        if self.stale is not None:
            return (f"{run}: {name} is stale (evaluated at step {self.evaluated_step}, the run is at step "
                    f"{self.step}); run {evaluate} again")
        also = f" or {METRICS}" if split == "val" else ""
        hint = (f"run {evaluate} first" if split in ("train", "val")
                else f"`cycleseg evaluate {run} --data DIR --split train|val` writes eval_train.json or "
                     "eval_val.json; pass --split train or val")
        return f"{run}: no {name}{also}; {hint}"


def evaluation_is_fresh(record: dict[str, Any], split: str) -> bool:
    """Whether a run's eval_<split>.json was computed at its last step: run.json's evaluations[split].step equals
    its step. A run from before run.json ({}) cannot tell, and its evaluation counts."""
    if not record:
        return True
    evaluated = ((record.get("evaluations") or {}).get(split) or {}).get("step")
    return evaluated == record.get("step")


def is_trained(run_dir: Path, record: dict[str, Any]) -> bool:
    """`train` completed the run: run.json "finished" and metrics.json there (before run.json: metrics.json)."""
    return (run_dir / METRICS).is_file() and (not record or record.get("state") == "finished")


def summary(run_dir: str | Path, split: str = "val") -> RunSummary:
    """The summary of the run in `run_dir` on `split` (see the module's rule). Reads run.json now (RunError when
    it is corrupt), config.yaml and the results file only when asked for."""
    run_dir = Path(run_dir)
    record = read_status(run_dir)
    evaluation = artifact(run_dir, "eval", split)
    trained = is_trained(run_dir, record)
    evaluated = trained and evaluation.is_file()
    fresh = evaluated and evaluation_is_fresh(record, split)
    if fresh:
        path: Path | None = evaluation
    elif trained and split == "val":
        path = run_dir / METRICS  # train's final validation, on val
    else:
        path = None
    if trained:
        state = "done" if fresh else "trained"
    else:
        state = "interrupted" if (run_dir / LAST).is_file() or record else "new"
    return RunSummary(run_dir, split, state, record, path, stale=evaluation if evaluated and not fresh else None)
