"""Noise injections on G's logits (SPEC "Noise injections", paper eqs. 9-13), checked against numpy references."""

import math

import numpy as np
import pytest
import torch

from cycleseg.core.noise import NOISE_KINDS, NoiseInjection, max_only, quantize, snr_db

KWARGS = {"none": {}, "max_only": {}, "quantize": {"bits": 2}, "gaussian": {"snr_db": 10.0}}


def np_snr_db(clean, noisy):
    """Eq. 11 per image: sums over classes and pixels, in float64."""
    clean, noisy = np.asarray(clean, np.float64), np.asarray(noisy, np.float64)
    b = clean.shape[0]
    signal = (clean.reshape(b, -1) ** 2).sum(1)
    noise = ((clean - noisy).reshape(b, -1) ** 2).sum(1)
    return 10 * np.log10(signal / noise)


def test_registry_holds_the_four_paper_kinds():
    assert set(NOISE_KINDS) == {"none", "max_only", "quantize", "gaussian"}


@pytest.mark.parametrize("kind", sorted(KWARGS))
def test_shape_preserved_and_no_nan(kind):
    torch.manual_seed(0)
    logits = 3 * torch.randn(2, 20, 8, 16)
    out = NoiseInjection(kind, **KWARGS[kind])(logits)
    assert out.shape == logits.shape
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("kind, kwargs", [("none", {}), ("max_only", {}), ("quantize", {"bits": 1}),
                                          ("quantize", {"bits": 3}), ("quantize", {"bits": 8}),
                                          ("gaussian", {"snr_db": 5.0}),
                                          ("gaussian", {"snr_db": -10.0, "sigma_rule": "paper_eq13"})])
def test_gradient_is_identity_straight_through(kind, kwargs):
    torch.manual_seed(1)
    logits = (4 * torch.randn(2, 20, 8, 16)).requires_grad_()  # many values outside [-1, 1]
    assert (logits.abs() > 1).float().mean() > 0.5
    w = torch.randn(2, 20, 8, 16)
    (w * NoiseInjection(kind, **kwargs)(logits)).sum().backward()
    assert torch.allclose(logits.grad, w, atol=1e-6, rtol=0)


def test_none_is_exact_identity():
    logits = torch.randn(2, 20, 4, 8)
    assert torch.equal(NoiseInjection("none")(logits), logits)


def test_max_only_matches_loop_reference():
    torch.manual_seed(2)
    logits = torch.randn(3, 20, 4, 8) * 2 - 0.5
    x = logits.numpy()
    ref = np.zeros_like(x)
    for b in range(x.shape[0]):
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                k = int(np.argmax(x[b, :, i, j]))
                ref[b, k, i, j] = x[b, k, i, j]
    np.testing.assert_array_equal(NoiseInjection("max_only")(logits).detach().numpy(), ref)
    np.testing.assert_array_equal(max_only(logits).numpy(), ref)


def test_max_only_keeps_negative_maximum():
    logits = torch.tensor([-3.0, -1.5, -2.0]).view(1, 3, 1, 1)
    out = NoiseInjection("max_only")(logits).view(-1).tolist()
    assert out == [0.0, -1.5, 0.0]


def _quantize_reference(x, bits):
    codebook = np.linspace(-1.0, 1.0, 2**bits)
    idx = np.abs(x[..., None].astype(np.float64) - codebook).argmin(axis=-1)
    return codebook[idx], codebook


@pytest.mark.parametrize("bits", range(1, 9))
def test_quantize_is_nearest_codebook_level(bits):
    rng = np.random.default_rng(bits)
    x = rng.uniform(-1.6, 1.6, size=(2, 20, 8, 16)).astype(np.float32)
    ref, codebook = _quantize_reference(x, bits)
    # Drop values within 1e-4 of a decision boundary (midpoints), where fp rounding may decide either way.
    mids = (codebook[:-1] + codebook[1:]) / 2
    safe = np.abs(x[..., None] - mids).min(axis=-1) > 1e-4

    out = NoiseInjection("quantize", bits=bits)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out[safe], ref[safe], atol=1e-6, rtol=0)
    np.testing.assert_allclose(quantize(torch.from_numpy(x), bits).numpy()[safe], ref[safe], atol=1e-6, rtol=0)
    # Every output, boundaries included, is one of the 2^bits levels.
    assert np.abs(out.reshape(-1, 1) - codebook).min(axis=1).max() < 1e-6
    # Values outside [-1, 1] clip to the end levels.
    np.testing.assert_allclose(out[x > 1], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[x < -1], -1.0, atol=1e-6)


