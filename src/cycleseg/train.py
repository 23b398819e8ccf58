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
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from cycleseg.checkpoint import CHECKPOINT_NAME, save_checkpoint
from cycleseg.config import Config
from cycleseg.data import BACKGROUND, CityscapesDataset
from cycleseg.errors import RunError
from cycleseg.evaluate import evaluate_models, write_json
from cycleseg.losses import (
    GeneratorTerms,
    adversarial_loss,
    discriminator_loss,
    generator_loss,
    image_reconstruction_loss,
    segmentation_loss,
    segmentation_reconstruction_loss,
)
from cycleseg.models import Models, build_models, resolve_device
from cycleseg.pool import ImagePool

__all__ = ["discriminator_step", "generator_step", "lr_factor", "plain_step", "train"]


def lr_factor(epoch: int, epochs: int, decay_start_epoch: int) -> float:
    """LR multiplier of epoch `epoch` (0-based): 1 before decay_start_epoch, then linear to 0 at `epochs`.

    The paper: 200 epochs, constant for 100, so epoch 100 -> 1.0, 150 -> 0.5, 199 -> 0.01.
    """
    if epoch < decay_start_epoch:
        return 1.0
    return max(0.0, (epochs - epoch) / (epochs - decay_start_epoch))


def generator_step(models: Models, opt_g: torch.optim.Optimizer, image: Tensor, labels: Tensor,
                   cfg: Config) -> tuple[dict[str, Tensor], Tensor]:
    """Table 1 steps 2-4: both cycles, J_gen, and an update of G and F with D_X frozen.

    Args:
        image: x_bar (B, 3, H, W) in [-1, 1]; labels: y_bar as (B, H, W) class indices.
    Returns:
        the loss terms (detached scalars) and the synthetic image x = F(y_bar) (B, 3, H, W), detached,
        for the discriminator step.
    """
    ignore = BACKGROUND if cfg.loss.ignore_background else -100
    models.D.requires_grad_(False)  # D_X is fixed during the generator update (Table 1, step 4)

    logits, _noisy, reconstruction = models.forward_cycle(image)  # forward cycle: x -> y_hat -> y_tilde -> x_rec
    fake, logits_rec = models.backward_cycle(labels)  # backward cycle: y -> x -> y_rec
    terms = GeneratorTerms(
        seg=segmentation_loss(logits, labels, ignore),
        rec_x=image_reconstruction_loss(reconstruction, image),
        adv=adversarial_loss(models.D(fake)),
        rec_y=segmentation_reconstruction_loss(logits_rec, labels, ignore),
    )
    loss = generator_loss(terms, cfg.loss.alpha, cfg.loss.beta, cfg.loss.gamma)
    _check_finite(loss, "J_gen")

    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()
    models.D.requires_grad_(True)

    logged = {"loss/G/total": loss, "loss/G/seg": terms.seg, "loss/G/rec_x": terms.rec_x,
              "loss/G/adv": terms.adv, "loss/G/rec_y": terms.rec_y}
    return {k: v.detach() for k, v in logged.items()}, fake.detach()


def discriminator_step(models: Models, opt_d: torch.optim.Optimizer, image: Tensor, fake: Tensor,
                       pool: ImagePool) -> dict[str, Tensor]:
    """Table 1 steps 5-6: J_disc on a real image and one from the history pool; update D_X only.

    `fake` is already detached, so no gradient reaches G or F: they stay fixed in this step.
    """
    d_real = models.D(image)
    d_fake = models.D(pool.query(fake))
    loss = discriminator_loss(d_real, d_fake)
    _check_finite(loss, "J_disc")
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    return {"loss/D/total": loss.detach()}


def plain_step(models: Models, opt_g: torch.optim.Optimizer, image: Tensor, labels: Tensor,
               cfg: Config) -> dict[str, Tensor]:
    """The plain ERFNet baseline: one update of G on J_seg alone."""
    ignore = BACKGROUND if cfg.loss.ignore_background else -100
    loss = segmentation_loss(models.G(image), labels, ignore)
    _check_finite(loss, "J_seg")
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()
    return {"loss/G/seg": loss.detach()}


