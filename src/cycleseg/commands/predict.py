"""Predictions at the original resolution, and the bridge to the official Cityscapes evaluation.

`cycleseg predict RUN_DIR --data DIR --split val|test --out OUT` writes, per image of the split,

    OUT/labelIds/<city>/<name>_labelIds.png         labelIds (mode L) at the image's own size (2048x1024):
                                                     what evalPixelLevelSemanticLabeling and the benchmark
                                                     server take; background (trainId 19) is written as 0
    OUT/color/<city>/<name>_color.png               the same with the official palette (background black)
    OUT/reconstruction/<city>/<name>_rec.png        x_rec = F(noise(G(x))) at the training size (--reconstruction)
    OUT/predict.json                                 run, checkpoint, split, data folder, number of images

A run on a folder dataset (data/source.py) writes OUT/labels/[<subfolder>/]<stem>.png with its classes.yaml's
label values (void: its first value) and OUT/color/[<subfolder>/]<stem>.png with its colours instead.

G runs at the training size; its logits are upsampled bilinearly to the image's size before the argmax, as
the benchmark evaluates at 2048x1024. `cycleseg evaluate --official` runs `cityscapesscripts`' own
evaluation on such a folder (official_evaluate), in process, and scores the same files with our metrics
(score_predictions), so the two can be compared number by number.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F_
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from cycleseg.commands.session import open_session
from cycleseg.config import Config
from cycleseg.core.metrics import confusion_matrix
from cycleseg.core.models import Models
from cycleseg.core.precision import Precision
from cycleseg.data import (
    CITYSCAPES,
    CLASS_NAMES,
    LABEL_ID_TO_TRAIN_ID,
    LABEL_SUFFIX,
    NUM_EVAL_CLASSES,
    ClassTable,
    Sample,
    list_samples,
    read_label,
)
from cycleseg.data.cityscapes import open_image, open_image_header
from cycleseg.errors import DataError, RunError
from cycleseg.fileio import make_folder
from cycleseg.runs import (
    LAST,
    artifact,
    atomic_write,
    inside_run,
    run_classes,
    seeded_inference,
    write_json,
    writes_into_run,
)
from cycleseg.runs.formats import finite_or_none, iou_results, to_rgb

__all__ = [
    "Prediction",
    "full_res_confusion",
    "iter_predictions",
    "official_evaluate",
    "official_report",
    "predict_run",
    "prediction_outputs",
    "score_predictions",
    "write_predictions",
]


@dataclass
class Prediction:
    """G's segmentation of one image, at the image's original size."""

    sample: Sample
    train_ids: np.ndarray  # (H0, W0) uint8 trainIds 0..19, H0 x W0 the size of the image file
    reconstruction: Tensor | None  # (3, H, W) float32 in [-1, 1] at the training size, or None


def iter_predictions(models: Models, dataset: Dataset, device: torch.device, batch_size: int = 4,
                     num_workers: int = 0, seed: int = 0, reconstruction: bool = False,
                     progress: bool = False, amp: Precision | None = None) -> Iterator[Prediction]:
    """G over `dataset` (a split as `open_split` gives it, its samples in order) in batches; per image, its logits
    upsampled bilinearly to the image's own size, then the argmax.

    reconstruction: also run the forward cycle (cycle models), with the noise drawn from `seed` as in evaluation.
    The models run under `runs.seeded_inference`, which this generator holds until it is exhausted or closed.
    """
    samples = _samples(dataset)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    index = 0
    with seeded_inference(models, seed, device, amp):  # reproducible Gaussian noise in x_rec, RNG untouched
        bar = tqdm(loader, desc="predict", unit="batch", disable=not progress, dynamic_ncols=True)
        for image, _ in bar:
            image = image.to(device, non_blocking=True)
            rec = None
            if reconstruction and models.is_cycle:
                logits, _noisy, rec = models.forward_cycle(image)
            else:
                logits = models.G(image)  # (B, S, H, W)
            for b in range(image.shape[0]):  # one image at a time: (S, 1024, 2048) float32 is 168 MB
                sample = samples[index]
                index += 1
                with open_image_header(sample.image_path) as source:
                    width, height = source.size
                full = F_.interpolate(logits[b:b + 1].float(), size=(height, width), mode="bilinear",
                                      align_corners=False)
                yield Prediction(sample, full.argmax(dim=1)[0].to(torch.uint8).cpu().numpy(),
                                 rec[b].float().cpu() if rec is not None else None)


def _samples(dataset: Dataset) -> list[Sample]:
    """The samples of a split in order: its .samples, or those a Subset of it (data.max_*_images) keeps."""
    if isinstance(dataset, Subset):
        samples = _samples(dataset.dataset)
        return [samples[i] for i in dataset.indices]
    return dataset.samples


def full_res_confusion(predictions: Iterator[Prediction], num_classes: int, classes: ClassTable | None = None
                       ) -> Tensor:
    """(S, S) confusion matrix of predictions against their labels at the labels' own (original) size."""
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for p in predictions:
        if p.sample.label_path is None:
            raise RunError(f"the {p.sample.image_path.parent.parent.name} split has no labels to evaluate against")
        labels = read_label(p.sample.label_path, p.train_ids.shape, classes)  # already that size: no resizing
        conf += confusion_matrix(torch.from_numpy(p.train_ids), torch.from_numpy(labels), num_classes)
    return conf


