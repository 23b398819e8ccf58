"""Steganography diagnostics on constructed cases, and `cycleseg diagnose` end to end on the tiny dataset."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from cycleseg.cli import main
from cycleseg.commands.diagnose import diagnose_models
from cycleseg.core.diagnostics import (
    add_noise_at_snr,
    class_mean_field,
    class_sums,
    decision,
    energy_by_class,
    high_frequency_share,
    one_hot_of,
    pixel_norm,
    principal_components,
    project_on_one_hot,
    radial_power_spectrum,
    reconstruction_psnrs,
    split_mean_field,
    unexplained_energy,
    watermark_inputs,
)
from cycleseg.core.noise import NoiseInjection

CYCLEGAN_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "cyclegan.yaml")

# A constructed world: S = 3 classes with a flat colour each; the image adds a texture t (amplitude 0.3) and a
# little noise eta (0.01) that nothing encodes. G's logits are 6 * one-hot(class) plus the texture hidden at
# amplitude EPS = 0.01 on every class score (a per-pixel offset, invisible to the softmax and the argmax).
S, EPS = 3, 0.01
PALETTE = torch.tensor([[-0.6, -0.2, 0.4], [0.5, 0.3, -0.4], [0.0, 0.6, 0.2]])  # (S, 3) class colours


def constructed_case(batch=2, height=16, width=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(batch, height, width, dtype=torch.int64)
    labels[:, :, width // 2:] = 1
    labels[:, height // 2:, width // 4: 3 * width // 4] = 2
    texture = 0.3 * (2 * torch.rand(batch, 1, height, width, generator=g) - 1)
    eta = 0.01 * torch.randn(batch, 3, height, width, generator=g)
    image = PALETTE[labels].permute(0, 3, 1, 2) + texture + eta
    logits = 6.0 * one_hot_of(labels, S) + EPS * texture
    return image, labels, logits, texture


def f_argmax(values):
    """An F that reads only the decision: the colour of the argmax class."""
    return PALETTE[values.argmax(dim=1)].permute(0, 3, 1, 2)


def f_hidden(values):
    """An F that also reads the hidden channel: the mean of the non-maximal class scores, divided by EPS."""
    hidden = (values.sum(dim=1, keepdim=True) - values.max(dim=1, keepdim=True).values) / ((S - 1) * EPS)
    return f_argmax(values) + hidden


def test_hidden_channel_reader_has_a_large_watermark_gap():
    image, labels, logits, _ = constructed_case()
    inputs = watermark_inputs(logits, logits, labels)
    psnr = {k: v.mean().item() for k, v in reconstruction_psnrs(f_hidden, image, inputs).items()}
    assert psnr["noisy"] > 40  # only eta is lost
    assert psnr["noisy"] - psnr["decision"] > 15  # the texture is lost with the hidden channel
    assert psnr["noisy"] - psnr["class_mean"] > 15
    assert psnr["noisy"] - psnr["ground_truth"] > 15


def test_argmax_reader_has_no_watermark_gap():
    image, labels, logits, _ = constructed_case()
    inputs = watermark_inputs(logits, logits, labels)
    psnr = {k: v for k, v in reconstruction_psnrs(f_argmax, image, inputs).items()}
    for name in ("decision", "class_mean", "ground_truth"):
        assert torch.allclose(psnr[name], psnr["noisy"]), name  # same decision (= ground truth here), same image


def test_decision_inputs_carry_the_decision_at_the_reference_norm():
    _, labels, logits, _ = constructed_case()
    noisy = logits + 0.5 * torch.randn_like(logits)
    for scale_to, reference in (("f_input", noisy), ("logits", logits), ("unit", torch.ones_like(logits[:, :1]))):
        inputs = watermark_inputs(logits, noisy, labels, scale_to)
        assert torch.equal(inputs["noisy"], noisy)
        assert torch.equal(decision(inputs["decision"]), decision(logits))
        expected = pixel_norm(reference) if scale_to != "unit" else reference
        assert torch.allclose(pixel_norm(inputs["decision"]), expected, atol=1e-5)
        assert torch.allclose(pixel_norm(inputs["ground_truth"]), expected, atol=1e-5)
        assert torch.equal(decision(inputs["class_mean"]), decision(logits))
    with pytest.raises(ValueError, match="scale_to"):
        watermark_inputs(logits, noisy, labels, "max")


def test_residual_energy_of_exact_one_hot_logits_is_zero():
    labels = torch.randint(0, 5, (2, 6, 7), generator=torch.Generator().manual_seed(1))
    logits = 4.0 * one_hot_of(labels, 5)
    residual, total = energy_by_class(logits, decision(logits))
    assert residual.abs().max().item() == 0
    assert torch.allclose(total, 16.0 * torch.bincount(labels.reshape(-1), minlength=5).double())
    unexplained, total_again = unexplained_energy(logits, decision(logits))
    assert unexplained.abs().max().item() == 0 and torch.equal(total_again, total)


def test_residual_is_every_score_but_the_decided_one():
    # pixel 0: (3, 1, -2), decision 0 -> residual (0, 1, -2), energy 5 of 14; pixel 1: (0, 2, 0) -> 0 of 4
    values = torch.tensor([[3.0, 0.0], [1.0, 2.0], [-2.0, 0.0]]).view(1, 3, 1, 2)
    labels = decision(values)
    projection, residual = project_on_one_hot(values, labels)
    assert torch.equal(projection + residual, values)
    assert torch.equal(residual[0, :, 0, 0], torch.tensor([0.0, 1.0, -2.0]))
    res, tot = energy_by_class(values, labels)
    assert res.tolist() == [5.0, 0.0, 0.0] and tot.tolist() == [14.0, 4.0, 0.0]
    # The hidden texture of the constructed case is exactly the residual's content.
    _, labels, logits, texture = constructed_case()
    _, residual = project_on_one_hot(logits, labels)
    assert torch.allclose(residual.sum(dim=1, keepdim=True), (S - 1) * EPS * texture, atol=1e-6)


def test_split_class_means_remove_per_image_detail_that_image_class_means_keep():
    """A per-image colour offset c_b (one object per class, like the sky) that G hides at amplitude EPS on every
    score: the per-image class means keep it (F rebuilds the image), the split's class means do not."""
    image, labels, logits, _ = constructed_case(batch=4)
    offset = torch.tensor([-0.3, -0.1, 0.1, 0.3]).view(4, 1, 1, 1)
    image, logits = PALETTE[labels].permute(0, 3, 1, 2) + offset, 6.0 * one_hot_of(labels, S) + EPS * offset

    sums, counts = class_sums(logits[:2], labels[:2])  # the split in two batches
    more_sums, more_counts = class_sums(logits[2:], labels[2:])
    means = (sums + more_sums) / (counts + more_counts).unsqueeze(1)
    assert torch.allclose(means.float(), 6.0 * torch.eye(S), atol=1e-6)  # the offsets average out (sum 0)
    inputs = watermark_inputs(logits, logits, labels, split_means=means.float())
    assert torch.allclose(inputs["split_class_mean"], split_mean_field(means, labels))
    psnr = {k: v.mean().item() for k, v in reconstruction_psnrs(f_hidden, image, inputs).items()}
    assert psnr["noisy"] > 60 and psnr["class_mean"] > 60  # the per-image mean holds c_b exactly
    assert psnr["noisy"] - psnr["split_class_mean"] > 15  # c_b is gone: 0.2 on average
    assert "split_class_mean" not in watermark_inputs(logits, logits, labels)


