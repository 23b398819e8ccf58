"""`cycleseg diagnose`: measure and show the watermarks that a cycle model hides in its class scores.

For a trained cycle run, on one split (val by default), in RUN_DIR:

- diagnose_<split>.json   every number below (the report reads it);
- diagnose_<split>.md     a self-contained Markdown summary, image links relative to RUN_DIR;
- diagnose_<split>/*.png  sensitivity.png, energy.png, spectrum.png, examples.png.

What is measured (the tensor work is in `cycleseg.core.diagnostics`):

1. Watermark gap: PSNR of F(noise(G(x))), the reconstruction training optimises (the run's own noise
   injection on, as in `evaluate`), beside the PSNR of F fed only the decision argmax G(x) (its one-hot,
   scaled per pixel to the L2 norm of F's usual input noise(G(x)); or each pixel's class-mean vector) and F
   fed the ground-truth one-hot (scaled the same way). The decision and ground-truth inputs are given to F
   as they are, without the noise injection. gap = PSNR(noisy) - PSNR(decision): F's reconstruction
   quality that comes from information not in the segmentation decision.
2. Sensitivity: extra Gaussian noise at each target SNR is added to G's logits, sigma per image by the
   equal-SNR rule of `noise.gaussian_sigma` (measured SNR = target); the run's own noise injection is then
   applied as in training, and F reconstructs. PSNR of that reconstruction and mIoU of argmax(logits + noise).
3. Energy: share of the logits' energy outside the projection on the decision one-hot (the residual), per
   decided class and overall, for G's logits and for F's input; its spatial power spectrum beside the image's.
4. Pictures: the first few images, their residual maps amplified to full range, and F's outputs.
5. The reward for hiding (`diagnostics.colour_oracles`): PSNR of the image painted from its ground-truth label
   map with each class's mean colour over the split (labels only) against painted with each class's mean colour
   in this image (labels and the regions' colours). Their difference bounds what hiding can win; F's PSNR from
   the split's class means is set beside the labels-only oracle.

All randomness is seeded with the run's train.seed, so results repeat.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from cycleseg import runs
from cycleseg.config import Config
from cycleseg.data import CITYSCAPES, CLASS_NAMES, ClassTable, open_source, open_split, resolve_classes
from cycleseg.core.diagnostics import (
    INPUTS,
    SCALE_REFERENCES,
    add_noise_at_snr,
    class_mean_field,
    class_sums,
    colour_oracles,
    decision,
    energy_by_class,
    high_frequency_share,
    principal_components,
    project_on_one_hot,
    radial_power_spectrum,
    unexplained_energy,
    watermark_inputs,
)
from cycleseg.errors import RunError
from cycleseg.runs.formats import figure, finite_or_none, fmt, iou_results, noise_label, save_figure, to_rgb
from cycleseg.core.metrics import confusion_matrix, psnr_db, snr_db
from cycleseg.core.models import Models, resolve_device
from cycleseg.runs import LAST, load_run, seeded_inference

__all__ = ["DEFAULT_SNRS", "TRAINING_SNRS", "data_reward", "diagnose_models", "diagnose_run", "diagnose_training",
           "format_summary", "training_checkpoints"]

DEFAULT_SNRS = (40.0, 30.0, 20.0, 10.0, 5.0, 0.0, -5.0, -10.0)  # dB, the sensitivity sweep
TRAINING_SNRS = (30.0, 20.0, 10.0)  # dB, the sensitivity points followed along training (diagnose_training)
HIGH_FREQUENCY_CUTOFF = 0.25  # cycles per pixel: half the Nyquist frequency
SPECTRA = ("image", "logits_residual", "f_input_residual")
FIGURES = ("sensitivity", "energy", "spectrum", "examples")  # diagnose_<split>/<name>.png
INPUT_TITLES = {"noisy": "F(noise(G(x)))", "decision": "F(decision)", "class_mean": "F(class means)",
                "split_class_mean": "F(split class means)",
                "ground_truth": "F(ground truth)"}


def diagnose_models(models: Models, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device, seed: int = 0,
                    snrs: Sequence[float] = DEFAULT_SNRS, scale_to: str = "f_input",
                    num_examples: int = 4, classes: ClassTable | None = None
                    ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Run the four diagnostics over `batches` of (image (B, 3, H, W), labels (B, H, W)).

    Args:
        models: a cycle model (needs G, F, noise, num_classes).
        seed: seeds the run's own Gaussian noise injection (global RNG, forked so the caller's is untouched)
            and, separately, the sensitivity sweep's noise (a torch.Generator drawn batch by batch, SNR by SNR).
        snrs: target SNRs in dB of the sensitivity sweep.
        scale_to: what the one-hot inputs are scaled against, see `diagnostics.watermark_inputs`.
        num_examples: how many of the first images to keep for the pictures.
        classes: the data's class table (names, evaluated classes); default Cityscapes for S = 20.
    Returns:
        (results, examples): results as written to diagnose_<split>.json (less run information);
        examples: CPU tensors of the first `num_examples` images, for `write_figures`.
    """
    if not models.is_cycle:
        raise RunError("diagnose needs a cycle model (model.kind=cyclegan): a plain ERFNet has no F to reconstruct "
                       "the image from its class scores")
    acc = _Accumulator(models.num_classes, len(snrs), device, num_examples, classes)
    generator = torch.Generator(device=device).manual_seed(seed)
    if iter(batches) is batches:  # a one-shot iterator: the split is read twice
        batches = list(batches)
    with seeded_inference(models, seed, device):  # the same noise draws as the pass below
        split_means, split_colours = _split_class_means(models, batches, device)
    with seeded_inference(models, seed, device):  # the run's own Gaussian noise injection, as in `evaluate`
        _accumulate(models, batches, device, snrs, scale_to, generator, acc, split_means, split_colours)
    if acc.count == 0:
        raise RunError("no images to diagnose; the split is empty")
    results = acc.results(snrs, scale_to, seed)
    return results, {k: torch.cat(v)[:num_examples] for k, v in acc.examples.items()}