def prediction_outputs(classes: ClassTable) -> tuple[str, str]:
    """The folders write_predictions fills: ("labelIds", "color") for Cityscapes, ("labels", "color") else."""
    return ("labelIds" if classes is CITYSCAPES else "labels"), "color"


def write_predictions(predictions: Iterator[Prediction], out: Path, classes: ClassTable = CITYSCAPES,
                      within: Path | None = None) -> int:
    """Write label-value, colour and (when present) reconstruction PNGs under `out`; returns the image count.

    Cityscapes: labelIds/<city>/<name>_labelIds.png and color/<city>/<name>_color.png; another class table:
    labels/<folder>/<name>.png and color/<folder>/<name>.png, with its label values and colours. No folder below
    `within` (default: `out`; a run folder for its predictions_<split>/) may be a link: RunError naming it."""
    out = make_folder(out, within or out)
    cityscapes = classes is CITYSCAPES
    labels_dir = prediction_outputs(classes)[0]
    count = 0
    for p in predictions:
        city, name = p.sample.city, p.sample.name
        _save(Image.fromarray(classes.class_values[p.train_ids], "L"),
              out / labels_dir / city / (f"{name}_labelIds.png" if cityscapes else f"{name}.png"), out)
        _save(Image.fromarray(classes.colorize(p.train_ids), "RGB"),
              out / "color" / city / (f"{name}_color.png" if cityscapes else f"{name}.png"), out)
        if p.reconstruction is not None:
            _save(Image.fromarray(to_rgb(p.reconstruction), "RGB"), out / "reconstruction" / city / f"{name}_rec.png",
                  out)
        count += 1
    return count


def _save(image: Image.Image, path: Path, out: Path) -> None:
    """One prediction PNG, written atomically (predictions_<split>/ is a run artifact: a crash must not leave a
    half image that official scoring would read), its folders below `out` made (never through a link)."""
    make_folder(path.parent, out)
    atomic_write(path, lambda f: image.save(f, format="PNG"))


