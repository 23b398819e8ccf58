"""Training: the epochs, the LR schedule, validation and checkpoints around the Table 1 steps (`steps`).

`train()` reads like the paper's protocol: for every batch, one generator step and one discriminator step
(or the plain ERFNet's J_seg step; semi-supervised, with an unlabelled batch too, a D_Y step after D_X's); at
every epoch end, one step of the constant-then-linear-decay LR
schedule and, every `train.eval_every` epochs, a validation that keeps the best model. The run directory is
created, resumed and finished through `runs`; the state lives in `state.TrainState`; logging and signals in
`monitor`; the data (opened once), the batch orders and the class weights in `train_data`. A run stopped at any
moment (Ctrl-C, SIGTERM, SIGKILL, a data error) and resumed with `--resume` ends in the same state as one that
never stopped.
"""

from __future__ import annotations

import math
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cycleseg import runs
from cycleseg.commands.evaluate import evaluate_models
from cycleseg.commands.monitor import RunLogger, StopSignals
from cycleseg.commands.state import Progress, TrainState
from cycleseg.commands.train_data import (
    TrainData,
    describe_data,
    enet_weights,
    epoch_batches,
    extra_batches,
    open_train_data,
    shard_size,
)
from cycleseg.config import Config
from cycleseg.core import distributed
from cycleseg.core.augment import augment_batch, augment_generator
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
from cycleseg.data import ClassTable, open_source, resolve_classes
from cycleseg.errors import ConfigError, DataError, Interrupted, RunError, user_message
from cycleseg.runs import BEST, LAST

__all__ = ["nothing_to_train", "train"]


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
    given = cfg.data.root  # as the user spelled it, for run.json
    if not resume:  # the run records where its data is, wherever it is resumed or evaluated from
        cfg = runs.absolute_data(cfg)
    device = _device(cfg)
    lock = runs.RunLock(run_dir, enabled=distributed.is_main())  # rank 0 writes, so rank 0 holds it for all
    try:
        return _train(cfg, run_dir, resume, overwrite, run_config, init_from, device, lock, given)
    finally:
        lock.release()


def nothing_to_train(run_dir: str | Path, cfg: Config) -> str | None:
    """Why resuming the run in `run_dir` with the session config `cfg` would train nothing (it is finished, and
    neither a larger train.max_iters nor a longer optim.epochs takes it further); None when there is work."""
    if not runs.finished(run_dir):
        return None
    metrics = runs.read_json(Path(run_dir) / runs.METRICS)
    done, limit, epochs = metrics["iterations"], cfg.train.max_iters, cfg.optim.epochs
    if metrics.get("epochs", 0) >= epochs:
        return (f"the run is finished: it trained its whole schedule, optim.epochs={epochs} ({done} iterations), "
                "and train.max_iters does not go past the schedule; nothing to do")
    if limit is not None and limit <= done:
        return (f"the run is finished at {done} iterations, where train.max_iters={limit} stops it; nothing to do "
                f"(train.max_iters above {done} extends it, train.max_iters=null runs its whole schedule of "
                f"{epochs} epochs)")
    return None


def _train(cfg: Config, run_dir: Path, resume: bool, overwrite: bool, run_config: dict[str, Any] | None,
           init_from: str | Path | None, device: torch.device, lock: runs.RunLock, given: str) -> dict[str, Any]:
    main = distributed.is_main()  # rank 0 writes files, logs and shows progress
    # A run of this version has its lock file: refused at once while another process holds it. (One decision for
    # all ranks: rank 0 may create the file while another rank still looks.)
    if distributed.any_rank(main and (run_dir / runs.LOCK).is_file(), device):
        _lock(lock, device)
    if main and not resume:
        runs.require_new_run(run_dir, overwrite)
    classes, data, init_record, init = _open_run(cfg, run_dir, resume, overwrite, init_from, device, lock, given,
                                                 run_config)
    train_set, val_loader = data.labelled, data.val_loader
    state = None
    try:
        state, class_weights = _start(cfg, run_dir, device, run_config, train_set, resume, init)
        if resume and main and runs.schedule_changed(run_dir, state.run_config):  # optim.epochs changed on resume
            state.save(run_dir / LAST)  # the checkpoint first: resume_config accepts the old config.yaml beside it
            runs.rewrite_schedule(run_dir, state.run_config)
        p = state.progress
        per_epoch = math.ceil(shard_size(len(train_set)) / cfg.optim.batch_size)
        total = min(cfg.optim.epochs * per_epoch, cfg.train.max_iters or math.inf)
        with RunLogger(run_dir, cfg.name, total, p.step, resumed=resume, validated=p.validated_step == p.step,
                       progress=cfg.train.progress, enabled=main, print_every=cfg.train.print_every,
                       epochs=cfg.optim.epochs, device=device) as log, StopSignals() as stop:
            world = distributed.world_size()
            log.write(f"{cfg.name}: {state.amp.name} ({state.precision_reason}); {per_epoch} iterations per epoch"
                      + (f"; {world} processes, batch {cfg.optim.batch_size} per process, global batch "
                         f"{world * cfg.optim.batch_size}" if world > 1 else "") + describe_data(data, cfg))
            if p.step > total:  # resumed with a train.max_iters (or a shorter epoch) below the step it reached
                limit = (f"train.max_iters={cfg.train.max_iters}" if total == cfg.train.max_iters else
                         f"optim.epochs={cfg.optim.epochs} of {per_epoch} iterations")
                log.write(f"{cfg.name}: the run is at step {p.step}, past the {total} iterations of {limit}: it "
                          f"stops here, validated and finished at step {p.step}")
            if init_record and p.step == 0:
                log.write(f"initialised {', '.join(init_record['networks'])} from {init_record['path']} "
                          f"(step {init_record['step']})")
            while True:
                if p.batch_in_epoch >= per_epoch:  # an epoch's batches are done (>=: a shorter epoch on resume)
                    state.close_epoch()  # one step of the LR schedule
                every = cfg.train.eval_every
                due = p.step >= total or (every and p.step and p.batch_in_epoch == 0 and p.epoch % every == 0)
                validate = p.validated_step != p.step and bool(due)
                if validate:
                    _validate(state, val_loader, cfg, log, run_dir, classes)  # and best.pt
                if _checkpoint_at_epoch_end(cfg, p, validate, total):
                    state.save(run_dir / LAST)
                _retain(run_dir, cfg.train.keep_checkpoints, p, cfg.train.keep_every)
                if p.step >= total:
                    break
                _train_batches(state, data, cfg, class_weights, total, log, stop, run_dir, classes)
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


