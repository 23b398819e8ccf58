"""Speed options keep the numerics: bf16 close to fp32, fp32 bit-for-bit repeatable, every option trains."""

import pytest
import torch

from cycleseg.config import Config, ModelConfig, NoiseConfig
from cycleseg.errors import ConfigError
from cycleseg.models import build_models
from cycleseg.pool import ImagePool
from cycleseg.precision import make_adam, resolve_precision, to_memory_format
from cycleseg.train import discriminator_step, generator_step

# Relative difference of the loss terms over 3 iterations, bf16 vs fp32. The adversarial terms are left out:
# at initialisation D_X's outputs are near 0 on 2 images, so their relative rounding effects are large (up to
# 40 % by the third iteration) although absolute differences are small.
BF16_TOLERANCE = 0.02
STABLE_TERMS = ("loss/G/total", "loss/G/seg", "loss/G/rec_x", "loss/G/rec_y")


def _train(precision="fp32", channels_last=False, kernel="loop", iterations=3, seed=0, noise="quantize"):
    """A few Table 1 iterations of the cycle model on fixed random data; returns the loss history.

    noise="quantize": 2 bits, the paper's best; "none": no quantizer whose level flips amplify rounding.
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
    image = to_memory_format(torch.rand(2, 3, 32, 64, generator=gen) * 2 - 1, channels_last)
    labels = torch.randint(0, 20, (2, 32, 64), generator=gen)
    history = []
    for _ in range(iterations):
        losses, fake = generator_step(models, opt_g, image, labels, Config().loss, amp=amp)
        losses |= discriminator_step(models, opt_d, image, fake, pool, amp=amp)
        history.append({k: v.item() for k, v in losses.items()})
    return history, models


def test_fp32_training_is_bit_for_bit_repeatable():
    a, models_a = _train()
    b, models_b = _train()
    assert a == b
    for (name, pa), pb in zip(models_a.named_parameters(), models_b.parameters(), strict=True):
        assert torch.equal(pa, pb), name


def test_bf16_losses_are_within_tolerance_of_fp32():
    fp32, _ = _train("fp32", noise="none")
    bf16, _ = _train("bf16", noise="none")
    for step32, step16 in zip(fp32, bf16, strict=True):
        for key in STABLE_TERMS:
            assert step16[key] == pytest.approx(step32[key], rel=BF16_TOLERANCE), key
    assert fp32 != bf16  # bf16 really ran (it rounds differently)
    first32, first16 = fp32[0], bf16[0]  # same weights: every term, adversarial ones included, differs by rounding only
    for key in first32:
        assert first16[key] == pytest.approx(first32[key], rel=0.05), key


@pytest.mark.parametrize("options", [{"channels_last": True}, {"kernel": "fused"}, {"kernel": "foreach"}])
def test_exact_options_match_the_reference_closely(options):
    """channels_last and the Adam kernels change only float rounding: the fp32 loss terms agree to 1e-3."""
    ref, _ = _train(noise="none")
    other, _ = _train(noise="none", **options)
    for a, b in zip(ref, other, strict=True):
        for key in STABLE_TERMS[1:]:  # J_gen includes the adversarial term (see BF16_TOLERANCE)
            assert b[key] == pytest.approx(a[key], rel=1e-3), key


def test_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).dtype is None  # fp32 on the CPU unless asked
    assert resolve_precision("bf16", cpu).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ConfigError, match="optim.kernel"):
        make_adam([torch.nn.Parameter(torch.zeros(1))], 1e-3, (0.5, 0.999), "turbo", cpu)


def test_bf16_evaluation_is_close_to_fp32():
    from cycleseg.evaluate import evaluate_models

    _, models = _train(noise="none", iterations=1)
    gen = torch.Generator().manual_seed(7)
    batches = [(torch.rand(2, 3, 32, 64, generator=gen) * 2 - 1, torch.randint(0, 20, (2, 32, 64), generator=gen))]
    fp32 = evaluate_models(models, batches, torch.device("cpu"))
    bf16 = evaluate_models(models, batches, torch.device("cpu"), precision="bf16")
    assert bf16["psnr_db"] == pytest.approx(fp32["psnr_db"], abs=0.1)
    assert bf16["num_images"] == fp32["num_images"] == 2