def _split_class_means(models: Models, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device
                       ) -> tuple[Tensor, Tensor]:
    """(S, S): row k the mean noise(G(x)) vector of the pixels decided as class k over all `batches` (0 if none);
    (S, 3): row k the mean colour of the pixels labelled k (ground truth), for the labels-only oracle."""
    s = models.num_classes
    sums = torch.zeros(s, s, dtype=torch.float64, device=device)
    counts = torch.zeros(s, dtype=torch.float64, device=device)
    colours = torch.zeros(s, 3, dtype=torch.float64, device=device)
    colour_counts = torch.zeros(s, dtype=torch.float64, device=device)
    for image, labels in batches:
        image = image.to(device)
        logits = models.G(image)
        batch_sums, batch_counts = class_sums(models.to_f_input(models.noise(logits)), decision(logits))
        sums += batch_sums
        counts += batch_counts
        batch_sums, batch_counts = class_sums(image, labels.to(device), s)
        colours += batch_sums
        colour_counts += batch_counts
    return (sums / counts.clamp(min=1).unsqueeze(1)).float(), (colours / colour_counts.clamp(min=1).unsqueeze(1)).float()


def _accumulate(models: Models, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device,
                snrs: Sequence[float], scale_to: str, generator: torch.Generator, acc: _Accumulator,
                split_means: Tensor | None = None, split_colours: Tensor | None = None) -> None:
    """The per-batch work of `diagnose_models`: every forward pass, summed into `acc`."""
    s = models.num_classes
    for image, labels in batches:
        image, labels = image.to(device), labels.to(device)
        logits = models.G(image)
        noisy = models.noise(logits)
        f_input = models.to_f_input(noisy)  # what F reads: noisy, or its softmax (model.f_input)
        decided = decision(logits)
        inputs = watermark_inputs(logits, f_input, labels, scale_to, split_means)
        outputs = {name: models.F(value) for name, value in inputs.items()}
        for name, out in outputs.items():
            acc.psnr[name].append(psnr_db(image, out).cpu())
        acc.snr.append(snr_db(logits, noisy).cpu())
        acc.logit_power.append(logits.double().pow(2).flatten(1).mean(dim=1).cpu())
        if split_colours is not None:
            for name, value in colour_oracles(image, labels, split_colours).items():
                acc.oracle[name].append(value.cpu())
        acc.conf += confusion_matrix(decided, labels, s)
        for k, target in enumerate(snrs):
            perturbed, measured = add_noise_at_snr(logits, target, generator)
            acc.sweep_psnr[k].append(psnr_db(image, models.F(models.to_f_input(models.noise(perturbed)))).cpu())
            acc.sweep_snr[k].append(measured.cpu())
            acc.sweep_conf[k] += confusion_matrix(decision(perturbed), labels, s)
        residuals = {}
        for space, values in (("logits", logits), ("f_input", f_input)):
            res, tot = energy_by_class(values, decided)
            acc.residual[space] += res
            acc.total[space] += tot
            acc.unexplained[space] += unexplained_energy(values, decided)[0]
            residuals[space] = project_on_one_hot(values, decided)[1]
        for name, maps in (("image", image), ("logits_residual", residuals["logits"]),
                           ("f_input_residual", residuals["f_input"])):
            freq, power = radial_power_spectrum(maps)
            acc.frequency = freq.cpu()
            acc.spectrum[name].append((power / power.sum(dim=1, keepdim=True).clamp(min=1e-300)).cpu())
            acc.high_share[name].append(high_frequency_share(maps, HIGH_FREQUENCY_CUTOFF).cpu())
        acc.pixels += torch.bincount(decided.reshape(-1), minlength=s)
        acc.count += image.shape[0]
        if sum(len(v) for v in acc.examples.get("image", [])) < acc.num_examples:
            keep = {
                "image": image, "labels": labels, "decision": decided,
                "residual": principal_components(residuals["logits"]),
                "unexplained": principal_components(logits - class_mean_field(logits, decided)),
            } | {f"out_{name}": out for name, out in outputs.items()}
            for key, value in keep.items():
                acc.examples.setdefault(key, []).append(value.cpu())


