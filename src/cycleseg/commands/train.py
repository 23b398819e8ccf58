"""Training: the epochs, the LR schedule, validation and checkpoints around the Table 1 steps (`steps`).

`train()` reads like the paper's protocol: for every batch, one generator step and one discriminator step
(or the plain ERFNet's J_seg step; semi-supervised, with an unlabelled batch too, a D_Y step after D_X's); at
every epoch end, one step of the constant-then-linear-decay LR
schedule and, every `train.eval_every` epochs, a validation that keeps the best model. The run directory is
created, resumed and finished through `runs`; the state lives in `state.TrainState`; logging and signals in
`monitor`. A run stopped at any moment (Ctrl-C, SIGTERM, SIGKILL, a data error) and resumed with `--resume`
ends in the same state as one that never stopped.
"""

from __future__ import annotations

import itertools
import math
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from tqdm import tqdm

from cycleseg import runs
from cycleseg.commands.evaluate import evaluate_models
from cycleseg.commands.monitor import RunLogger, StopSignals
from cycleseg.commands.state import Progress, TrainState
from cycleseg.config import Config, labelled_subset, uses_unlabelled
from cycleseg.core import distributed, seeding
from cycleseg.core.augment import augment_batch, augment_generator
from cycleseg.core.losses import enet_class_weights
from cycleseg.core.models import resolve_device
from cycleseg.core.precision import to_memory_format
from cycleseg.core.steps import (
    NonFiniteError,
    bf16_agrees,
    discriminator_step,
    discriminator_y_step,
    f_warmup_step,
    generator_step,
    plain_step,
    semi_generator_step,
)
from cycleseg.data import ClassTable, DataSource, open_source, open_split, resolve_classes
from cycleseg.data.cache import class_pixel_counts
from cycleseg.data.check import require_valid
from cycleseg.data.semi import (
    LabelledSplit,
    LabelSubset,
    labelled_split,
    open_labelled_sets,
    open_unpaired_labels,
    stream_indices,
)
from cycleseg.errors import ConfigError, DataError, Interrupted, RunError, user_message
from cycleseg.runs import BEST, LAST

__all__ = ["train"]


def train(cfg: Config, run_dir: str | Path, resume: bool = False, overwrite: bool = False,
          run_config: dict[str, Any] | None = None, init_from: str | Path | None = None) -> dict[str, Any]:
    """Train the model of `cfg` into `run_dir`; returns the final validation metrics (also in metrics.json).

    A new run refuses an occupied `run_dir` unless `overwrite`, and writes nothing before its data passed the
    checks. With `resume`, continue from run_dir/last.pt exactly where it stopped; `run_config` is then the
    run's own config (runs.resume_config), kept in the checkpoints, while `cfg` may differ in RESUMABLE_KEYS.
    `init_from` (a new run only): start from the weights of that checkpoint or run (runs.init_weights).
    """
    run_dir = Path(run_dir)
    if resume and init_from is not None:
        raise ConfigError("--init-from starts a new run; a resumed run continues from its own last.pt (drop one)")
    device = _device(cfg)
    lock = runs.RunLock(run_dir, enabled=distributed.is_main())  # rank 0 writes, so rank 0 holds it for all
    try:
        return _train(cfg, run_dir, resume, overwrite, run_config, init_from, device, lock)
    finally:
        lock.release()


