"""The report of a sweep: the paper's Table 2 and Figures 3 and 4, with our numbers beside the paper's.

`build_report(SWEEP_DIR)` reads every run directory of a sweep (config.yaml, eval_val.json, log.jsonl,
versions.json, and diagnose_val.* when `cycleseg diagnose` has been run) and writes

    SWEEP_DIR/report.md          Markdown, figures linked from report_files/
    SWEEP_DIR/report.html        one self-contained file, figures embedded
    SWEEP_DIR/report_files/*.png the figures

The paper's values come from the data file paper_table2.csv next to this module.
"""

from __future__ import annotations

import base64
import csv
import functools
import html
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from cycleseg.config import config_from_dict
from cycleseg.data import CLASS_NAMES, NUM_EVAL_CLASSES, colorize, open_split
from cycleseg.errors import RunError
from cycleseg.formats import figure, fmt, noise_label, save_figure, to_rgb
from cycleseg.models import resolve_device
from cycleseg.runs import (
    CONFIG,
    LOG,
    METRICS,
    VERSIONS,
    artifact,
    atomic_write,
    load_run,
    read_json,
    read_yaml,
    seeded_inference,
)
from cycleseg.sweep import SWEEP_FILE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["RunRecord", "build_report", "choose_runs", "collect_runs", "load_paper_table", "table2_key",
           "table2_rows"]

FILES = "report_files"
EVAL_CLASSES = CLASS_NAMES[:NUM_EVAL_CLASSES]  # mIoU is over the 19 Cityscapes classes
_fmt = functools.partial(fmt, missing="–")  # the report's tables write a missing number as a dash


@dataclass
class RunRecord:
    """What the report needs of one run directory."""

    name: str
    run_dir: Path
    config: dict[str, Any]
    results: dict[str, Any] | None  # eval_val.json (else metrics.json); None if never evaluated
    log: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

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
    text = resources.files("cycleseg").joinpath("paper_table2.csv").read_text()
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
    """Every run directory of a sweep (in sweep.json's order when there is one)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise RunError(f"{sweep_dir}: sweep folder not found; run `cycleseg sweep ... --out {sweep_dir}` first")
    order: list[str] = []
    if (sweep_dir / SWEEP_FILE).is_file():
        order = read_json(sweep_dir / SWEEP_FILE).get("runs", [])
    dirs = sorted((d for d in sweep_dir.iterdir() if (d / CONFIG).is_file()),
                  key=lambda d: (order.index(d.name) if d.name in order else len(order), d.name))
    if not dirs:
        raise RunError(f"{sweep_dir}: no run directories (folders with config.yaml) in it")
    return [_read_run(d) for d in dirs]


def table2_rows(runs: list[RunRecord], paper: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run in the paper's order: ours and the paper's SNR, mIoU, PSNR, and the differences."""
    by_key = {p["key"]: (i, p) for i, p in enumerate(paper)}
    rows = []
    for run in runs:
        index, ref = by_key.get(run.key, (len(paper), None))
        row = {"run": run.name, "label": ref["label"] if ref else noise_label(run.config), "order": index,
               "evaluated": run.results is not None}
        for metric in ("snr_db", "miou", "psnr_db"):
            ours, theirs = run.value(metric), ref[metric] if ref else None
            row[metric] = ours
            row[f"paper_{metric}"] = theirs
            row[f"diff_{metric}"] = None if ours is None or theirs is None else ours - theirs
        rows.append(row)
    return sorted(rows, key=lambda r: r["order"])


def choose_runs(runs: list[RunRecord], names: list[str] | None = None) -> list[RunRecord]:
    """The runs of Figures 3 and 4: `names`, or plain, no noise, 2-bit quantization and the best Gaussian."""
    evaluated = [r for r in runs if r.results is not None]
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
    files = sweep_dir / FILES
    files.mkdir(exist_ok=True)

    figures: dict[str, Path] = {}
    if chosen:
        figures["class_iou"] = save_figure(plot_class_iou(chosen), files / "class_iou.png")
    root = Path(data_root) if data_root else Path(chosen[0].config["data"]["root"]) if chosen else None
    examples_note = ""
    if chosen and root is not None and (root / "leftImg8bit" / "val").is_dir():
        figures["examples"] = save_figure(plot_examples(chosen, root, num_examples, resolve_device(device)),
                                          files / "examples.png")
    else:
        examples_note = f"Figure 3 left out: no validation images at {root}; pass --data DIR."
    for r in tqdm(records, desc="report: curves", unit="run", disable=not progress, dynamic_ncols=True, leave=False):
        if r.log:
            figures[f"curves_{r.name}"] = save_figure(plot_curves(r), files / f"curves_{_slug(r.name)}.png")

    sections = _sections(records, rows, chosen, figures, examples_note, sweep_dir)
    md_path, html_path = sweep_dir / "report.md", sweep_dir / "report.html"
    atomic_write(md_path, _markdown(sections, sweep_dir))
    atomic_write(html_path, _html(sections, sweep_dir))
    return md_path, html_path


