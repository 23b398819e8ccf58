"""The mechanism laboratory (docs/mechanism.md): the small residual generator, the shapes scene with colours
independent of the class, the reward oracles, F's warm-up step and the options' validation."""

import math

import numpy as np
import pytest
import torch

from cycleseg.commands.diagnose import diagnose_models
from cycleseg.config import load_config
from cycleseg.core.diagnostics import colour_oracles
from cycleseg.core.models import build_models, one_hot
from cycleseg.core.networks import ResidualGenerator, image_generator, segmentation_generator
from cycleseg.core.noise import NoiseInjection
from cycleseg.core.steps import f_warmup_step, semi_generator_step
from cycleseg.data.synthetic import SHAPE_CLASSES, render_shapes
from cycleseg.errors import ConfigError

# ------------------------------------------------------------------------------------ the small generator


def test_resnet_small_shapes_and_parameter_count():
    g, f = segmentation_generator(20, "resnet_small"), image_generator(20, "resnet_small")
    x = torch.rand(2, 3, 24, 40) * 2 - 1  # any size: no down-sampling, so no multiple of 8 is needed
    logits = g(x)
    assert logits.shape == (2, 20, 24, 40)
    image = f(logits)
    assert image.shape == (2, 3, 24, 40) and image.abs().max() <= 1  # tanh
    # by hand: head conv3x3 (no bias) + BN, 3 blocks of 2 x (conv3x3 32->32 (no bias) + BN), output conv3x3 + bias
    blocks = 3 * 2 * (32 * 32 * 9 + 2 * 32)
    assert sum(p.numel() for p in g.parameters()) == 3 * 32 * 9 + 2 * 32 + blocks + 32 * 20 * 9 + 20
    assert sum(p.numel() for p in f.parameters()) == 20 * 32 * 9 + 2 * 32 + blocks + 32 * 3 * 9 + 3


def test_resnet_small_receptive_field_is_33_pixels():
    """Dilations 1, 2, 4: a pixel's output depends on the input 16 pixels away, and not 17 pixels away."""
    torch.manual_seed(0)
    g = ResidualGenerator(in_chans=1, out_chans=1).eval()
    x = torch.rand(1, 1, 41, 41, requires_grad=True)
    g(x)[0, 0, 20, 20].backward()
    reached = (x.grad[0, 0] != 0).nonzero()
    assert reached[:, 0].min().item() == 20 - 16 and reached[:, 0].max().item() == 20 + 16


def test_resnet_small_gradient_check():
    torch.manual_seed(0)
    g = ResidualGenerator(in_chans=3, out_chans=4, width=4, blocks=2).double().eval()
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(g, (x,), eps=1e-6, atol=1e-5)


def test_model_arch_builds_the_small_generators_and_keeps_erfnet_as_default():
    paper = build_models(load_config(None, ["model.num_classes=20"]).model, load_config(None, []).noise)
    assert type(paper.G).__name__ == "ERFNet" and type(paper.F).__name__ == "ERFNet"
    cfg = load_config(None, ["model.num_classes=20", "model.arch=resnet_small"])
    models = build_models(cfg.model, cfg.noise)
    assert isinstance(models.G, ResidualGenerator) and isinstance(models.F, ResidualGenerator)
    assert type(models.D).__name__ == "PatchDiscriminator"  # D_X is the paper's in every architecture


@pytest.mark.parametrize("overrides, key", [
    (["model.arch=unet"], "model.arch"),
    (["loss.paired_f=-1"], "loss.paired_f"),
    (["optim.f_warmup_iters=-2"], "optim.f_warmup_iters"),
    (["model.kind=plain", "loss.paired_f=0.5"], "loss.paired_f"),
    (["model.kind=plain", "optim.f_warmup_iters=10"], "optim.f_warmup_iters"),
    (["model.f_input=probabilities"], "model.f_input"),
])
def test_new_options_are_validated(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert e.value.key == key


def test_new_options_default_to_the_paper():
    cfg = load_config(None, [])
    assert (cfg.model.arch, cfg.loss.paired_f, cfg.optim.f_warmup_iters) == ("erfnet", 0.0, 0)
    assert cfg.model.f_input == "scores"


@pytest.mark.parametrize("f_input", ["scores", "softmax"])
def test_f_input_is_the_noisy_scores_or_their_softmax(f_input):
    cfg = load_config(None, ["model.num_classes=4", "model.arch=resnet_small", f"model.f_input={f_input}",
                             "noise.kind=quantize", "noise.bits=2"])
    models = build_models(cfg.model, cfg.noise).eval()
    seen = []
    models.F.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    _, noisy, _ = models.forward_cycle(image)
    levels = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])  # the 2-bit quantizer's output, whatever F reads
    assert torch.isclose(noisy.unsqueeze(-1), levels, atol=1e-6).any(-1).all()
    expected = noisy.exp() / noisy.exp().sum(dim=1, keepdim=True) if f_input == "softmax" else noisy
    torch.testing.assert_close(seen[0], expected.detach())


# ------------------------------------------------------------------------------------ the shapes scene