def _train(cfg: Config, run_dir: Path, resume: bool, overwrite: bool, run_config: dict[str, Any] | None,
           init_from: str | Path | None, device: torch.device, lock: runs.RunLock) -> dict[str, Any]:
    main = distributed.is_main()  # rank 0 writes files, logs and shows progress
    # A run of this version has its lock file: refused at once while another process holds it. (One decision for
    # all ranks: rank 0 may create the file while another rank still looks.)
    if distributed.any_rank(main and (run_dir / runs.LOCK).is_file(), device):
        _lock(lock, device)
    if main and not resume:
        runs.require_new_run(run_dir, overwrite)
    source = open_source(cfg.data.root, cfg.data.format)  # opened once: each split's folder is walked once
    classes = resolve_classes(cfg, source=source)  # the data's class table; model.num_classes from it when null
    if resume and not (run_dir / LAST).is_file():  # stopped before its first checkpoint: start as it started
        init_from = (runs.read_status(run_dir).get("init_from") or {}).get("path")
    data = _open_data(cfg, run_dir, resume, source)
    train_set, val_loader = data.labelled, data.val_loader
    init_record, init = runs.init_weights(init_from, cfg) if init_from is not None else (None, None)
    _lock(lock, device, create=not resume)  # before the first file is written or removed
    if main and not resume:
        runs.create_run(run_dir, cfg, overwrite, fields={"init_from": init_record} if init_record else None,
                        classes=classes)
    if main and data.split is not None and (not resume or runs.read_labelled(run_dir) is None):
        runs.write_labelled(run_dir, data.split.paths(data.split.labelled))  # what a resume trains on
    state = None
    try:
        state, class_weights = _start(cfg, run_dir, device, run_config, train_set, resume, init)
        p = state.progress
        per_epoch = math.ceil(_shard_size(len(train_set)) / cfg.optim.batch_size)
        total = min(cfg.optim.epochs * per_epoch, cfg.train.max_iters or math.inf)
        with RunLogger(run_dir, cfg.name, total, p.step, resumed=resume, validated=p.validated_step == p.step,
                       progress=cfg.train.progress, enabled=main) as log, StopSignals() as stop:
            world = distributed.world_size()
            log.write(f"{cfg.name}: {state.amp.name} ({state.precision_reason}); {per_epoch} iterations per epoch"
                      + (f"; {world} processes, batch {cfg.optim.batch_size} per process, global batch "
                         f"{world * cfg.optim.batch_size}" if world > 1 else "") + _describe_data(data, cfg))
            if init_record and p.step == 0:
                log.write(f"initialised {', '.join(init_record['networks'])} from {init_record['path']} "
                          f"(step {init_record['step']})")
            while True:
                if p.batch_in_epoch >= per_epoch:  # an epoch's batches are done (>=: a shorter epoch on resume)
                    state.close_epoch()  # one step of the LR schedule
                every = cfg.train.eval_every
                if p.validated_step != p.step and (p.step >= total or (every and p.step and p.batch_in_epoch == 0
                                                                       and p.epoch % every == 0)):
                    _validate(state, val_loader, cfg, log, run_dir, classes)  # and best.pt
                state.save(run_dir / LAST)
                _retain(run_dir, cfg.train.keep_checkpoints, p, cfg.train.keep_every)
                if p.step >= total:
                    break
                batches = _batches(train_set, cfg, p, total)  # the rest of this epoch
                for (image, labels), (unlabelled, backward) in zip(batches, _extra_batches(data, cfg, p, len(batches))):
                    image, labels = _augment(image.to(device, non_blocking=True),
                                             labels.to(device, non_blocking=True), cfg, p)
                    if unlabelled is not None:  # semi-supervised: this iteration's unlabelled images
                        unlabelled = _augment_images(unlabelled.to(device, non_blocking=True), cfg, p, stream=1)
                    if backward is not None:  # data.unpaired_labels: the backward cycle's label maps
                        backward = _augment_labels(backward.to(device, non_blocking=True), cfg, p, stream=2)
                    losses = _iteration(state, image, labels, cfg, class_weights, run_dir, unlabelled, backward)
                    p.step += 1
                    p.batch_in_epoch += 1
                    log.advance()
                    if "nonfinite_skipped" in losses or p.step % cfg.train.log_every == 0 or p.step == total:
                        log.log(p.step, p.epoch, {k: float(v) for k, v in losses.items()} | {"lr": state.lr})
                        log.show(losses)
                    if main and cfg.train.image_every and p.step % cfg.train.image_every == 0:
                        log.images(p.step, _sample_images(state, image, labels, cfg, classes.palette))
                    if cfg.train.checkpoint_every and p.step % cfg.train.checkpoint_every == 0:
                        state.save(run_dir / LAST)
                    if distributed.any_rank(stop.signum is not None, device):  # all ranks stop at one step
                        state.save(run_dir / LAST)
                        signum = stop.signum or signal.SIGTERM
                        raise Interrupted(f"stopped by {signal.Signals(signum).name} at step {p.step}; checkpoint "
                                          f"{run_dir / LAST}; continue with: cycleseg train --resume {run_dir}",
                                          signum)
        return _finish(state, cfg, run_dir)
    except Interrupted as e:
        _mark(run_dir, "interrupted", state, str(e))
        raise
    except DataError as e:  # a file the fast check missed: keep what was trained, like Ctrl-C
        if state is None:
            raise
        state.save(run_dir / LAST)  # a close or validation left pending runs first when the run is resumed
        message = (f"{user_message(e)}; the run is saved at step {state.progress.step}: fix the file, then "
                   f"continue with cycleseg train --resume {run_dir}")
        _mark(run_dir, "failed", state, message)
        raise DataError(message) from None
    except BaseException as e:
        _mark(run_dir, "failed", state, user_message(e) or type(e).__name__)
        raise


