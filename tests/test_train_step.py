"""The training step follows Table 1: G and F update with D_X frozen, then D_X updates with G and F fixed."""

import copy

import torch

from cycleseg.config import Config, load_config
from cycleseg.core.models import build_models
from cycleseg.core.pool import ImagePool
from cycleseg.core.steps import discriminator_step, generator_step, plain_step


def _setup(overrides=()):
    torch.manual_seed(0)
    cfg = load_config(None, list(overrides))
    models = build_models(cfg.model, cfg.noise)
    models.train()
    gen = list(models.G.parameters()) + (list(models.F.parameters()) if models.F else [])
    opt_g = torch.optim.Adam(gen, lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(models.D.parameters(), lr=1e-3, betas=(0.5, 0.999)) if models.D else None
    image = torch.rand(2, 3, 32, 64) * 2 - 1
    labels = torch.randint(0, 20, (2, 32, 64))
    return cfg, models, opt_g, opt_d, image, labels


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    after = module.state_dict()
    return [k for k in before if not torch.equal(before[k], after[k])]


def test_generator_step_leaves_d_unchanged_and_updates_g_and_f():
    cfg, models, opt_g, _opt_d, image, labels = _setup(["noise.kind=quantize", "noise.bits=2"])
    d_before, g_before, f_before = _snapshot(models.D), _snapshot(models.G), _snapshot(models.F)
    losses, fake = generator_step(models, opt_g, image, labels, cfg.loss)
    assert _changed(d_before, models.D) == []
    g_weights = [k for k in g_before if k.endswith("weight")]
    assert set(g_weights) <= set(_changed(g_before, models.G))
    assert len(_changed(f_before, models.F)) > 0
    assert all(p.grad is None for p in models.D.parameters())  # no gradient accumulated into D_X
    assert all(p.requires_grad for p in models.D.parameters())  # D_X is trainable again afterwards
    assert fake.shape == image.shape and not fake.requires_grad
    assert set(losses) == {"loss/G/total", "loss/G/seg", "loss/G/rec_x", "loss/G/adv", "loss/G/rec_y"}


def test_discriminator_step_leaves_g_and_f_unchanged_and_updates_d():
    cfg, models, opt_g, opt_d, image, labels = _setup()
    _, fake = generator_step(models, opt_g, image, labels, cfg.loss)
    g_before, f_before, d_before = _snapshot(models.G), _snapshot(models.F), _snapshot(models.D)
    losses = discriminator_step(models, opt_d, image, fake, ImagePool(50))
    assert _changed(g_before, models.G) == [] and _changed(f_before, models.F) == []
    assert len(_changed(d_before, models.D)) > 0
    assert float(losses["loss/D/total"]) > 0


def test_generator_loss_is_the_weighted_sum_of_the_logged_terms():
    cfg, models, opt_g, _opt_d, image, labels = _setup(["loss.alpha=0.3", "loss.beta=0.2", "loss.gamma=0.7"])
    losses, _ = generator_step(models, opt_g, image, labels, cfg.loss)
    seg, rx, adv, ry = (float(losses[f"loss/G/{k}"]) for k in ("seg", "rec_x", "adv", "rec_y"))
    expected = 0.7 * (0.3 * seg + 0.7 * rx) + 0.3 * (0.2 * adv + 0.8 * ry)
    assert abs(float(losses["loss/G/total"]) - expected) < 1e-5


def test_plain_step_uses_only_g():
    cfg, models, opt_g, _, image, labels = _setup(["model.kind=plain"])
    assert models.F is None and models.D is None
    before = _snapshot(models.G)
    losses = plain_step(models, opt_g, image, labels, cfg.loss)
    assert set(losses) == {"loss/G/seg"} and len(_changed(before, models.G)) > 0


def test_noise_reaches_f_in_the_forward_cycle():
    """F sees the quantized logits: every value F receives is one of the 2-bit levels."""
    _cfg, models, *_ = _setup(["noise.kind=quantize", "noise.bits=2"])
    seen = []
    models.F.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach()))
    models.forward_cycle(torch.rand(1, 3, 32, 64))
    levels = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])
    assert torch.isclose(seen[0].unsqueeze(-1), levels).any(-1).all()


def test_ignore_background_option_changes_only_background_pixels():
    cfg, models, opt_g, _opt_d, image, labels = _setup(["model.kind=plain", "loss.ignore_background=true"])
    labels[:] = 19  # all background, which is ignored, except one pixel: the loss is that pixel's CE
    labels[0, 0, 0] = 3
    models_copy = copy.deepcopy(models)
    torch.manual_seed(1)  # same dropout masks in both forward passes
    with torch.no_grad():
        logits = models_copy.G(image)
    expected = torch.nn.functional.cross_entropy(logits[:1, :, :1, :1], labels[:1, :1, :1])
    torch.manual_seed(1)
    losses = plain_step(models, opt_g, image, labels, cfg.loss)
    assert abs(float(losses["loss/G/seg"]) - expected.item()) < 1e-4


def test_config_defaults_build_cycle_models():
    models = build_models(Config().model, Config().noise)
    assert models.is_cycle and models.noise.kind == "none"