class _Accumulator:
    """Sums and per-image lists over a split; `results` turns them into the JSON document."""

    def __init__(self, num_classes: int, num_snrs: int, device: torch.device, num_examples: int,
                 classes: ClassTable | None = None) -> None:
        self.classes = classes
        def zeros() -> Tensor:
            return torch.zeros(num_classes, dtype=torch.float64, device=device)

        def conf() -> Tensor:
            return torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

        self.num_classes = num_classes
        self.psnr: dict[str, list[Tensor]] = {name: [] for name in INPUTS}
        self.snr: list[Tensor] = []
        self.logit_power: list[Tensor] = []  # per image, mean over S H W of logits^2
        self.oracle: dict[str, list[Tensor]] = {"labels_only": [], "image_colours": []}
        self.conf = conf()
        self.sweep_psnr: list[list[Tensor]] = [[] for _ in range(num_snrs)]
        self.sweep_snr: list[list[Tensor]] = [[] for _ in range(num_snrs)]
        self.sweep_conf = [conf() for _ in range(num_snrs)]
        self.residual = {"logits": zeros(), "f_input": zeros()}
        self.total = {"logits": zeros(), "f_input": zeros()}
        self.unexplained = {"logits": zeros(), "f_input": zeros()}
        self.frequency = torch.zeros(0)
        self.spectrum: dict[str, list[Tensor]] = {name: [] for name in SPECTRA}
        self.high_share: dict[str, list[Tensor]] = {name: [] for name in SPECTRA}
        self.pixels = torch.zeros(num_classes, dtype=torch.int64, device=device)  # decided pixels per class
        self.num_examples = num_examples
        self.examples: dict[str, list[Tensor]] = {}  # the first num_examples images, for the pictures
        self.count = 0

    def results(self, snrs: Sequence[float], scale_to: str, seed: int) -> dict[str, Any]:
        psnr = {name: _mean(values) for name, values in self.psnr.items() if values}
        names = self.classes.names if self.classes is not None else _class_names(self.num_classes)
        oracle = {f"{name}_psnr_db": _mean(values) for name, values in self.oracle.items()}
        return {
            "oracle": oracle | {"reward_db": _difference(oracle["image_colours_psnr_db"],
                                                         oracle["labels_only_psnr_db"])},
            "num_images": self.count,
            "seed": seed,
            "scale_to": scale_to,
            "miou": iou_results(self.conf, self.classes)["miou"],
            "snr_db": _mean(self.snr),
            # the scale a quantizer on [-1, 1] sees: the root of the mean square of G's logits over the split
            "logit_rms": finite_or_none(math.sqrt(torch.cat(self.logit_power).mean().item())) if self.logit_power
            else None,
            "watermark_gap": {
                "psnr_db": psnr,
                "gap_db": {name: _difference(psnr["noisy"], value) for name, value in psnr.items() if name != "noisy"},
            },
            "sensitivity": {
                "sigma_rule": "equal_snr",
                "points": [{"snr_target_db": float(target), "snr_db": _mean(self.sweep_snr[k]),
                            "psnr_db": _mean(self.sweep_psnr[k]), "miou": iou_results(self.sweep_conf[k], self.classes)["miou"]}
                           for k, target in enumerate(snrs)],
            },
            "energy": {
                space: {
                    "residual_share": _ratio(self.residual[space].sum(), self.total[space].sum()),
                    "unexplained_share": _ratio(self.unexplained[space].sum(), self.total[space].sum()),
                    "per_class": {names[c]: _ratio(self.residual[space][c], self.total[space][c])
                                  for c in range(self.num_classes)},
                    "per_class_unexplained": {names[c]: _ratio(self.unexplained[space][c], self.total[space][c])
                                              for c in range(self.num_classes)},
                    "pixels_per_class": {names[c]: int(n) for c, n in enumerate(self.pixels.tolist())},
                }
                for space in ("logits", "f_input")
            },
            "spectrum": {
                "frequency": [round(f, 6) for f in self.frequency.tolist()],
                "power": {name: torch.cat(v).mean(dim=0).tolist() for name, v in self.spectrum.items()},
                "high_frequency_cutoff": HIGH_FREQUENCY_CUTOFF,
                "high_frequency_share": {name: _mean(v) for name, v in self.high_share.items()},
            },
        }


