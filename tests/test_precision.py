"""Speed options keep the numerics: bf16 close to fp32, fp32 bit-for-bit repeatable, every option trains."""

import pytest
import torch

from cycleseg.config import Config, ModelConfig, NoiseConfig
from cycleseg.core.models import build_models
from cycleseg.core.pool import ImagePool
from cycleseg.core.precision import make_adam, resolve_precision, to_memory_format
from cycleseg.core.steps import discriminator_step, generator_step
from cycleseg.errors import ConfigError

# Comparisons between kernels, memory formats or precisions are made after ONE step, where they are well
# defined on any CPU. Over several iterations they are not: at the paper's initialisation the training
# gradient is extremely sensitive to rounding (fp32 BatchNorm on batch statistics of small activations): a
# change of the input image by one ulp moves G's gradient by ~5 % (its norm), and Adam's first, sign-like
# step turns that into different weights, so the loss terms of later iterations differ by 1e-3 to 1e-2
# between two equally correct kernels, more or less on different CPUs (AVX512-BF16/AMX vs AVX2).
#
# So: the first iteration's loss terms (a forward pass of the same weights) must agree to rounding; the first
# step's gradients must lie within the spread that one-ulp perturbations of the input produce on this CPU,
# measured in the test; the Adam kernels, given the same gradients, must make the same update.
FP32_LOSS_RTOL = 1e-5  # measured: 5e-7 (channels_last), 0 (Adam kernels)
BF16_LOSS_RTOL = {"loss/G/total": 0.01, "loss/G/seg": 0.01, "loss/G/rec_x": 0.01, "loss/G/rec_y": 0.01,
                  # D_X's outputs are near 0 at initialisation: relative rounding effects are large there
                  "loss/G/adv": 0.1, "loss/D/total": 0.1}  # measured: 7e-4, 4e-5, 2e-4, 2e-4, 3e-2, 3e-2
SPREAD_FACTOR = 8  # a gradient may differ by up to this many times the largest one-ulp spread ...
GRAD_FLOOR = 1e-5  # ... or by this much relative (D_X is well conditioned: its spread is ~5e-7)


def _train(precision="fp32", channels_last=False, kernel="loop", iterations=3, seed=0, noise="quantize",
           perturb=None):
    """A few Table 1 iterations of the cycle model on fixed random data.

    noise="quantize": 2 bits, the paper's best; "none": no quantizer whose level flips amplify rounding.
    perturb: a seed: move every pixel of the image by one ulp, up or down at random (rounding-level noise).
    Returns the loss history, the models, and the gradients of the first step of G, F and D_X.
    """
    torch.manual_seed(seed)
    device = torch.device("cpu")
    amp = resolve_precision(precision, device)
    models = build_models(ModelConfig(), NoiseConfig(kind="quantize", bits=2) if noise == "quantize" else NoiseConfig())
    if channels_last:
        models.to(memory_format=torch.channels_last)
    opt_g = make_adam(list(models.G.parameters()) + list(models.F.parameters()), 2e-4, (0.5, 0.999), kernel, device)
    opt_d = make_adam(list(models.D.parameters()), 2e-4, (0.5, 0.999), kernel, device)
    pool = ImagePool(3, seed=seed)
    gen = torch.Generator().manual_seed(123)
    image = torch.rand(2, 3, 32, 64, generator=gen) * 2 - 1
    if perturb is not None:
        up = torch.rand(image.shape, generator=torch.Generator().manual_seed(perturb)) < 0.5
        image = torch.where(up, torch.nextafter(image, torch.tensor(2.0)), torch.nextafter(image, torch.tensor(-2.0)))
    image = to_memory_format(image, channels_last)
    labels = torch.randint(0, 20, (2, 32, 64), generator=gen)
    history, grads = [], {}
    for _ in range(iterations):
        losses, fake = generator_step(models, opt_g, image, labels, Config().loss, amp=amp)
        if not grads:
            grads = {"G": [p.grad.clone() for p in models.G.parameters()],
                     "F": [p.grad.clone() for p in models.F.parameters()]}
        losses |= discriminator_step(models, opt_d, image, fake, pool, amp=amp)
        grads.setdefault("D", [p.grad.clone() for p in models.D.parameters()])
        history.append({k: v.item() for k, v in losses.items()})
    return history, models, grads