# ---------------------------------------------------------------------------------------------------- figures

def plot_class_iou(runs: list[RunRecord]) -> Figure:
    """Figure 4: IoU of each of the 19 classes, one bar per run."""
    fig = figure(13, 4.2)
    ax = fig.subplots()
    width = 0.8 / len(runs)
    x = np.arange(len(EVAL_CLASSES))
    for i, run in enumerate(runs):
        iou = run.results.get("iou", {})
        values = [iou.get(c) if iou.get(c) is not None else 0.0 for c in EVAL_CLASSES]
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, label=f"{run.name} ({_fmt(run.value('miou'), 1)} %)")
    ax.set_xticks(x, EVAL_CLASSES, rotation=45, ha="right")
    ax.set_ylabel("IoU %")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="run (mIoU)", fontsize=8, ncols=min(4, len(runs)))
    ax.set_title("Class-wise IoU on the validation split (Figure 4)")
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
            columns[1][1].extend(colorize(b[1].numpy()) for b in batch)
        models, cfg = load_run(run.run_dir, device)
        with seeded_inference(models, cfg.train.seed, device):  # Gaussian noise as in evaluation
            if models.is_cycle:
                logits, _, reconstruction = models.forward_cycle(images.to(device))
            else:
                logits, reconstruction = models.G(images.to(device)), None
        columns.append((f"{run.name}\nprediction", [colorize(p) for p in logits.argmax(1).cpu().numpy()]))
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
              figures: dict[str, Path], examples_note: str, sweep_dir: Path) -> list[_Section]:
    header = ["run", "row of Table 2", "SNR dB", "paper", "mIoU %", "paper", "Δ", "PSNR dB", "paper", "Δ"]
    body = [[r["run"], r["label"] + ("" if r["evaluated"] else " (not evaluated)"),
             _fmt(r["snr_db"], 2), _fmt(r["paper_snr_db"], 2),
             _fmt(r["miou"], 1), _fmt(r["paper_miou"], 1), _fmt(r["diff_miou"], 1, sign=True),
             _fmt(r["psnr_db"], 2), _fmt(r["paper_psnr_db"], 2), _fmt(r["diff_psnr_db"], 2, sign=True)]
            for r in rows]
    sizes = sorted({f"{r.config['data']['width']}x{r.config['data']['height']}, {r.config['optim']['epochs']} epochs"
                    for r in records})
    sections = [
        _Section("Table 2: SNR, mIoU and PSNR beside the paper",
                 f"{len(records)} runs in {sweep_dir} ({'; '.join(sizes)}); the paper: Cityscapes val at 512x256, "
                 "200 epochs. Δ = ours − paper. SNR is the measured mean per-image SNR of the noise (eq. 11); "
                 "PSNR that of the forward-cycle reconstruction (eq. 14).", table=(header, body)),
        _Section("Figure 4: class-wise IoU", "Runs: " + ", ".join(r.name for r in chosen) + ".",
                 figures=[figures["class_iou"]] if "class_iou" in figures else []),
        _Section("Figure 3: validation examples",
                 examples_note or "Each row one validation image; columns: the image, the ground truth, then each "
                 "chosen run's prediction and, for cycle models, its reconstruction F(noise(G(x))).",
                 figures=[figures["examples"]] if "examples" in figures else []),
        _Section("Training curves", "Losses per iteration (log.jsonl) and validation mIoU per epoch of every run.",
                 figures=[figures[k] for k in figures if k.startswith("curves_")]),
    ]
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

def _read_run(run_dir: Path) -> RunRecord:
    config = read_yaml(run_dir / CONFIG)
    results = None
    for path in (artifact(run_dir, "eval", "val"), run_dir / METRICS):
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
    return RunRecord(run_dir.name, run_dir, config, results, log, versions)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
