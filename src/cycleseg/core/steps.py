"""The per-batch protocol of the paper's Table 1, and the plain ERFNet baseline (J_seg alone). Plain torch.

    1. load inputs x_bar, y_bar                       (the caller's DataLoader)
    2. outputs of G, F, D_X, noise injection          (generator_step, first half)
    3. generator loss J_gen (eq. 7)                   (generator_step)
    4. update G and F, D_X frozen                     (generator_step)
    5. discriminator loss J_disc (eq. 8), image pool  (discriminator_step)
    6. update D_X, G and F frozen                     (discriminator_step)

A semi-supervised iteration (docs/guide/semi-supervised-training.md) keeps that order and adds an unlabelled batch:
semi_generator_step (steps 2-4, D_X and D_Y frozen), discriminator_step (D_X), then discriminator_y_step (D_Y).

Each step takes the loss settings (`LossConfig`), not the whole config; `lr_factor` is the LR schedule.
A NaN or infinite loss or gradient skips the update and raises NonFiniteError.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from cycleseg.config import LossConfig
from cycleseg.core import distributed
from cycleseg.core.losses import (
    GeneratorTerms,
    adversarial_loss,
    discriminator_loss,
    generator_loss,
    image_reconstruction_loss,
    segmentation_loss,
    segmentation_reconstruction_loss,
)
from cycleseg.core.models import Models, one_hot
from cycleseg.core.pool import ImagePool
from cycleseg.core.precision import FP32, Precision

__all__ = ["BF16_RTOL", "NonFiniteError", "bf16_agrees", "discriminator_step", "discriminator_y_step",
           "f_warmup_step", "generator_step", "generator_terms", "generator_total", "lr_factor", "plain_step", "runs_backward_cycle", "semi_generator_step", "unlabelled_rec_weight"]


def lr_factor(epoch: int, epochs: int, decay_start_epoch: int) -> float:
    """LR multiplier of epoch `epoch` (0-based): 1 before decay_start_epoch, then linear to 0 at `epochs`.

    The paper: 200 epochs, constant for 100, so epoch 100 -> 1.0, 150 -> 0.5, 199 -> 0.01.
    """
    if epoch < decay_start_epoch:
        return 1.0
    return max(0.0, (epochs - epoch) / (epochs - decay_start_epoch))


def ignore_index(loss: LossConfig, num_classes: int) -> int:
    """The class the cross entropies leave out: with loss.ignore_background the last one (the background / void
    class that void label values map to: Cityscapes' 19), else none (-100)."""
    return num_classes - 1 if loss.ignore_background else -100


def generator_terms(models: Models, image: Tensor, labels: Tensor, loss: LossConfig,
                    class_weights: Tensor | None = None, amp: Precision = FP32,
                    backward_labels: Tensor | None = None) -> tuple[GeneratorTerms, Tensor | None]:
    """Table 1 steps 2-3: both cycles and the four terms of J_gen (eqs. 1-4), and x = F(y_bar) (B, 3, H, W)
    (None at gamma = 1, where the backward cycle is not run: `runs_backward_cycle`).

    With loss.paired_f > 0 also the paired term mean |F(onehot(y)) - x| of the batch's own labels and images
    (the backward cycle's F(onehot(y)) when it runs on them).

    backward_labels: the label maps y_bar of the backward cycle, (B', H, W), when they are not the batch's own
    (data.unpaired_labels); None: `labels`, the paper's paired batch.
    """
    ignore = ignore_index(loss, models.num_classes)
    y_b = labels if backward_labels is None else backward_labels
    with amp.autocast():
        logits, _noisy, reconstruction = models.forward_cycle(image)  # forward: x -> y_hat -> y_tilde -> x_rec
        seg = segmentation_loss(logits, labels, ignore, class_weights)
        rec_x = image_reconstruction_loss(reconstruction, image)
        if runs_backward_cycle(loss):
            fake, logits_rec = models.backward_cycle(y_b)  # backward cycle: y -> x -> y_rec
            adv = adversarial_loss(models.D(fake).float())
            rec_y = segmentation_reconstruction_loss(logits_rec, y_b, ignore, class_weights)
        else:  # gamma = 1: the backward cycle weighs nothing, so it is not run (nor D_X trained)
            fake, adv, rec_y = None, seg.new_zeros(()), seg.new_zeros(())
        terms = GeneratorTerms(seg=seg, rec_x=rec_x, adv=adv, rec_y=rec_y)
        if loss.paired_f > 0:
            painted = (fake if backward_labels is None and fake is not None
                       else models.F(one_hot(labels, models.num_classes)).float())
            terms = terms._replace(paired_f=image_reconstruction_loss(painted, image))
    return terms, fake


def runs_backward_cycle(loss: LossConfig) -> bool:
    """Whether an iteration runs the backward cycle y -> F -> x -> G and D_X's step: not at gamma = 1, where
    J_gen (eq. 7) is the forward cycle's alpha J_seg + (1 - alpha) J_rec_X alone."""
    return loss.gamma < 1.0


def generator_total(terms: GeneratorTerms, loss: LossConfig) -> Tensor:
    """J_gen (eq. 7), plus loss.paired_f * mean |F(onehot(y)) - x| when that weight is set (Mondal et al. 2019)."""
    total = generator_loss(terms, loss.alpha, loss.beta, loss.gamma)
    if terms.paired_f is not None:
        total = total + loss.paired_f * terms.paired_f
    return total


# How far bf16's loss terms may lie from fp32's on one batch (tests/test_precision.py measures up to 7e-4 on
# the first batch). J_adv alone is left out: D_X's outputs start near 0, where bf16's relative rounding reaches
# 10 % while J_adv carries only (1 - gamma) beta = 3 % of J_gen; it counts through J_gen's total.
BF16_RTOL = {"seg": 0.01, "rec_x": 0.01, "rec_y": 0.01, "total": 0.01}


def bf16_agrees(models: Models, image: Tensor, labels: Tensor, loss: LossConfig,
                class_weights: Tensor | None = None) -> tuple[bool, str]:
    """Whether bf16 autocast gives the loss terms of fp32 on this batch, within BF16_RTOL; and the numbers.

    Runs on a copy of the models (their BatchNorm statistics stay untouched) with the RNG forked, so the run
    that follows is the same whether this check ran or not.
    """
    probe = copy.deepcopy(models)
    values = {}
    for amp in (FP32, Precision(image.device.type, torch.bfloat16)):
        with torch.random.fork_rng(devices=[image.device] if image.device.type == "cuda" else []), \
                torch.no_grad():
            torch.manual_seed(0)
            if models.is_cycle:
                terms, _ = generator_terms(probe, image, labels, loss, class_weights, amp)
                total = generator_total(terms, loss)
                values[amp.name] = {"seg": float(terms.seg), "rec_x": float(terms.rec_x),
                                    "rec_y": float(terms.rec_y), "total": float(total)}
            else:
                with amp.autocast():
                    logits = probe.G(image).float()
                values[amp.name] = {"seg": float(segmentation_loss(logits, labels, ignore_index(loss, probe.num_classes),
                                                                  class_weights))}
    diffs = {k: abs(values["bf16"][k] - v) / max(abs(v), 1e-12) for k, v in values["fp32"].items()}
    worst = max(diffs, key=lambda k: diffs[k] / BF16_RTOL[k])
    ok = all(d <= BF16_RTOL[k] for k, d in diffs.items())
    why = (f"bf16 vs fp32 on the first batch: largest relative difference of a loss term {diffs[worst]:.1e} "
           f"({worst}, allowed {BF16_RTOL[worst]:g})")
    return ok, why


def generator_step(models: Models, opt_g: torch.optim.Optimizer, image: Tensor, labels: Tensor,
                   loss: LossConfig, class_weights: Tensor | None = None,
                   amp: Precision = FP32, backward_labels: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """Table 1 steps 2-4: both cycles, J_gen, and an update of G and F with D_X frozen.

    Args:
        image: x_bar (B, 3, H, W) in [-1, 1]; labels: y_bar as (B, H, W) class indices.
        class_weights: (S,) weights of both cross entropies (loss.class_weights=enet); None: the paper's loss.
        amp: mixed precision of the networks (train.precision); the losses are computed in fp32.
        backward_labels: (B', H, W) label maps of the backward cycle (data.unpaired_labels); None: `labels`.
    Returns:
        the loss terms (detached scalars) and the synthetic image x = F(y_bar) (B, 3, H, W), detached,
        for the discriminator step.
    """
    models.D.requires_grad_(False)  # D_X is fixed during the generator update (Table 1, step 4)
    try:
        terms, fake = generator_terms(models, image, labels, loss, class_weights, amp, backward_labels)
        total = generator_total(terms, loss)
        _check_loss(total, "J_gen")
        _backward(total, opt_g, amp)
    finally:  # a skipped (non-finite) step must not leave D frozen for the discriminator step
        models.D.requires_grad_(True)
    _step(total, opt_g, "J_gen", amp)

    logged = {"loss/G/total": total, "loss/G/seg": terms.seg, "loss/G/rec_x": terms.rec_x,
              "loss/G/adv": terms.adv, "loss/G/rec_y": terms.rec_y}
    if terms.paired_f is not None:
        logged["loss/G/paired_f"] = terms.paired_f
    return {k: v.detach() for k, v in logged.items()}, None if fake is None else fake.detach()


def f_warmup_step(models: Models, opt_g: torch.optim.Optimizer, image: Tensor, labels: Tensor,
                  amp: Precision = FP32) -> dict[str, Tensor]:
    """One iteration of F's warm-up (optim.f_warmup_iters): an update of F alone on

        J_warmup = mean |F(onehot(y)) - x|          (labels -> image, the paired backward cycle)

    G is not run and gets no gradient, so the optimizer leaves it (and its Adam moments) untouched; D_X and
    its image pool are not touched either.

    Args:
        image: x (B, 3, H, W) in [-1, 1]; labels: y (B, H, W) class indices.
    """
    with amp.autocast():
        warmup = image_reconstruction_loss(models.F(one_hot(labels, models.num_classes)).float(), image)
    _check_loss(warmup, "J_warmup")
    _backward(warmup, opt_g, amp)
    _step(warmup, opt_g, "J_warmup", amp)
    return {"loss/F/warmup": warmup.detach()}


def discriminator_step(models: Models, opt_d: torch.optim.Optimizer, image: Tensor, fake: Tensor,
                       pool: ImagePool, amp: Precision = FP32) -> dict[str, Tensor]:
    """Table 1 steps 5-6: J_disc on a real image and one from the history pool; update D_X only.

    `fake` is already detached, so no gradient reaches G or F: they stay fixed in this step.
    """
    return {"loss/D/total": _discriminator_update(models.D, image, fake, pool, opt_d, "J_disc", amp)}


def unlabelled_rec_weight(loss: LossConfig) -> float:
    """lambda_u, the weight of J_rec_X on the unlabelled batch: gamma (1 - alpha), that of the labelled batch's
    J_rec_X in J_gen (eq. 7), so that an unlabelled image counts in the forward cycle as much as a labelled one."""
    return loss.gamma * (1 - loss.alpha)


def semi_generator_step(models: Models, opt_g: torch.optim.Optimizer, image: Tensor, labels: Tensor,
                        unlabelled: Tensor, loss: LossConfig, class_weights: Tensor | None = None,
                        amp: Precision = FP32, backward_labels: Tensor | None = None
                        ) -> tuple[dict[str, Tensor], Tensor, Tensor | None]:
    """Table 1 steps 2-4 of a semi-supervised iteration: one update of G and F with D_X and D_Y frozen, on

        J_semi = J_gen(x_l, y_l)                                   (eq. 7 on the labelled batch, unchanged;
                                                                 + loss.paired_f * mean |F(onehot(y_l)) - x_l|)
               + lambda_u * J_rec_X(x_u)                           lambda_u = gamma (1 - alpha)
               + loss.adv_y * J_adv_Y(x_u)                         (only with D_Y)
        J_rec_X(x_u) = mean |F(noise(G(x_u))) - x_u|               (eq. 3 on the unlabelled batch, through the noise)
        J_adv_Y(x_u) = mean (D_Y(softmax(G(x_u))) - 1)^2           (least squares, as eq. 2)

    Args:
        image, labels: the labelled batch x_l (B, 3, H, W) in [-1, 1] and y_l (B, H, W) class indices.
        unlabelled: the unlabelled batch x_u (B_u, 3, H, W) in [-1, 1]; its labels are never needed.
        backward_labels: (B', H, W) label maps of the backward cycle (data.unpaired_labels); None: `labels`.
        class_weights, amp: as generator_step.
    Returns:
        the loss terms (detached scalars: those of generator_step, total = J_semi, plus rec_x_u and adv_y),
        x = F(y_bar) (B', 3, H, W) for D_X's step and softmax(G(x_u)) (B_u, S, H, W) for D_Y's step (None without
        D_Y), both detached.
    """
    discriminators = [d for d in (models.D, models.D_Y) if d is not None]
    for d in discriminators:  # D_X and D_Y are fixed during the generator update (Table 1, step 4)
        d.requires_grad_(False)
    try:
        terms, fake = generator_terms(models, image, labels, loss, class_weights, amp, backward_labels)
        with amp.autocast():
            logits_u, _noisy_u, reconstruction_u = models.forward_cycle(unlabelled)
            rec_x_u = image_reconstruction_loss(reconstruction_u, unlabelled)
            segmentation_u = torch.softmax(logits_u.float(), dim=1)  # (B_u, S, H, W), in fp32 like the losses
            adv_y = adversarial_loss(models.D_Y(segmentation_u).float()) if models.D_Y is not None else None
        total = generator_total(terms, loss) + unlabelled_rec_weight(loss) * rec_x_u
        if adv_y is not None:
            total = total + loss.adv_y * adv_y
        _check_loss(total, "J_semi")
        _backward(total, opt_g, amp)
    finally:  # a skipped (non-finite) step must not leave the discriminators frozen for their steps
        for d in discriminators:
            d.requires_grad_(True)
    _step(total, opt_g, "J_semi", amp)

    logged = {"loss/G/total": total, "loss/G/seg": terms.seg, "loss/G/rec_x": terms.rec_x,
              "loss/G/adv": terms.adv, "loss/G/rec_y": terms.rec_y, "loss/G/rec_x_u": rec_x_u}
    if terms.paired_f is not None:
        logged["loss/G/paired_f"] = terms.paired_f
    if adv_y is not None:
        logged["loss/G/adv_y"] = adv_y
    detached = segmentation_u.detach() if adv_y is not None else None
    return {k: v.detach() for k, v in logged.items()}, None if fake is None else fake.detach(), detached


def discriminator_y_step(models: Models, opt_dy: torch.optim.Optimizer, labels: Tensor, segmentation: Tensor,
                         pool: ImagePool, amp: Precision = FP32) -> dict[str, Tensor]:
    """The D_Y step of a semi-supervised iteration, after D_X's: update D_Y only (G and F fixed) on

        J_disc_Y = mean (D_Y(onehot(y)) - 1)^2 + mean (D_Y(s') - 0)^2   (eq. 8 on segmentations)

    Args:
        labels: y (B, H, W) class indices, the real label maps (the labelled batch's, or the backward cycle's).
        segmentation: softmax(G(x_u)) (B_u, S, H, W), detached (semi_generator_step); s' is drawn from `pool`,
            the history buffer of such maps.
    """
    real = one_hot(labels, models.num_classes)
    return {"loss/D_Y/total": _discriminator_update(models.D_Y, real, segmentation, pool, opt_dy, "J_disc_Y", amp)}


def _discriminator_update(d: torch.nn.Module, real: Tensor, fake: Tensor, pool, opt: torch.optim.Optimizer,
                          name: str, amp: Precision) -> Tensor:
    """One least-squares step of a discriminator (eq. 8): `real` against a history-buffer draw of `fake`."""
    with amp.autocast():
        d_real = d(real).float()
        d_fake = d(pool.query(fake)).float()
        loss = discriminator_loss(d_real, d_fake)
    _check_loss(loss, name)
    _backward(loss, opt, amp)
    _step(loss, opt, name, amp)
    return loss.detach()


def plain_step(models: Models, opt_g: torch.optim.Optimizer, image: Tensor, labels: Tensor,
               loss: LossConfig, class_weights: Tensor | None = None, amp: Precision = FP32) -> dict[str, Tensor]:
    """The plain ERFNet baseline: one update of G on J_seg alone."""
    with amp.autocast():
        seg = segmentation_loss(models.G(image).float(), labels, ignore_index(loss, models.num_classes), class_weights)
    _check_loss(seg, "J_seg")
    _backward(seg, opt_g, amp)
    _step(seg, opt_g, "J_seg", amp)
    return {"loss/G/seg": seg.detach()}



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
