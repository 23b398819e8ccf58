"""The report of a sweep: the paper's Table 2 and Figures 3 and 4, with our numbers beside the paper's.

`build_report(SWEEP_DIR)` reads every run directory of a sweep (config.yaml, eval_val.json, log.jsonl,
versions.json, and diagnose_val.* when `cycleseg diagnose` has been run) and writes

    SWEEP_DIR/report.md          Markdown, figures linked from report_files/
    SWEEP_DIR/report.html        one self-contained file, figures embedded
    SWEEP_DIR/report_files/*.png the figures

The paper's values come from the data file paper_table2.csv next to this module.

A sweep with seeds (SWEEP_DIR/CONFIG/seed<k>/) gives one row per config: the mean over its finished seeds with
the 95 % Student-t interval and the per-seed values (`stats`), and, for each noise row, the difference to the
no-noise row paired by seed; Figure 4 has error bars and the curves a band over the seeds. With one run per
config the report is the one without seeds. Runs not finished yet (a sweep still running) are listed as
missing and left out of every number.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import functools
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from cycleseg.config import config_from_dict
from cycleseg.data import CLASS_NAMES, NUM_EVAL_CLASSES, open_source, open_split
from cycleseg.errors import RunError
from cycleseg.runs.formats import figure, fmt, noise_label, save_figure, to_rgb
from cycleseg.core.models import resolve_device
from cycleseg.runs import (
    CONFIG,
    LOG,
    METRICS,
    VERSIONS,
    artifact,
    atomic_write,
    load_run,
    read_json,
    read_status,
    read_yaml,
    run_classes,
    seeded_inference,
)
from cycleseg.core.stats import (
    Interval,
    detectable_effect,
    format_interval,
    holm,
    mean_interval,
    paired_difference,
    t_p_value,
)
from cycleseg.experiments.sweep import expand_runs, find_runs, run_status, seed_dir, sweep_status

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "RunRecord",
    "build_report",
    "choose_runs",
    "collect_runs",
    "format_table",
    "group_runs",
    "load_paper_table",
    "mechanism_contrasts",
    "paired_rows",
    "plot_watermark_training",
    "reward_rows",
    "semi_rows",
    "table2_key",
    "table2_rows",
    "watermark_rows",
    "watermark_training",
]

FILES = "report_files"
EVAL_CLASSES = CLASS_NAMES[:NUM_EVAL_CLASSES]  # mIoU is over the 19 Cityscapes classes
_fmt = functools.partial(fmt, missing="–")  # the report's tables write a missing number as a dash


@dataclass
class RunRecord:
    """What the report needs of one run directory."""

    name: str
    run_dir: Path
    config: dict[str, Any]
    results: dict[str, Any] | None  # eval_val.json (else metrics.json); None if not finished or never evaluated
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


def collect_runs(sweep_dir: str | Path) -> list[RunRecord]:
    """Every run directory of a sweep (in sweep.json's order when there is one; seeds ascending): SWEEP_DIR/NAME/
    or SWEEP_DIR/NAME/seed<k>/. A run's results are read only when it is finished (else None)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise RunError(f"{sweep_dir}: sweep folder not found; run `cycleseg sweep ... --out {sweep_dir}` first")
    found = find_runs(sweep_dir)
    if not found:
        raise RunError(f"{sweep_dir}: no run directories (folders with config.yaml) in it")
    return [_read_run(d, group, seed) for group, seed, d in found]


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


def table2_rows(runs: list[RunRecord], paper: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per config with a finished run, in the paper's order: ours (the mean over seeds) and the paper's
    SNR, mIoU, PSNR, and the differences; `<metric>_ci` the interval over seeds (stats.Interval) and
    `<metric>_seeds` the per-seed values."""
    by_key = {p["key"]: (i, p) for i, p in enumerate(paper)}
    rows = []
    for run in group_runs(runs):
        index, ref = by_key.get(run.key, (len(paper), None))
        row = {"run": run.name, "label": ref["label"] if ref else noise_label(run.config), "order": index,
               "evaluated": run.results is not None, "seeds": run.seeds}
        for metric in ("snr_db", "miou", "psnr_db"):
            interval = run.interval(metric)
            ours, theirs = interval.mean, ref[metric] if ref else None
            row[metric] = ours
            row[f"{metric}_ci"] = interval
            row[f"{metric}_seeds"] = run.per_seed(metric)
            row[f"paper_{metric}"] = theirs
            row[f"diff_{metric}"] = None if ours is None or theirs is None else ours - theirs
        rows.append(row)
    return sorted(rows, key=lambda r: r["order"])


def paired_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """For each noise row (a cycle model with noise), its difference to the no-noise row of the same labelled
    fraction (`nonoise`, else the first cycle model without noise; every run of the paper's sweep has fraction 1)
    paired by seed: {"run", "label", "reference", "miou", "psnr_db"} with stats.PairedDifference values."""
    groups = group_runs(runs)
    rows = []
    for g in groups:
        if not g.is_cycle or g.key in ("none", "plain"):
            continue
        reference = _same_fraction(groups, g, lambda r: r.is_cycle and r.key == "none", "nonoise")
        if reference is not None:
            rows.append({"run": g.name, "label": noise_label(g.config), "reference": reference.name,
                         **{m: paired_difference(g.per_seed(m), reference.per_seed(m)) for m in ("miou", "psnr_db")}})
    return rows


def semi_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """What unlabelled images add (configs/semi-study/): each cycle model minus the plain ERFNet trained on the
    same labelled images (same fraction; the same seed chooses the same images), mIoU paired by seed:
    {"run", "label", "fraction", "reference", "miou"}. Empty unless some run has a labelled fraction below 1."""
    groups = group_runs(runs)
    if not any((labelled_fraction(g.config) or 1.0) < 1.0 for g in groups):
        return []
    rows = []
    for g in groups:
        reference = _same_fraction(groups, g, lambda r: r.key == "plain") if g.is_cycle else None
        if reference is not None:
            rows.append({"run": g.name, "label": noise_label(g.config), "fraction": labelled_fraction(g.config),
                         "reference": reference.name, "miou": paired_difference(g.per_seed("miou"),
                                                                              reference.per_seed("miou"))})
    return rows


def _same_fraction(groups: list[RunRecord], g: RunRecord, wanted: Callable[[RunRecord], bool],
                   prefer: str | None = None) -> RunRecord | None:
    """The group named `prefer`, else the first, among the `wanted` groups (not g) of g's labelled fraction."""
    fraction = labelled_fraction(g.config)
    candidates = [r for r in groups if r is not g and wanted(r) and labelled_fraction(r.config) == fraction]
    return next((r for r in candidates if r.name == prefer), candidates[0] if candidates else None)


def _name_references(paired: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
    """paired_rows for display: (rows, the one reference's name), or, when the rows have several references
    (several labelled fractions), (rows whose "run" reads "quant2 − nonoise", None)."""
    references = {p["reference"] for p in paired}
    if len(references) == 1:
        return paired, references.pop()
    return [{**p, "run": f"{p['run']} − {p['reference']}"} for p in paired], None


def choose_runs(runs: list[RunRecord], names: list[str] | None = None) -> list[RunRecord]:
    """The rows of Figures 3 and 4 (group_runs: one per config, seeds pooled): `names`, or plain, no noise,
    2-bit quantization and the best Gaussian."""
    evaluated = group_runs(runs)
    if names:
        by_name = {r.name: r for r in evaluated}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise RunError(f"--runs {','.join(missing)}: no evaluated run of that name; have "
                           f"{', '.join(by_name) or 'none'}")
        return [by_name[n] for n in names]
    chosen = [next((r for r in evaluated if r.key == key), None) for key in ("plain", "none", "quantize:2")]
    gaussians = [r for r in evaluated if r.key.startswith("gaussian") and r.value("miou") is not None]
    chosen.append(max(gaussians, key=lambda r: r.value("miou")) if gaussians else None)
    chosen = [r for r in chosen if r is not None]
    return chosen or evaluated[:4]


def format_table(paths: list[Path], split: str = "val") -> str:
    """`cycleseg table` over runs with seeds: each path a run directory, a config's folder of seed<k>/ runs, or a
    sweep folder. One row per config with the mean ± 95 % interval over its finished seeds and each seed's
    value, then each noise row's difference to the no-noise row paired by seed; runs not finished are named
    as missing. With one run per config: the columns of the table without seeds."""
    records, missing = [], []
    for group, seed, run_dir in expand_runs(paths):
        if not (run_dir / CONFIG).is_file():
            missing.append(f"{run_dir} (no run)")
            continue
        record = _read_run(run_dir, group, seed, split)
        records.append(record)
        if record.results is None:
            state = read_status(run_dir).get("state") or "not started"  # run.json: running, failed, interrupted
            missing.append(f"{record.name} ({f'not evaluated on {split}' if state == 'finished' else state})")
    groups = group_runs(records)
    if not any(g.seeds > 1 for g in groups):
        lines = [f"{'run':<24} {'noise':<22} {'SNR dB':>7} {'mIoU %':>7} {'PSNR dB':>8}"]
        lines += [f"{g.config.get('name', g.name):<24} {noise_label(g.config):<22} {fmt(g.value('snr_db'), 2):>7} "
                  f"{fmt(g.value('miou'), 1):>7} {fmt(g.value('psnr_db'), 2):>8}" for g in groups]
    else:
        width = max([24] + [len(g.name) for g in groups])
        lines = [(f"{'run':<{width}} {'noise':<22} {'seeds':>5} {'SNR dB':>14} {'mIoU %':>12} {'PSNR dB':>14}  "
                 "mIoU per seed / PSNR per seed")]
        for g in groups:
            per_seed = " ".join(fmt(m.value("miou"), 1) for m in g.members)
            if g.is_cycle:
                per_seed += " / " + " ".join(fmt(m.value("psnr_db"), 2) for m in g.members)
            lines.append(f"{g.name:<{width}} {noise_label(g.config):<22} {g.seeds:>5} "
                         f"{format_interval(g.interval('snr_db'), 2):>14} {format_interval(g.interval('miou'), 1):>12} "
                         f"{format_interval(g.interval('psnr_db'), 2):>14}  {per_seed}")
        paired = paired_rows(records)
        if paired:
            paired, reference = _name_references(paired)
            width = max([width] + [len(p["run"]) for p in paired])
            lines += ["", (f"minus {reference or 'the no-noise row'}, paired by seed (mean ± "
                           "95 % interval; * the interval excludes 0):"),
                      f"{'run':<{width}} {'noise':<22} {'seeds':>5} {'Δ mIoU %':>14} {'Δ PSNR dB':>16}"]
            for p in paired:
                cells = [format_interval(p[m].interval, d, sign=True) + (" *" if p[m].excludes_zero else "  ")
                         for m, d in (("miou", 1), ("psnr_db", 2))]
                lines.append(f"{p['run']:<{width}} {p['label']:<22} {len(p['miou'].seeds):>5} {cells[0]:>14} "
                             f"{cells[1]:>16}")
    if missing:
        lines += ["", "missing (not finished, left out): " + ", ".join(missing)]
    return "\n".join(lines)


def build_report(sweep_dir: str | Path, data_root: str | Path | None = None, runs: list[str] | None = None,
                 num_examples: int = 3, device: str = "auto", progress: bool = False) -> tuple[Path, Path]:
    """Write report.md, report.html and report_files/ into `sweep_dir`; returns the two report paths.

    Figure 3 runs the chosen models on `num_examples` validation images of `data_root` (default: the data
    folder in the runs' config); it is left out, with a note, when that folder is not there.
    """
    sweep_dir = Path(sweep_dir)
    records = collect_runs(sweep_dir)
    paper = load_paper_table()
    rows = table2_rows(records, paper)
    chosen = choose_runs(records, runs)
    missing = _missing(sweep_dir, records)
    files = sweep_dir / FILES
    files.mkdir(exist_ok=True)

    figures: dict[str, Path] = {}
    if chosen:
        figures["class_iou"] = save_figure(plot_class_iou(chosen), files / "class_iou.png")
    root = Path(data_root) if data_root else Path(chosen[0].config["data"]["root"]) if chosen else None
    examples_note = ""
    if chosen and root is not None and root.is_dir() and open_source(root).image_dir("val").is_dir():
        figures["examples"] = save_figure(plot_examples(chosen, root, num_examples, resolve_device(device)),
                                          files / "examples.png")
    else:
        examples_note = f"Figure 3 left out: no validation images at {root}; pass --data DIR."
    groups = group_runs(records)
    for g in tqdm(groups, desc="report: curves", unit="config", disable=not progress, dynamic_ncols=True, leave=False):
        if g.seeds > 1 and any(m.log for m in g.members):
            figures[f"curves_{g.name}"] = save_figure(plot_seed_curves(g), files / f"curves_{_slug(g.name)}.png")
        elif g.log:
            figures[f"curves_{g.name}"] = save_figure(plot_curves(g), files / f"curves_{_slug(g.name)}.png")

    curves = watermark_training(groups)
    if curves:
        figures["watermark_training"] = save_figure(plot_watermark_training(curves), files / "watermark_training.png")
    fraction_figure = plot_labelled_fraction(groups)
    if fraction_figure is not None:
        figures["labelled_fraction"] = save_figure(fraction_figure, files / "labelled_fraction.png")
    sections = _sections(records, rows, chosen, figures, examples_note, sweep_dir, missing, watermark_rows(curves),
                         reward_rows(groups, curves), mechanism_contrasts(groups, curves))
    md_path, html_path = sweep_dir / "report.md", sweep_dir / "report.html"
    atomic_write(md_path, _markdown(sections, sweep_dir))
    atomic_write(html_path, _html(sections, sweep_dir))
    return md_path, html_path


# ---------------------------------------------------------------------------------------------------- figures

def plot_class_iou(runs: list[RunRecord]) -> Figure:
    """Figure 4: IoU of each evaluated class (Cityscapes: 19; a folder dataset: its classes.yaml's), one bar per
    run."""
    fig = figure(13, 4.2)
    ax = fig.subplots()
    width = 0.8 / len(runs)
    names = _class_names(runs)
    x = np.arange(len(names))
    for i, run in enumerate(runs):
        iou = run.results.get("iou", {})
        values = [iou.get(c) if iou.get(c) is not None else 0.0 for c in names]
        errors = _class_errors(run, values, names)  # several seeds: the 95 % interval of each class's mean
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, yerr=errors, capsize=1.5 if errors else 0,
               error_kw={"elinewidth": 0.8}, label=_bar_label(run))
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylabel("IoU %")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="run (mIoU)", fontsize=8, ncols=min(4, len(runs)))
    ax.set_title("Class-wise IoU on the validation split (Figure 4)")
    fig.tight_layout()
    return fig


def _class_names(runs: list[RunRecord]) -> list[str]:
    """The evaluated classes, in order, as the runs' results name them (the 19 Cityscapes ones by default)."""
    for run in runs:
        if run.results.get("iou"):
            return list(run.results["iou"])
    return list(EVAL_CLASSES)


def _class_errors(run: RunRecord, values: list[float], names: list[str]) -> list[list[float]] | None:
    """Error bars (below, above) of each class's mean IoU over the row's seeds: the 95 % interval, drawn within
    0..100 %; None for a single run."""
    if run.seeds < 2:
        return None
    per_class = [mean_interval(((m.results.get("iou") or {}).get(c) or 0.0) for m in run.members) for c in names]
    half = [iv.half_width or 0.0 for iv in per_class]
    return [[min(h, v) for h, v in zip(half, values)], [min(h, 100.0 - v) for h, v in zip(half, values)]]


def _bar_label(run: RunRecord) -> str:
    if run.seeds < 2:
        return f"{run.name} ({_fmt(run.value('miou'), 1)} %)"
    return f"{run.name} ({format_interval(run.interval('miou'), 1, missing='–')} %, {run.seeds} seeds)"


def plot_seed_curves(group: RunRecord) -> Figure:
    """The training curves of a config over its seeds: the mean of each loss per iteration and of the
    validation mIoU per epoch, with a band from the smallest to the largest seed's value."""
    fig = figure(11, 3.2)
    ax_loss, ax_val = fig.subplots(1, 2)
    logs = [m.log for m in group.members if m.log]
    loss_keys = sorted({k for log in logs for e in log for k in e if k.startswith("loss/")})
    for k in loss_keys:
        steps, mean, low, high = _band(logs, "step", k)
        if steps:
            (line,) = ax_loss.plot(steps, mean, label=k.removeprefix("loss/"), linewidth=1)
            ax_loss.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    if loss_keys:
        ax_loss.legend(fontsize=7)
    ax_loss.set_title(f"{group.name}: training losses ({len(logs)} seeds)", fontsize=10)
    epochs, mean, low, high = _band(logs, "epoch", "val/miou")
    if epochs:
        epochs = [e + 1 for e in epochs]
        (line,) = ax_val.plot(epochs, mean, marker="o", label="mean")
        ax_val.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, linewidth=0, label="min-max")
        ax_val.legend(fontsize=7)
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("validation mIoU %")
    ax_val.set_title(f"{group.name}: validation mIoU ({len(logs)} seeds)", fontsize=10)
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _band(logs: list[list[dict[str, Any]]], x_key: str, key: str
          ) -> tuple[list[float], list[float], list[float], list[float]]:
    """For each x (step or epoch) where some seed logged `key`: the mean, smallest and largest value over the
    seeds that have it (a seed's last entry at that x)."""
    by_x: dict[float, list[float]] = {}
    for log in logs:
        values = {e[x_key]: e[key] for e in log if e.get(key) is not None and e.get(x_key) is not None}
        for x, v in values.items():
            by_x.setdefault(x, []).append(v)
    xs = sorted(by_x)
    return (xs, [sum(by_x[x]) / len(by_x[x]) for x in xs], [min(by_x[x]) for x in xs],
            [max(by_x[x]) for x in xs])


def labelled_fraction(config: dict[str, Any]) -> float | None:
    """The labelled share of a run's training images: data.labelled as a number (1/8 -> 0.125), 1 when null
    (everything labelled); None for a file list, whose share depends on the data."""
    value = (config.get("data") or {}).get("labelled")
    if value is None:
        return 1.0
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def plot_labelled_fraction(groups: list[RunRecord]) -> Figure | None:
    """mIoU against the labelled fraction (configs/semi/): one line per model (plain ERFNet, no noise, 2-bit, ...),
    each point a config's mean over its seeds with the 95 % interval; None unless the finished configs span at
    least two fractions."""
    series: dict[str, list[tuple[float, Interval]]] = {}
    for g in groups:
        fraction, interval = labelled_fraction(g.config), g.interval("miou")
        if fraction is None or interval.mean is None:
            continue
        label = "plain ERFNet" if g.config["model"]["kind"] == "plain" else noise_label(g.config)
        series.setdefault(label, []).append((fraction, interval))
    fractions = sorted({f for points in series.values() for f, _ in points})
    if len(fractions) < 2:
        return None
    fig = figure(6.5, 4)
    ax = fig.subplots()
    for label, points in sorted(series.items()):
        points.sort(key=lambda p: p[0])
        means = [iv.mean for _, iv in points]
        errors = [[iv.mean - iv.low if iv.low is not None else 0.0 for _, iv in points],
                  [iv.high - iv.mean if iv.high is not None else 0.0 for _, iv in points]]
        ax.errorbar([f for f, _ in points], means, yerr=errors, marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(fractions, [f"1/{round(1 / f)}" if f < 1 and abs(1 / f - round(1 / f)) < 1e-9 else f"{f:g}"
                              for f in fractions])
    ax.set(xlabel="labelled fraction of the training images", ylabel="validation mIoU %",
           title="Semi-supervised: mIoU against the labelled fraction")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# What `diagnose --along-training` follows (RUN/diagnose_val_training.json), as the report shows it.
WATERMARK_METRICS = (("class_mean_gap_db", "gap to class means", "dB", 2),
                     ("split_mean_gap_db", "gap to split class means", "dB", 2),
                     ("watermark_gap_db", "gap to decision", "dB", 2),
                     ("psnr_db", "F's PSNR", "dB", 2),
                     ("sensitivity_drop_db", "PSNR lost to extra 20 dB noise", "dB", 2),
                     ("unexplained_share", "unexplained share", "%", 1),
                     ("miou", "mIoU", "%", 1),
                     ("snr_db", "SNR of the run's noise", "dB", 2),
                     ("logit_rms", "logit RMS", "", 2))
# The paired contrasts of the mechanism study (mechanism_contrasts): (key, title, unit, digits, where from)
CONTRAST_METRICS = (("split_mean_gap_db", "gap to split class means", "dB", 2, "diagnose"),
                    ("psnr_db", "F's PSNR", "dB", 2, "diagnose"),
                    ("miou", "mIoU", "%", 1, "evaluate"))


def watermark_training(groups: list[RunRecord], split: str = "val") -> dict[str, dict[int | None, list[dict]]]:
    """{config: {seed: points}} of every finished run with a diagnose_<split>_training.json (the watermark along
    training); each point {"step", "class_mean_gap_db", ...} as diagnose_training wrote it."""
    out: dict[str, dict[int | None, list[dict]]] = {}
    for g in groups:
        for m in g.members or [g]:
            path = artifact(m.run_dir, "diagnose_training", split)
            if path.is_file():
                points = read_json(path).get("points") or []
                if points:
                    out.setdefault(g.name, {})[m.seed] = points
    return out


def _watermark_value(point: dict[str, Any], key: str) -> float | None:
    if key == "sensitivity_drop_db":  # how much of F's PSNR a little extra noise (20 dB) takes away
        extra = (point.get("sensitivity_psnr_db") or {}).get("20")
        return None if extra is None or point.get("psnr_db") is None else point["psnr_db"] - extra
    value = point.get(key)
    return None if value is None else 100.0 * value if key == "unexplained_share" else value


def watermark_rows(curves: dict[str, dict[int | None, list[dict]]], reference: str = "nonoise"
                   ) -> list[dict[str, Any]]:
    """One row per config: each WATERMARK_METRICS value at the run's last checkpoint, as an Interval over the
    seeds (with the per-seed values), and for the other configs the class-mean gap minus `reference`'s, paired
    by seed (stats.PairedDifference; None without a `reference` config)."""
    last = {name: {seed: points[-1] for seed, points in by_seed.items()} for name, by_seed in curves.items()}
    rows = []
    for name, by_seed in last.items():
        row: dict[str, Any] = {"run": name, "seeds": len(by_seed),
                               "step": max(p["step"] for p in by_seed.values())}
        for key, *_ in WATERMARK_METRICS:
            values = {seed: _watermark_value(p, key) for seed, p in by_seed.items()}
            row[key] = mean_interval(values.values())
            row[f"{key}_seeds"] = values
        row["class_mean_gap_vs_reference"] = None if name == reference or reference not in last else (
            paired_difference({s: p.get("class_mean_gap_db") for s, p in by_seed.items()},
                              {s: p.get("class_mean_gap_db") for s, p in last[reference].items()}))
        rows.append(row)
    return rows


def mechanism_contrasts(groups: list[RunRecord], curves: dict[str, dict[int | None, list[dict]]],
                        reference: str = "nonoise") -> list[dict[str, Any]]:
    """Every config against `reference`, paired by seed, on CONTRAST_METRICS: the gap to the split's class means
    and F's PSNR at the last diagnosed checkpoint (diagnose --along-training), the final mIoU (evaluate). Per
    contrast: the PairedDifference, the paired t test's p, Holm's adjusted p over all contrasts of the table, and
    the smallest difference the seeds could have detected (80 % power at 5 %, from the differences' SD).
    Empty without a `reference` config."""
    by_name = {g.name: g for g in groups}
    if reference not in by_name:
        return []

    def per_seed(name: str, key: str, source: str) -> dict[int | None, float | None]:
        if source == "evaluate":
            return by_name[name].per_seed(key)
        return {seed: _watermark_value(points[-1], key) for seed, points in curves.get(name, {}).items()}

    rows = []
    for g in groups:
        if g.name == reference:
            continue
        for key, title, unit, digits, source in CONTRAST_METRICS:
            diff = paired_difference(per_seed(g.name, key, source), per_seed(reference, key, source))
            if diff.interval.mean is None:
                continue
            rows.append({"run": g.name, "reference": reference, "metric": key, "title": title, "unit": unit,
                         "digits": digits, "difference": diff, "p": t_p_value(diff.interval),
                         "detectable": detectable_effect(diff.interval),
                         "per_seed": dict(zip(diff.seeds, diff.interval.values, strict=True))})
    adjusted = holm({f"{r['run']}:{r['metric']}": r["p"] for r in rows})
    for r in rows:
        r["p_holm"] = adjusted[f"{r['run']}:{r['metric']}"]
    return rows


def reward_rows(groups: list[RunRecord], curves: dict[str, dict[int | None, list[dict]]], split: str = "val"
                ) -> list[dict[str, Any]]:
    """Per cycle config with diagnose --along-training: the oracles of the data (labels only; labels and each
    image's class colours; the reward, their difference) and, at the last checkpoint, F's PSNR from the split's
    class-mean scores and from the ground-truth one-hot, each an Interval over the seeds."""
    rows = []
    for g in groups:
        if g.name not in curves:
            continue
        oracles = [read_json(artifact(m.run_dir, "diagnose_training", split)).get("oracle") or {}
                   for m in g.members or [g] if artifact(m.run_dir, "diagnose_training", split).is_file()]
        last = [points[-1] for points in curves[g.name].values()]
        rows.append({"run": g.name, **{key: mean_interval(o.get(key) for o in oracles) for key in
                                       ("labels_only_psnr_db", "image_colours_psnr_db", "reward_db")},
                     "f_split_means_psnr_db": mean_interval(p.get("split_mean_psnr_db") for p in last),
                     "f_ground_truth_psnr_db": mean_interval(p.get("ground_truth_psnr_db") for p in last)})
    return rows


def plot_watermark_training(curves: dict[str, dict[int | None, list[dict]]]) -> Figure:
    """The watermark along training, one line per config: each WATERMARK_METRICS value per iteration, the mean
    over the seeds that have that step and, with 2 or more, the band of its 95 % interval."""
    columns = 5
    rows = -(-len(WATERMARK_METRICS) // columns)
    fig = figure(15, 3.0 * rows)
    axes = fig.subplots(rows, columns).ravel()
    for ax in axes[len(WATERMARK_METRICS):]:
        ax.set_visible(False)
    for index, (name, by_seed) in enumerate(curves.items()):
        steps = sorted({p["step"] for points in by_seed.values() for p in points})
        for ax, (key, title, unit, _) in zip(axes, WATERMARK_METRICS):
            intervals = [mean_interval(_watermark_value(p, key) for points in by_seed.values() for p in points
                                       if p["step"] == step) for step in steps]
            xs = [s for s, iv in zip(steps, intervals) if iv.mean is not None]
            kept = [iv for iv in intervals if iv.mean is not None]
            colour = f"C{index % 10}"
            ax.plot(xs, [iv.mean for iv in kept], "o-", color=colour, markersize=3,
                    label=f"{name} ({len(by_seed)} seeds)" if len(by_seed) > 1 else name)
            band = [(x, iv) for x, iv in zip(xs, kept) if iv.half_width is not None]
            if band:
                ax.fill_between([x for x, _ in band], [iv.low for _, iv in band], [iv.high for _, iv in band],
                                color=colour, alpha=0.15, linewidth=0)
    for ax, (key, title, unit, _) in zip(axes, WATERMARK_METRICS):
        if unit == "dB":
            ax.axhline(0, color="k", linewidth=0.6)
        ax.set(xlabel="iteration", ylabel=unit, title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("The watermark along training (diagnose --along-training, val): mean over seeds, 95 % band",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_curves(run: RunRecord) -> Figure:
    """Training losses over iterations and validation mIoU over epochs of one run."""
    fig = figure(11, 3.2)
    ax_loss, ax_val = fig.subplots(1, 2)
    loss_keys = sorted({k for e in run.log for k in e if k.startswith("loss/")})
    for k in loss_keys:
        points = [(e["step"], e[k]) for e in run.log if e.get(k) is not None]
        if points:
            ax_loss.plot(*zip(*points, strict=True), label=k.removeprefix("loss/"), linewidth=1)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    if loss_keys:
        ax_loss.legend(fontsize=7)
    ax_loss.set_title(f"{run.name}: training losses")
    vals = [(e["epoch"] + 1, e["val/miou"]) for e in run.log if e.get("val/miou") is not None]
    if vals:
        ax_val.plot(*zip(*vals, strict=True), marker="o")
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("validation mIoU %")
    ax_val.set_title(f"{run.name}: validation mIoU")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_examples(runs: list[RunRecord], data_root: Path, num_images: int, device: torch.device) -> Figure:
    """Figure 3: validation images, ground truth, each run's prediction (and reconstruction for cycle models).

    Each run reads the images at its own training size, through `open_split` as `evaluate` reads them (so runs
    of different sizes can stand side by side); the image and ground-truth columns are the first run's.
    """
    splits = [open_split(config_from_dict(run.config, source=str(run.run_dir / CONFIG)), "val", root=data_root)
              for run in runs]
    count = min(len(split) for split in splits)
    indices = np.unique(np.linspace(0, count - 1, min(num_images, count)).round().astype(int))
    columns: list[tuple[str, list[np.ndarray]]] = [("image", []), ("ground truth", [])]
    for n, (run, split) in enumerate(zip(runs, splits)):
        batch = [split[int(i)] for i in indices]
        images = torch.stack([b[0] for b in batch])
        if n == 0:
            size = tuple(images.shape[2:])
            columns[0][1].extend(to_rgb(images))
            columns[1][1].extend(run_classes(run.run_dir).colorize(b[1].numpy().clip(0)) for b in batch)
        models, cfg = load_run(run.run_dir, device)
        with seeded_inference(models, cfg.train.seed, device):  # Gaussian noise as in evaluation
            if models.is_cycle:
                logits, _, reconstruction = models.forward_cycle(images.to(device))
            else:
                logits, reconstruction = models.G(images.to(device)), None
        palette = run_classes(run.run_dir)
        columns.append((f"{run.name}\nprediction", [palette.colorize(p) for p in logits.argmax(1).cpu().numpy()]))
        if reconstruction is not None:
            columns.append((f"{run.name}\nreconstruction", list(to_rgb(reconstruction))))
    rows, cols = len(indices), len(columns)
    col_width, aspect = 1.8, size[1] / size[0]
    fig = figure(cols * col_width, rows * (col_width / aspect + 0.1) + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False)
    for c, (title, pictures) in enumerate(columns):
        for r in range(rows):
            axes[r][c].imshow(pictures[r])
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
        axes[0][c].set_title(title, fontsize=7)
    fig.suptitle("Validation examples (Figure 3)", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------- content

@dataclass
class _Section:
    title: str
    text: str = ""  # a paragraph (plain text)
    table: tuple[list[str], list[list[str]]] | None = None  # header, rows
    figures: list[Path] = field(default_factory=list)
    code: list[tuple[str, str]] = field(default_factory=list)  # (summary, preformatted text), collapsed in HTML


def _sections(records: list[RunRecord], rows: list[dict[str, Any]], chosen: list[RunRecord],
              figures: dict[str, Path], examples_note: str, sweep_dir: Path, missing: list[str] = (),
              watermark: list[dict[str, Any]] = (), rewards: list[dict[str, Any]] = (),
              contrasts: list[dict[str, Any]] = ()) -> list[_Section]:
    seeded = any(r["seeds"] > 1 for r in rows)
    sizes = sorted({f"{r.config['data']['width']}x{r.config['data']['height']}, {r.config['optim']['epochs']} epochs"
                    for r in records})
    about = ("the paper: Cityscapes val at 512x256, 200 epochs. SNR is the measured mean per-image SNR of the noise "
             "(eq. 11); PSNR that of the forward-cycle reconstruction (eq. 14).")
    if not seeded:
        header = ["run", "row of Table 2", "SNR dB", "paper", "mIoU %", "paper", "Δ", "PSNR dB", "paper", "Δ"]
        body = [[r["run"], r["label"] + ("" if r["evaluated"] else " (not evaluated)"),
                 _fmt(r["snr_db"], 2), _fmt(r["paper_snr_db"], 2),
                 _fmt(r["miou"], 1), _fmt(r["paper_miou"], 1), _fmt(r["diff_miou"], 1, sign=True),
                 _fmt(r["psnr_db"], 2), _fmt(r["paper_psnr_db"], 2), _fmt(r["diff_psnr_db"], 2, sign=True)]
                for r in rows]
        count = sum(r.results is not None for r in records)  # `missing` also names runs not on disk yet
        text = f"{count} runs in {sweep_dir} ({'; '.join(sizes)}); {about} Δ = ours − paper."
    else:
        header = ["run", "row of Table 2", "seeds", "SNR dB", "paper", "mIoU %", "paper", "Δ", "PSNR dB", "paper",
                  "Δ"]
        body = [[r["run"], r["label"], str(r["seeds"]),
                 _with_seeds(r, "snr_db", 2), _fmt(r["paper_snr_db"], 2),
                 _with_seeds(r, "miou", 1), _fmt(r["paper_miou"], 1), _fmt(r["diff_miou"], 1, sign=True),
                 _with_seeds(r, "psnr_db", 2), _fmt(r["paper_psnr_db"], 2), _fmt(r["diff_psnr_db"], 2, sign=True)]
                for r in rows]
        count = sum(r["seeds"] for r in rows)
        text = (f"{count} finished runs of {len(rows)} configs in {sweep_dir} ({'; '.join(sizes)}), one per seed; "
                f"{about} Ours: mean ± half-width of the 95 % confidence interval over the seeds (Student t, n − 1 "
                "degrees of freedom), the value of each seed in brackets (seed 0 first); Δ = our mean − paper.")
    sections = [_Section("Table 2: SNR, mIoU and PSNR beside the paper", text, table=(header, body))]
    paired = paired_rows(records) if seeded else []
    if paired:
        paired, reference = _name_references(paired)
        against = f"the row {reference} (no noise)" if reference else "the no-noise row of the same labelled fraction"
        sections.append(_Section(
            f"Noise rows against {reference or 'the no-noise row of the same labelled fraction'}, paired by seed",
            f"Each noise row minus {against}, seed by seed (the same seed gives both the same "
            "initial weights and data order), over the seeds both have: mean difference and its 95 % confidence "
            "interval (Student t). * marks an interval that excludes 0: a difference unlikely (at 5 %) to be the "
            "seeds' spread alone. One common seed gives the difference without an interval.",
            table=(["run", "row of Table 2", "seeds", "Δ mIoU %", "95 % interval", "Δ PSNR dB", "95 % interval"],
                   [[p["run"], p["label"], str(len(p["miou"].seeds)),
                     format_interval(p["miou"].interval, 1, sign=True, missing="–"), _bounds(p["miou"], 1),
                     format_interval(p["psnr_db"].interval, 2, sign=True, missing="–"), _bounds(p["psnr_db"], 2)]
                    for p in paired])))
    if missing:
        sections.append(_Section("Missing runs", "Not finished (yet), so left out of every number and figure: "
                                 + "; ".join(missing) + "."))
    names = ", ".join(f"{r.name} ({r.seeds} seeds)" if r.seeds > 1 else r.name for r in chosen)
    sections += [
        _Section("Figure 4: class-wise IoU", ("Runs: " + names + "." if not seeded else "Configs: " + names
                                              + "; bars: mean over the seeds, error bars: its 95 % interval (drawn within 0-100 %)."),
                 figures=[figures["class_iou"]] if "class_iou" in figures else []),
        _Section("Figure 3: validation examples",
                 examples_note or "Each row one validation image; columns: the image, the ground truth, then each "
                 "chosen run's prediction and, for cycle models, its reconstruction F(noise(G(x)))."
                 + (" With seeds: each config's first finished seed (" + ", ".join(
                     f"{r.name}: {seed_dir(r.members[0].seed)}" for r in chosen if r.members and r.members[0].seed
                     is not None) + ")." if seeded else ""),
                 figures=[figures["examples"]] if "examples" in figures else []),
        _Section("Training curves", "Losses per iteration (log.jsonl) and validation mIoU per epoch of every run."
                 + (" A config with several seeds: the mean over the seeds, the band from the smallest to the "
                    "largest seed's value." if seeded else ""),
                 figures=[figures[k] for k in figures if k.startswith("curves_")]),
    ]
    if "labelled_fraction" in figures:
        sections.append(_Section("Semi-supervised: mIoU against the labelled fraction",
                                 "Each point a config's validation mIoU (with seeds: the mean and its 95 % interval), "
                                 "the fraction its data.labelled; 1 = every training image labelled.",
                                 figures=[figures["labelled_fraction"]]))
    semi = semi_rows(records)
    if semi:
        sections.append(_Section(
            "Semi-supervised: what the cycle adds to the same labels",
            "Each cycle model minus the plain ERFNet trained on the same labelled images (the same fraction; the same "
            "seed chooses the same images and initial weights), validation mIoU paired by seed: mean difference and "
            "its 95 % interval (Student t); * marks an interval that excludes 0.",
            table=(["run", "labelled", "noise", "minus", "seeds", "Δ mIoU %", "95 % interval"],
                   [[r["run"], f"{r['fraction']:g}" if r["fraction"] is not None else "file", r["label"],
                     r["reference"], str(len(r["miou"].seeds)),
                     format_interval(r["miou"].interval, 1, sign=True, missing="–"), _bounds(r["miou"], 1)]
                    for r in semi])))
    if watermark:
        header = ["run", "seeds", "iteration"] + [f"{title} {unit}" for _, title, unit, _ in WATERMARK_METRICS] + [
            "Δ gap to class means dB", "95 % interval"]
        body = []
        for w in watermark:
            cells = [w["run"], str(w["seeds"]), str(w["step"])]
            for key, _, _, digits in WATERMARK_METRICS:
                cells.append(_with_seeds({f"{key}_ci": w[key], f"{key}_seeds": w[f"{key}_seeds"]}, key, digits))
            diff = w["class_mean_gap_vs_reference"]
            cells += ["–", "–"] if diff is None else [format_interval(diff.interval, 2, sign=True, missing="–"),
                                                      _bounds(diff, 2)]
            body.append(cells)
        sections.append(_Section(
            "The watermark along training",
            "From `cycleseg diagnose RUN --along-training` (RUN/diagnose_val_training.json) of every run that has it. "
            "Gap to class means: PSNR of F(noise(G(x))) minus that of F fed each pixel's class-mean logits, the "
            "detail F reads from G's scores beyond the decided classes; gap to split class means: the same with "
            "the class means over the whole split, so per-image detail (the colour of this image's sky) counts too; "
            "gap to decision: minus F fed the decision "
            "one-hot; unexplained share: the logits' energy the class means do not explain. The table: the last "
            "checkpoint, mean ± half-width of the 95 % interval over the seeds (each seed in brackets), and the "
            "gap to class means minus that of nonoise, paired by seed (* : the interval excludes 0). The figure: "
            "mean over the seeds per checkpoint, the band its 95 % interval.",
            table=(header, body),
            figures=[figures["watermark_training"]] if "watermark_training" in figures else []))
    if rewards:
        sections.append(_Section(
            "The reward for hiding",
            "From the oracles of `cycleseg diagnose` (val): PSNR of the image painted from its ground-truth label map "
            "with each class's mean colour over the split (labels only), and with each class's mean colour in this "
            "image (labels and colours); the reward is their difference, what hiding can win at most. Beside them, "
            "F's PSNR at the last checkpoint fed each pixel's split class-mean scores and fed the ground-truth one-hot "
            "(how close F gets to the labels-only oracle). Mean ± 95 % interval over the seeds.",
            table=(["run", "labels-only oracle dB", "labels + colours oracle dB", "reward dB",
                    "F(split class means) dB", "F(ground truth) dB"],
                   [[r["run"]] + [format_interval(r[k], 2, missing="–") for k in
                                  ("labels_only_psnr_db", "image_colours_psnr_db", "reward_db",
                                   "f_split_means_psnr_db", "f_ground_truth_psnr_db")] for r in rewards])))
    if contrasts:
        sections.append(_Section(
            f"Paired contrasts against {contrasts[0]['reference']}",
            "Each config minus the reference, seed by seed: the gap to the split's class means and F's PSNR at the "
            "last diagnosed checkpoint, the final mIoU (evaluate). Mean ± 95 % interval (Student t), each seed's "
            "difference, the paired t test's p and Holm's adjusted p over every row of this table (* : adjusted p "
            "< 0.05), and the smallest true difference these seeds detect with 80 % power at 5 % (two-sided), "
            "from the differences' SD: a null is informative only about effects above it.",
            table=(["run", "metric", "seeds", "Δ", "95 % interval", "per seed", "p", "Holm p", "detectable ±"],
                   [[c["run"], f"{c['title']} {c['unit']}", str(len(c["difference"].seeds)),
                     format_interval(c["difference"].interval, c["digits"], sign=True, missing="–"),
                     _bounds(c["difference"], c["digits"]),
                     ", ".join(f"{v:+.{c['digits']}f}" for v in c["per_seed"].values()),
                     _fmt(c["p"], 4), _fmt(c["p_holm"], 4) + (" *" if c["p_holm"] is not None and c["p_holm"] < 0.05
                                                              else ""),
                     _fmt(c["detectable"], c["digits"])] for c in contrasts])))
    diagnosed = [r for r in records if artifact(r.run_dir, "diagnose_md", "val").is_file()]
    if diagnosed:
        section = _Section("Diagnostics: the watermarks",
                           "From `cycleseg diagnose` (RUN_DIR/diagnose_val.md and .json of each run).")
        for r in diagnosed:
            markdown = artifact(r.run_dir, "diagnose_md", "val")
            section.code.append((f"{r.name}: {markdown.name}", markdown.read_text()))
            section.figures += sorted(artifact(r.run_dir, "diagnose_figures", "val").glob("*.png"))
        sections.append(section)
    configs = _Section("Configurations and software", "The resolved config.yaml and versions.json of every run.")
    for r in records:
        configs.code.append((f"{r.name}: config", yaml.safe_dump(r.config, sort_keys=False)))
        versions = ", ".join(f"{k} {v}" for k, v in r.versions.items()) or "not recorded"
        configs.code.append((f"{r.name}: software", versions))
    sections.append(configs)
    return sections


def _markdown(sections: list[_Section], base: Path) -> str:
    out = ["# cycleseg report", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.text:
            out += [s.text, ""]
        if s.table:
            header, body = s.table
            out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(row) + " |" for row in body]
            out.append("")
        for fig in s.figures:
            out += [f"![{fig.stem}]({fig.relative_to(base).as_posix()})", ""]
        for summary, text in s.code:
            out += [f"**{summary}**", "", "```", text.rstrip(), "```", ""]
    return "\n".join(out)


def _html(sections: list[_Section], base: Path) -> str:
    body = []
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            body.append(f"<p>{html.escape(s.text)}</p>")
        if s.table:
            header, rows = s.table
            body.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                        + "</tr></thead><tbody>")
            body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
            body.append("</tbody></table>")
        for fig in s.figures:
            data = base64.b64encode(fig.read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(fig.stem)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(fig.relative_to(base).as_posix())}</figcaption></figure>")
        for summary, text in s.code:
            body.append(f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>")
    return _HTML_PAGE.format(body="\n".join(body))


# A check a browser runs: every embedded figure decoded (the browser test reads data-images).
_HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cycleseg report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child, td:nth-child(2) {{ text-align: left; }}
img {{ max-width: 100%; }} figure {{ margin: 1em 0; }} figcaption {{ color: #777; font-size: 0.8em; }}
pre {{ background: #f7f7f7; padding: 0.6em; overflow-x: auto; }}
</style></head>
<body>
<h1>cycleseg report</h1>
{body}
<script>
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  const ok = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = ok + "/" + images.length;
}});
</script>
</body></html>
"""


# ---------------------------------------------------------------------------------------------------- helpers

def _read_run(run_dir: Path, group: str | None = None, seed: int | None = None, split: str = "val") -> RunRecord:
    """A run directory's record; its results (eval_<split>.json, for val else train's metrics.json) only when
    the run is finished: an evaluation older than the run's last step is not read."""
    config = read_yaml(run_dir / CONFIG)
    results = None
    status = run_status(run_dir)
    if status in ("done", "trained"):
        candidates = [artifact(run_dir, "eval", split)] if split != "val" or status == "done" else []
        for path in candidates + ([run_dir / METRICS] if split == "val" else []):
            if path.is_file():
                results = read_json(path)
                break
    log = []
    if (run_dir / LOG).is_file():
        for line in (run_dir / LOG).read_text().splitlines():
            try:
                log.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash: the rest of the log is still worth plotting
    versions = read_json(run_dir / VERSIONS) if (run_dir / VERSIONS).is_file() else {}
    group = group or run_dir.name
    name = group if seed is None else f"{group}/{seed_dir(seed)}"
    return RunRecord(name, run_dir, config, results, log, versions, group, seed)


def _with_seeds(row: dict[str, Any], metric: str, digits: int) -> str:
    """"20.1 ± 2.3 (19.0, 21.2)": the mean, the interval's half-width and each seed's value."""
    interval: Interval = row[f"{metric}_ci"]
    if interval.mean is None:
        return "–"
    text = format_interval(interval, digits, missing="–")
    values = [v for _, v in sorted(row[f"{metric}_seeds"].items(), key=lambda kv: kv[0] or 0)]
    return text + " (" + ", ".join(_fmt(v, digits) for v in values) + ")" if len(values) > 1 else text


def _bounds(diff: Any, digits: int) -> str:
    """"[-4.2, -1.8] *" (the interval of a paired difference, * when it excludes 0)."""
    iv = diff.interval
    if iv.half_width is None:
        return "–"
    return f"[{iv.low:+.{digits}f}, {iv.high:+.{digits}f}]" + (" *" if diff.excludes_zero else "")


def _missing(sweep_dir: Path, records: list[RunRecord]) -> list[str]:
    """The runs of the sweep that are not finished, as "quant2/seed1 (running, step 120)"."""
    have = {r.name for r in records if r.results is not None}
    try:
        states = sweep_status(sweep_dir)
    except RunError:
        return [f"{r.name} (not finished)" for r in records if r.results is None]
    out = []
    for s in states:
        if s.name in have:
            continue
        detail = s.state + (f", step {s.step}" if s.step and s.state != "pending" else "")
        out.append(f"{s.name} ({detail})")
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
