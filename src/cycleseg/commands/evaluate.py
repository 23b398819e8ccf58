"""Evaluation of a trained run on a split: class IoU and mIoU, and for cycle models PSNR and SNR.

The noise injection runs at evaluation as in training (SPEC), so PSNR is that of F(noise(G(x))) and SNR
is the noise's measured SNR on G's logits. Gaussian noise is drawn from a fixed seed, so results repeat.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cycleseg import runs
from cycleseg.commands import predict
from cycleseg.commands.session import open_session
from cycleseg.core.metrics import confusion_matrix, psnr_db, snr_db
from cycleseg.core.models import Models
from cycleseg.core.precision import resolve_precision
from cycleseg.data import ClassTable
from cycleseg.errors import RunError
from cycleseg.runs import LAST, load_run, seeded_inference  # noqa: F401 (load_run: tests import it from here)
from cycleseg.runs.formats import finite_or_none, fmt, iou_results

__all__ = ["evaluate_models", "evaluate_run", "format_results"]


def evaluate_models(models: Models, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device,
                    seed: int = 0, distributed: bool = False, precision: str = "fp32",
                    classes: ClassTable | None = None) -> dict[str, Any]:
    """Run G (and the forward cycle) over `batches` of (image (B,3,H,W), labels (B,H,W)) and score them.

    `classes` names the classes and says which count in the mIoU (default: Cityscapes for S = 20).

    `precision` "bf16" (or "auto") runs the networks under autocast, as train.precision does; fp32 by default.
    With `distributed`, each process scores its own share of the images and the confusion matrices and the
    PSNR/SNR sums are added over the processes (all_reduce), so every rank gets the single-process result.

    Returns:
        {"miou": % or None, "iou": {class name: % or None}, "psnr_db": dB or None, "snr_db": dB or None,
         "num_images": int}. None stands for NaN (class absent) and for "not applicable" (plain model, or
         no noise, whose SNR is infinite).
    """
    amp = resolve_precision(precision, device)
    conf = torch.zeros(models.num_classes, models.num_classes, dtype=torch.int64, device=device)
    psnrs, snrs, count = [], [], 0
    with seeded_inference(models, seed, device, amp):  # reproducible Gaussian noise, the training RNG untouched
        for image, labels in batches:
            image, labels = image.to(device), labels.to(device)
            if models.is_cycle:
                logits, noisy, reconstruction = models.forward_cycle(image)
                psnrs.append(psnr_db(image, reconstruction).cpu())
                snrs.append(snr_db(logits, noisy).cpu())
            else:
                logits = models.G(image)
            conf += confusion_matrix(logits.argmax(dim=1), labels, models.num_classes)
            count += image.shape[0]

    # Sums and counts (float64), so that processes of a distributed evaluation can add theirs up.
    sums = torch.tensor([torch.cat(psnrs).double().sum().item() if psnrs else 0.0, sum(map(len, psnrs)),
                         torch.cat(snrs).double().sum().item() if snrs else 0.0, sum(map(len, snrs)), count],
                        dtype=torch.float64, device=device)
    if distributed:
        from cycleseg.core.distributed import all_reduce_sum

        all_reduce_sum(conf)
        all_reduce_sum(sums)
    psnr = (sums[0] / sums[1]).item() if models.is_cycle else None
    snr = (sums[2] / sums[3]).item() if models.is_cycle else None
    count = int(sums[4].item())
    return {
        **iou_results(conf, classes),
        "psnr_db": finite_or_none(psnr) if psnr is not None else None,
        "snr_db": finite_or_none(snr) if snr is not None else None,
        "num_images": count,
    }


@runs.writes_into_run()
def evaluate_run(run_dir: str | Path, data_root: str | Path, split: str = "val", device: str = "auto",
                 batch_size: int | None = None, checkpoint: str = LAST, full_res: bool = False,
                 official: bool = False, predictions: str | Path | None = None,
                 precision: str = "auto", progress: bool = False) -> dict[str, Any]:
    """Evaluate a run on `split` of the data folder `data_root`; writes RUN_DIR/eval_<split>.json.

    `precision` auto (the default) runs the networks in bf16 where that is native (GPUs, CPUs with AVX512-BF16
    or AMX: about twice as fast; PSNR within 0.1 dB of fp32), else fp32; "fp32" gives the reference numbers.

    At the training size always; with full_res also at each image's own size (logits upsampled bilinearly
    before the argmax: "full_res"); with official also by cityscapesscripts' evaluation on labelId
    predictions (`predictions`, or written to RUN_DIR/predictions_<split>), beside ours on the same files
    ("official": {"cityscapesscripts": ..., "ours": ...}).
    """
    if split == "test":
        raise RunError("the Cityscapes test split has no labels; evaluate on train or val")
    if predictions is not None and not official:
        raise RunError("--predictions is the folder for --official; add --official")
    session = open_session(run_dir, data_root, split, device, checkpoint, precision, channels_last=True)
    models, cfg, dev, amp, classes, dataset = (session.models, session.config, session.device, session.amp,
                                               session.classes, session.dataset)
    results = evaluate_models(models, session.batches("evaluate", progress, batch_size), dev, seed=cfg.train.seed,
                              precision=amp.name, classes=classes)
    results = {"run": cfg.name, "split": split, "noise": cfg.noise.kind, "size": f"{cfg.data.width}x{cfg.data.height}",
               "precision": amp.name, **results}
    if full_res or official:
        if official:
            results["official"] = predict.official_report(Path(run_dir), data_root, split, models, cfg, dataset, dev,
                                                          Path(predictions) if predictions is not None else None, amp)
        if full_res and official and predictions is None:  # the predictions just written are this model's, full size
            results["full_res"] = results["official"]["ours"]
        elif full_res:
            conf = predict.full_res_confusion(predict.iter_predictions(
                models, dataset, dev, batch_size or cfg.optim.batch_size, cfg.data.num_workers, amp=amp,
                progress=progress),
                cfg.model.num_classes, classes)
            results["full_res"] = iou_results(conf, classes)
    runs.write_json(runs.artifact(run_dir, "eval", split), results)
    runs.record_evaluation(run_dir, split, checkpoint, runs.checkpoint_step(Path(run_dir) / checkpoint))
    return results


def format_results(results: dict[str, Any]) -> str:
    """Class IoU table, then mIoU / PSNR / SNR, as printed by `cycleseg evaluate`.

    With full-resolution or official results, one IoU column each beside ours at the training size.
    """
    columns = [("IoU %", results)]
    if "full_res" in results or "official" in results:
        columns = [(f"ours {results.get('size', '')}", results)]
        if "full_res" in results:
            columns.append(("ours full", results["full_res"]))
        if "official" in results:
            columns += [("ours preds", results["official"]["ours"]), ("official", results["official"]["cityscapesscripts"])]
    digits = 1 if len(columns) == 1 else 2  # side by side, the comparison needs the second decimal
    width = max(7, *(len(title) for title, _ in columns))
    lines = [f"{'class':<15}" + "".join(f" {title:>{width}}" for title, _ in columns)]
    for name in results["iou"]:
        lines.append(f"{name:<15}" + "".join(f" {fmt(c['iou'].get(name), digits):>{width}}" for _, c in columns))
    lines.append("-" * (15 + (width + 1) * len(columns)))
    lines.append(f"{'mIoU %':<15}" + "".join(f" {fmt(c['miou'], digits):>{width}}" for _, c in columns))
    lines.append(f"{'PSNR dB':<15} {fmt(results['psnr_db'], 2):>7}")
    lines.append(f"{'SNR dB':<15} {fmt(results['snr_db'], 2):>7}")
    lines.append(f"{'images':<15} {results['num_images']:>7}")
    return "\n".join(lines)