def _train_batches(state: TrainState, data: TrainData, cfg: Config, class_weights: Tensor | None, total: int,
                   log: RunLogger, stop: StopSignals, run_dir: Path, classes: ClassTable) -> None:
    """The rest of the current epoch, up to iteration `total`: per batch the augmentation, one iteration
    (`_iteration`), the log, sample images and checkpoints; Interrupted at the first step after a stop signal."""
    p, device = state.progress, state.device
    batches = epoch_batches(data.labelled, cfg, p, total)  # the rest of this epoch
    for (image, labels), (unlabelled, backward) in zip(batches, extra_batches(data, cfg, p, len(batches))):
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
        _log_iteration(state, cfg, log, losses, total)
        if distributed.is_main() and cfg.train.image_every and p.step % cfg.train.image_every == 0:
            log.images(p.step, _sample_images(state, image, labels, cfg, classes.palette))
        if cfg.train.checkpoint_every and p.step % cfg.train.checkpoint_every == 0:
            state.save(run_dir / LAST)
        if distributed.any_rank(stop.signum is not None, device):  # all ranks stop at one step
            state.save(run_dir / LAST)
            signum = stop.signum or signal.SIGTERM
            raise Interrupted(f"stopped by {signal.Signals(signum).name} at step {p.step}; checkpoint "
                              f"{run_dir / LAST}; continue with: cycleseg train --resume {run_dir}",
                              signum)


def _log_iteration(state: TrainState, cfg: Config, log: RunLogger, losses: dict[str, Tensor | float], total: int
                   ) -> None:
    """The iteration's losses and LR to log.jsonl and TensorBoard every train.log_every iterations (and at a
    skipped update and the last), to the bar, and as a progress line every train.print_every."""
    p = state.progress
    logged = "nonfinite_skipped" in losses or p.step % cfg.train.log_every == 0 or p.step == total
    if not (logged or log.line_due(p.step)):
        return
    values = {k: float(v) for k, v in losses.items()} | {"lr": state.lr}  # float(): waits for the device
    if logged:
        log.log(p.step, p.epoch, values)
        log.show(losses)
    if log.line_due(p.step):
        log.line(p.step, p.epoch, values)


def _open_run(cfg: Config, run_dir: Path, resume: bool, overwrite: bool, init_from: str | Path | None,
              device: torch.device, lock: runs.RunLock, given: str, run_config: dict[str, Any] | None
              ) -> tuple[ClassTable, TrainData, dict[str, Any] | None, dict[str, Any] | None]:
    """The run's data, opened once and checked, then its folder locked and, for a new run, created (nothing is
    written before the data passed; run.json keeps the data folder as `given`; a resume whose recorded folder,
    in `run_config`, is gone names the run): (class table, data, the --init-from record and weights, or None,
    None)."""
    main = distributed.is_main()
    recorded = resume and ((run_config or {}).get("data") or {}).get("root") == cfg.data.root
    if recorded and not Path(cfg.data.root).is_dir():  # the folder the run recorded is gone (no --data): say so
        raise runs.missing_data(run_dir, cfg.data.root)
    source = open_source(cfg.data.root, cfg.data.format)  # opened once: each split's folder is walked once
    classes = resolve_classes(cfg, source=source)  # the data's class table; model.num_classes from it when null
    if resume and not (run_dir / LAST).is_file():  # stopped before its first checkpoint: start as it started
        init_from = (runs.read_status(run_dir).get("init_from") or {}).get("path")
    data = open_train_data(cfg, run_dir, resume, source)
    init_record, init = runs.init_weights(init_from, cfg) if init_from is not None else (None, None)
    _lock(lock, device, create=not resume)  # before the first file is written or removed
    if main and not resume:
        runs.create_run(run_dir, cfg, overwrite, classes=classes,
                        fields={runs.DATA_AS_GIVEN: given} | ({"init_from": init_record} if init_record else {}))
    if main and data.split is not None and (not resume or runs.read_labelled(run_dir) is None):
        runs.write_labelled(run_dir, data.split.paths(data.split.labelled))  # what a resume trains on
    return classes, data, init_record, init


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