@writes_into_run(lambda a: inside_run(a["out"], a["run_dir"]))
def predict_run(run_dir: str | Path, data_root: str | Path, split: str, out: str | Path, checkpoint: str = LAST,
                device: str = "auto", reconstruction: bool = False, batch_size: int | None = None,
                progress: bool = False, precision: str = "auto") -> dict[str, Any]:
    """`cycleseg predict`: the run's predictions of every image of `split`, written under `out` (nothing written
    when the data's classes are not the run's: the label values and colours would be another table's).

    `precision` as in `evaluate_run`: bf16 where native (the default, auto), else fp32."""
    out = Path(out)
    session = open_session(run_dir, data_root, split, device, checkpoint, precision, channels_last=True,
                           require_cycle=("--reconstruction needs a cycle model; this run is a plain ERFNet (no F)"
                                          if reconstruction else None))
    cfg, amp, classes = session.config, session.amp, session.classes
    predictions = iter_predictions(session.models, session.dataset, session.device,
                                   batch_size or cfg.optim.batch_size, cfg.data.num_workers, cfg.train.seed,
                                   reconstruction, progress, amp)
    count = write_predictions(predictions, out, classes, within=_base(out, run_dir))
    summary = {"run": str(run_dir), "checkpoint": checkpoint, "split": split, "data": str(data_root),
               "num_images": count, "size": f"{cfg.data.width}x{cfg.data.height}", "precision": amp.name,
               "outputs": list(prediction_outputs(classes)) + (["reconstruction"] if reconstruction else [])}
    write_json(out / "predict.json", summary)
    return summary


def _base(out: Path, run_dir: str | Path) -> Path:
    """The folder below which `predict` checks for links: the run folder when OUT is inside it (as the user wrote
    the paths: a predictions folder linked from the run is refused), else OUT itself."""
    return Path(run_dir) if out.absolute().is_relative_to(Path(run_dir).absolute()) else out


def _prediction_files(predictions: Path) -> dict[str, Path]:
    """<city>_<seq>_<frame> -> the labelIds PNG for it under `predictions` (its labelIds/ folder if it has one)."""
    folder = predictions / "labelIds" if (predictions / "labelIds").is_dir() else predictions
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.png")):
        key = "_".join(path.name.split("_")[:3])
        if key in found:
            raise RunError(f"{path}: a second prediction for {key} (the first: {found[key]}); keep one per image")
        found[key] = path
    return found


def score_predictions(predictions: str | Path, data_root: str | Path, split: str) -> dict[str, Any]:
    """Our IoU and mIoU of a folder of labelId predictions against the split's labels, at full resolution.

    Same file matching as the official script (<city>_<seq>_<frame>*.png anywhere under the folder), same
    conventions (ground-truth void ignored; predicting a void id on a class counts against that class).
    """
    files = _prediction_files(Path(predictions))
    conf = torch.zeros(len(CLASS_NAMES), len(CLASS_NAMES), dtype=torch.int64)
    samples = list_samples(data_root, split)
    if samples[0].label_path is None:
        raise RunError(f"the {split} split has no labels; evaluate on train or val")
    for sample in samples:
        path = files.get(sample.name)
        if path is None:
            raise RunError(f"{predictions}: no prediction for {sample.name}; run `cycleseg predict RUN_DIR --data "
                           f"{data_root} --split {split} --out {predictions}`")
        with open_image(path) as image:
            pred_ids = np.asarray(image)
        labels = read_label(sample.label_path, pred_ids.shape[:2])
        if pred_ids.ndim != 2 or pred_ids.shape != labels.shape:
            raise RunError(f"{path}: prediction is {pred_ids.shape}, its label {labels.shape}; predictions must be "
                           "single-channel labelIds at the label's size")
        pred = LABEL_ID_TO_TRAIN_ID[pred_ids]
        if (pred < 0).any():
            raise DataError(f"{path}: values {sorted(set(np.unique(pred_ids[pred < 0]).tolist()))[:10]} are not "
                            "Cityscapes labelIds")
        conf += confusion_matrix(torch.from_numpy(pred), torch.from_numpy(labels), len(CLASS_NAMES))
    return {**iou_results(conf), "num_images": len(samples)}