def test_independent_colours_tell_nothing_of_the_class():
    """Over 1,000 images, each class's mean colour is within 15 of the others' (0..255; about 4 standard errors
    of a difference of two means of some 800 uniform draws, SD 73.6 / sqrt(800) = 2.6 each), while one object's
    colour spreads with an SD near that of a uniform draw (73.6): the colour is independent of the class."""
    object_colours = {c: [] for c in SHAPE_CLASSES.values()}
    for i in range(1000):
        image, label = render_shapes(32, 32, np.random.default_rng([7, i]), colour_mode="independent")
        for c in np.unique(label):
            object_colours[int(c)].append(image[label == c].astype(np.float64).mean(axis=0))
    means = np.array([np.mean(v, axis=0) for v in object_colours.values()])  # (5 classes, 3)
    assert all(len(v) > 500 for v in object_colours.values())  # every class appears often
    assert np.abs(means[:, None] - means[None]).max() < 15
    for v in object_colours.values():
        assert np.all(np.std(v, axis=0) > 60)


def test_class_colours_do_tell_the_class():
    """The same scene with class colours (the default): class means far apart, so the test above can fail."""
    colours = {c: [] for c in SHAPE_CLASSES.values()}
    for i in range(40):
        image, label = render_shapes(32, 32, np.random.default_rng([7, i]))
        for c in np.unique(label):
            colours[int(c)].append(image[label == c].astype(np.float64).mean(axis=0))
    means = np.array([np.mean(v, axis=0) for v in colours.values()])
    assert np.abs(means[:, None] - means[None]).max() > 100


def test_shapes_scene_labels_are_its_five_classes():
    image, label = render_shapes(32, 48, np.random.default_rng(3), colour_mode="independent")
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8 and label.shape == (32, 48)
    assert set(np.unique(label)) <= set(SHAPE_CLASSES.values()) and len(np.unique(label)) >= 2


# ------------------------------------------------------------------------------------ the reward oracles


def test_colour_oracles_on_a_constructed_case():
    """Two 1x4 images, classes [0, 0, 1, 1]; image 0 paints class 0 at 0.6, 0.4 and class 1 at -0.6, -0.4, image
    1 the opposite signs. Split mean colours are 0: the labels-only oracle errs by 0.6, 0.4 (MSE 0.26, PSNR
    10 log10(4 / 0.26) = 11.87 dB); each image's class means (+-0.5) err by 0.1 (MSE 0.01, 26.02 dB). The reward
    is 10 log10(26) = 14.15 dB."""
    row = torch.tensor([0.6, 0.4, -0.6, -0.4])
    image = torch.stack([row, -row]).view(2, 1, 1, 4).expand(2, 3, 1, 4).contiguous()
    labels = torch.tensor([[[0, 0, 1, 1]], [[0, 0, 1, 1]]])
    split_colours = torch.zeros(3, 3)  # class 2 has no pixel
    psnr = colour_oracles(image, labels, split_colours)
    assert psnr["labels_only"].tolist() == pytest.approx([10 * math.log10(4 / 0.26)] * 2, abs=1e-4)
    assert psnr["image_colours"].tolist() == pytest.approx([10 * math.log10(400)] * 2, abs=1e-4)
    reward = (psnr["image_colours"] - psnr["labels_only"]).mean().item()
    assert reward == pytest.approx(10 * math.log10(26), abs=1e-4)


class _Constant(torch.nn.Module):
    """A cycle model whose G returns given logits and whose F paints grey: enough to run diagnose_models."""

    def __init__(self, logits):
        super().__init__()
        self.num_classes, self.is_cycle = logits.shape[1], True
        self.G = lambda image: logits
        self.F = lambda values: torch.zeros(values.shape[0], 3, *values.shape[2:])
        self.noise = NoiseInjection("none")
        self.to_f_input = lambda noisy: noisy


def test_diagnose_reports_the_reward_with_the_splits_colours():
    """diagnose_models measures the split's class colours over all batches (here two), then the oracles."""
    row = torch.tensor([0.6, 0.4, -0.6, -0.4])
    image = torch.stack([row, -row]).view(2, 1, 1, 4).expand(2, 3, 1, 4).contiguous()
    image = torch.nn.functional.pad(image, (0, 4, 0, 7), value=0.0)  # 8x8, the rest class 2 at colour 0
    labels = torch.full((2, 8, 8), 2)
    labels[:, 0, :4] = torch.tensor([0, 0, 1, 1])
    logits = 5.0 * one_hot(labels, 3)
    batches = [(image[:1], labels[:1]), (image[1:], labels[1:])]
    results, _ = diagnose_models(_Constant(logits[:1]), batches, torch.device("cpu"), snrs=(10.0,))
    mse_labels_only, mse_colours = 4 * (0.36 + 0.16) / 2 / 64, 4 * 0.01 / 64  # 4 of 64 pixels err
    oracle = results["oracle"]
    assert oracle["labels_only_psnr_db"] == pytest.approx(10 * math.log10(4 / mse_labels_only), abs=1e-4)
    assert oracle["image_colours_psnr_db"] == pytest.approx(10 * math.log10(4 / mse_colours), abs=1e-4)
    assert oracle["reward_db"] == pytest.approx(10 * math.log10(26), abs=1e-4)


