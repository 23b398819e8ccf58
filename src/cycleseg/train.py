"""Training: the per-batch protocol of the paper's Table 1, and the plain ERFNet baseline (J_seg alone).

    1. load inputs x_bar, y_bar                       (the DataLoader)
    2. outputs of G, F, D_X, noise injection          (generator_step, first half)
    3. generator loss J_gen (eq. 7)                   (generator_step)
    4. update G and F, D_X frozen                     (generator_step)
    5. discriminator loss J_disc (eq. 8), image pool  (discriminator_step)
    6. update D_X, G and F frozen                     (discriminator_step)

`train()` wires these into epochs with Adam (lr 2e-4, betas 0.5/0.999), the constant-then-linear-decay LR
schedule, logging (log.jsonl, TensorBoard), validation and the checkpoint.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from cycleseg import __version__, distributed
from cycleseg.cache import class_pixel_counts, open_dataset
from cycleseg.checkpoint import BEST, LAST, check_compatible, load_checkpoint, save_checkpoint
from cycleseg.config import Config
from cycleseg.data import BACKGROUND
from cycleseg.datacheck import require_valid
from cycleseg.errors import Interrupted, RunError
from cycleseg.evaluate import evaluate_models, write_json
from cycleseg.losses import (
    GeneratorTerms,
    adversarial_loss,
    discriminator_loss,
    enet_class_weights,
    generator_loss,
    image_reconstruction_loss,
    segmentation_loss,
    segmentation_reconstruction_loss,
)
from cycleseg.models import Models, build_models, resolve_device
from cycleseg.pool import ImagePool
from cycleseg.precision import FP32, Precision, make_adam, resolve_precision, to_memory_format

__all__ = ["discriminator_step", "generator_step", "lr_factor", "plain_step", "train"]


def lr_factor(epoch: int, epochs: int, decay_start_epoch: int) -> float:
    """LR multiplier of epoch `epoch` (0-based): 1 before decay_start_epoch, then linear to 0 at `epochs`.

    The paper: 200 epochs, constant for 100, so epoch 100 -> 1.0, 150 -> 0.5, 199 -> 0.01.
    """
    if epoch < decay_start_epoch:
        return 1.0
    return max(0.0, (epochs - epoch) / (epochs - decay_start_epoch))


def generator_step(models: Models, opt_g: torch.optim.Optimizer, image: Tensor, labels: Tensor,
                   cfg: Config, class_weights: Tensor | None = None,
                   amp: Precision = FP32) -> tuple[dict[str, Tensor], Tensor]:
    """Table 1 steps 2-4: both cycles, J_gen, and an update of G and F with D_X frozen.

    Args:
        image: x_bar (B, 3, H, W) in [-1, 1]; labels: y_bar as (B, H, W) class indices.
        class_weights: (S,) weights of both cross entropies (loss.class_weights=enet); None: the paper's loss.
        amp: mixed precision of the networks (train.precision); the losses are computed in fp32.
    Returns:
        the loss terms (detached scalars) and the synthetic image x = F(y_bar) (B, 3, H, W), detached,
        for the discriminator step.
    """
    ignore = BACKGROUND if cfg.loss.ignore_background else -100
    models.D.requires_grad_(False)  # D_X is fixed during the generator update (Table 1, step 4)
    try:
        with amp.autocast():
            logits, _noisy, reconstruction = models.forward_cycle(image)  # forward: x -> y_hat -> y_tilde -> x_rec
            fake, logits_rec = models.backward_cycle(labels)  # backward cycle: y -> x -> y_rec
            terms = GeneratorTerms(
                seg=segmentation_loss(logits, labels, ignore, class_weights),
                rec_x=image_reconstruction_loss(reconstruction, image),
                adv=adversarial_loss(models.D(fake).float()),
                rec_y=segmentation_reconstruction_loss(logits_rec, labels, ignore, class_weights),
            )
            loss = generator_loss(terms, cfg.loss.alpha, cfg.loss.beta, cfg.loss.gamma)
        _check_loss(loss, "J_gen")
        _backward(loss, opt_g, amp)
    finally:  # a skipped (non-finite) step must not leave D frozen for the discriminator step
        models.D.requires_grad_(True)
    _step(loss, opt_g, "J_gen", amp)

    logged = {"loss/G/total": loss, "loss/G/seg": terms.seg, "loss/G/rec_x": terms.rec_x,
              "loss/G/adv": terms.adv, "loss/G/rec_y": terms.rec_y}
    return {k: v.detach() for k, v in logged.items()}, fake.detach()


def discriminator_step(models: Models, opt_d: torch.optim.Optimizer, image: Tensor, fake: Tensor,
                       pool: ImagePool, amp: Precision = FP32) -> dict[str, Tensor]:
    """Table 1 steps 5-6: J_disc on a real image and one from the history pool; update D_X only.

    `fake` is already detached, so no gradient reaches G or F: they stay fixed in this step.
    """
    with amp.autocast():
        d_real = models.D(image).float()
        d_fake = models.D(pool.query(fake)).float()
        loss = discriminator_loss(d_real, d_fake)
    _check_loss(loss, "J_disc")
    _backward(loss, opt_d, amp)
    _step(loss, opt_d, "J_disc", amp)
    return {"loss/D/total": loss.detach()}


def plain_step(models: Models, opt_g: torch.optim.Optimizer, image: Tensor, labels: Tensor,
               cfg: Config, class_weights: Tensor | None = None, amp: Precision = FP32) -> dict[str, Tensor]:
    """The plain ERFNet baseline: one update of G on J_seg alone."""
    ignore = BACKGROUND if cfg.loss.ignore_background else -100
    with amp.autocast():
        loss = segmentation_loss(models.G(image).float(), labels, ignore, class_weights)
    _check_loss(loss, "J_seg")
    _backward(loss, opt_g, amp)
    _step(loss, opt_g, "J_seg", amp)
    return {"loss/G/seg": loss.detach()}


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint so that a resumed run continues exactly."""

    epoch: int = 0  # current epoch, 0-based
    batch_in_epoch: int = 0  # batches of `epoch` already trained
    step: int = 0  # iterations done in total
    best_miou: float | None = None
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0


