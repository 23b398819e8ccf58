"""The regime study's measures: the quantizer table of `calibrate --quantizers` against a numpy computation, the
clipped share and the logit RMS in calibrate and diagnose, and the hidden-channel gap with each arm's own noise on
its reference (equal to the old reference where there is no noise)."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from cycleseg.cli import main
from cycleseg.commands.calibrate import calibrate_run
from cycleseg.commands.diagnose import diagnose_models
from cycleseg.commands.session import open_session
from cycleseg.config import load_config
from cycleseg.core.models import build_models


def _numpy_quantize(x: np.ndarray, bits: int, s: np.ndarray) -> np.ndarray:
    """eq. 9 on x / s, times s; x (B, S, H, W), s (B,)."""
    step = 2.0 / (2**bits - 1)
    y = x / s[:, None, None, None]
    return (np.round((np.clip(y, -1, 1) + 1) / step) * step - 1) * s[:, None, None, None]


def _snr(x: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    return 10 * np.log10((x**2).reshape(len(x), -1).sum(1) / ((x - noisy) ** 2).reshape(len(x), -1).sum(1))


def test_quantizer_table_matches_numpy_on_the_runs_logits(trained_cycle_run, tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_cycle_run, run)
    session = open_session(run, tiny_data, "val", "cpu")
    with torch.no_grad():
        session.models.eval()
        logits = torch.cat([session.models.G(x) for x, _ in session.batches("test")]).double().numpy()
    rms = np.sqrt((logits**2).reshape(len(logits), -1).mean(1))
    expected = {}
    for bits in (1, 2, 3, 4):
        ones = np.ones(len(logits))
        expected[bits, "none"] = _snr(logits, _numpy_quantize(logits, bits, ones)).mean()
        expected[bits, "rms"] = _snr(logits, _numpy_quantize(logits, bits, rms / 0.3)).mean()
    assert main(["calibrate", str(run), "--data", str(tiny_data), "--quantizers", "--scale-rms", "0.3"]) == 0
    table = json.loads((run / "calibrate_val_quantizers.json").read_text())
    assert table["scale_rms"] == 0.3 and table["logit_rms"] == pytest.approx(rms.mean(), rel=1e-4)
    for row in table["quantizers"]:
        for scale in ("none", "rms"):
            assert row[f"snr_db_{scale}"] == pytest.approx(expected[row["bits"], scale], abs=0.02)
    assert [row["paper_snr_db"] for row in table["quantizers"]] == [-0.55, 7.38, 14.50, 21.02]
    clipped = (np.abs(logits) > 1).reshape(len(logits), -1).mean(1).mean()
    assert table["quantizers"][1]["clip_share_none"] == pytest.approx(clipped, abs=1e-6)
    assert "2 bit" in capsys.readouterr().out


def test_calibrate_reports_clip_share_and_logit_rms(trained_cycle_run, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_cycle_run, run)
    literal = calibrate_run(run, tiny_data, device="cpu")  # the demo's quant2: eq. 9 as written
    inside = calibrate_run(run, tiny_data, device="cpu", noise_overrides=["scale=rms", "scale_rms=0.01"])
    outside = calibrate_run(run, tiny_data, device="cpu", noise_overrides=["scale=rms", "scale_rms=100"])
    assert literal["logit_rms"] == pytest.approx(inside["logit_rms"]) and literal["logit_rms"] > 0
    assert 0 <= literal["clip_share"] <= 1
    assert inside["clip_share"] == 0.0 and outside["clip_share"] > 0.9  # RMS 0.01: nothing beyond +-1; RMS 100: most
    gaussian = calibrate_run(run, tiny_data, device="cpu", noise_overrides=["kind=gaussian", "snr_db=10"])
    assert gaussian["clip_share"] is None and gaussian["snr_db"] == pytest.approx(10.0, abs=0.05)


def test_quantizer_table_refuses_a_bad_scale(trained_cycle_run, tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_cycle_run, run)
    assert main(["calibrate", str(run), "--data", str(tiny_data), "--quantizers", "--scale-rms", "0"]) != 0
    assert "--scale-rms" in capsys.readouterr().err
    assert not (run / "calibrate_val_quantizers.json").exists()


def _batches(seed=0, n=2):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(4, 3, 32, 32, generator=generator) * 2 - 1, torch.randint(0, 5, (4, 32, 32), generator=generator))
            for _ in range(n)]


def _models(*overrides):
    cfg = load_config(None, ["model.num_classes=5", "model.arch=resnet_small", *overrides])
    torch.manual_seed(0)
    return build_models(cfg.model, cfg.noise)


def test_own_noise_reference_equals_the_old_one_without_noise():
    results, _ = diagnose_models(_models(), _batches(), torch.device("cpu"), snrs=(20.0,), num_examples=1)
    psnr = results["watermark_gap"]["psnr_db"]
    assert psnr["split_class_mean_own_noise"] == pytest.approx(psnr["split_class_mean"], abs=1e-9)
    assert results["clip_share"] is None


def test_own_noise_reference_applies_the_arms_noise():
    models = _models("noise.kind=quantize", "noise.bits=1")
    results, _ = diagnose_models(models, _batches(), torch.device("cpu"), snrs=(20.0,), num_examples=1)
    psnr = results["watermark_gap"]["psnr_db"]
    assert psnr["split_class_mean_own_noise"] != pytest.approx(psnr["split_class_mean"], abs=1e-6)
    gap = results["watermark_gap"]["gap_db"]
    assert gap["split_class_mean_own_noise"] == pytest.approx(psnr["noisy"] - psnr["split_class_mean_own_noise"])
    assert 0.0 <= results["clip_share"] <= 1.0


def test_own_noise_reference_by_hand():
    """The reference F sees: quantize(split-mean logit vector of each pixel's decided class), computed here from
    the logits directly, gives the PSNR diagnose reports."""
    models = _models("noise.kind=quantize", "noise.bits=2", "noise.scale=rms").eval()
    batches = _batches(seed=1, n=1)
    image, _ = batches[0]
    results, _ = diagnose_models(models, batches, torch.device("cpu"), snrs=(20.0,), num_examples=1)
    with torch.no_grad():
        logits = models.G(image)
        decided = logits.argmax(1)
        means = torch.stack([logits.permute(1, 0, 2, 3)[:, decided == k].mean(1) if (decided == k).any()
                             else torch.zeros(5) for k in range(5)])  # (S, S)
        field = means[decided].permute(0, 3, 1, 2)
        s = field.pow(2).flatten(1).mean(1).sqrt() / 0.44
        step = 2 / 3
        quantized = (torch.round((torch.clamp(field / s.view(-1, 1, 1, 1), -1, 1) + 1) / step) * step - 1) * s.view(-1, 1, 1, 1)
        out = models.F(quantized)
        psnr = (10 * torch.log10(4 / (out - image).pow(2).flatten(1).mean(1))).mean().item()
    assert results["watermark_gap"]["psnr_db"]["split_class_mean_own_noise"] == pytest.approx(psnr, abs=1e-3)
    assert not math.isnan(psnr)
