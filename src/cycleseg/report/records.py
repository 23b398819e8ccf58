"""The runs of a report: one `RunRecord` per run directory, read through runs.summary (which results count),
grouped into one record per config (the rows of Table 2), and the paper's own Table 2."""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cycleseg import runs
from cycleseg.core.stats import Interval, mean_interval
from cycleseg.errors import RunError, user_message
from cycleseg.experiments.sweep import find_runs, seed_dir
from cycleseg.fileio import read_text, require_file
from cycleseg.runs import LOG, VERSIONS, RunSummary, read_json

__all__ = ["RunRecord", "collect_runs", "group_runs", "labelled_fraction", "load_paper_table", "read_run",
           "table2_key"]


@dataclass
class RunRecord:
    """What the report needs of one run directory."""

    name: str
    run_dir: Path
    config: dict[str, Any]
    results: dict[str, Any] | None  # runs.summary: a fresh eval_<split>.json (val: else metrics.json), or None
    log: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    group: str = ""  # the config's name: the row of the table (default: `name`)
    seed: int | None = None  # the k of SWEEP_DIR/CONFIG/seed<k>/; None in a sweep without seeds
    members: list[RunRecord] = field(default_factory=list)  # a config's row (group_runs): its finished runs

    def __post_init__(self) -> None:
        self.group = self.group or self.name

    @property
    def seeds(self) -> int:
        """How many runs a row stands for (1 for a single run)."""
        return len(self.members) or 1

    def interval(self, name: str) -> Interval:
        """Mean and 95 % interval of a metric over the row's runs (one value for a single run)."""
        return mean_interval(m.value(name) for m in self.members or [self])

    def per_seed(self, name: str) -> dict[int | None, float | None]:
        return {m.seed: m.value(name) for m in self.members or [self]}

    @property
    def key(self) -> str:
        return table2_key(self.config)

    @property
    def is_cycle(self) -> bool:
        return self.config["model"]["kind"] == "cyclegan"

    def value(self, name: str) -> float | None:
        return None if self.results is None else self.results.get(name)


def load_paper_table() -> list[dict[str, Any]]:
    """The paper's Table 2 rows: key, label, snr_db, miou, psnr_db (None where the paper gives no value)."""
    text = resources.files("cycleseg.report").joinpath("paper_table2.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return [{"key": r["key"], "label": r["label"],
             **{k: float(r[k]) if r[k].strip() else None for k in ("snr_db", "miou", "psnr_db")}} for r in rows]


def table2_key(config: dict[str, Any]) -> str:
    """The Table 2 row a run belongs to: plain, none, max_only, quantize:N or gaussian:SNR (as the CSV writes it)."""
    noise = config["noise"]
    if config["model"]["kind"] == "plain":
        return "plain"
    if noise["kind"] == "quantize":
        return f"quantize:{noise['bits']}"
    if noise["kind"] == "gaussian":
        rule = "" if noise.get("sigma_rule", "equal_snr") == "equal_snr" else f":{noise['sigma_rule']}"
        return f"gaussian:{float(noise['snr_db']):g}{rule}"
    return noise["kind"]


def collect_runs(sweep_dir: str | Path, left_out: list[str] | None = None) -> list[RunRecord]:
    """Every run directory of a sweep (in sweep.json's order when there is one; seeds ascending): SWEEP_DIR/NAME/
    or SWEEP_DIR/NAME/seed<k>/. A run's results are those runs.summary counts on val (else None).

    A run folder that cannot be read (a corrupt run.json, a FIFO where a file should be) or holds no config.yaml
    yet (stopped before it was created) is left out, as "NAME (why)" in `left_out` when given: the rest of the
    sweep still makes a report."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise RunError(f"{sweep_dir}: sweep folder not found; run `cycleseg sweep ... --out {sweep_dir}` first")
    found = find_runs(sweep_dir)
    records = []
    left_out = [] if left_out is None else left_out
    for group, seed, d in found:
        name = group if seed is None else f"{group}/{seed_dir(seed)}"
        try:
            summary = runs.summary(d)
            if summary.config:
                records.append(read_run(summary, group, seed))
            else:
                left_out.append(f"{name} (not started: no {runs.CONFIG})")
        except RunError as e:
            left_out.append(f"{name} (unreadable: {user_message(e)})")
    if not records:
        raise RunError(f"{sweep_dir}: no readable run directories (folders with config.yaml) in it"
                       + (f"; left out: {'; '.join(left_out)}" if left_out else ""))
    return records


def group_runs(runs: list[RunRecord]) -> list[RunRecord]:
    """One record per config (the rows of Table 2), in the order of `runs`, for the configs with at least one
    finished run: a single finished run is itself (named after its config); several are one record whose
    results are their means (class IoUs included) and whose `members` are the runs."""
    groups: dict[str, list[RunRecord]] = {}
    for r in runs:
        groups.setdefault(r.group, [])
        if r.results is not None:
            groups[r.group].append(r)
    out = []
    for name, members in groups.items():
        if len(members) == 1:
            out.append(dataclasses.replace(members[0], name=name, members=[members[0]]))
        elif members:
            first = members[0]
            results = {k: mean_interval(m.value(k) for m in members).mean for k in ("miou", "psnr_db", "snr_db")}
            classes = list(dict.fromkeys(c for m in members for c in (m.results.get("iou") or {})))
            results["iou"] = {c: mean_interval((m.results.get("iou") or {}).get(c) for m in members).mean
                              for c in classes}
            out.append(RunRecord(name, first.run_dir, first.config, results, first.log, first.versions, name,
                                 first.seed, members))
    return out


def labelled_fraction(config: dict[str, Any]) -> float | None:
    """The labelled share of a run's training images: data.labelled as a number (1/8 -> 0.125), 1 when null
    (everything labelled); None for a file list, whose share depends on the data."""
    value = (config.get("data") or {}).get("labelled")
    if value is None:
        return 1.0
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_run(summary: RunSummary, group: str | None = None, seed: int | None = None) -> RunRecord:
    """The record of the run `summary` describes: its config, the results runs.summary counts on its split (None
    when the run is not finished, or has no fresh evaluation there and no fallback), its log and versions."""
    run_dir = summary.run_dir
    config = summary.config
    results = summary.results
    log = []
    if require_file(run_dir / LOG):  # a FIFO or device: RunError naming it, never opened
        for line in read_text(run_dir / LOG, RunError).splitlines():
            try:
                log.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash: the rest of the log is still worth plotting
    versions = read_json(run_dir / VERSIONS) if (run_dir / VERSIONS).is_file() else {}
    group = group or run_dir.name
    name = group if seed is None else f"{group}/{seed_dir(seed)}"
    return RunRecord(name, run_dir, config, results, log, versions, group, seed)