def test_class_mean_field_replaces_pixels_by_their_class_mean():
    values = torch.tensor([[1.0, 3.0, 0.0, 5.0], [0.0, 0.0, 2.0, -1.0]]).view(1, 2, 1, 4)
    labels = torch.tensor([[[0, 0, 1, 0]]])
    field = class_mean_field(values, labels)
    mean0 = torch.tensor([3.0, -1 / 3])  # class 0: pixels 0, 1, 3
    assert torch.allclose(field[0, :, 0, 0], mean0) and torch.allclose(field[0, :, 0, 3], mean0)
    assert torch.allclose(field[0, :, 0, 2], torch.tensor([0.0, 2.0]))
    unexplained, total = unexplained_energy(values, labels)  # class 0: deviations (-2, 1/3), (0, 1/3), (2, -2/3)
    assert torch.allclose(unexplained, torch.tensor([8 + 2 / 3, 0.0], dtype=torch.float64))
    assert torch.allclose(total, torch.tensor([36.0, 4.0], dtype=torch.float64))


def test_noise_at_snr_measures_its_target_and_repeats():
    logits = torch.randn(3, 20, 32, 64, generator=torch.Generator().manual_seed(2)) * 5
    for target in (40.0, 7.38, 0.0, -10.0):
        noisy, measured = add_noise_at_snr(logits, target, torch.Generator().manual_seed(3))
        assert measured.shape == (3,)
        assert torch.allclose(measured, torch.full((3,), target, dtype=measured.dtype), atol=0.1)
        again, _ = add_noise_at_snr(logits, target, torch.Generator().manual_seed(3))
        assert torch.equal(noisy, again)
        # the equal-SNR rule written out: sigma^2 = sum ||logits||^2 / (S H W 10^(snr/10))
        sigma = (logits.pow(2).flatten(1).sum(1) / (20 * 32 * 64 * 10 ** (target / 10))).sqrt()
        draw = torch.randn(logits.shape, generator=torch.Generator().manual_seed(3))
        assert torch.allclose(noisy, logits + sigma.view(3, 1, 1, 1) * draw, atol=1e-4)


