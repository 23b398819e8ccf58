"""The figures of `cycleseg diagnose`: sensitivity.png, energy.png, spectrum.png and examples.png in
RUN_DIR/diagnose_<split>/, and the watermark along training (RUN_DIR/diagnose_<split>_training.png).

Each draws only from the results document of `diagnose.diagnose_run` (or `diagnose_training`) and, for the
pictures, the example tensors `diagnose.diagnose_models` keeps; nothing is measured here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from cycleseg.commands.diagnose_report import percent
from cycleseg.core.diagnostics import INPUTS
from cycleseg.core.metrics import psnr_db
from cycleseg.data import CITYSCAPES, ClassTable
from cycleseg.runs.formats import figure, save_figure, to_rgb

__all__ = ["INPUT_TITLES", "training_figure", "write_figures"]

INPUT_TITLES = {"noisy": "F(noise(G(x)))", "decision": "F(decision)", "class_mean": "F(class means)",
                "split_class_mean": "F(split class means)",
                "split_class_mean_own_noise": "F(noise(split class means))",
                "ground_truth": "F(ground truth)"}


def write_figures(figure_dir: Path, results: dict[str, Any], examples: dict[str, Tensor],
                  classes: ClassTable = CITYSCAPES) -> dict[str, Path]:
    """sensitivity.png, energy.png, spectrum.png and examples.png in `figure_dir`; returns name -> path."""
    figures = {"sensitivity": _sensitivity_figure(results), "energy": _energy_figure(results),
               "spectrum": _spectrum_figure(results), "examples": _examples_figure(examples, classes)}
    return {name: save_figure(fig, figure_dir / f"{name}.png") for name, fig in figures.items()}


def _sensitivity_figure(results: dict[str, Any]):
    points = results["sensitivity"]["points"]
    snr = [p["snr_db"] if p["snr_db"] is not None else p["snr_target_db"] for p in points]
    fig = figure(9, 3.4, layout="constrained")
    ax_psnr, ax_miou = fig.subplots(1, 2)
    ax_psnr.plot(snr, [_nan(p["psnr_db"]) for p in points], "o-", color="C0", label="F(noise(G(x) + extra))")
    styles = {"noisy": ("C0", "--"), "decision": ("C3", ":"), "class_mean": ("C2", ":"),
              "split_class_mean": ("C4", ":"), "split_class_mean_own_noise": ("C5", ":"), "ground_truth": ("C7", "-.")}
    for name, value in results["watermark_gap"]["psnr_db"].items():
        if value is not None:
            color, style = styles[name]
            ax_psnr.axhline(value, color=color, linestyle=style, linewidth=1,
                            label=f"{INPUT_TITLES[name]}, no extra noise")
    ax_psnr.set(xlabel="SNR of the extra noise on G's logits [dB]", ylabel="PSNR [dB]",
                title="reconstruction")
    ax_psnr.legend(fontsize=7)
    ax_miou.plot(snr, [_nan(p["miou"]) for p in points], "o-", color="C1", label="argmax(G(x) + extra)")
    if results["miou"] is not None:
        ax_miou.axhline(results["miou"], color="C1", linestyle="--", linewidth=1, label="no extra noise")
    ax_miou.set(xlabel="SNR of the extra noise on G's logits [dB]", ylabel="mIoU [%]", title="segmentation")
    ax_miou.legend(fontsize=7)
    for ax in (ax_psnr, ax_miou):
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    fig.suptitle(f"{results.get('run', '')}: sensitivity to Gaussian noise in the latent segmentation space",
                 fontsize=9)
    return fig


def _energy_figure(results: dict[str, Any]):
    energy = results["energy"]
    names = [n for n, count in energy["logits"]["pixels_per_class"].items() if count > 0]
    fig = figure(10, 3.6, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    x = np.arange(len(names))
    panels = (("per_class", "residual_share", "outside the decision one-hot (residual)"),
              ("per_class_unexplained", "unexplained_share", "outside the class means (unexplained)"))
    for ax, (key, overall, title) in zip(axes, panels):
        for offset, space, label in ((-0.2, "logits", "G's logits"), (0.2, "f_input", "F's input noise(G(x))")):
            values = [100 * _nan(energy[space][key][n]) for n in names]
            ax.bar(x + offset, values, width=0.4, label=f"{label}: {percent(energy[space][overall])} overall")
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
        ax.set(ylim=(0, 119), yticks=range(0, 101, 20), title=f"energy {title}")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="upper center", ncol=2)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("% of the energy of the pixels\ndecided as the class")
    return fig


def _spectrum_figure(results: dict[str, Any]):
    spectrum = results["spectrum"]
    freq = spectrum["frequency"]
    labels = {"image": "image x", "logits_residual": "residual of G's logits",
              "f_input_residual": "residual of F's input"}
    fig = figure(5.5, 3.6, layout="constrained")
    ax = fig.subplots()
    if spectrum["power"]["f_input_residual"] == spectrum["power"]["logits_residual"]:
        labels = {"image": "image x", "logits_residual": "residual of G's logits = F's input"}
    for name, label in labels.items():
        share = spectrum["high_frequency_share"][name]
        ax.semilogy(freq, [max(v, 1e-12) for v in spectrum["power"][name]],
                    label=f"{label} ({percent(share)} above {spectrum['high_frequency_cutoff']})")
    ax.axvline(spectrum["high_frequency_cutoff"], color="k", linewidth=0.5)
    ax.set(xlabel="spatial frequency [cycles/pixel]", ylabel="share of the power per bin",
           title="radially averaged power spectra (each normalised)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def _examples_figure(examples: dict[str, Tensor], classes: ClassTable):
    columns = [("image", "image x"), ("labels", "ground truth"), ("decision", "decision argmax G(x)"),
               ("residual", "residual of G(x),\n3 PCs amplified"),
               ("unexplained", "G(x) - class means,\n3 PCs amplified")]
    columns += [(f"out_{name}", INPUT_TITLES[name]) for name in INPUTS if f"out_{name}" in examples]
    rows = examples["image"].shape[0]
    height, width = examples["image"].shape[2:]
    cell = 1.55
    fig = figure(cell * len(columns), cell * height / width * rows + 0.5, layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, len(columns), squeeze=False))
    for r in range(rows):
        image = examples["image"][r]
        for c, (key, title) in enumerate(columns):
            ax = axes[r, c]
            value = examples[key][r]
            if key in ("labels", "decision"):
                shown = classes.colorize(value.numpy().clip(0, classes.num_classes - 1))
            elif key in ("residual", "unexplained"):
                shown = _amplify(value)
            else:
                shown = to_rgb(value)
            ax.imshow(shown, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if key.startswith("out_"):
                ax.set_xlabel(f"{psnr_db(image[None], value[None]).item():.2f} dB", fontsize=7)
            if r == 0:
                ax.set_title(title, fontsize=7)
    return fig


def _amplify(maps: Tensor) -> np.ndarray:
    """(3, H, W) -> (H, W, 3): each map stretched so its 1st..99th percentiles span the full range [0, 1]."""
    array = maps.permute(1, 2, 0).numpy().astype(np.float64)
    low, high = np.percentile(array, 1, axis=(0, 1)), np.percentile(array, 99, axis=(0, 1))
    return ((array - low) / np.maximum(high - low, 1e-12)).clip(0.0, 1.0)



def training_figure(results: dict[str, Any]):
    """Three panels over training steps: the two gaps, the PSNR under extra noise, the unexplained share."""
    points = results["points"]
    steps = [p["step"] for p in points]
    fig = figure(12, 3.2, layout="constrained")
    ax_gap, ax_sens, ax_share = fig.subplots(1, 3)
    ax_gap.plot(steps, [_nan(p["watermark_gap_db"]) for p in points], "o-", label="gap to decision")
    ax_gap.plot(steps, [_nan(p["class_mean_gap_db"]) for p in points], "s-", label="gap to class means")
    ax_gap.plot(steps, [_nan(p.get("split_mean_gap_db")) for p in points], "^-", label="gap to split class means")
    ax_gap.plot(steps, [_nan(p.get("split_mean_own_gap_db")) for p in points], "v:",
                label="gap to split class means, own noise")
    ax_gap.axhline(0, color="k", linewidth=0.6)
    ax_gap.set(xlabel="iteration", ylabel="dB", title="watermark gap")
    ax_sens.plot(steps, [_nan(p["psnr_db"]) for p in points], "k--", label="no extra noise")
    for snr in results["snrs_db"]:
        ax_sens.plot(steps, [_nan(p["sensitivity_psnr_db"].get(f"{snr:g}")) for p in points], "o-",
                     label=f"extra noise {snr:g} dB")
    ax_sens.set(xlabel="iteration", ylabel="PSNR of x_rec [dB]", title="sensitivity")
    ax_share.plot(steps, [100 * _nan(p["unexplained_share"]) for p in points], "o-", color="C3")
    ax_share.set(xlabel="iteration", ylabel="% of the logits' energy", title="unexplained by class means")
    for ax in (ax_gap, ax_sens):
        ax.legend(fontsize=7)
    for ax in (ax_gap, ax_sens, ax_share):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{results['run']} ({results['noise_label']}): the watermark along training, {results['split']}")
    return fig



def _nan(value: float | None) -> float:
    return math.nan if value is None else value