def _grad_difference(a, b):
    """Per network: ||a - b|| / ||b|| over all its parameters, in float64."""
    out = {}
    for net in b:
        diff = sum((x.double() - y.double()).pow(2).sum() for x, y in zip(a[net], b[net], strict=True))
        out[net] = (diff / sum(y.double().pow(2).sum() for y in b[net])).sqrt().item()
    return out


@pytest.fixture(scope="module")
def fp32_reference():
    """One fp32 step, and the spread of its gradients under three one-ulp perturbations of the input."""
    history, _, grads = _train(noise="none", iterations=1)
    spread = {net: 0.0 for net in grads}
    for seed in (1, 2, 3):
        perturbed = _grad_difference(_train(noise="none", iterations=1, perturb=seed)[2], grads)
        spread = {net: max(spread[net], perturbed[net]) for net in spread}
    return history[0], grads, spread


def test_fp32_training_is_bit_for_bit_repeatable():
    a, models_a, _ = _train()
    b, models_b, _ = _train()
    assert a == b
    for (name, pa), pb in zip(models_a.named_parameters(), models_b.parameters(), strict=True):
        assert torch.equal(pa, pb), name


def test_bf16_losses_are_within_tolerance_of_fp32(fp32_reference):
    """The first iteration (same weights): every loss term differs by bf16 rounding only."""
    first32, _, _ = fp32_reference
    bf16, _, _ = _train("bf16", noise="none", iterations=1)
    assert bf16[0] != first32  # bf16 really ran (it rounds differently)
    for key, rtol in BF16_LOSS_RTOL.items():
        assert bf16[0][key] == pytest.approx(first32[key], rel=rtol), key


def test_bf16_trains():
    """Three bf16 iterations: finite losses, and every network's weights move."""
    history, models, _ = _train("bf16", iterations=3)
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in history)
    torch.manual_seed(0)
    initial = build_models(ModelConfig(), NoiseConfig(kind="quantize", bits=2))
    for net in ("G", "F", "D"):
        moved = [not torch.equal(a, b) for a, b in zip(getattr(models, net).parameters(),
                                                        getattr(initial, net).parameters(), strict=True)]
        assert sum(moved) > len(moved) // 2, net


@pytest.mark.parametrize("options", [{"channels_last": True}, {"kernel": "fused"}, {"kernel": "foreach"}],
                         ids=["channels_last", "fused", "foreach"])
def test_exact_options_match_the_reference_closely(options, fp32_reference):
    """channels_last and the Adam kernels change only float rounding: after one step, the loss terms agree to
    1e-5 and the gradients lie within the rounding spread of the reference (see FP32_LOSS_RTOL)."""
    first, grads, spread = fp32_reference
    other, _, other_grads = _train(noise="none", iterations=1, **options)
    for key in first:
        assert other[0][key] == pytest.approx(first[key], rel=FP32_LOSS_RTOL), key
    difference = _grad_difference(other_grads, grads)
    for net, value in difference.items():
        assert value <= max(SPREAD_FACTOR * spread[net], GRAD_FLOOR), (net, value, spread[net])