def test_power_spectrum_finds_a_cosine_and_high_frequency_share():
    height, width = 32, 64
    x = torch.arange(width).float()
    y = torch.arange(height).float().view(-1, 1)
    slow = torch.cos(2 * math.pi * 4 / width * x).expand(height, width)  # 0.0625 cycles/pixel
    fast = torch.cos(2 * math.pi * 0.375 * x).expand(height, width)  # 0.375 cycles/pixel
    checker = ((x.long() + y.long()) % 2 * 2 - 1).float()  # radius 0.707, beyond 0.5
    maps = torch.stack([slow, fast, checker]).unsqueeze(1)  # (3, 1, H, W)
    freq, power = radial_power_spectrum(maps)
    assert freq.shape == (16,) and power.shape == (3, 16)
    assert abs(freq[power[0].argmax()].item() - 0.0625) <= 1 / 32
    assert abs(freq[power[1].argmax()].item() - 0.375) <= 1 / 32
    share = high_frequency_share(maps)
    assert share[0].item() == pytest.approx(0.0, abs=1e-9)
    assert share[1].item() == pytest.approx(1.0) and share[2].item() == pytest.approx(1.0)


def test_principal_components_shape_and_rank_one():
    pattern = torch.linspace(-1, 1, 8 * 12).view(1, 1, 8, 12)
    maps = torch.cat([pattern, 2 * pattern, -pattern]).view(1, 3, 8, 12)  # rank 1
    comps = principal_components(maps, k=3)
    assert comps.shape == (1, 3, 8, 12)
    assert torch.allclose(comps[0, 0].abs(), pattern[0, 0].abs() * math.sqrt(6), atol=1e-4)
    assert comps[0, 1:].abs().max().item() < 1e-4


class ConstructedModels(nn.Module):
    """A Models stand-in: G returns the constructed logits for the one batch, F is a hand-built function."""

    def __init__(self, logits, f, noise="none"):
        super().__init__()
        self.num_classes, self.is_cycle, self.F = S, True, f
        self.G = lambda image: logits
        self.noise = NoiseInjection(noise)
        self.to_f_input = lambda noisy: noisy


@pytest.mark.parametrize("f, large", [(f_hidden, True), (f_argmax, False)])
def test_diagnose_models_on_constructed_cases(f, large):
    image, labels, logits, _ = constructed_case()
    results, examples = diagnose_models(ConstructedModels(logits, f), [(image, labels)], torch.device("cpu"),
                                        snrs=(30.0,), num_examples=1)
    gap = results["watermark_gap"]["gap_db"]["decision"]
    assert gap > 15 if large else gap == pytest.approx(0.0, abs=1e-9)
    assert results["miou"] == pytest.approx(100.0)  # mIoU over the S = 3 constructed classes
    energy = results["energy"]["logits"]
    assert 0 < energy["residual_share"] < 1e-4  # the hidden channel is 2 * EPS^2 t^2 of 36 per pixel
    assert 0 < energy["unexplained_share"] < 1e-4  # 3 EPS^2 (t - mean t)^2 of 36 per pixel
    assert results["num_images"] == 2 and examples["image"].shape == (1, 3, 16, 32)
    assert examples["residual"].shape == (1, 3, 16, 32)


