"""One `generator_step` against the paper's equations written out directly in torch (no cycleseg.core.losses).

The reference computes, from SPEC "Losses" and the paper's eqs. 1-7, on a copy of the same models:
    J_seg   = CE(G(x), y)                    (eq. 1; weighted / background-ignoring CE where configured)
    J_adv   = mean (D(F(onehot(y))) - 1)^2   (eq. 2, least-squares GAN; D_X frozen)
    J_rec_x = mean |F(noise(G(x))) - x|      (eq. 3, over B, C, H, W)
    J_rec_y = CE(G(F(onehot(y))), y)         (eq. 4)
    J_gen   = gamma (alpha J_seg + (1 - alpha) J_rec_x) + (1 - gamma) (beta J_adv + (1 - beta) J_rec_y)
            [+ w mean |F(onehot(y)) - x|      with loss.paired_f = w > 0 (Mondal et al. 2019)]
with the noise on G's logits in the forward cycle only, its gradient the identity (straight-through).
The gradients of G's and F's parameters come from autograd on these equations, one term at a time, and
must equal the gradients the step computed and the update it made (plain SGD, lr = 1: update = -grad).

Both computations must be the same function of the weights, run by the same kernels, so that they differ
only by the rounding of the loss formulas; the test sees to that in three ways:
- The networks are in eval mode (no dropout; BatchNorm on running statistics set from this very batch).
  The step does not depend on the mode, and the comparison is well conditioned: in training mode, fp32
  BatchNorm on batch statistics makes one-step gradients at the paper's initialisation sensitive to rounding
  at the 1e-2 level (a 1e-7 relative change of the input image moves G's gradient by 5 %; in float64 by
  3e-7), which would leave a reference comparison nothing to resolve.
- The noise values are checked against an independent quantizer / max-only; the reference then uses the
  values F really received, so that a logit within rounding of a quantizer decision boundary cannot make the
  two computations pick different levels on different CPUs.
- The one-hot y_bar is checked equal to an independent one; the reference then feeds F that tensor, with the
  step's memory layout (a permuted, channels-last one-hot): another layout runs other convolution kernels,
  and the near-constant images F makes at initialisation amplify that rounding to 2e-4 of G's gradient.
"""

import copy
from pathlib import Path

import pytest
import torch

from cycleseg.config import Config, load_config
from cycleseg.core.models import build_models
from cycleseg.core.steps import generator_step

S, B, H, W = 20, 2, 32, 32
BACKGROUND = 19  # SPEC: background is class index 19
# Measured (AMD EPYC, fp32): the loss terms agree to 1e-6 relative, the gradients to 2e-6 (G) and 7e-6 (F)
# of the network's gradient scale. The tolerances leave a margin of over 10x, while swapped loss weights
# change the gradients by more than 1 (asserted below, so that the comparison can fail).
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4


def _setup(overrides, seed=0):
    cfg = load_config(None, ["model.num_classes=20", *overrides])  # S = 20 (no data to take it from)
    torch.manual_seed(seed)
    models = build_models(cfg.model, cfg.noise)
    gen = torch.Generator().manual_seed(seed + 1)
    image = torch.rand(B, 3, H, W, generator=gen) * 2 - 1
    labels = torch.randint(0, S, (B, H, W), generator=gen)
    # BatchNorm statistics of this data (as training would have them), then eval mode (see the docstring):
    # without them the N(0, 0.02) weights shrink the activations to logits of ~1e-4, all at one 2-bit boundary.
    for m in models.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration passes
    with torch.no_grad():
        models.train()
        models.forward_cycle(image)
        models.backward_cycle(labels)
    models.eval()
    return cfg, models, image, labels


def _cross_entropy(logits, labels, weight=None, ignore=None):
    """Mean over pixels of -log softmax(logits)[label]; with class weights w: sum w_y nll / sum w_y."""
    log_p = logits.log_softmax(dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)  # (B, H, W)
    w = torch.ones_like(log_p) if weight is None else weight[labels]
    if ignore is not None:
        w = w * (labels != ignore)
    return -(w * log_p).sum() / w.sum()


def _one_hot(labels):
    return torch.zeros(labels.shape[0], S, *labels.shape[1:]).scatter_(1, labels.unsqueeze(1), 1.0)


def _nearest_level(values, bits):
    levels = torch.linspace(-1.0, 1.0, 2**bits, dtype=torch.float64)
    distance = (values.double().unsqueeze(-1) - levels).abs()
    return levels[distance.argmin(-1)].float(), distance.sort(-1).values


