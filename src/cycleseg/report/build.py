"""`build_report`: read the runs of a sweep (runs.summary, through report.records), compute the tables
(report.tables), draw the figures (report.figures) and write report.md, report.html and report_files/
(report.render)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tqdm import tqdm

from cycleseg.core.models import resolve_device
from cycleseg.data import open_source
from cycleseg.errors import RunError
from cycleseg.experiments.sweep import sweep_status
from cycleseg.fileio import make_folder
from cycleseg.report.figures import (
    plot_class_iou,
    plot_curves,
    plot_examples,
    plot_labelled_fraction,
    plot_seed_curves,
    plot_watermark_training,
)
from cycleseg.report.records import RunRecord, collect_runs, group_runs, load_paper_table
from cycleseg.report.render import _html, _markdown, _sections
from cycleseg.report.tables import (
    choose_runs,
    mechanism_contrasts,
    reward_rows,
    table2_rows,
    watermark_rows,
    watermark_training,
)
from cycleseg.runs import atomic_write
from cycleseg.runs.formats import save_figure

__all__ = ["FILES", "build_report"]

FILES = "report_files"


def build_report(sweep_dir: str | Path, data_root: str | Path | None = None, runs: list[str] | None = None,
                 num_examples: int = 3, device: str = "auto", progress: bool = False) -> tuple[Path, Path]:
    """Write report.md, report.html and report_files/ into `sweep_dir`; returns the two report paths.

    Figure 3 runs the chosen models on `num_examples` validation images of `data_root` (default: the data
    folder in the runs' config); it is left out, with a note, when that folder is not there.
    """
    sweep_dir = Path(sweep_dir)
    unreadable: list[str] = []
    records = collect_runs(sweep_dir, unreadable)
    paper = load_paper_table()
    rows = table2_rows(records, paper)
    chosen = choose_runs(records, runs)
    missing = _missing(sweep_dir, records, unreadable)
    if missing:  # named on the terminal too, not only in the report
        print(f"cycleseg report: {len(missing)} run(s) left out of every number and figure: {'; '.join(missing)}",
              file=sys.stderr)
    files = sweep_dir / FILES
    make_folder(files, sweep_dir)  # report_files/ linked elsewhere: refused, nothing written

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


def _missing(sweep_dir: Path, records: list[RunRecord], unreadable: list[str] = ()) -> list[str]:
    """The runs of the sweep left out, as "quant2/seed1 (interrupted, step 120)": those not finished (pending,
    running, interrupted, failed with its error) and those collect_runs could not read (`unreadable`)."""
    have = {r.name for r in records if r.results is not None}
    named = {entry.split(" (")[0] for entry in unreadable}
    try:
        states = sweep_status(sweep_dir)
    except RunError:
        return list(unreadable) + [f"{r.name} (not finished)" for r in records if r.results is None]
    out = list(unreadable)
    for s in states:
        if s.name in have or s.name in named:
            continue
        detail = s.state + (f", step {s.step}" if s.step and s.state != "pending" else "")
        detail += f": {s.error}" if s.state == "failed" and s.error else ""
        out.append(f"{s.name} ({detail})")
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