@runs.writes_into_run()
def diagnose_run(run_dir: str | Path, data_root: str | Path, split: str = "val", device: str = "auto",
                 checkpoint: str = LAST, max_images: int | None = None, snrs: Sequence[float] = DEFAULT_SNRS,
                 scale_to: str = "f_input", num_examples: int = 4, progress: bool = False) -> dict[str, Any]:
    """Diagnose a cycle run on `split` of `data_root`; writes diagnose_<split>.json, .md and figures in RUN_DIR."""
    if split == "test":
        raise RunError("the Cityscapes test split has no labels; diagnose on train or val")
    if scale_to not in SCALE_REFERENCES:
        raise RunError(f"--scale-to must be one of {', '.join(SCALE_REFERENCES)}, got {scale_to!r}")
    if max_images is not None and max_images < 1:
        raise RunError(f"--max-images must be at least 1, got {max_images}")
    if not snrs or not all(math.isfinite(v) for v in snrs):
        raise RunError("--snrs must be a comma-separated list of finite numbers in dB, e.g. 40,20,0,-10")
    dev = resolve_device(device)
    run_dir = Path(run_dir)
    models, cfg = load_run(run_dir, dev, checkpoint)
    if not models.is_cycle:
        raise RunError(f"{run_dir}: diagnose needs a cycle model (model.kind=cyclegan); this run is a plain ERFNet, "
                       "which has no F to reconstruct the image from its class scores")
    dataset = open_split(cfg, split, root=data_root)
    if max_images is not None and max_images < len(dataset):
        dataset = Subset(dataset, range(max_images))
    loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, shuffle=False, num_workers=cfg.data.num_workers)
    batches = tqdm(loader, desc=f"diagnose {split}", unit="batch", disable=not progress, dynamic_ncols=True,
                   leave=False)
    classes = runs.require_same_classes(run_dir, open_source(data_root, cfg.data.format).classes, data_root)
    results, examples = diagnose_models(models, batches, dev, seed=cfg.train.seed, snrs=snrs, scale_to=scale_to,
                                        num_examples=num_examples, classes=classes)
    figure_dir = runs.artifact(run_dir, "diagnose_figures", split)
    markdown = runs.artifact(run_dir, "diagnose_md", split)
    results = {"run": cfg.name, "split": split, "checkpoint": checkpoint, "noise": cfg.noise.kind,
               "noise_label": noise_label(cfg), **results,
               "figures": {name: f"{figure_dir.name}/{name}.png" for name in FIGURES},
               "summary": markdown.name}
    try:
        figure_dir.mkdir(exist_ok=True)
    except OSError as e:
        raise RunError(f"{figure_dir}: could not create the figure folder ({e.strerror}); free disk space or fix "
                       "permissions") from None
    write_figures(figure_dir, results, examples, classes)  # every file written atomically; RunError naming it if not
    runs.write_json(runs.artifact(run_dir, "diagnose", split), results)
    runs.atomic_write(markdown, format_markdown(results))
    return results