# ------------------------------------------------------------------------------------ F's warm-up


def test_f_warmup_step_updates_f_alone_on_labels_to_image():
    """One warm-up step with SGD(lr = 1): F moves by minus the gradient of mean |F(onehot(y)) - x| computed here
    independently; G, D_X and their gradients stay untouched."""
    cfg = load_config(None, ["model.num_classes=5", "model.arch=resnet_small", "optim.f_warmup_iters=3"])
    torch.manual_seed(0)
    models = build_models(cfg.model, cfg.noise).eval()  # eval: BatchNorm on running statistics, deterministic
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    labels = torch.randint(0, 5, (2, 8, 8))
    reference = [p.detach().clone().requires_grad_(True) for p in models.F.parameters()]
    expected_loss = (torch.func.functional_call(
        models.F, dict(zip([n for n, _ in models.F.named_parameters()], reference, strict=True)),
        (torch.nn.functional.one_hot(labels, 5).permute(0, 3, 1, 2).float(),)) - image).abs().mean()
    expected = torch.autograd.grad(expected_loss, reference)
    g_before = [p.detach().clone() for p in models.G.parameters()]
    opt = torch.optim.SGD([*models.G.parameters(), *models.F.parameters()], lr=1.0)
    losses = f_warmup_step(models, opt, image, labels)
    assert losses["loss/F/warmup"].item() == pytest.approx(expected_loss.item(), rel=1e-6)
    for p, p0, g in zip(models.F.parameters(), reference, expected, strict=True):
        torch.testing.assert_close(p0.detach() - p.detach(), g, rtol=1e-4, atol=1e-6)
    assert all(torch.equal(p, p0) for p, p0 in zip(models.G.parameters(), g_before, strict=True))
    assert all(p.grad is None for p in [*models.G.parameters(), *models.D.parameters()])


def test_paired_f_in_a_semi_supervised_step_adds_its_term():
    """J_semi with loss.paired_f = 0.5 is J_semi without it plus 0.5 mean |F(onehot(y_l)) - x_l|, computed here."""
    torch.manual_seed(0)
    image, unlabelled = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    labels = torch.randint(0, 4, (2, 32, 32))
    totals = {}
    for w in (0.0, 0.5):
        cfg = load_config(None, ["model.num_classes=4", "model.arch=resnet_small", "data.labelled=0.5",
                                 f"loss.paired_f={w}"])
        torch.manual_seed(1)
        models = build_models(cfg.model, cfg.noise, d_y=True).eval()
        opt = torch.optim.SGD([*models.G.parameters(), *models.F.parameters()], lr=0.0)
        with torch.no_grad():
            paired = (models.F(torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()) - image).abs().mean()
        losses, _, _ = semi_generator_step(models, opt, image, labels, unlabelled, cfg.loss)
        totals[w] = losses["loss/G/total"].item()
        assert ("loss/G/paired_f" in losses) == (w > 0)
    assert totals[0.5] - totals[0.0] == pytest.approx(0.5 * paired.item(), rel=1e-5)
    assert paired.item() > 0.1  # the term is not negligible: the comparison can fail


def test_cli_reward_measures_the_oracles_of_a_dataset(tmp_path, capsys):
    """`cycleseg reward` against colour_oracles computed here from the PNGs of a tiny shapes dataset."""
    import json

    from PIL import Image

    from cycleseg.cli import main
    from cycleseg.data import LABEL_ID_TO_TRAIN_ID, list_samples
    from cycleseg.data.synthetic import make_synthetic

    make_synthetic(tmp_path / "d", num_train=1, num_val=6, size=(32, 32), scene="shapes", colour_mode="independent")
    assert main(["reward", "--data", str(tmp_path / "d"), "--size", "32x32", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    samples = list_samples(tmp_path / "d", "val")
    image = torch.stack([torch.from_numpy(np.asarray(Image.open(s.image_path), np.float32)).permute(2, 0, 1)
                         for s in samples]) / 127.5 - 1
    train_ids = torch.from_numpy(np.stack([np.asarray(LABEL_ID_TO_TRAIN_ID)[np.asarray(Image.open(s.label_path))]
                                           for s in samples]).astype(np.int64))
    labels = torch.where(train_ids == 255, 19, train_ids)  # background is class 19 (SPEC)
    colours = torch.stack([image.permute(1, 0, 2, 3)[:, labels == c].mean(dim=1) if (labels == c).any()
                           else torch.zeros(3) for c in range(20)])
    expected = colour_oracles(image, labels, colours)
    assert r["num_images"] == 6 and r["classes"] == 20
    assert r["labels_only_psnr_db"] == pytest.approx(expected["labels_only"].mean().item(), abs=1e-3)
    assert r["image_colours_psnr_db"] == pytest.approx(expected["image_colours"].mean().item(), abs=1e-3)
    assert r["reward_db"] > 3  # independent colours: the labels predict little of the image