def official_evaluate(predictions: str | Path, data_root: str | Path, split: str,
                      export: str | Path | None = None) -> dict[str, Any]:
    """Run cityscapesscripts' evalPixelLevelSemanticLabeling in process on a folder of labelId predictions.

    The script's own code does everything: the ground-truth list (gtFine/<split>/*/*_gtFine_labelIds.png, its
    search pattern with the split), the matching of each to a prediction (getPrediction) and the scoring
    (evaluateImgLists). We only hand it a private copy of its settings object instead of environment variables,
    silence its printing, and turn its sys.exit on an error into a RunError. The instance-level scores (nIoU)
    are switched off: they need gtFine *_instanceIds.png files and use np.in1d, which NumPy 2.4 removed.

    Returns:
        {"miou": %, "iou": {class name: % or None (NaN: absent from prediction and ground truth)},
         "num_images": int, "export": path of the script's JSON or None}.
    """
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_eval

    predictions = Path(predictions)
    folder = predictions / "labelIds" if (predictions / "labelIds").is_dir() else predictions
    gt_search = Path(data_root) / "gtFine" / split / "*" / f"*{LABEL_SUFFIX}"
    ground_truth = sorted(str(p) for p in Path(data_root).glob(f"gtFine/{split}/*/*{LABEL_SUFFIX}"))
    if not ground_truth:
        raise DataError(f"{gt_search}: no ground truth for the official evaluation; it needs the {split} labels")
    args = copy.copy(cs_eval.args)  # the module's global settings object; never modified
    args.predictionPath, args.predictionWalk = str(folder), None
    args.groundTruthSearch = str(gt_search)
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = export is not None
    args.exportFile = str(export) if export is not None else ""
    args.quiet, args.colorized, args.bold, args.nocol = True, False, "", ""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            prediction_files = [cs_eval.getPrediction(args, gt) for gt in ground_truth]
            result = cs_eval.evaluateImgLists(prediction_files, ground_truth, args)
    except SystemExit:  # the script's printError: "ERROR: ..." then sys.exit(-1)
        errors = [line for line in printed.getvalue().splitlines() if line.startswith("ERROR")]
        raise RunError(f"cityscapesscripts evaluation of {folder} failed: {errors[-1] if errors else 'exit'}; "
                       "predictions must be labelId PNGs named <city>_<seq>_<frame>*.png, one per image, at the "
                       "label's size (cycleseg predict writes them)") from None
    iou = {name: finite_or_none(100 * float(result["classScores"][name])) for name in CLASS_NAMES[:NUM_EVAL_CLASSES]}
    return {"miou": finite_or_none(100 * float(result["averageScoreClasses"])), "iou": iou, "num_images": len(ground_truth),
            "export": str(export) if export is not None else None}


def official_report(run_dir: Path, data_root: str | Path, split: str, models: Models, cfg: Config,
                    dataset: Dataset, device: torch.device, predictions: Path | None,
                    amp: Precision | None = None) -> dict[str, Any]:
    """`evaluate --official`: labelId predictions (written to RUN_DIR/predictions_<split> unless given), scored by
    cityscapesscripts and by us on the same files.

    Returns:
        {"predictions": folder, "cityscapesscripts": {"miou", "iou", "num_images", "export"},
         "ours": {"miou", "iou", "num_images"}}; the script's full JSON goes to RUN_DIR/official_<split>.json.
    """
    if run_classes(run_dir) is not CITYSCAPES:
        raise RunError(f"{run_dir}: --official is the Cityscapes benchmark's evaluation, and this run was trained on "
                       "a folder dataset with its own classes; use --full-res for full-resolution IoUs")
    if predictions is None:
        predictions = artifact(run_dir, "predictions", split)
        count = write_predictions(iter_predictions(models, dataset, device, cfg.optim.batch_size, cfg.data.num_workers,
                                                   cfg.train.seed, amp=amp), predictions, within=Path(run_dir))
        write_json(predictions / "predict.json", {"run": str(run_dir), "split": split, "data": str(data_root),
                                                  "num_images": count, "outputs": ["labelIds", "color"]})
    elif not predictions.is_dir():
        raise RunError(f"{predictions}: predictions folder not found; write one with `cycleseg predict`")
    ours = score_predictions(predictions, data_root, split)
    official = official_evaluate(predictions, data_root, split, export=artifact(run_dir, "official", split))
    return {"predictions": str(predictions), "cityscapesscripts": official, "ours": ours}