def data_reward(data_root: str | Path, split: str = "val", size: tuple[int, int] = (256, 512), fmt: str = "auto",
                max_images: int | None = None, batch_size: int = 16) -> dict[str, Any]:
    """The reward for hiding in a dataset, before any training (`cycleseg reward`): the oracles of
    `diagnostics.colour_oracles` on `split` at `size` (H, W), and two references, the PSNR of a constant grey
    image (0 in [-1, 1]) and of the split's mean colour everywhere. All in dB, means over the images."""
    cfg = Config()
    cfg.data.root, cfg.data.format, (cfg.data.height, cfg.data.width) = str(data_root), fmt, size
    classes = resolve_classes(cfg, data_root)
    dataset = open_split(cfg, split, root=data_root)
    if max_images is not None and max_images < len(dataset):
        dataset = Subset(dataset, range(max_images))
    if len(dataset) == 0:
        raise RunError(f"{data_root}: the {split} split has no images")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    s = cfg.model.num_classes
    sums, counts = torch.zeros(s, 3, dtype=torch.float64), torch.zeros(s, dtype=torch.float64)
    for image, labels in loader:
        batch_sums, batch_counts = class_sums(image, labels, s)
        sums, counts = sums + batch_sums, counts + batch_counts
    colours = (sums / counts.clamp(min=1).unsqueeze(1)).float()
    mean_colour = (sums.sum(dim=0) / counts.sum()).float().view(1, 3, 1, 1)
    values: dict[str, list[Tensor]] = {"labels_only": [], "image_colours": [], "grey": [], "mean_colour": []}
    for image, labels in loader:
        for name, value in colour_oracles(image, labels, colours).items():
            values[name].append(value)
        values["grey"].append(psnr_db(image, torch.zeros_like(image)))
        values["mean_colour"].append(psnr_db(image, mean_colour.expand_as(image)))
    psnr = {f"{name}_psnr_db": _mean(v) for name, v in values.items()}
    return {"data": str(data_root), "split": split, "size": f"{size[1]}x{size[0]}", "num_images": len(dataset),
            "classes": classes.num_classes, **psnr,
            "reward_db": _difference(psnr["image_colours_psnr_db"], psnr["labels_only_psnr_db"])}


def training_checkpoints(run_dir: Path) -> list[tuple[int, str]]:
    """(step, file name) of every checkpoint a run kept along training: its epoch_NNNN.pt copies
    (train.keep_checkpoints) and last.pt, in step order, one per step."""
    found: dict[int, str] = {}
    for path in sorted(run_dir.glob("epoch_*.pt")) + ([run_dir / LAST] if (run_dir / LAST).is_file() else []):
        step = runs.checkpoint_step(path)
        if step is not None:
            found.setdefault(step, path.name)
    return sorted(found.items())