def train(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """Train the model of `cfg` into `run_dir`; returns the final validation metrics (also in metrics.json)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    torch.manual_seed(cfg.train.seed)
    device = resolve_device(cfg.train.device)

    train_loader = _loader(cfg, "train", shuffle=True)
    val_loader = _loader(cfg, "val", shuffle=False)
    models = build_models(cfg.model, cfg.noise).to(device)
    adam = {"lr": cfg.optim.lr, "betas": (cfg.optim.beta1, cfg.optim.beta2)}
    generator_params = list(models.G.parameters()) + (list(models.F.parameters()) if models.is_cycle else [])
    opt_g = torch.optim.Adam(generator_params, **adam)
    opt_d = torch.optim.Adam(models.D.parameters(), **adam) if models.is_cycle else None
    optimizers = [o for o in (opt_g, opt_d) if o is not None]
    schedule = lambda epoch: lr_factor(epoch, cfg.optim.epochs, cfg.optim.decay_start_epoch)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in optimizers]
    pool = ImagePool(cfg.optim.pool_size, seed=cfg.train.seed)

    total = cfg.optim.epochs * len(train_loader)
    if cfg.train.max_iters is not None:
        total = min(total, cfg.train.max_iters)
    logger = _RunLogger(run_dir)
    bar = tqdm(total=total, desc=cfg.name, unit="it", disable=not cfg.train.progress, dynamic_ncols=True)
    step, metrics, start = 0, {}, time.time()
    try:
        for epoch in range(cfg.optim.epochs):
            models.train()
            for image, labels in train_loader:
                image, labels = image.to(device), labels.to(device)
                if models.is_cycle:
                    losses, fake = generator_step(models, opt_g, image, labels, cfg)
                    losses |= discriminator_step(models, opt_d, image, fake, pool)
                else:
                    losses = plain_step(models, opt_g, image, labels, cfg)
                step += 1
                bar.update(1)
                if step % cfg.train.log_every == 0 or step == total:
                    values = {k: float(v) for k, v in losses.items()}
                    values["lr"] = opt_g.param_groups[0]["lr"]
                    logger.log(step, epoch, values)
                    bar.set_postfix({k.split("/")[-1] if k != "loss/D/total" else "D": f"{v:.3g}"
                                     for k, v in values.items() if k != "loss/G/total"})
                if step >= total:
                    break
            for s in schedulers:
                s.step()
            last = step >= total or epoch == cfg.optim.epochs - 1
            if last or (cfg.train.eval_every and (epoch + 1) % cfg.train.eval_every == 0):
                metrics = evaluate_models(models, val_loader, device, seed=cfg.train.seed)
                logger.log(step, epoch, {f"val/{k}": v for k, v in metrics.items()
                                         if k in ("miou", "psnr_db", "snr_db") and v is not None})
            save_checkpoint(run_dir / CHECKPOINT_NAME, {
                "config": cfg.to_dict(), "models": models.state_dict(),
                "optimizers": [o.state_dict() for o in optimizers], "pool": pool.state_dict(),
                "epoch": epoch + 1, "step": step,
            })
            if last:
                break
    finally:
        bar.close()
        logger.close()
    metrics = {**metrics, "epochs": epoch + 1, "iterations": step, "train_seconds": round(time.time() - start, 1)}
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def _loader(cfg: Config, split: str, shuffle: bool) -> DataLoader:
    size = (cfg.data.height, cfg.data.width)
    dataset = CityscapesDataset(cfg.data.root, split, size)
    limit = cfg.data.max_train_images if split == "train" else cfg.data.max_val_images
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    return DataLoader(
        dataset,
        batch_size=cfg.optim.batch_size,
        shuffle=shuffle,
        num_workers=cfg.data.num_workers,
        generator=torch.Generator().manual_seed(cfg.train.seed),
        pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.data.num_workers > 0,
    )


def _check_finite(loss: Tensor, name: str) -> None:
    if not torch.isfinite(loss):
        raise RunError(f"{name} is {float(loss)}: training diverged; lower optim.lr or check the data "
                       "(the last checkpoint was kept)")


class _RunLogger:
    """Appends scalars to run_dir/log.jsonl and to TensorBoard event files in run_dir."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported here: slow import, only needed to train

        self.jsonl = open(run_dir / "log.jsonl", "a")  # noqa: SIM115 -- kept open for the whole run
        self.tb = SummaryWriter(log_dir=str(run_dir))

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
