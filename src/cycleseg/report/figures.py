"""The figures of a report: each `plot_<name>` draws from RunRecords (or rows of report.tables) and returns a
matplotlib Figure; it writes nothing (build_report saves it through formats.save_figure)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cycleseg.config import config_from_dict
from cycleseg.core.stats import Interval, format_interval, mean_interval
from cycleseg.data import CLASS_NAMES, NUM_EVAL_CLASSES, open_split
from cycleseg.report.records import RunRecord, labelled_fraction
from cycleseg.report.semi import model_label
from cycleseg.report.tables import WATERMARK_METRICS, _fmt, _watermark_value
from cycleseg.runs import CONFIG, load_run, run_classes, seeded_inference
from cycleseg.runs.formats import figure, to_rgb

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_class_iou", "plot_curves", "plot_examples", "plot_labelled_fraction", "plot_seed_curves",
           "plot_watermark_training"]

EVAL_CLASSES = CLASS_NAMES[:NUM_EVAL_CLASSES]  # mIoU is over the 19 Cityscapes classes


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


def plot_labelled_fraction(groups: list[RunRecord]) -> Figure | None:
    """mIoU against the labelled fraction (configs/semi/): one line per model (plain ERFNet, no noise, 2-bit, ...),
    each point a config's mean over its seeds with the 95 % interval; None unless the finished configs span at
    least two fractions."""
    series: dict[str, list[tuple[float, Interval]]] = {}
    for g in groups:
        fraction, interval = labelled_fraction(g.config), g.interval("miou")
        if fraction is None or interval.mean is None:
            continue
        label = model_label(g.config)
        series.setdefault(label, []).append((fraction, interval))
    fractions = sorted({f for points in series.values() for f, _ in points})
    if len(fractions) < 2:
        return None
    fig = figure(6.5, 4 + 0.17 * len(series))
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
    # below the axes: inside, a study's many models hide the lines they name
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    return fig


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