def _lock(lock: runs.RunLock, device: torch.device, create: bool = False) -> None:
    """Take the run's lock on rank 0; every rank learns whether it got it (under torchrun the others would
    otherwise wait for a rank 0 that was refused)."""
    refused = None
    try:
        lock.acquire(create=create)
    except RunError as e:
        refused = e
    if distributed.any_rank(refused is not None, device):
        raise refused or RunError(f"{lock.run_dir}: rank 0 could not lock the run (its error is in its output)")


def _start(cfg: Config, run_dir: Path, device: torch.device, run_config: dict[str, Any] | None,
           train_set: Dataset, resume: bool, init: dict[str, Any] | None = None) -> tuple[TrainState, Tensor | None]:
    """The training state, from last.pt when the run has one (else fresh, seeded, its networks in `init` loaded
    from --init-from), and the class weights."""
    torch.manual_seed(cfg.train.seed)
    state = TrainState(cfg, device, run_config)
    for net, weights in (init or {}).items():  # G, F, D: copied into the parameters (device, memory format kept)
        getattr(state.models, net).load_state_dict(weights)
    distributed.broadcast_parameters(state.models)  # identical start on every rank
    if distributed.rank() > 0:  # its own noise draws; rank 0 keeps the single-process streams
        torch.manual_seed(cfg.train.seed + distributed.rank())
    loaded = resume and (run_dir / LAST).is_file()  # a run killed before its first checkpoint starts anew
    if loaded:
        state.load(run_dir / LAST)
    class_weights = _class_weights(cfg, train_set, run_dir, device)
    if not loaded and cfg.train.precision == "auto" and state.amp.name == "bf16":
        _check_bf16(state, cfg, train_set, class_weights)
    if cfg.train.compile:  # in place: state_dict keys stay those of the plain modules
        for net in filter(None, (state.models.G, state.models.F, state.models.D, state.models.D_Y)):
            net.compile()
    if distributed.is_main():
        runs.set_status(run_dir, "running", state.progress.step,
                        precision={"name": state.amp.name, "reason": state.precision_reason})
    return state, class_weights


