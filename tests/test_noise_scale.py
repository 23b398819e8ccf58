"""The quantizer's input scale (noise.scale: rms) and the clipped straight-through estimator (noise.ste: clipped),
against values computed by hand and a closed form (SPEC "The quantizer's input scale")."""

import math

import numpy as np
import pytest
import torch

from cycleseg.config import ConfigError, apply_overrides, config_from_dict
from cycleseg.core.noise import DEFAULT_SCALE_RMS, NoiseInjection, clip_share, rms_scale, snr_db


def _pixel(*values):
    """One image of one pixel whose S class scores are `values`: (1, S, 1, 1)."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def test_scaled_two_bit_quantizer_by_hand():
    # RMS of (0.1, -3, 2, 0.5) = sqrt(13.26 / 4) = 1.82071; s = 1.82071 / 0.5 = 3.64143;
    # logits / s = (0.0275, -0.8239, 0.5492, 0.1373) -> nearest of {-1, -1/3, 1/3, 1}: (1/3, -1, 1/3, 1/3); times s
    logits = _pixel(0.1, -3.0, 2.0, 0.5)
    s = math.sqrt(13.26 / 4) / 0.5
    noisy = NoiseInjection("quantize", bits=2, scale="rms", scale_rms=0.5)(logits)
    expected = torch.tensor([s / 3, -s, s / 3, s / 3])
    assert torch.allclose(noisy.flatten(), expected, rtol=1e-6)
    assert float(clip_share(logits, NoiseInjection("quantize", bits=2, scale="rms", scale_rms=0.5))) == 0.0


def test_literal_quantizer_clips_and_the_scale_does_not():
    logits = _pixel(0.1, -3.0, 2.0, 0.5)
    literal = NoiseInjection("quantize", bits=2)
    assert torch.allclose(literal(logits).flatten(), torch.tensor([1 / 3, -1.0, 1.0, 1 / 3]), atol=1e-7)
    assert float(clip_share(logits, literal)) == 0.5  # -3 and 2 lie beyond +-1


def test_scale_is_per_image_and_detached():
    logits = torch.cat([_pixel(1.0, -1.0), _pixel(10.0, -10.0)]).requires_grad_(True)
    s = rms_scale(logits, 0.5)
    assert s.flatten().tolist() == pytest.approx([2.0, 20.0])
    assert not s.requires_grad


def test_scale_leaves_other_kinds_as_they_are_and_config_refuses_it_there():
    with pytest.raises(ValueError, match="scale and ste belong to the quantizer"):
        NoiseInjection("gaussian", snr_db=7.38, scale="rms")
    raw = {"model": {"kind": "cyclegan"}, "noise": {"kind": "gaussian", "snr_db": 7.38}}
    apply_overrides(raw, ["noise.scale=rms"])
    with pytest.raises(ConfigError, match="noise.scale"):
        config_from_dict(raw)
    with pytest.raises(ConfigError, match="noise.scale_rms"):
        config_from_dict({"model": {"kind": "cyclegan"}, "noise": {"kind": "quantize", "bits": 2, "scale_rms": 0}})
    with pytest.raises(ConfigError, match="noise.ste"):
        config_from_dict({"model": {"kind": "cyclegan"}, "noise": {"kind": "quantize", "bits": 2, "ste": "x"}})


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_scaled_quantizer_snr_on_uniform_inputs_is_the_closed_form(bits):
    # Inputs uniform on [-a, a] scaled to RMS 1/sqrt(3) land uniform on [-1, 1], the quantizer's full range: the
    # error is uniform on +-step/2, of power step^2 / 12, and the SNR is (1/3) / (step^2 / 12) = (2^n - 1)^2.
    generator = torch.Generator().manual_seed(bits)
    a = 7.0  # any amplitude: the scale removes it
    logits = (torch.rand(4, 20, 64, 64, generator=generator, dtype=torch.float64) * 2 - 1) * a
    inj = NoiseInjection("quantize", bits=bits, scale="rms", scale_rms=1 / math.sqrt(3))
    measured = snr_db(logits, inj(logits.float()).double())
    assert measured.tolist() == pytest.approx([20 * math.log10(2**bits - 1)] * 4, abs=0.05)


def test_default_scale_gives_the_paper_column_on_inputs_inside_the_range():
    # A Gaussian input of RMS 0.44 mostly stays inside [-1, 1]: 2-bit lands near the paper's 7.38 dB (granular
    # noise step^2 / 12 = 1/27 against 0.44^2 gives 7.18 dB; the tails beyond +-1 add a little clipping noise)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 20, 64, 64, generator=generator) * 5.0
    inj = NoiseInjection("quantize", bits=2, scale="rms")
    assert DEFAULT_SCALE_RMS == 0.44
    expected = 10 * math.log10(0.44**2 * 27)
    assert snr_db(logits, inj(logits)).mean().item() == pytest.approx(expected, abs=0.4)
    share = clip_share(logits, inj).mean().item()
    assert share == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(1 / 0.44 / math.sqrt(2)))), abs=0.003)


@pytest.mark.parametrize("scale", ["none", "rms"])
def test_clipped_estimator_passes_gradient_only_inside_the_range(scale):
    logits = _pixel(0.1, -3.0, 2.0, 0.5).requires_grad_(True)
    inj = NoiseInjection("quantize", bits=2, scale=scale, scale_rms=1.0, ste="clipped")
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, -1, 1, 1)
    (inj(logits) * weights).sum().backward()
    if scale == "none":  # |logit| <= 1 passes: 0.1 and 0.5
        expected = [1.0, 0.0, 0.0, 4.0]
    else:  # s = RMS = 1.82071: inputs 0.055, -1.648, 1.098, 0.275 -> beyond 1: -3 and 2
        expected = [1.0, 0.0, 0.0, 4.0]
    assert logits.grad.flatten().tolist() == expected
    # the forward value is the quantizer's, whatever the estimator
    plain = NoiseInjection("quantize", bits=2, scale=scale, scale_rms=1.0)
    assert torch.equal(inj(logits.detach()), plain(logits.detach()))


def test_clipped_estimator_with_scale_keeps_values_the_scale_brings_inside():
    # scale_rms 0.25: s = 7.283, inputs (0.014, -0.412, 0.275, 0.069): nothing beyond 1, every gradient passes
    logits = _pixel(0.1, -3.0, 2.0, 0.5).requires_grad_(True)
    NoiseInjection("quantize", bits=2, scale="rms", scale_rms=0.25, ste="clipped")(logits).sum().backward()
    assert logits.grad.flatten().tolist() == [1.0, 1.0, 1.0, 1.0]


def test_identity_estimator_is_the_identity_with_the_scale():
    logits = torch.randn(2, 5, 3, 3, requires_grad=True)
    NoiseInjection("quantize", bits=2, scale="rms")(logits).mul(torch.arange(5.0).view(1, 5, 1, 1)).sum().backward()
    assert torch.equal(logits.grad, torch.arange(5.0).view(1, 5, 1, 1).expand(2, 5, 3, 3))


def test_numpy_reference_of_the_scaled_quantizer():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 4, size=(3, 6, 5, 7)).astype(np.float32)
    s = np.sqrt((x.astype(np.float64) ** 2).reshape(3, -1).mean(axis=1)) / 0.44
    step = 2 / 7
    ref = np.stack([np.round((np.clip(x[i] / s[i], -1, 1) + 1) / step) * step - 1 for i in range(3)]) * s[:, None, None, None]
    out = NoiseInjection("quantize", bits=3, scale="rms")(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