@runs.writes_into_run()
def diagnose_training(run_dir: str | Path, data_root: str | Path, split: str = "val", device: str = "auto",
                      max_images: int | None = None, snrs: Sequence[float] = TRAINING_SNRS,
                      progress: bool = False) -> dict[str, Any]:
    """The watermark along training: the diagnostics of every checkpoint the run kept, as curves over steps.

    Per checkpoint (training_checkpoints): the watermark gap (PSNR of F(noise(G(x))) minus F(decision)), the gap
    to class means (minus F(class means)), the reconstruction PSNR with extra noise at each of `snrs` on G's
    logits, the unexplained share of the logits' energy (what class means do not explain) and the mIoU.
    Writes RUN_DIR/diagnose_<split>_training.json and .png; returns the JSON's content.
    """
    run_dir = Path(run_dir)
    if split == "test":
        raise RunError("the test split has no labels; diagnose on train or val")
    checkpoints = training_checkpoints(run_dir)
    if not checkpoints:
        raise RunError(f"{run_dir}: no checkpoints to follow (no last.pt or epoch_NNNN.pt); train the run first")
    if len(checkpoints) == 1:
        print(f"cycleseg: {run_dir} kept only {checkpoints[0][1]}; train with train.keep_checkpoints=N to follow the "
              "watermark over N epochs", flush=True)
    dev = resolve_device(device)
    points = []
    for step, name in tqdm(checkpoints, desc="diagnose checkpoints", unit="ckpt", disable=not progress,
                           dynamic_ncols=True):
        models, cfg = load_run(run_dir, dev, name)
        if not models.is_cycle:
            raise RunError(f"{run_dir}: diagnose needs a cycle model (model.kind=cyclegan); this run is a plain ERFNet")
        classes = runs.require_same_classes(run_dir, open_source(data_root, cfg.data.format).classes, data_root)
        dataset = open_split(cfg, split, root=data_root)
        if max_images is not None and max_images < len(dataset):
            dataset = Subset(dataset, range(max_images))
        loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, shuffle=False, num_workers=cfg.data.num_workers)
        r, _ = diagnose_models(models, loader, dev, seed=cfg.train.seed, snrs=snrs, num_examples=1, classes=classes)
        gap, psnr = r["watermark_gap"]["gap_db"], r["watermark_gap"]["psnr_db"]
        points.append({"step": step, "checkpoint": name, "psnr_db": psnr.get("noisy"),
                       "watermark_gap_db": gap.get("decision"), "class_mean_gap_db": gap.get("class_mean"),
                       "split_mean_gap_db": gap.get("split_class_mean"),
                       "sensitivity_psnr_db": {f"{p['snr_target_db']:g}": p["psnr_db"] for p in r["sensitivity"]["points"]},
                       "unexplained_share": r["energy"]["logits"]["unexplained_share"], "miou": r["miou"],
                       "snr_db": r["snr_db"], "logit_rms": r["logit_rms"],
                       "split_mean_psnr_db": psnr.get("split_class_mean"),
                       "ground_truth_psnr_db": psnr.get("ground_truth"), "num_images": r["num_images"]})
    results = {"run": cfg.name, "split": split, "noise_label": noise_label(cfg), "snrs_db": list(snrs),
               "oracle": r["oracle"], "points": points, "figure": runs.artifact(run_dir, "diagnose_training_png", split).name}
    save_figure(_training_figure(results), runs.artifact(run_dir, "diagnose_training_png", split))
    runs.write_json(runs.artifact(run_dir, "diagnose_training", split), results)
    return results


def _training_figure(results: dict[str, Any]):
    """Three panels over training steps: the two gaps, the PSNR under extra noise, the unexplained share."""
    points = results["points"]
    steps = [p["step"] for p in points]
    fig = figure(12, 3.2, layout="constrained")
    ax_gap, ax_sens, ax_share = fig.subplots(1, 3)
    ax_gap.plot(steps, [_nan(p["watermark_gap_db"]) for p in points], "o-", label="gap to decision")
    ax_gap.plot(steps, [_nan(p["class_mean_gap_db"]) for p in points], "s-", label="gap to class means")
    ax_gap.plot(steps, [_nan(p.get("split_mean_gap_db")) for p in points], "^-", label="gap to split class means")
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


# ---------------------------------------------------------------------------------------------- figures


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
              "split_class_mean": ("C4", ":"), "ground_truth": ("C7", "-.")}
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
            ax.bar(x + offset, values, width=0.4, label=f"{label}: {_pct(energy[space][overall])} overall")
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
                    label=f"{label} ({_pct(share)} above {spectrum['high_frequency_cutoff']})")
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