def test_quantize_uses_all_levels_when_data_covers_range():
    x = torch.linspace(-1, 1, 10_000).view(1, 1, 100, 100)
    for bits in (1, 2, 4, 8):
        out = NoiseInjection("quantize", bits=bits)(x)
        assert len(torch.unique(out)) == 2**bits


def test_quantize_one_bit_gives_only_minus_one_and_one():
    torch.manual_seed(3)
    out = NoiseInjection("quantize", bits=1)(torch.randn(2, 20, 8, 8) * 0.3)
    assert set(torch.unique(out).tolist()) == {-1.0, 1.0}


def test_quantize_two_bits_hand_values():
    x = torch.tensor([-5.0, -0.7, -0.2, 0.1, 0.4, 0.9, 7.0]).view(1, 7, 1, 1)
    # levels -1, -1/3, 1/3, 1
    expected = [-1.0, -1.0, -1 / 3, 1 / 3, 1 / 3, 1.0, 1.0]
    out = NoiseInjection("quantize", bits=2)(x).view(-1).tolist()
    assert out == pytest.approx(expected, abs=1e-6)


def _random_logits(seed):
    """B = 4 images with very different scales, so a per-batch sigma would miss the per-image target."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.1, 1.0, 5.0, 40.0]).view(4, 1, 1, 1)
    return (torch.randn(4, 20, 64, 128, generator=g) + 0.3) * scale


@pytest.mark.parametrize("target", [40.0, 7.38, -0.55, -20.0])
def test_gaussian_equal_snr_hits_target_per_image(target):
    torch.manual_seed(4)
    logits = _random_logits(5)
    noisy = NoiseInjection("gaussian", snr_db=target)(logits)
    measured = np_snr_db(logits.numpy(), noisy.detach().numpy())
    assert measured.shape == (4,)
    np.testing.assert_allclose(measured, target, atol=0.05, rtol=0)


@pytest.mark.parametrize("target", [40.0, 7.38, -0.55, -20.0])
def test_gaussian_paper_eq13_is_10log10_s_below_target(target):
    torch.manual_seed(6)
    logits = _random_logits(7)
    noisy = NoiseInjection("gaussian", snr_db=target, sigma_rule="paper_eq13")(logits)
    measured = np_snr_db(logits.numpy(), noisy.detach().numpy())
    np.testing.assert_allclose(measured, target - 10 * math.log10(20), atol=0.05, rtol=0)


def test_gaussian_noise_is_zero_mean_normal():
    torch.manual_seed(8)
    logits = torch.ones(1, 20, 64, 128)  # sum ||logits||^2 = S H W, so sigma^2 = 10^(-snr/10) = 0.1
    noise = (NoiseInjection("gaussian", snr_db=10.0)(logits) - logits).numpy().ravel()
    assert abs(noise.mean()) < 0.005
    assert noise.std() == pytest.approx(math.sqrt(0.1), rel=0.01)
    # fourth moment of a Gaussian: 3 sigma^4
    assert (noise**4).mean() / noise.var() ** 2 == pytest.approx(3.0, rel=0.05)


def test_gaussian_fresh_noise_each_call():
    logits = torch.randn(2, 20, 8, 16)
    inj = NoiseInjection("gaussian", snr_db=10.0)
    a, b = inj(logits), inj(logits)
    assert not torch.equal(a, b)
    assert not torch.equal(a, logits)


def test_snr_db_hand_computation():
    clean = torch.ones(3, 4, 2, 2)  # signal energy 16 per image
    noisy = clean.clone()
    noisy[0] += 0.5  # noise energy 16 * 0.25 = 4 -> 10 log10(4) dB
    noisy[1] += 0.1  # noise energy 0.16 -> 20 dB
    noisy[2, 1, 0, 0] -= 4.0  # noise energy 16 -> 0 dB
    out = snr_db(clean, noisy)
    assert out.shape == (3,)
    assert out.tolist() == pytest.approx([10 * math.log10(4), 20.0, 0.0], abs=1e-5)  # float32 inputs


@pytest.mark.parametrize("kwargs", [{"kind": "salt"}, {"kind": "quantize", "bits": 0},
                                    {"kind": "quantize", "bits": 9}, {"kind": "quantize", "bits": None},
                                    {"kind": "quantize"}, {"kind": "quantize", "bits": 2.5},
                                    {"kind": "gaussian"}, {"kind": "gaussian", "snr_db": None},
                                    {"kind": "gaussian", "snr_db": 10.0, "sigma_rule": "eq12"}])
def test_invalid_construction_raises_value_error(kwargs):
    with pytest.raises(ValueError):
        NoiseInjection(**kwargs)