def train(cfg: Config, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train the model of `cfg` into `run_dir`; returns the final validation metrics (also in metrics.json).

    With resume=True, continue from run_dir/last.pt exactly where it stopped (mid-epoch included): weights,
    optimizer and LR-schedule states, image pool, RNG states and the data order are all restored.
    """
    run_dir = Path(run_dir)
    device = resolve_device(cfg.train.device)
    if distributed.init_from_env(device.type) and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank())  # torchrun: one GPU per process
    main = distributed.is_main()  # rank 0 writes files, logs and shows progress
    run_dir.mkdir(parents=True, exist_ok=True)
    if main and not resume:  # a resumed run keeps its config; overrides on resume (train.max_iters) are for now
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if main:
        write_json(run_dir / "versions.json", software_versions())
    torch.manual_seed(cfg.train.seed)

    if cfg.data.check != "off":  # minutes into a run is a bad time to find a missing label
        require_valid(cfg.data.root, ("train", "val"), full=cfg.data.check == "full", progress=cfg.train.progress)
    train_set = _dataset(cfg, "train")
    val_set = _dataset(cfg, "val")
    if distributed.is_distributed():  # each rank validates its share; the confusion matrices are summed
        val_set = Subset(val_set, range(distributed.rank(), len(val_set), distributed.world_size()))
    val_loader = DataLoader(val_set, batch_size=cfg.optim.batch_size, num_workers=cfg.data.num_workers,
                            pin_memory=torch.cuda.is_available())
    class_weights = _class_weights(cfg, train_set, run_dir)
    class_weights = class_weights.to(device) if class_weights is not None else None
    amp = resolve_precision(cfg.train.precision, device)
    models = build_models(cfg.model, cfg.noise).to(device)
    if cfg.train.channels_last:
        models.to(memory_format=torch.channels_last)
    adam = {"lr": cfg.optim.lr, "betas": (cfg.optim.beta1, cfg.optim.beta2), "kernel": cfg.optim.kernel,
            "device": device}
    generator_params = list(models.G.parameters()) + (list(models.F.parameters()) if models.is_cycle else [])
    opt_g = make_adam(generator_params, **adam)
    opt_d = make_adam(list(models.D.parameters()), **adam) if models.is_cycle else None
    optimizers = [o for o in (opt_g, opt_d) if o is not None]
    schedule = lambda epoch: lr_factor(epoch, cfg.optim.epochs, cfg.optim.decay_start_epoch)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in optimizers]
    distributed.broadcast_parameters(models)  # identical start on every rank
    if distributed.rank() > 0:  # its own noise draws and image pool; rank 0 keeps the single-process streams
        torch.manual_seed(cfg.train.seed + distributed.rank())
    pool = ImagePool(cfg.optim.pool_size, seed=cfg.train.seed + distributed.rank())
    progress = Progress()
    parts = {"models": models, "optimizers": optimizers, "schedulers": schedulers, "pool": pool, "amp": amp}
    if resume:
        progress = restore_checkpoint(run_dir / LAST, cfg, parts, device)
        distributed.broadcast_parameters(models)
    if cfg.train.compile:  # in place: state_dict keys stay those of the plain modules
        for net in (models.G, models.F, models.D):
            if net is not None:
                net.compile()

    batches_per_epoch = math.ceil(_shard_size(len(train_set)) / cfg.optim.batch_size)
    total = cfg.optim.epochs * batches_per_epoch
    if cfg.train.max_iters is not None:
        total = min(total, cfg.train.max_iters)
    logger = _RunLogger(run_dir, resume_step=progress.step if resume else None) if main else _NoLogger()
    bar = tqdm(total=total, initial=progress.step, desc=cfg.name, unit="it",
               disable=not (cfg.train.progress and main), dynamic_ncols=True)
    world = distributed.world_size()
    if world > 1 and main:
        tqdm.write(f"{cfg.name}: {world} processes, batch {cfg.optim.batch_size} per process, global batch "
                   f"{world * cfg.optim.batch_size}, {batches_per_epoch} iterations per epoch")
    metrics, start = {}, time.time()

    def checkpoint(name: str = LAST) -> None:
        if main:
            save_checkpoint(run_dir / name, _checkpoint_state(cfg, parts, progress))

    with _StopSignals() as stop:
        try:
            while progress.step < total and progress.epoch < cfg.optim.epochs:
                models.train()
                for image, labels in _epoch_loader(train_set, cfg, progress):
                    image = to_memory_format(image.to(device, non_blocking=True), cfg.train.channels_last)
                    labels = labels.to(device, non_blocking=True)
                    try:
                        if models.is_cycle:
                            losses, fake = generator_step(models, opt_g, image, labels, cfg, class_weights, amp)
                            losses |= discriminator_step(models, opt_d, image, fake, pool, amp)
                        else:
                            losses = plain_step(models, opt_g, image, labels, cfg, class_weights, amp)
                        distributed.broadcast_buffers(models)  # BatchNorm statistics as on rank 0, like DDP
                        progress.nonfinite_in_a_row = 0
                    except NonFiniteError as e:
                        losses = {}
                        progress.nonfinite_in_a_row += 1
                        progress.nonfinite_total += 1
                        logger.log(progress.step + 1, progress.epoch, {"nonfinite_skipped": progress.nonfinite_total})
                        if progress.nonfinite_in_a_row >= cfg.train.max_nonfinite:
                            raise RunError(f"{e} in {progress.nonfinite_in_a_row} iterations in a row (step "
                                           f"{progress.step + 1}); stopped, {run_dir / LAST} holds the last good "
                                           "state; lower optim.lr or check the data") from None
                    progress.step += 1
                    progress.batch_in_epoch += 1
                    bar.update(1)
                    if losses and (progress.step % cfg.train.log_every == 0 or progress.step == total):
                        values = {k: float(v) for k, v in losses.items()} | {"lr": opt_g.param_groups[0]["lr"]}
                        logger.log(progress.step, progress.epoch, values)
                        bar.set_postfix({_short(k): f"{v:.3g}" for k, v in values.items() if k != "loss/G/total"})
                    if cfg.train.checkpoint_every and progress.step % cfg.train.checkpoint_every == 0:
                        checkpoint()
                    if distributed.any_rank(stop.signum is not None, device):  # all ranks stop at one step
                        stop.signum = stop.signum or signal.SIGTERM
                        checkpoint()
                        raise Interrupted(f"stopped by {signal.Signals(stop.signum).name} at step {progress.step}; "
                                          f"checkpoint {run_dir / LAST}; continue with: cycleseg train --resume "
                                          f"{run_dir}", stop.signum)
                    if progress.step >= total and progress.batch_in_epoch < batches_per_epoch:
                        break  # stopped mid-epoch (train.max_iters); at an epoch's end, close the epoch below
                else:  # the epoch ran to its end
                    for s in schedulers:
                        s.step()
                    progress.epoch += 1
                    progress.batch_in_epoch = 0
                finished = progress.step >= total or progress.epoch >= cfg.optim.epochs
                every = cfg.train.eval_every
                if finished or (every and progress.batch_in_epoch == 0 and progress.epoch % every == 0):
                    metrics = evaluate_models(models, val_loader, device, seed=cfg.train.seed,
                                              distributed=distributed.is_distributed())
                    logger.log(progress.step, progress.epoch - 1, {f"val/{k}": v for k, v in metrics.items()
                                                                  if k in ("miou", "psnr_db", "snr_db") and v is not None})
                    if metrics["miou"] is not None and (progress.best_miou is None
                                                        or metrics["miou"] > progress.best_miou):
                        progress.best_miou = metrics["miou"]
                        checkpoint(BEST)
                checkpoint()
                if main:
                    _retain(run_dir, cfg, progress)
        finally:
            bar.close()
            logger.close()
    metrics = {**metrics, "epochs": progress.epoch, "iterations": progress.step,
               "nonfinite_skipped": progress.nonfinite_total, "train_seconds": round(time.time() - start, 1)}
    if world > 1:
        hashes = distributed.check_in_sync(models)
        metrics |= {"world_size": world, "global_batch": world * cfg.optim.batch_size, "parameter_sha256": hashes}
        if len(set(hashes)) > 1:
            raise RunError(f"the {world} processes ended with different parameters; please report this as a bug")
    if main:
        write_json(run_dir / "metrics.json", metrics)
    return metrics


def software_versions() -> dict[str, str]:
    """What the run was made with, for the report: package, Python, torch, NumPy, platform, accelerator."""
    import platform

    return {"cycleseg": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(),
            "cuda": torch.version.cuda or "none",
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"}


def _checkpoint_state(cfg: Config, parts: dict[str, Any], progress: Progress) -> dict[str, Any]:
    models = parts["models"]
    for name, p in models.named_parameters():
        if not torch.isfinite(p).all():  # never let a checkpoint carry NaN weights
            raise RunError(f"parameter {name} is not finite; not writing a checkpoint (the last one is kept)")
    return {
        "config": cfg.to_dict(),
        "model": {"kind": models.kind, "num_classes": models.num_classes},
        "models": models.state_dict(),
        "optimizers": [o.state_dict() for o in parts["optimizers"]],
        "schedulers": [s.state_dict() for s in parts["schedulers"]],
        "pool": parts["pool"].state_dict(),
        "scalers": [parts["amp"].scaler(o).state_dict() for o in parts["optimizers"]] if parts["amp"].uses_scaler
        else [],
        "progress": asdict(progress),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": np.random.get_state(),
        },
    }


def restore_checkpoint(path: Path, cfg: Config, parts: dict[str, Any], device: torch.device) -> Progress:
    """Load a checkpoint written by train() into freshly built parts; returns the saved Progress."""
    state = load_checkpoint(path, map_location=device)
    check_compatible(state, cfg.model.kind, cfg.model.num_classes, path)
    try:
        parts["models"].load_state_dict(state["models"])
        for o, s in zip(parts["optimizers"], state["optimizers"], strict=True):
            o.load_state_dict(s)
        for sch, s in zip(parts["schedulers"], state["schedulers"], strict=True):
            sch.load_state_dict(s)
        parts["pool"].load_state_dict(state["pool"])
        amp = parts.get("amp")
        if amp is not None and amp.uses_scaler and state.get("scalers"):
            for o, s in zip(parts["optimizers"], state["scalers"], strict=True):
                amp.scaler(o).load_state_dict(s)
        progress = Progress(**state["progress"])
        rng = state["rng"]
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise RunError(f"{path}: checkpoint does not match this run ({str(e).splitlines()[0]})") from None
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    return progress


def _retain(run_dir: Path, cfg: Config, progress: Progress) -> None:
    """Keep a copy of last.pt per epoch, `train.keep_checkpoints` of them (0 keeps none)."""
    keep = cfg.train.keep_checkpoints
    if keep == 0 or progress.batch_in_epoch != 0:
        return
    shutil.copyfile(run_dir / LAST, run_dir / f"epoch_{progress.epoch:04d}.pt")
    for old in sorted(run_dir.glob("epoch_*.pt"))[:-keep]:
        old.unlink()


class _StopSignals:
    """Turns SIGINT and SIGTERM into a flag that the loop checks after each iteration (a safe point)."""

    def __enter__(self) -> _StopSignals:  # noqa: PYI034
        self.signum: int | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _short(key: str) -> str:
    return "D" if key == "loss/D/total" else key.split("/")[-1]


def _dataset(cfg: Config, split: str) -> Dataset:
    """The split from `cycleseg prepare`'s cache when there is one (data.cache), else from the PNGs."""
    dataset = open_dataset(cfg.data.root, split, (cfg.data.height, cfg.data.width), cfg.data.cache,
                           cfg.data.cache_dir, progress=cfg.train.progress)
    limit = cfg.data.max_train_images if split == "train" else cfg.data.max_val_images
    return Subset(dataset, range(limit)) if limit is not None and limit < len(dataset) else dataset


def _class_weights(cfg: Config, train_set: Dataset, run_dir: Path) -> Tensor | None:
    """loss.class_weights=enet: (S,) weights 1 / ln(1.02 + p_c) from the training labels' class frequencies.

    Computed the same way at every start (a resumed run included), from the cache's counts when there is one;
    written to RUN_DIR/class_weights.json.
    """
    if cfg.loss.class_weights == "none":
        return None
    counts = torch.from_numpy(class_pixel_counts(train_set, progress=cfg.train.progress))
    if cfg.model.num_classes != len(counts):
        raise RunError(f"loss.class_weights=enet needs model.num_classes={len(counts)} (the Cityscapes trainIds), "
                       f"got {cfg.model.num_classes}")
    weights = enet_class_weights(counts)
    write_json(run_dir / "class_weights.json", {"kind": cfg.loss.class_weights, "pixels": counts.tolist(),
                                                "weights": weights.tolist()})
    return weights


def _shard_size(n: int) -> int:
    """Images per rank and epoch: every rank gets the same count (the order wraps around, as
    DistributedSampler pads), so all ranks run the same number of iterations."""
    return math.ceil(n / distributed.world_size())


def _epoch_loader(dataset: Dataset, cfg: Config, progress: Progress) -> DataLoader:
    """The rest of the current epoch: a shuffle fixed by (seed, epoch), minus the batches already trained.

    The order depends on nothing else, so a run resumed mid-epoch sees exactly the batches it would have.
    With several processes, rank r takes every world_size-th image of that order, starting at r.
    """
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.train.seed * 100_003
                                                                                  + progress.epoch))
    world = distributed.world_size()
    if world > 1:
        order = order.repeat(2)[: _shard_size(len(dataset)) * world][distributed.rank()::world]
    remaining = order[progress.batch_in_epoch * cfg.optim.batch_size:].tolist()
    return DataLoader(
        Subset(dataset, remaining),
        batch_size=cfg.optim.batch_size,
        num_workers=cfg.data.num_workers,
        # An explicit generator keeps the DataLoader from drawing its worker seed from the global RNG.
        generator=torch.Generator().manual_seed(cfg.train.seed),
        pin_memory=torch.cuda.is_available(),
    )


