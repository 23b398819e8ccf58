"""`cycleseg diagnose`: measure and show the watermarks that a cycle model hides in its class scores.

For a trained cycle run, on one split (val by default), in RUN_DIR:

- diagnose_<split>.json   every number below (the report reads it);
- diagnose_<split>.md     a self-contained Markdown summary, image links relative to RUN_DIR;
- diagnose_<split>/*.png  sensitivity.png, energy.png, spectrum.png, examples.png.

This module measures; `diagnose_figures` draws the figures and `diagnose_report` writes the Markdown and the
printed summary, both from the results document alone. The run and its split are opened by `session.open_session`
(the data's classes checked against the run's).

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

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from cycleseg import runs
from cycleseg.commands.diagnose_figures import training_figure, write_figures
from cycleseg.commands.diagnose_report import format_markdown, format_summary
from cycleseg.commands.session import open_session
from cycleseg.config import Config
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
    split_mean_field,
    unexplained_energy,
    watermark_inputs,
)
from cycleseg.core.metrics import confusion_matrix, psnr_db, snr_db
from cycleseg.core.models import Models
from cycleseg.core.noise import clip_share
from cycleseg.data import CLASS_NAMES, ClassTable, open_split, resolve_classes
from cycleseg.errors import RunError
from cycleseg.fileio import make_folder
from cycleseg.runs import LAST, seeded_inference
from cycleseg.runs.formats import finite_or_none, iou_results, noise_label, save_figure

__all__ = ["DEFAULT_SNRS", "TRAINING_SNRS", "data_reward", "diagnose_models", "diagnose_run", "diagnose_training",
           "format_summary", "training_checkpoints"]

DEFAULT_SNRS = (40.0, 30.0, 20.0, 10.0, 5.0, 0.0, -5.0, -10.0)  # dB, the sensitivity sweep
TRAINING_SNRS = (30.0, 20.0, 10.0)  # dB, the sensitivity points followed along training (diagnose_training)
HIGH_FREQUENCY_CUTOFF = 0.25  # cycles per pixel: half the Nyquist frequency
SPECTRA = ("image", "logits_residual", "f_input_residual")
FIGURES = ("sensitivity", "energy", "spectrum", "examples")  # diagnose_<split>/<name>.png
PLAIN_RUN = ("diagnose needs a cycle model (model.kind=cyclegan); this run is a plain ERFNet, which has no F to "
             "reconstruct the image from its class scores")


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
        split_means, split_logit_means, split_colours = _split_class_means(models, batches, device)
    with seeded_inference(models, seed, device):  # the run's own Gaussian noise injection, as in `evaluate`
        _accumulate(models, batches, device, snrs, scale_to, generator, acc, split_means, split_colours,
                    split_logit_means)
    if acc.count == 0:
        raise RunError("no images to diagnose; the split is empty")
    results = acc.results(snrs, scale_to, seed)
    return results, {k: torch.cat(v)[:num_examples] for k, v in acc.examples.items()}


def _split_class_means(models: Models, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """(S, S): row k the mean noise(G(x)) vector (F's input) of the pixels decided as class k over all `batches`
    (0 if none); (S, S): the same for G's logits before the noise; (S, 3): row k the mean colour of the pixels
    labelled k (ground truth), for the labels-only oracle."""
    s = models.num_classes
    sums = torch.zeros(s, s, dtype=torch.float64, device=device)
    logit_sums = torch.zeros(s, s, dtype=torch.float64, device=device)
    counts = torch.zeros(s, dtype=torch.float64, device=device)
    colours = torch.zeros(s, 3, dtype=torch.float64, device=device)
    colour_counts = torch.zeros(s, dtype=torch.float64, device=device)
    for image, labels in batches:
        image = image.to(device)
        logits = models.G(image)
        decided = decision(logits)
        batch_sums, batch_counts = class_sums(models.to_f_input(models.noise(logits)), decided)
        sums += batch_sums
        counts += batch_counts
        logit_sums += class_sums(logits, decided)[0]
        batch_sums, batch_counts = class_sums(image, labels.to(device), s)
        colours += batch_sums
        colour_counts += batch_counts
    per_class = counts.clamp(min=1).unsqueeze(1)
    return ((sums / per_class).float(), (logit_sums / per_class).float(),
            (colours / colour_counts.clamp(min=1).unsqueeze(1)).float())


def _accumulate(models: Models, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device,
                snrs: Sequence[float], scale_to: str, generator: torch.Generator, acc: _Accumulator,
                split_means: Tensor | None = None, split_colours: Tensor | None = None,
                split_logit_means: Tensor | None = None) -> None:
    """The per-batch work of `diagnose_models`: every forward pass, summed into `acc`."""
    s = models.num_classes
    for image, labels in batches:
        image, labels = image.to(device), labels.to(device)
        logits = models.G(image)
        noisy = models.noise(logits)
        f_input = models.to_f_input(noisy)  # what F reads: noisy, or its softmax (model.f_input)
        decided = decision(logits)
        inputs = watermark_inputs(logits, f_input, labels, scale_to, split_means)
        if split_logit_means is not None:
            inputs["split_class_mean_own_noise"] = _own_noise_reference(models, split_logit_means, decided)
        outputs = {name: models.F(value) for name, value in inputs.items()}
        for name, out in outputs.items():
            acc.psnr[name].append(psnr_db(image, out).cpu())
        acc.snr.append(snr_db(logits, noisy).cpu())
        acc.logit_power.append(logits.double().pow(2).flatten(1).mean(dim=1).cpu())
        clipped = clip_share(logits, models.noise)
        if clipped is not None:
            acc.clip_share.append(clipped.cpu())
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


def _own_noise_reference(models: Models, split_logit_means: Tensor, decided: Tensor) -> Tensor:
    """F's input from only the decision, under the run's own noise: each pixel the split-mean logit vector of its
    decided class, through the noise injection and model.f_input, (B, S, H, W). Its Gaussian draws come from a
    fork of the RNG, so that every other input of the diagnosis sees the draws it saw without this reference."""
    field = split_mean_field(split_logit_means, decided, split_logit_means.dtype)
    with torch.random.fork_rng(devices=[decided.device] if decided.device.type == "cuda" else []):
        return models.to_f_input(models.noise(field))


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
        self.clip_share: list[Tensor] = []  # per image, the share of the quantizer's inputs beyond +-1
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
            "clip_share": _mean(self.clip_share),  # None for a noise that is not a quantizer
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
    run_dir = Path(run_dir)
    session = open_session(run_dir, data_root, split, device, checkpoint, max_images=max_images,
                           require_cycle=PLAIN_RUN)
    cfg, classes = session.config, session.classes
    results, examples = diagnose_models(session.models, session.batches("diagnose", progress), session.device,
                                        seed=cfg.train.seed, snrs=snrs, scale_to=scale_to,
                                        num_examples=num_examples, classes=classes)
    figure_dir = runs.artifact(run_dir, "diagnose_figures", split)
    markdown = runs.artifact(run_dir, "diagnose_md", split)
    results = {"run": cfg.name, "split": split, "checkpoint": checkpoint, "noise": cfg.noise.kind,
               "noise_label": noise_label(cfg), **results,
               "figures": {name: f"{figure_dir.name}/{name}.png" for name in FIGURES},
               "summary": markdown.name}
    make_folder(figure_dir, run_dir)  # diagnose_<split>/ linked elsewhere: refused, nothing written
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
    session = None
    points = []
    for step, name in tqdm(checkpoints, desc="diagnose checkpoints", unit="ckpt", disable=not progress,
                           dynamic_ncols=True):
        session = (open_session(run_dir, data_root, split, device, name, max_images=max_images,
                                require_cycle=PLAIN_RUN) if session is None
                   else session.reload(name, require_cycle=PLAIN_RUN))  # the split opened once
        cfg = session.config
        r, _ = diagnose_models(session.models, session.loader(), session.device, seed=cfg.train.seed, snrs=snrs,
                               num_examples=1, classes=session.classes)
        gap, psnr = r["watermark_gap"]["gap_db"], r["watermark_gap"]["psnr_db"]
        points.append({"step": step, "checkpoint": name, "psnr_db": psnr.get("noisy"),
                       "watermark_gap_db": gap.get("decision"), "class_mean_gap_db": gap.get("class_mean"),
                       "split_mean_gap_db": gap.get("split_class_mean"),
                       "split_mean_own_gap_db": gap.get("split_class_mean_own_noise"),
                       "clip_share": r["clip_share"],
                       "sensitivity_psnr_db": {f"{p['snr_target_db']:g}": p["psnr_db"] for p in r["sensitivity"]["points"]},
                       "unexplained_share": r["energy"]["logits"]["unexplained_share"], "miou": r["miou"],
                       "snr_db": r["snr_db"], "logit_rms": r["logit_rms"],
                       "split_mean_psnr_db": psnr.get("split_class_mean"),
                       "ground_truth_psnr_db": psnr.get("ground_truth"), "num_images": r["num_images"]})
    results = {"run": cfg.name, "split": split, "noise_label": noise_label(cfg), "snrs_db": list(snrs),
               "oracle": r["oracle"], "points": points, "figure": runs.artifact(run_dir, "diagnose_training_png", split).name}
    save_figure(training_figure(results), runs.artifact(run_dir, "diagnose_training_png", split))
    runs.write_json(runs.artifact(run_dir, "diagnose_training", split), results)
    return results


# ---------------------------------------------------------------------------------------------- helpers


def _class_names(num_classes: int) -> list[str]:
    return list(CLASS_NAMES) if num_classes == len(CLASS_NAMES) else [f"class {i}" for i in range(num_classes)]


def _mean(values: list[Tensor]) -> float | None:
    return finite_or_none(torch.cat(values).double().mean().item()) if values else None


def _ratio(part: Tensor, whole: Tensor) -> float | None:
    return finite_or_none(float(part) / float(whole)) if float(whole) > 0 else None


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b