def _iteration(state: TrainState, image: Tensor, labels: Tensor, cfg: Config, class_weights: Tensor | None,
               run_dir: Path, unlabelled: Tensor | None = None, backward: Tensor | None = None
               ) -> dict[str, Tensor | float]:
    """Table 1 for one batch (or the plain ERFNet's step): the loss terms, or a skipped non-finite update.

    unlabelled: the iteration's unlabelled images (semi-supervised), trained through the forward cycle and D_Y;
    backward: the backward cycle's label maps when they are not the batch's own (data.unpaired_labels)."""
    p, models = state.progress, state.models
    start = time.perf_counter()
    image = to_memory_format(image, cfg.train.channels_last)
    try:
        if models.is_cycle and unlabelled is not None:  # G, F (D_X, D_Y frozen), then D_X, then D_Y
            unlabelled = to_memory_format(unlabelled, cfg.train.channels_last)
            losses, fake, segmentation = semi_generator_step(models, state.opt_g, image, labels, unlabelled, cfg.loss,
                                                             class_weights, state.amp, backward)
            losses |= discriminator_step(models, state.opt_d, image, fake, state.pool, state.amp)
            if segmentation is not None:
                losses |= discriminator_y_step(models, state.opt_dy, labels if backward is None else backward,
                                               segmentation, state.pool_y, state.amp)
        elif models.is_cycle and p.step < cfg.optim.f_warmup_iters:  # F alone on labels -> image first
            losses = f_warmup_step(models, state.opt_g, image, labels, state.amp)
        elif models.is_cycle:
            losses, fake = generator_step(models, state.opt_g, image, labels, cfg.loss, class_weights, state.amp,
                                          backward)
            losses |= discriminator_step(models, state.opt_d, image, fake, state.pool, state.amp)
        else:
            losses = plain_step(models, state.opt_g, image, labels, cfg.loss, class_weights, state.amp)
        distributed.broadcast_buffers(models)  # BatchNorm statistics as on rank 0, like DDP
        p.nonfinite_in_a_row = 0
    except NonFiniteError as e:
        p.nonfinite_in_a_row += 1
        p.nonfinite_total += 1
        if p.nonfinite_in_a_row >= cfg.train.max_nonfinite:
            raise RunError(f"{e} in {p.nonfinite_in_a_row} iterations in a row (step {p.step + 1}); stopped, "
                           f"{run_dir / LAST} holds the last good state; lower optim.lr or check the data") from None
        losses = {"nonfinite_skipped": p.nonfinite_total}
    p.train_seconds += time.perf_counter() - start
    return losses


def _augment(image: Tensor, labels: Tensor, cfg: Config, progress: Progress) -> tuple[Tensor, Tensor]:
    """data.augment on a training batch; its draws are fixed by (seed, epoch, batch, rank), so resume is exact."""
    if cfg.data.augment == "none":
        return image, labels
    generator = augment_generator(cfg.train.seed, progress.epoch, progress.batch_in_epoch, distributed.rank())
    return augment_batch(image, labels, cfg.data.augment, cfg.data.augment_scale, generator)


def _augment_images(image: Tensor, cfg: Config, progress: Progress, stream: int) -> Tensor:
    """data.augment on a batch of images without labels (the unlabelled images), with draws of their own `stream`."""
    if cfg.data.augment == "none":
        return image
    generator = augment_generator(cfg.train.seed, progress.epoch, progress.batch_in_epoch, distributed.rank(), stream)
    dummy = torch.zeros(image.shape[0], *image.shape[2:], dtype=torch.int64, device=image.device)
    return augment_batch(image, dummy, cfg.data.augment, cfg.data.augment_scale, generator)[0]


def _augment_labels(labels: Tensor, cfg: Config, progress: Progress, stream: int) -> Tensor:
    """data.augment on label maps without images (data.unpaired_labels), with draws of their own `stream`."""
    if cfg.data.augment == "none":
        return labels
    generator = augment_generator(cfg.train.seed, progress.epoch, progress.batch_in_epoch, distributed.rank(), stream)
    dummy = torch.zeros(labels.shape[0], 1, *labels.shape[1:], device=labels.device)
    return augment_batch(dummy, labels, cfg.data.augment, cfg.data.augment_scale, generator)[1]