def test_sensitivity_points_match_a_direct_computation():
    image, labels, logits, _ = constructed_case()
    snrs, seed = (80.0, 40.0, 0.0, -10.0), 7
    results, _ = diagnose_models(ConstructedModels(logits, f_hidden), [(image, labels)], torch.device("cpu"),
                                 seed=seed, snrs=snrs)
    g = torch.Generator().manual_seed(seed)
    for point, target in zip(results["sensitivity"]["points"], snrs):
        sigma = (logits.pow(2).flatten(1).sum(1) / (logits[0].numel() * 10 ** (target / 10))).sqrt().view(-1, 1, 1, 1)
        perturbed = logits + sigma * torch.randn(logits.shape, generator=g)
        mse = (image - f_hidden(perturbed)).pow(2).flatten(1).mean(1)
        snr = 10 * torch.log10(logits.pow(2).flatten(1).sum(1) / (perturbed - logits).pow(2).flatten(1).sum(1))
        pred = perturbed.argmax(dim=1)
        ious = [((pred == c) & (labels == c)).sum() / ((pred == c) | (labels == c)).sum() for c in range(S)]
        assert point["snr_target_db"] == target
        assert point["snr_db"] == pytest.approx(snr.mean().item(), abs=1e-4)
        assert point["snr_db"] == pytest.approx(target, abs=0.25)
        assert point["psnr_db"] == pytest.approx((10 * torch.log10(4 / mse)).mean().item(), abs=1e-4)
        assert point["miou"] == pytest.approx(100 * torch.stack(ious).mean().item(), abs=1e-4)
    psnrs = [p["psnr_db"] for p in results["sensitivity"]["points"]]
    assert psnrs[0] - psnrs[1] > 10  # the hidden channel (about 68 dB below the logits) dies at 40 dB ...
    assert results["sensitivity"]["points"][1]["miou"] == pytest.approx(100.0)  # ... the decision does not


# ------------------------------------------------------------------------------------------- end to end

TINY = ["data.height=32", "data.width=64", "optim.batch_size=2", "optim.epochs=1", "optim.decay_start_epoch=0",
        "train.progress=false", "train.eval_every=0", "train.max_iters=2"]


@pytest.fixture(scope="module")
def tiny_runs(tiny_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("diag_runs")
    for name, extra in (("gauss", ["noise.kind=gaussian", "noise.snr_db=10"]), ("plain", ["model.kind=plain"])):
        assert main(["train", CYCLEGAN_YAML, "--data", str(tiny_data), "--out", str(base / name), f"name={name}",
                     *TINY, *extra]) == 0
    return base


@pytest.mark.slow  # diagnose end to end, twice
def test_cli_diagnose_writes_json_markdown_and_figures(tiny_runs, tiny_data, capsys):
    run = tiny_runs / "gauss"
    args = ["diagnose", str(run), "--data", str(tiny_data), "--snrs", "20,0", "--examples", "2"]
    assert main(args) == 0
    assert "watermark gap" in capsys.readouterr().out
    result = json.loads((run / "diagnose_val.json").read_text())
    assert {"run", "split", "noise", "num_images", "miou", "snr_db", "scale_to", "watermark_gap", "sensitivity",
            "energy", "spectrum", "figures", "summary"} <= set(result)
    assert result["num_images"] == 4 and result["noise"] == "gaussian" and result["scale_to"] == "f_input"
    assert result["snr_db"] == pytest.approx(10, abs=0.1)
    assert set(result["watermark_gap"]["psnr_db"]) == {"noisy", "decision", "class_mean", "split_class_mean",
                                                       "split_class_mean_own_noise", "ground_truth"}
    assert set(result["watermark_gap"]["gap_db"]) == {"decision", "class_mean", "split_class_mean",
                                                     "split_class_mean_own_noise", "ground_truth"}
    assert [p["snr_target_db"] for p in result["sensitivity"]["points"]] == [20.0, 0.0]
    assert all({"snr_db", "psnr_db", "miou"} <= set(p) for p in result["sensitivity"]["points"])
    for space in ("logits", "f_input"):
        assert 0 <= result["energy"][space]["residual_share"] <= 1
        assert len(result["energy"][space]["per_class"]) == 20
    assert len(result["spectrum"]["frequency"]) == len(result["spectrum"]["power"]["image"]) == 16
    markdown = (run / "diagnose_val.md").read_text()
    assert "Watermark gap" in markdown
    for name, path in result["figures"].items():
        assert (run / path).is_file() and (run / path).stat().st_size > 1000, name
        assert f"]({path})" in markdown
    # seeded: a second run writes the same numbers
    first = (run / "diagnose_val.json").read_text()
    assert main(args) == 0
    assert (run / "diagnose_val.json").read_text() == first


@pytest.mark.parametrize("extra, needle", [
    ([], "diagnose needs a cycle model"),
    (["--snrs", "40,loud"], "--snrs"),
    (["--max-images", "0"], "--max-images"),
])
def test_cli_diagnose_errors_are_one_line(tiny_runs, tiny_data, capsys, extra, needle):
    run = tiny_runs / ("plain" if not extra else "gauss")
    assert main(["diagnose", str(run), "--data", str(tiny_data), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
