"""Losses (SPEC "Losses", paper eqs. 1-8) against hand / numpy computations."""

import math

import numpy as np
import pytest
import torch

from cycleseg.core.losses import (
    GeneratorTerms,
    adversarial_loss,
    discriminator_loss,
    generator_loss,
    image_reconstruction_loss,
    segmentation_loss,
    segmentation_reconstruction_loss,
)


def np_cross_entropy(logits, labels, ignore_index=None):
    """Mean over evaluated pixels of -log softmax(logits)[label], log-softmax written out by hand."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    b, _s, h, w = logits.shape
    total, count = 0.0, 0
    for n in range(b):
        for i in range(h):
            for j in range(w):
                y = labels[n, i, j]
                if ignore_index is not None and y == ignore_index:
                    continue
                z = logits[n, :, i, j]
                log_sum_exp = z.max() + math.log(np.exp(z - z.max()).sum())
                total += log_sum_exp - z[y]
                count += 1
    return total / count


def test_cross_entropy_hand_value_on_one_pixel():
    # logits (0, ln 2, ln 3): softmax = (1, 2, 3) / 6, label 2 -> -log(1/2) = ln 2
    logits = torch.tensor([0.0, math.log(2), math.log(3)]).view(1, 3, 1, 1)
    labels = torch.tensor([[[2]]])
    expected = math.log(6 / 3)
    assert segmentation_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert segmentation_reconstruction_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("loss_fn", [segmentation_loss, segmentation_reconstruction_loss])
def test_cross_entropy_matches_numpy_reference(loss_fn):
    torch.manual_seed(0)
    logits = 3 * torch.randn(2, 20, 3, 5)
    labels = torch.randint(0, 20, (2, 3, 5))
    labels[0, 0, :] = 19  # background is a class trained on by default
    expected = np_cross_entropy(logits.numpy(), labels.numpy())
    assert loss_fn(logits, labels).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss_fn", [segmentation_loss, segmentation_reconstruction_loss])
def test_cross_entropy_ignore_index_excludes_background_pixels(loss_fn):
    torch.manual_seed(1)
    logits = 3 * torch.randn(2, 20, 4, 4)
    labels = torch.randint(0, 19, (2, 4, 4))
    labels[:, :2, :] = 19  # half the pixels are background
    expected = np_cross_entropy(logits.numpy(), labels.numpy(), ignore_index=19)
    with_bg = np_cross_entropy(logits.numpy(), labels.numpy())
    assert abs(expected - with_bg) > 1e-3  # the choice matters on this example
    assert loss_fn(logits, labels, ignore_index=19).item() == pytest.approx(expected, rel=1e-5)
    assert loss_fn(logits, labels).item() == pytest.approx(with_bg, rel=1e-5)


def test_adversarial_loss_is_mean_squared_distance_to_one():
    d = torch.tensor([[[[1.0, 0.0], [3.0, -1.0]]]])  # (1-1)^2, 1, 4, 4 -> mean 9/4
    assert adversarial_loss(d).item() == pytest.approx(9 / 4)
    d2 = torch.randn(2, 1, 6, 14, dtype=torch.float64)
    assert adversarial_loss(d2).item() == pytest.approx(((d2.numpy() - 1) ** 2).mean(), rel=1e-6)


def test_image_reconstruction_loss_is_mean_absolute_error():
    x = torch.zeros(2, 3, 2, 2)
    rec = torch.zeros(2, 3, 2, 2)
    rec[0, 0] = 0.5  # 4 pixels with |e| = 0.5
    rec[1, 2, 0, 0] = -2.0  # 1 pixel with |e| = 2
    # total |e| = 2 + 2 = 4 over 2*3*2*2 = 24 values
    assert image_reconstruction_loss(rec, x).item() == pytest.approx(4 / 24)
    torch.manual_seed(2)
    a, b = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    assert image_reconstruction_loss(a, b).item() == pytest.approx(np.abs(a.numpy() - b.numpy()).mean(), rel=1e-5)


def _terms(seg, rec_x, adv, rec_y):
    return GeneratorTerms(seg=torch.tensor(seg), rec_x=torch.tensor(rec_x), adv=torch.tensor(adv),
                          rec_y=torch.tensor(rec_y))


def test_generator_loss_with_explicit_weights():
    terms = _terms(1.0, 2.0, 3.0, 4.0)
    # gamma (alpha seg + (1 - alpha) rec_x) + (1 - gamma) (beta adv + (1 - beta) rec_y)
    # = 0.6 (0.3 + 1.4) + 0.4 (0.75 + 3.0) = 1.02 + 1.5 = 2.52
    assert generator_loss(terms, alpha=0.3, beta=0.25, gamma=0.6).item() == pytest.approx(2.52)
    # gamma = 1 leaves only the forward cycle, gamma = 0 only the backward one
    assert generator_loss(terms, alpha=0.3, beta=0.25, gamma=1.0).item() == pytest.approx(1.7)
    assert generator_loss(terms, alpha=0.3, beta=0.25, gamma=0.0).item() == pytest.approx(3.75)


def test_generator_loss_defaults_are_paper_weights():
    terms = _terms(1.0, 2.0, 3.0, 4.0)
    # (20/31)(0.5 + 1) + (11/31)(3/11 + 40/11) = 30/31 + 43/31
    assert generator_loss(terms).item() == pytest.approx(73 / 31)
    assert generator_loss(terms).item() == pytest.approx(
        generator_loss(terms, alpha=0.5, beta=1 / 11, gamma=20 / 31).item())


def test_generator_loss_backpropagates_the_weights():
    seg, rec_x, adv, rec_y = (torch.tensor(v, requires_grad=True) for v in (1.0, 2.0, 3.0, 4.0))
    generator_loss(GeneratorTerms(seg, rec_x, adv, rec_y)).backward()
    g = 20 / 31
    assert seg.grad.item() == pytest.approx(g * 0.5)
    assert rec_x.grad.item() == pytest.approx(g * 0.5)
    assert adv.grad.item() == pytest.approx((1 - g) / 11)
    assert rec_y.grad.item() == pytest.approx((1 - g) * 10 / 11)


def test_discriminator_loss_is_lsgan():
    d_real = torch.tensor([[[[1.0, 0.0, 2.0, 3.0]]]])  # (0 + 1 + 1 + 4) / 4 = 1.5
    d_fake = torch.tensor([[[[0.0, 1.0, -2.0, 0.5]]]])  # (0 + 1 + 4 + 0.25) / 4 = 1.3125
    assert discriminator_loss(d_real, d_fake).item() == pytest.approx(1.5 + 1.3125)
    # real and fake terms are not swapped
    assert discriminator_loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item() == 0.0
    assert discriminator_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)).item() == pytest.approx(2.0)