def _sample_images(state: TrainState, image: Tensor, labels: Tensor, cfg: Config, palette: np.ndarray
                   ) -> dict[str, np.ndarray]:
    """train.image_every: the batch's first image through the networks, as (H, W, 3) uint8 pictures: x, its
    labels y, G's prediction and, for a cycle model, x_rec = F(noise(G(x))), F(y) and G(F(y)); class maps in
    `palette` ((S, 3) uint8). Seeded, in eval mode, the RNG restored: the training computes what it would have."""
    models, x, y = state.models, image[:1], labels[:1]
    with runs.seeded_inference(models, cfg.train.seed, state.device, state.amp):
        maps = {"x": x, "y": y}
        if models.is_cycle:
            logits, _, x_rec = models.forward_cycle(x)
            fake, logits_rec = models.backward_cycle(y)
            maps |= {"G_x": logits.argmax(1), "x_rec": x_rec, "F_y": fake, "G_F_y": logits_rec.argmax(1)}
        else:
            maps["G_x"] = models.G(x).argmax(1)
    pictures = {}
    for tag, t in maps.items():
        t = t[0].detach().cpu()
        if t.dim() == 2:  # class indices -> colours
            pictures[tag] = palette[np.mod(t.long().numpy(), len(palette))]
        else:  # an image in [-1, 1]
            pictures[tag] = ((t.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return pictures


def _check_bf16(state: TrainState, cfg: Config, train_set: Dataset, class_weights: Tensor | None) -> None:
    """train.precision=auto chose bf16: keep it only if its loss terms match fp32's on the first batch."""
    image, labels = next(iter(_batches(train_set, cfg, state.progress, 1)))
    image = to_memory_format(image.to(state.device), cfg.train.channels_last)
    agrees, why = bf16_agrees(state.models, image, labels.to(state.device), cfg.loss, class_weights)
    if not distributed.any_rank(not agrees, state.device):  # every rank keeps bf16, or none
        state.use_precision("bf16", f"{state.precision_reason}; {why}")
    else:
        state.use_precision("fp32", f"auto: bf16 would be faster here, but {why}; fp32 instead")


def _validate(state: TrainState, loader: DataLoader, cfg: Config, log: RunLogger, run_dir: Path,
              classes: ClassTable) -> None:
    """Validation mIoU / PSNR / SNR, logged and kept in the progress; a new best mIoU is saved as best.pt."""
    p = state.progress
    batches = tqdm(loader, desc="validation", unit="batch", leave=False, dynamic_ncols=True,
                   disable=not (cfg.train.progress and distributed.is_main()))
    metrics = evaluate_models(state.models, batches, state.device, seed=cfg.train.seed,
                              distributed=distributed.is_distributed(), classes=classes)
    epoch = p.epoch - 1 if p.batch_in_epoch == 0 else p.epoch  # the epoch the validated weights finished
    log.log(p.step, epoch, {f"val/{k}": metrics[k] for k in ("miou", "psnr_db", "snr_db") if metrics[k] is not None})
    p.validated_step, p.last_metrics = p.step, metrics
    if metrics["miou"] is not None and (p.best_miou is None or metrics["miou"] > p.best_miou):
        p.best_miou = metrics["miou"]
        state.save(run_dir / BEST, weights_only=True)  # weights, config, step, metrics (last.pt has the rest)


def _finish(state: TrainState, cfg: Config, run_dir: Path) -> dict[str, Any]:
    """metrics.json from the final validation (kept in the checkpoint, so a resume after it writes the same)."""
    p = state.progress
    metrics = {**(p.last_metrics or {}), "epochs": p.epoch, "iterations": p.step, "precision": state.amp.name,
               "nonfinite_skipped": p.nonfinite_total, "train_seconds": round(p.train_seconds, 1)}
    world = distributed.world_size()
    if world > 1:
        hashes = distributed.check_in_sync(state.models)
        metrics |= {"world_size": world, "global_batch": world * cfg.optim.batch_size, "parameter_sha256": hashes}
        if len(set(hashes)) > 1:
            raise RunError(f"the {world} processes ended with different parameters; please report this as a bug")
    if distributed.is_main():
        runs.write_json(run_dir / runs.METRICS, metrics)
        runs.set_status(run_dir, "finished", p.step)
    return metrics


def _mark(run_dir: Path, status: str, state: TrainState | None, message: str) -> None:
    if distributed.is_main() and (run_dir / runs.STATUS).is_file():
        step = state.progress.step if state is not None else None
        runs.set_status(run_dir, status, step, " ".join(message.splitlines()))


def _device(cfg: Config) -> torch.device:
    device = resolve_device(cfg.train.device)
    if distributed.init_from_env(device.type) and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank())  # torchrun: one GPU per process
    return device


@dataclass
class _TrainData:
    """What a run trains and validates on."""

    labelled: Dataset  # (image, labels) items: the training split, or its labelled images (data.labelled)
    val_loader: DataLoader  # this rank's share of the validation split
    split: LabelledSplit | None = None  # data.labelled: the choice of labelled images (RUN/labelled.txt)
    unlabelled: Dataset | None = None  # semi-supervised: the other training images, (3, H, W) items, no labels
    backward: Dataset | None = None  # data.unpaired_labels: the backward cycle's label maps, (H, W) items


def _open_data(cfg: Config, run_dir: Path, resume: bool, source: DataSource) -> _TrainData:
    """The checked training data and the validation loader (this rank's share of it under torchrun), all from
    `source`, the run's data opened once.

    With data.labelled the labelled choice comes first (read back from RUN/labelled.txt on resume), so that the
    data check can leave the unlabelled images' labels unread."""
    progress = cfg.train.progress
    split = None
    if labelled_subset(cfg):
        split = labelled_split(cfg, runs.read_labelled(run_dir) if resume else None, str(run_dir / runs.LABELLED),
                               source=source)
    if cfg.data.check != "off":  # minutes into a run is a bad time to find a missing label
        require_valid(cfg.data.root, ("train", "val"), full=cfg.data.check == "full", progress=progress,
                      fmt=cfg.data.format, unlabelled=split.unlabelled_images() if split else frozenset(),
                      source=source)
    unlabelled = backward = None
    if split is None:
        train_set = open_split(cfg, "train", progress=progress, source=source)
    else:
        train_set, unlabelled = open_labelled_sets(cfg, split, progress)
        if not uses_unlabelled(cfg):  # the plain baseline on the labelled images: the others are not used
            unlabelled = None
    if cfg.data.unpaired_labels is not None:  # the labelled images' label maps and the unpaired ones
        base, indices = (train_set.dataset, train_set.indices) if isinstance(train_set, Subset) else \
            (train_set, range(len(train_set)))
        backward = ConcatDataset([LabelSubset(base, indices), open_unpaired_labels(cfg, source)])
    val_set = open_split(cfg, "val", progress=progress, source=source)
    if distributed.is_distributed():  # each rank validates its share; the confusion matrices are summed
        val_set = Subset(val_set, range(distributed.rank(), len(val_set), distributed.world_size()))
    val_loader = DataLoader(val_set, batch_size=cfg.optim.batch_size, num_workers=cfg.data.num_workers,
                            pin_memory=torch.cuda.is_available())
    return _TrainData(train_set, val_loader, split, unlabelled, backward)


def _describe_data(data: _TrainData, cfg: Config) -> str:
    """The log's note on a run with labelled and unlabelled images or unpaired label maps ("" for the paper's)."""
    parts = []
    if data.split is not None:
        parts.append(f"{len(data.split.labelled)} labelled training images of {len(data.split.samples)}"
                     + (f", {len(data.unlabelled)} unlabelled ({cfg.optim.unlabelled_batch_size or cfg.optim.batch_size}"
                        " per iteration)" if data.unlabelled is not None else " (the others are not used)"))
    if data.backward is not None:
        parts.append(f"backward cycle on {len(data.backward)} label maps "
                     f"({len(data.backward) - len(data.labelled)} unpaired)")
    return "".join(f"; {part}" for part in parts)


def _retain(run_dir: Path, keep: int, progress: Progress, every: int = 1) -> None:
    """Keep a copy of last.pt at the end of every `every`-th epoch, the last `train.keep_checkpoints` of them
    (0 keeps none)."""
    if keep == 0 or progress.batch_in_epoch != 0 or progress.step == 0 or not distributed.is_main():
        return
    if progress.epoch % every:
        return
    shutil.copyfile(run_dir / LAST, run_dir / f"epoch_{progress.epoch:04d}.pt")
    for old in sorted(run_dir.glob("epoch_*.pt"))[:-keep]:
        old.unlink()


def _class_weights(cfg: Config, train_set: Dataset, run_dir: Path, device: torch.device) -> Tensor | None:
    """loss.class_weights=enet: (S,) weights 1 / ln(1.02 + p_c) from the training labels' class frequencies.

    Computed the same way at every start (a resumed run included), from the cache's counts when there is one;
    written to RUN_DIR/class_weights.json.
    """
    if cfg.loss.class_weights == "none":
        return None
    counts = torch.from_numpy(class_pixel_counts(train_set, progress=cfg.train.progress))
    weights = enet_class_weights(counts)
    if distributed.is_main():
        runs.write_json(run_dir / "class_weights.json", {"kind": cfg.loss.class_weights, "pixels": counts.tolist(),
                                                          "weights": weights.tolist()})
    return weights.to(device)


def _shard_size(n: int) -> int:
    """Images per rank and epoch: every rank gets the same count (the order wraps around, as
    DistributedSampler pads), so all ranks run the same number of iterations."""
    return math.ceil(n / distributed.world_size())


def _extra_batches(data: _TrainData, cfg: Config, progress: Progress, count: int
                   ) -> Iterator[tuple[Tensor | None, Tensor | None]]:
    """(unlabelled images (B_u, 3, H, W), backward label maps (B, H, W)) of the next `count` iterations, None where
    the run has none (always, for the paper's runs).

    Each comes from an endless stream of shuffled passes over its dataset (data.semi.stream_indices), seeded by
    train.seed and positioned by the iteration's step and the rank: iteration `step` of rank r takes positions
    (step * world + r) * b .. + b - 1. A resumed run, mid-epoch or not, draws what it would have drawn, with
    nothing in the checkpoint; every unlabelled image is used once per pass over the unlabelled images.
    """
    world, rank = distributed.world_size(), distributed.rank()
    streams: list[Iterator[Tensor | None]] = []
    for dataset, batch, salt in ((data.unlabelled, cfg.optim.unlabelled_batch_size or cfg.optim.batch_size, 1),
                                 (data.backward, cfg.optim.batch_size, 2)):
        if dataset is None:
            streams.append(itertools.repeat(None))
            continue
        positions = [((progress.step + i) * world + rank) * batch + k for i in range(count) for k in range(batch)]
        stream_seed = seeding.mix_seed(cfg.train.seed, salt, multiplier=1_009, modulus=None)
        indices = stream_indices(len(dataset), stream_seed, positions)
        streams.append(iter(DataLoader(Subset(dataset, indices), batch_size=batch, num_workers=cfg.data.num_workers,
                                       generator=torch.Generator().manual_seed(cfg.train.seed),
                                       pin_memory=torch.cuda.is_available())))
    return zip(*streams)


def _batches(dataset: Dataset, cfg: Config, progress: Progress, total: int) -> DataLoader:
    """The rest of the current epoch, at most up to iteration `total`: a shuffle fixed by (seed, epoch), minus
    the batches already trained.

    The order depends on nothing else, so a run resumed mid-epoch sees exactly the batches it would have.
    With several processes, rank r takes every world_size-th image of that order, starting at r.
    """
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(
        seeding.mix_seed(cfg.train.seed, progress.epoch, multiplier=100_003, modulus=None)))
    world = distributed.world_size()
    if world > 1:
        order = order.repeat(2)[: _shard_size(len(dataset)) * world][distributed.rank()::world]
    batch = cfg.optim.batch_size
    remaining = order[progress.batch_in_epoch * batch:][: max(0, total - progress.step) * batch].tolist()
    return DataLoader(
        Subset(dataset, remaining),
        batch_size=batch,
        num_workers=cfg.data.num_workers,
        # An explicit generator keeps the DataLoader from drawing its worker seed from the global RNG.
        generator=torch.Generator().manual_seed(cfg.train.seed),
        pin_memory=torch.cuda.is_available(),
    )