# ---------------------------------------------------------------------------------------------- text


def format_markdown(r: dict[str, Any]) -> str:
    """The self-contained Markdown summary diagnose_<split>.md (image links relative to the run directory)."""
    gap, energy, spectrum = r["watermark_gap"], r["energy"], r["spectrum"]
    psnr = gap["psnr_db"]
    scale = {"f_input": "the per-pixel L2 norm of F's usual input noise(G(x))",
             "logits": "the per-pixel L2 norm of G's logits (before the noise injection)",
             "unit": "1 (plain one-hots, as in the backward cycle)"}[r["scale_to"]]
    lines = [
        f"# Steganography diagnostics: {r['run']} ({r['noise_label']}), {r['split']} split",
        "",
        (f"{r['num_images']} images, checkpoint `{r['checkpoint']}`, seed {r['seed']}; mIoU {fmt(r['miou'], 1)} %, "
         f"SNR of the run's own noise injection {fmt(r['snr_db'], 2)} dB."),
        "",
        "## 1. Watermark gap",
        "",
        ("PSNR of F's reconstruction of the image from five inputs. Only the first is what training sees; the "
         "others carry the segmentation decision (or the ground truth) and nothing else. One-hots are scaled to "
         f"{scale}; none of the last four goes through the noise injection."),
        "",
        "| F's input | PSNR dB | gap dB |",
        "|---|---|---|",
    ]
    descriptions = {"noisy": "noise(G(x)), the training path",
                    "decision": "one-hot of the decision argmax G(x), scaled",
                    "class_mean": "each pixel's class-mean vector of noise(G(x)) (per image)",
                    "split_class_mean": "each pixel's class-mean vector of noise(G(x)) over the whole split",
                    "ground_truth": "one-hot of the ground truth, scaled"}
    for name in INPUTS:
        if name in psnr:
            lines.append(f"| {descriptions[name]} | {fmt(psnr[name], 2)} | "
                         f"{fmt(gap['gap_db'].get(name), 2) if name != 'noisy' else '-'} |")
    lines += [
        "",
        ("gap = PSNR(noisy) - PSNR(that input): how much better F rebuilds the image from G's full class scores "
         "than from the decision alone. A large gap means F reads information that is not in the segmentation "
         "decision (watermarks, or honest confidence information); a gap near 0 means it does not. The class "
         "means per image still carry per-image detail (the colour of this image's sky, one object); the split's "
         "class means carry none, so a gap to them above the gap to per-image class means is detail of that kind."),
        "",
        "## The reward for hiding",
        "",
        ("PSNR of the image painted from its ground-truth label map: every pixel with its class's mean colour over "
         "the split (labels only), or with its class's mean colour in this image (labels and the regions' colours). "
         "The difference is what hiding detail in the class scores can win at most against an F that reads only "
         "the labels; under about 3 dB there is little worth hiding."),
        "",
        "| oracle | PSNR dB |",
        "|---|---|",
        f"| labels only | {fmt(r['oracle']['labels_only_psnr_db'], 2)} |",
        f"| labels and each image's class colours | {fmt(r['oracle']['image_colours_psnr_db'], 2)} |",
        f"| reward (difference) | {fmt(r['oracle']['reward_db'], 2)} |",
        "",
        "## 2. Sensitivity to extra Gaussian noise",
        "",
        ("Extra Gaussian noise at each target SNR is added to G's logits (sigma per image by the equal-SNR rule, so "
         "the measured SNR of eq. 11 equals the target); the run's own noise injection then runs as in training. "
         "A hidden low-amplitude channel dies at high SNR, long before the decision (mIoU) suffers."),
        "",
        "| target SNR dB | measured SNR dB | PSNR dB | mIoU % |",
        "|---|---|---|---|",
    ]
    for p in r["sensitivity"]["points"]:
        lines.append(f"| {p['snr_target_db']:g} | {fmt(p['snr_db'], 2)} | {fmt(p['psnr_db'], 2)} | {fmt(p['miou'], 1)} |")
    lines += [
        f"| no extra noise | - | {fmt(psnr.get('noisy'), 2)} | {fmt(r['miou'], 1)} |",
        "",
        f"![sensitivity]({r['figures']['sensitivity']})",
        "",
        "## 3. Hidden-signal energy",
        "",
        ("Residual share: the share of the energy sum ||v||^2 outside the projection of each pixel's vector v on "
         "the one-hot of its decided class, i.e. the energy of all other class scores. Unexplained share: the "
         "share outside each image's class means (what the decision map cannot predict at all)."),
        "",
        "| vectors | residual share | unexplained share |",
        "|---|---|---|",
        f"| G's logits | {_pct(energy['logits']['residual_share'])} | {_pct(energy['logits']['unexplained_share'])} |",
        (f"| F's input noise(G(x)) | {_pct(energy['f_input']['residual_share'])} | "
         f"{_pct(energy['f_input']['unexplained_share'])} |"),
        "",
        f"![energy per class]({r['figures']['energy']})",
        "",
        (f"Spectra: share of the power above {spectrum['high_frequency_cutoff']} cycles/pixel (finer than 4 pixels "
         f"per period): image {_pct(spectrum['high_frequency_share']['image'])}, residual of G's logits "
         f"{_pct(spectrum['high_frequency_share']['logits_residual'])}, residual of F's input "
         f"{_pct(spectrum['high_frequency_share']['f_input_residual'])}."),
        "",
        f"![spectra]({r['figures']['spectrum']})",
        "",
        "## 4. Pictures",
        "",
        ("Per row: the image, ground truth, decision, the residual of G's logits (its 3 principal components as "
         "RGB, each stretched so that its 1st-99th percentiles fill the range), G's logits minus their class "
         "means (likewise), then F's reconstructions from the four inputs above with their PSNR. Image edges and "
         "textures visible inside the regions of one decided class in the residual are detail hidden in the "
         "segmentation."),
        "",
        f"![examples]({r['figures']['examples']})",
        "",
    ]
    return "\n".join(lines)