def _check_noise_values(kind, bits, logits, received):
    """What F received in the step is the SPEC's noise of G's logits."""
    if kind == "none":
        assert torch.equal(received, logits)
    elif kind == "max_only":
        expected = torch.where(logits == logits.max(dim=1, keepdim=True).values, logits, torch.zeros_like(logits))
        assert torch.equal(received, expected)
    elif kind == "quantize":
        expected, sorted_distance = _nearest_level(logits, bits)
        clear = (sorted_distance[..., 1] - sorted_distance[..., 0]) > 1e-5  # not within rounding of a boundary
        assert clear.float().mean() > 0.99
        torch.testing.assert_close(received[clear], expected[clear], rtol=0, atol=1e-6)
        levels = torch.linspace(-1.0, 1.0, 2**bits)
        assert torch.isclose(received.unsqueeze(-1), levels, rtol=0, atol=1e-6).any(-1).all()
    elif kind == "gaussian":  # the equal-SNR rule: each image's measured SNR is the target, 7.38 dB (S H W draws)
        power = logits.pow(2).flatten(1).sum(1) / (received - logits).pow(2).flatten(1).sum(1)
        assert torch.allclose(10 * torch.log10(power), torch.full_like(power, 7.38), atol=0.2)
    else:
        raise AssertionError(kind)


def _run_step(models, cfg, image, labels, class_weights=None):
    """generator_step with SGD(lr=1); returns its losses and x, and what the noise gave F and F's inputs.

    At gamma = 1 the step runs no backward cycle (F once, x None); the one-hot labels are then made here."""
    received, f_inputs = [], []
    models.noise.register_forward_hook(lambda module, args, output: received.append(output.detach().clone()))
    models.F.register_forward_pre_hook(lambda module, args: f_inputs.append(args[0].detach().clone()))
    opt = torch.optim.SGD([*models.G.parameters(), *models.F.parameters()], lr=1.0)
    losses, fake = generator_step(models, opt, image, labels, cfg.loss, class_weights=class_weights)
    assert len(received) == 1, "the noise injection runs once, in the forward cycle"
    if cfg.loss.gamma == 1:
        assert len(f_inputs) == 1 and fake is None, "gamma = 1: no backward cycle, F runs on the noisy logits only"
        return losses, fake, received[0], _one_hot(labels)
    assert len(f_inputs) == 2, "F runs twice: on the noisy logits and on the one-hot labels"
    one_hot = [x for x in f_inputs if torch.equal(x, _one_hot(labels))]
    assert len(one_hot) == 1, "F never received the one-hot labels y_bar"
    return losses, fake, received[0], one_hot[0]


def _reference_terms(models, image, labels, received, one_hot, loss_cfg, class_weights, straight_through=True):
    """The four terms of eqs. 1-4 from the networks, written out. `received`: the noise's values; `one_hot`:
    y_bar as the step laid it out in memory (its values checked equal to _one_hot(labels))."""
    ignore = BACKGROUND if loss_cfg.ignore_background else None
    logits = models.G(image)
    if straight_through:  # value of the noise, gradient of the identity
        noisy = logits + (received - logits).detach()
    else:  # what a quantizer without the straight-through estimator would give G: no gradient at all
        noisy = received.detach()
    reconstruction = models.F(noisy)
    fake = models.F(one_hot)
    terms = {
        "seg": _cross_entropy(logits, labels, class_weights, ignore),
        "rec_x": (reconstruction - image).abs().mean(),
        "adv": (models.D(fake) - 1.0).pow(2).mean(),
        "rec_y": _cross_entropy(models.G(fake), labels, class_weights, ignore),
    }
    if loss_cfg.paired_f > 0:
        terms["paired_f"] = (fake - image).abs().mean()
    return terms, logits.detach(), fake.detach()


def _weights(loss_cfg):
    a, b, g = loss_cfg.alpha, loss_cfg.beta, loss_cfg.gamma
    weights = {"seg": g * a, "rec_x": g * (1 - a), "adv": (1 - g) * b, "rec_y": (1 - g) * (1 - b)}
    return weights | ({"paired_f": loss_cfg.paired_f} if loss_cfg.paired_f > 0 else {})


def _term_gradients(terms, params):
    grads = {}
    for name, term in terms.items():
        g = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        grads[name] = [torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, g, strict=True)]
    return grads


def _combine(grads, weights):
    return [sum(weights[k] * grads[k][i] for k in weights) for i in range(len(next(iter(grads.values()))))]