def test_adam_kernels_make_the_same_updates():
    """Given the same gradients, the fused, foreach and loop Adam make the same updates, step after step (the
    bias correction changes with the step), to float rounding."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(16, 3, 3, 3), (16,), (64, 16, 1, 3), (20,)]
    start = [torch.randn(s, generator=gen) * 0.02 for s in shapes]
    gradients = [[torch.randn(s, generator=gen) * 10.0 ** torch.randint(-6, 1, (1,), generator=gen).item()
                  for s in shapes] for _ in range(5)]
    finals = {}
    for kernel in ("loop", "foreach", "fused"):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = make_adam(params, 2e-4, (0.5, 0.999), kernel, torch.device("cpu"))
        for step in gradients:
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            opt.step()
        finals[kernel] = [p.detach() for p in params]
    for kernel in ("foreach", "fused"):
        for a, b in zip(finals[kernel], finals["loop"], strict=True):
            torch.testing.assert_close(a, b, rtol=2e-6, atol=1e-9)  # a few ulps; the 5 updates sum to ~1e-3
        assert any(not torch.equal(a, s) for a, s in zip(finals[kernel], start, strict=True))


def test_precision_choices(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr("cycleseg.core.precision.native_bf16_cpu", lambda: False)
    assert resolve_precision("auto", cpu).dtype is None  # fp32 on CPUs that emulate bf16
    monkeypatch.setattr("cycleseg.core.precision.native_bf16_cpu", lambda: True)
    assert resolve_precision("auto", cpu).dtype == torch.bfloat16  # bf16 where it is native
    assert resolve_precision("fp32", cpu).dtype is None
    assert resolve_precision("bf16", cpu).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ConfigError, match="optim.kernel"):
        make_adam([torch.nn.Parameter(torch.zeros(1))], 1e-3, (0.5, 0.999), "turbo", cpu)


def test_bf16_evaluation_is_close_to_fp32():
    from cycleseg.commands.evaluate import evaluate_models

    _, models, _ = _train(noise="none", iterations=1)
    gen = torch.Generator().manual_seed(7)
    batches = [(torch.rand(2, 3, 32, 64, generator=gen) * 2 - 1, torch.randint(0, 20, (2, 32, 64), generator=gen))]
    fp32 = evaluate_models(models, batches, torch.device("cpu"))
    bf16 = evaluate_models(models, batches, torch.device("cpu"), precision="bf16")
    assert bf16["psnr_db"] == pytest.approx(fp32["psnr_db"], abs=0.1)
    assert bf16["num_images"] == fp32["num_images"] == 2


@pytest.mark.parametrize("flags, native", [("fpu sse avx2 avx512f", False), ("fpu avx512f avx512_bf16", True),
                                           ("fpu amx_bf16 amx_tile", True)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    from cycleseg.core.precision import native_bf16_cpu

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
    assert native_bf16_cpu(str(cpuinfo)) is native
    assert native_bf16_cpu(str(tmp_path / "missing")) is False


def _auto_run(data, out, *extra):
    from cycleseg.cli import main

    return main(["train", "configs/demo/quant2.yaml", "--data", str(data), "--out", str(out), "data.height=32",
                 "data.width=64", "optim.epochs=1", "optim.decay_start_epoch=0", "train.progress=false",
                 "train.precision=auto", *extra])


@pytest.mark.slow
def test_auto_keeps_bf16_when_its_losses_match_and_says_why(tiny_data, tmp_path, monkeypatch):
    import json

    monkeypatch.setattr("cycleseg.core.precision.native_bf16_cpu", lambda: True)
    assert _auto_run(tiny_data, tmp_path / "run") == 0
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["precision"]["name"] == "bf16"
    assert "natively" in status["precision"]["reason"] and "first batch" in status["precision"]["reason"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["precision"] == "bf16"
    # the choice holds for the whole run: a resume on a CPU without native bf16 keeps it
    monkeypatch.setattr("cycleseg.core.precision.native_bf16_cpu", lambda: False)
    from cycleseg.cli import main
    from cycleseg.runs import load_checkpoint

    assert main(["train", "--resume", str(tmp_path / "run"), "train.max_iters=3"]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["precision"]["name"] == "bf16"


@pytest.mark.slow
def test_auto_falls_back_to_fp32_when_bf16_losses_differ(tiny_data, tmp_path, monkeypatch):
    import json

    monkeypatch.setattr("cycleseg.core.precision.native_bf16_cpu", lambda: True)
    monkeypatch.setattr("cycleseg.core.steps.BF16_RTOL", {"seg": 1e-9, "rec_x": 1e-9, "rec_y": 1e-9, "total": 1e-9})
    assert _auto_run(tiny_data, tmp_path / "run") == 0
    precision = json.loads((tmp_path / "run" / "run.json").read_text())["precision"]
    assert precision["name"] == "fp32" and "fp32 instead" in precision["reason"]


def test_the_bf16_check_leaves_the_run_unchanged(tiny_data):
    """bf16_agrees works on a copy with the RNG forked: the models' weights, BatchNorm statistics and the
    global RNG are as before."""
    from cycleseg.core.steps import bf16_agrees

    torch.manual_seed(0)
    models = build_models(ModelConfig(), NoiseConfig(kind="gaussian", snr_db=5.0))
    before = {k: v.clone() for k, v in models.state_dict().items()}
    image, labels = torch.rand(2, 3, 32, 64) * 2 - 1, torch.randint(0, 20, (2, 32, 64))
    rng = torch.get_rng_state()
    ok, why = bf16_agrees(models, image, labels, Config().loss)
    assert ok, why
    assert all(torch.equal(before[k], v) for k, v in models.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
