"""G, F and D_X (SPEC "Networks"): shapes, parameter counts against the official ERFNet, init, gradients."""

import pytest
import torch
from torch import nn

from cycleseg.core.networks import PatchDiscriminator, image_generator, init_weights, segmentation_generator

S = 20


# --- Official ERFNet (Romera et al., eriromero/erfnet_pytorch) parameter count, by per-layer arithmetic. ---
def conv_params(c_in, c_out, kh, kw):  # weight + bias
    return c_in * c_out * kh * kw + c_out


def bn_params(c):  # affine weight + bias (running stats are buffers)
    return 2 * c


def downsampler(c_in, c_out):  # conv3x3/2 with c_out - c_in channels, max-pool, BN(c_out)
    return conv_params(c_in, c_out - c_in, 3, 3) + bn_params(c_out)


def non_bt_1d(c):  # 3x1, 1x3, BN, 3x1 (dilated), 1x3 (dilated), BN
    return 2 * conv_params(c, c, 3, 1) + 2 * conv_params(c, c, 1, 3) + 2 * bn_params(c)


def upsampler(c_in, c_out):  # ConvTranspose 3x3/2 + BN
    return conv_params(c_in, c_out, 3, 3) + bn_params(c_out)


def erfnet_body(in_chans, out_chans, first_width):
    """Everything used in full-net mode: encoder blocks, decoder, output ConvTranspose2d(16->out, 2, 2)."""
    encoder = downsampler(in_chans, first_width) + downsampler(first_width, 64) + 5 * non_bt_1d(64)
    encoder += downsampler(64, 128) + 8 * non_bt_1d(128)
    decoder = upsampler(128, 64) + 2 * non_bt_1d(64) + upsampler(64, 16) + 2 * non_bt_1d(16)
    return encoder + decoder + conv_params(16, out_chans, 2, 2)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# --- Shapes ---
def test_segmentation_generator_maps_image_to_logits_of_same_size():
    g = segmentation_generator(S).eval()
    with torch.no_grad():
        out = g(torch.randn(2, 3, 32, 64))
    assert out.shape == (2, S, 32, 64)


def test_image_generator_maps_segmentation_to_image_in_minus1_1():
    f = image_generator(S).eval()
    with torch.no_grad():
        out = f(100.0 * torch.randn(2, S, 32, 64))  # large inputs push tanh to saturation
    assert out.shape == (2, 3, 32, 64)
    assert out.abs().max() <= 1.0
    assert torch.isfinite(out).all()


def test_image_generator_output_is_tanh_of_output_conv():
    f = image_generator(S).eval()
    x = torch.randn(1, S, 16, 32)
    with torch.no_grad():
        pre = f.output_conv(f.decoder(f.encoder(x)))
        assert torch.allclose(f(x), torch.tanh(pre))


@pytest.mark.parametrize("h, w", [(256, 512), (64, 128), (32, 48)])
def test_patch_discriminator_output_is_h8_minus_2_by_w8_minus_2(h, w):
    d = PatchDiscriminator().eval()
    with torch.no_grad():
        out = d(torch.randn(1, 3, h, w))
    assert out.shape == (1, 1, h // 8 - 2, w // 8 - 2)
    if (h, w) == (256, 512):
        assert out.shape[-2:] == (30, 62)


def test_patch_discriminator_has_no_sigmoid():
    d = init_weights(PatchDiscriminator())
    with torch.no_grad():
        d.model[-1].bias.fill_(5.0)  # a sigmoid would squash this into (0, 1)
        out = d(torch.randn(2, 3, 64, 64))
    assert out.max() > 1.0


# --- Parameter counts ---
def test_segmentation_generator_parameter_count_matches_official_erfnet():
    official_total = erfnet_body(3, S, 16) + conv_params(128, S, 1, 1)  # + encoder-only 1x1 output conv
    assert abs(official_total - 2.06e6) < 0.01e6
    ours = n_params(segmentation_generator(S))
    assert ours == official_total - (128 * S + S)


def test_image_generator_parameter_count_has_20_to_32_first_downsampler():
    expected = erfnet_body(S, 3, 32)
    assert n_params(image_generator(S)) == expected


def test_image_generator_accepts_20_channels_and_rejects_3():
    f = image_generator(S).eval()
    with torch.no_grad():
        f(torch.randn(1, S, 16, 16))
    with pytest.raises(ValueError):
        f(torch.randn(1, 3, 16, 16))


# --- Input validation ---
@pytest.mark.parametrize("make, chans", [(lambda: segmentation_generator(S), 3), (lambda: image_generator(S), S),
                                         (PatchDiscriminator, 3)])
def test_wrong_channels_or_size_raise_value_error(make, chans):
    net = make().eval()
    with torch.no_grad():
        with pytest.raises(ValueError):
            net(torch.randn(1, chans + 1, 32, 32))
        with pytest.raises(ValueError):
            net(torch.randn(1, chans, 36, 32))  # H not a multiple of 8
        with pytest.raises(ValueError):
            net(torch.randn(1, chans, 32, 44))  # W not a multiple of 8
        with pytest.raises(ValueError):
            net(torch.randn(chans, 32, 32))  # missing batch dimension


# --- Init ---
def test_init_weights_conv_normal_002_norm_normal_1_002_biases_zero():
    torch.manual_seed(0)
    g = init_weights(segmentation_generator(S))
    conv_w, bn_w, biases = [], [], []
    for m in g.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            conv_w.append(m.weight.detach().flatten())
            biases.append(m.bias.detach().flatten())
        elif isinstance(m, nn.BatchNorm2d):
            bn_w.append(m.weight.detach().flatten())
            biases.append(m.bias.detach().flatten())
    conv_w, bn_w, biases = torch.cat(conv_w), torch.cat(bn_w), torch.cat(biases)

    assert conv_w.numel() > 1_000_000
    assert abs(conv_w.mean().item()) < 1e-3
    assert conv_w.std().item() == pytest.approx(0.02, rel=0.01)
    # A single large layer on its own, too.
    big = max((m.weight.detach() for m in g.modules() if isinstance(m, nn.Conv2d)), key=torch.numel)
    assert big.numel() >= 49152  # 128*128*3
    assert big.std().item() == pytest.approx(0.02, rel=0.03)
    assert abs(big.mean().item()) < 5e-4

    assert bn_w.numel() > 1000
    assert bn_w.mean().item() == pytest.approx(1.0, abs=2e-3)
    assert bn_w.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.all(biases == 0)


def test_init_weights_discriminator_conv_std_and_zero_bias():
    torch.manual_seed(1)
    d = init_weights(PatchDiscriminator())
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5
    w = convs[3].weight.detach()  # 256 -> 512, 4x4: ~2M weights
    assert w.std().item() == pytest.approx(0.02, rel=0.01)
    assert abs(w.mean().item()) < 1e-4
    assert all(torch.all(c.bias == 0) for c in convs)


# --- Gradients ---
def test_cross_entropy_gradient_reaches_every_parameter_of_g():
    torch.manual_seed(0)
    g = init_weights(segmentation_generator(S)).train()
    x = torch.rand(2, 3, 32, 64) * 2 - 1
    labels = torch.randint(0, S, (2, 32, 64))
    loss = nn.functional.cross_entropy(g(x), labels)
    loss.backward()
    missing = [name for name, p in g.named_parameters() if p.grad is None]
    assert missing == []
    for name, p in g.named_parameters():
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