def _relative_error(got, expected):
    """Worst parameter tensor: ||got - expected|| relative to the whole network's gradient norm / sqrt(#tensors)
    (a conv bias before BatchNorm has a gradient that is rounding only, so plain per-tensor ratios mislead)."""
    scale = torch.sqrt(sum(e.pow(2).sum() for e in expected) / len(expected))
    return max(((g - e).norm() / scale).item() for g, e in zip(got, expected, strict=True))


CASES = {
    "paper_weights_no_noise": [],
    "other_weights_quantize2": ["loss.alpha=0.3", "loss.beta=0.2", "loss.gamma=0.7", "noise.kind=quantize",
                                "noise.bits=2"],
    "class_weights_ignore_background_max_only": ["loss.ignore_background=true", "noise.kind=max_only",
                                                 "loss.alpha=0.6", "loss.beta=0.4", "loss.gamma=0.45"],
    "paired_f_resnet_small_gaussian": ["loss.paired_f=0.7", "model.arch=resnet_small", "noise.kind=gaussian",
                                       "noise.snr_db=7.38"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_generator_step_matches_the_equations(case):
    cfg, models, image, labels = _setup(CASES[case])
    class_weights = None
    if "class_weights" in case:
        class_weights = torch.linspace(0.5, 3.0, S)
        labels[:, : H // 4] = BACKGROUND  # a band of background pixels that the cross entropies must leave out
    reference_models = copy.deepcopy(models)

    params = [*models.G.parameters(), *models.F.parameters()]
    before = [p.detach().clone() for p in params]
    d_before = copy.deepcopy(models.D.state_dict())
    losses, fake, received, one_hot = _run_step(models, cfg, image, labels, class_weights)

    ref_params = [*reference_models.G.parameters(), *reference_models.F.parameters()]
    terms, logits, ref_fake = _reference_terms(reference_models, image, labels, received, one_hot, cfg.loss,
                                               class_weights)
    _check_noise_values(cfg.noise.kind, cfg.noise.bits, logits, received)
    weights = _weights(cfg.loss)
    total = sum(weights[k] * terms[k] for k in terms)

    for name, value in terms.items():
        assert losses[f"loss/G/{name}"].item() == pytest.approx(value.item(), rel=LOSS_RTOL), name
    assert losses["loss/G/total"].item() == pytest.approx(total.item(), rel=LOSS_RTOL)
    torch.testing.assert_close(fake, ref_fake, rtol=1e-5, atol=1e-6)  # x = F(y_bar), for D_X's step

    grads = _term_gradients(terms, ref_params)
    expected = _combine(grads, weights)
    got = [p.grad for p in params]
    n_g = len(list(models.G.parameters()))
    assert _relative_error(got[:n_g], expected[:n_g]) < GRAD_RTOL, "G's gradient"
    assert _relative_error(got[n_g:], expected[n_g:]) < GRAD_RTOL, "F's gradient"
    # the update SGD(lr=1) made is -grad (up to the rounding of p - g)
    for p, p0 in zip(params, before, strict=True):
        torch.testing.assert_close(p0 - p.detach(), p.grad, rtol=0, atol=1e-6 * (1 + p0.abs().max().item()))
    # D_X took part (J_adv) but was frozen: unchanged and without gradient
    assert all(torch.equal(v, models.D.state_dict()[k]) for k, v in d_before.items())
    assert all(p.grad is None for p in models.D.parameters())

    # The comparison can fail: beta and 1 - beta swapped give a clearly different gradient.
    a, b, g = cfg.loss.alpha, cfg.loss.beta, cfg.loss.gamma
    swapped = {"seg": g * a, "rec_x": g * (1 - a), "adv": (1 - g) * (1 - b), "rec_y": (1 - g) * b}
    swapped |= {k: w for k, w in weights.items() if k == "paired_f"}
    wrong = _combine(grads, swapped)
    assert _relative_error(got, wrong) > 100 * GRAD_RTOL


def test_quantizer_gradient_is_straight_through_in_the_step():
    """2-bit quantization, J_gen = J_rec_x alone (alpha = 0, gamma = 1): G's whole gradient comes through the
    quantizer, as the identity (straight-through). Without the estimator it would be 0 almost everywhere."""
    cfg, models, image, labels = _setup(["noise.kind=quantize", "noise.bits=2", "loss.alpha=0", "loss.gamma=1"],
                                        seed=3)
    reference_models = copy.deepcopy(models)
    losses, _, received, one_hot = _run_step(models, cfg, image, labels)
    got = [p.grad for p in models.G.parameters()]

    g_params = list(reference_models.G.parameters())
    through, logits, _ = _reference_terms(reference_models, image, labels, received, one_hot, cfg.loss, None)
    _check_noise_values("quantize", 2, logits, received)
    assert losses["loss/G/total"].item() == pytest.approx(through["rec_x"].item(), rel=LOSS_RTOL)
    straight = _term_gradients({"rec_x": through["rec_x"]}, g_params)["rec_x"]
    assert sum(g.abs().sum() for g in straight) > 0  # the path exists
    assert _relative_error(got, straight) < GRAD_RTOL
    blocked, _, _ = _reference_terms(reference_models, image, labels, received, one_hot, cfg.loss, None,
                                     straight_through=False)
    assert all(g is None for g in torch.autograd.grad(blocked["rec_x"], g_params, allow_unused=True))


def test_gamma_one_is_the_forward_cycle_alone():
    """gamma = 1 (the regime study's objective ablation): J_gen = alpha J_seg + (1 - alpha) J_rec_x from the
    reference, the same gradients of G and F, no backward-cycle terms, and D_X is not trained in that iteration."""
    cfg, models, image, labels = _setup(["noise.kind=quantize", "noise.bits=2", "noise.scale=rms", "loss.gamma=1"],
                                        seed=4)
    reference_models = copy.deepcopy(models)
    losses, _, received, one_hot = _run_step(models, cfg, image, labels)
    terms, _, _ = _reference_terms(reference_models, image, labels, received, one_hot, cfg.loss, None)
    a = cfg.loss.alpha
    expected = a * terms["seg"] + (1 - a) * terms["rec_x"]
    assert losses["loss/G/total"].item() == pytest.approx(expected.item(), rel=LOSS_RTOL)
    assert losses["loss/G/adv"].item() == 0.0 and losses["loss/G/rec_y"].item() == 0.0
    params = [*reference_models.G.parameters(), *reference_models.F.parameters()]
    want = torch.autograd.grad(expected, params, allow_unused=True)
    got = [p.grad for p in [*models.G.parameters(), *models.F.parameters()]]
    assert _relative_error(got, [torch.zeros_like(p) if g is None else g for p, g in zip(params, want)]) < GRAD_RTOL


def test_gamma_one_trains_no_discriminator(tiny_data, tmp_path):
    """At gamma = 1 the training loop never steps D_X: its weights after 1 and after 3 iterations are equal (and
    differ at gamma = 0.9, so that the comparison can fail)."""
    from cycleseg.commands.train import train
    from cycleseg.runs import load_checkpoint

    config = Path(__file__).resolve().parents[1] / "configs" / "cyclegan.yaml"
    weights = {}
    for gamma in ("1", "0.9"):
        for iters in (1, 3):
            cfg = load_config(config, [f"data.root={tiny_data}", "data.height=32", "data.width=64",
                                       "optim.batch_size=2", "optim.epochs=2", "optim.decay_start_epoch=1",
                                       "train.progress=false", "train.eval_every=0", "train.precision=fp32",
                                       f"loss.gamma={gamma}", f"train.max_iters={iters}"])
            train(cfg, tmp_path / f"g{gamma}_{iters}")
            state = load_checkpoint(tmp_path / f"g{gamma}_{iters}" / "last.pt")["models"]
            weights[gamma, iters] = {k: v for k, v in state.items() if k.startswith("D.")}
    assert weights["1", 1] and all(torch.equal(v, weights["1", 3][k]) for k, v in weights["1", 1].items())
    assert not all(torch.equal(v, weights["0.9", 3][k]) for k, v in weights["0.9", 1].items())


def test_reference_cross_entropy_is_the_textbook_one():
    """The reference's CE against a pixel-by-pixel loop, so that the reference itself is checked."""
    gen = torch.Generator().manual_seed(5)
    logits, labels = torch.randn(2, 4, 3, 2, generator=gen), torch.randint(0, 4, (2, 3, 2), generator=gen)
    weight = torch.tensor([0.5, 1.0, 2.0, 4.0])
    num = den = 0.0
    for b in range(2):
        for i in range(3):
            for j in range(2):
                z, y = logits[b, :, i, j].tolist(), int(labels[b, i, j])
                nll = -(z[y] - torch.logsumexp(torch.tensor(z), 0).item())
                if y != 3:  # class 3 ignored
                    num, den = num + weight[y].item() * nll, den + weight[y].item()
    assert _cross_entropy(logits, labels, weight, ignore=3).item() == pytest.approx(num / den, rel=1e-6)


def test_config_defaults_are_the_papers_weights():
    assert _weights(Config().loss) == pytest.approx({"seg": 10 / 31, "rec_x": 10 / 31, "adv": 1 / 31,
                                                     "rec_y": 10 / 31})