def format_summary(r: dict[str, Any], run_dir: Path) -> str:
    """The few lines `cycleseg diagnose` prints."""
    psnr = r["watermark_gap"]["psnr_db"]
    gap = r["watermark_gap"]["gap_db"]
    return "\n".join([
        f"{r['run']} ({r['noise_label']}), {r['num_images']} {r['split']} images",
        (f"PSNR dB: noisy {fmt(psnr.get('noisy'), 2)}, decision {fmt(psnr.get('decision'), 2)}, class means "
         f"{fmt(psnr.get('class_mean'), 2)}, split class means {fmt(psnr.get('split_class_mean'), 2)}, ground truth "
         f"{fmt(psnr.get('ground_truth'), 2)}"),
        f"watermark gap {fmt(gap.get('decision'), 2)} dB (noisy - decision)",
        (f"reward for hiding {fmt(r['oracle']['reward_db'], 2)} dB (oracles: labels only "
         f"{fmt(r['oracle']['labels_only_psnr_db'], 2)}, with each image's class colours "
         f"{fmt(r['oracle']['image_colours_psnr_db'], 2)})"),
        (f"residual energy share: G's logits {_pct(r['energy']['logits']['residual_share'])}, F's input "
         f"{_pct(r['energy']['f_input']['residual_share'])}"),
        "sensitivity PSNR dB: " + ", ".join(f"{p['snr_target_db']:g} dB -> {fmt(p['psnr_db'], 2)}"
                                            for p in r["sensitivity"]["points"]),
        (f"wrote {run_dir / ('diagnose_' + r['split'] + '.json')}, {run_dir / r['summary']} and "
         f"{run_dir / ('diagnose_' + r['split'])}/*.png"),
    ])


# ---------------------------------------------------------------------------------------------- helpers


def _class_names(num_classes: int) -> list[str]:
    return list(CLASS_NAMES) if num_classes == len(CLASS_NAMES) else [f"class {i}" for i in range(num_classes)]


def _mean(values: list[Tensor]) -> float | None:
    return finite_or_none(torch.cat(values).double().mean().item()) if values else None


def _ratio(part: Tensor, whole: Tensor) -> float | None:
    return finite_or_none(float(part) / float(whole)) if float(whole) > 0 else None


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"