class NonFiniteError(RuntimeError):
    """A loss or gradient is NaN or infinite; the update was skipped."""


def _check_loss(loss: Tensor, name: str) -> None:
    """Skip the backward pass of a NaN/inf loss. Not with several processes: there every rank must reach the
    gradient all_reduce, and the NaN shows in the averaged gradients on all ranks alike."""
    if not distributed.is_distributed():
        _check_finite(loss, name)


def _check_finite(loss: Tensor | None, name: str, params: list[Tensor] | None = None) -> None:
    if loss is not None and not torch.isfinite(loss):
        raise NonFiniteError(f"{name} is {float(loss.detach())}")
    if params is not None:
        grads = [p.grad for p in params if p.grad is not None]
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            raise NonFiniteError(f"gradient of {name} is not finite")


def _backward(loss: Tensor, optimizer: torch.optim.Optimizer, amp: Precision) -> None:
    optimizer.zero_grad(set_to_none=True)
    (amp.scaler(optimizer).scale(loss) if amp.uses_scaler else loss).backward()


def _step(loss: Tensor, optimizer: torch.optim.Optimizer, name: str, amp: Precision) -> None:
    """The update, unless a gradient is NaN/inf: then NonFiniteError (fp32, bf16), or, with fp16's scaler,
    a skipped step and a smaller loss scale (overflows are expected there while the scale settles)."""
    distributed.average_gradients(_params(optimizer))  # data parallel: every rank applies the mean gradient
    if amp.uses_scaler:
        scaler = amp.scaler(optimizer)
        scaler.step(optimizer)
        scaler.update()
        return
    _check_finite(None if distributed.is_distributed() else loss, name, _params(optimizer))
    optimizer.step()


def _params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


class _NoLogger:
    """What ranks other than 0 log: nothing."""

    def log(self, step: int, epoch: int, values: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class _RunLogger:
    """Appends scalars to run_dir/log.jsonl and to TensorBoard event files in run_dir."""

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported here: slow import, only needed to train

        path = run_dir / "log.jsonl"
        if resume_step is None:
            path.unlink(missing_ok=True)
        elif path.exists():  # drop what was logged after the checkpoint: those steps are trained again
            kept = [line for line in path.read_text().splitlines(keepends=True)
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            path.write_text("".join(kept))
        self.jsonl = open(path, "a")  # noqa: SIM115 -- kept open for the whole run
        self.tb = SummaryWriter(log_dir=str(run_dir), purge_step=resume_step)

    def log(self, step: int, epoch: int, values: dict[str, float]) -> None:
        clean = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
        self.jsonl.write(json.dumps({"step": step, "epoch": epoch, **clean}) + "\n")
        self.jsonl.flush()
        for k, v in values.items():
            if math.isfinite(v):
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.jsonl.close()
        self.tb.close()