def _seed_global_rngs(seed: int) -> None:
    """Seed every global RNG a checkpoint saves (torch's, Python's, NumPy's) from train.seed: two runs of one
    seed save the same states, and an augmentation or library that draws from NumPy repeats too."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy takes 0 .. 2**32 - 1


def _start(cfg: Config, run_dir: Path, device: torch.device, run_config: dict[str, Any] | None,
           train_set: Dataset, resume: bool, init: dict[str, Any] | None = None) -> tuple[TrainState, Tensor | None]:
    """The training state, from last.pt when the run has one (else fresh, seeded, its networks in `init` loaded
    from --init-from), and the class weights."""
    _seed_global_rngs(cfg.train.seed)
    state = TrainState(cfg, device, run_config)
    for net, weights in (init or {}).items():  # G, F, D: copied into the parameters (device, memory format kept)
        getattr(state.models, net).load_state_dict(weights)
    distributed.broadcast_parameters(state.models)  # identical start on every rank
    if distributed.rank() > 0:  # its own noise draws; rank 0 keeps the single-process streams
        torch.manual_seed(cfg.train.seed + distributed.rank())
    loaded = resume and (run_dir / LAST).is_file()  # a run killed before its first checkpoint starts anew
    if loaded:
        state.load(run_dir / LAST)
    class_weights = enet_weights(cfg, train_set, run_dir, device)
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
            if fake is not None:  # None at gamma = 1: no backward cycle, no D_X step
                losses |= discriminator_step(models, state.opt_d, image, fake, state.pool, state.amp)
            if segmentation is not None:
                losses |= discriminator_y_step(models, state.opt_dy, labels if backward is None else backward,
                                               segmentation, state.pool_y, state.amp)
        elif models.is_cycle and p.step < cfg.optim.f_warmup_iters:  # F alone on labels -> image first
            losses = f_warmup_step(models, state.opt_g, image, labels, state.amp)
        elif models.is_cycle:
            losses, fake = generator_step(models, state.opt_g, image, labels, cfg.loss, class_weights, state.amp,
                                          backward)
            if fake is not None:  # None at gamma = 1: no backward cycle, no D_X step
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
    image, labels = next(iter(epoch_batches(train_set, cfg, state.progress, 1)))
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
    values = {f"val/{k}": metrics[k] for k in ("miou", "psnr_db", "snr_db") if metrics[k] is not None}
    log.log(p.step, epoch, values)
    log.line(p.step, epoch, values, validation=True)
    log.pace.pause_ended()  # the next iterations per second count training, not this validation
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
    device = resolve_device(cfg.train.device, "train.device")
    if distributed.init_from_env(device.type) and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank())  # torchrun: one GPU per process
    return device


def _checkpoint_at_epoch_end(cfg: Config, p: Progress, validated: bool, total: int) -> bool:
    """Whether last.pt is written at this epoch end: at the start and the end of the run, after a validation,
    where an epoch's copy is kept (train.keep_checkpoints) and with train.checkpoint_every 0 (epoch ends only);
    otherwise the step checkpoints every train.checkpoint_every iterations suffice. A resume from a step checkpoint
    closes the epoch it ended (the same schedule step), so skipping changes no result; it saves short epochs
    (a few labelled images) a checkpoint write per handful of iterations."""
    kept = _keeps_copy(cfg.train.keep_checkpoints, p, cfg.train.keep_every)
    return p.step == 0 or p.step >= total or validated or kept or not cfg.train.checkpoint_every


def _keeps_copy(keep: int, progress: Progress, every: int) -> bool:
    """Whether this epoch end keeps a copy of last.pt: every `every`-th epoch when `keep` > 0."""
    return keep > 0 and progress.batch_in_epoch == 0 and progress.step > 0 and progress.epoch % every == 0


def _retain(run_dir: Path, keep: int, progress: Progress, every: int = 1) -> None:
    """Keep a copy of last.pt at the end of every `every`-th epoch, the last `train.keep_checkpoints` of them
    (0 keeps none)."""
    if not _keeps_copy(keep, progress, every) or not distributed.is_main():
        return
    runs.copy_checkpoint(run_dir / LAST, run_dir / f"epoch_{progress.epoch:04d}.pt")  # never through a link
    for old in sorted(run_dir.glob("epoch_*.pt"))[:-keep]:
        old.unlink()
