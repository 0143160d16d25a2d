"""Tests for nfresnet.py: parameter counts, signal propagation at init, AGC, CPU training step."""

import math
from dataclasses import replace

import pytest
import torch

from nfresnet import (ACT_FN, ACT_GAMMA, PRESETS, NFResNet, WSConv2d, adaptive_grad_clip,
                      unitwise_norm)

ALPHA = 0.2


def build(preset, meta=True, **overrides):
    config = replace(PRESETS[preset], **overrides)
    if not meta:
        return NFResNet(config)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return NFResNet(config)


def n_params(model, skip_gains=True):
    return sum(p.numel() for name, p in model.named_parameters()
               if skip_gains or not name.endswith("skip_gain"))


# ----------------------------------------------------------------------------- parameter counts

def test_nf_resnet50_param_count_matches_resnet50():
    # torchvision resnet50: 25,557,032 with its 1000-way fc. Every conv+BatchNorm pair there is a
    # WSConv2d here whose gain/bias replace BN's weight/bias (stem included). The only extra
    # parameters are the SkipInit gains, one scalar per block: sum(3, 4, 6, 3) = 16.
    model = build("nf_resnet50", num_classes=1000)
    assert n_params(model, skip_gains=False) == 25_557_032
    assert n_params(model) == 25_557_032 + 16
    # without the head, the 2048-d pooled feature: minus fc weight 2048*1000 and bias 1000
    model = build("nf_resnet50")
    assert model.num_features == 2048 and model.head is None
    assert n_params(model) == 25_557_032 - (2048 * 1000 + 1000) + 16 == 23_508_048


def test_nf_resnet101_param_count_matches_resnet101():
    # torchvision resnet101: 44,549,160; plus sum(3, 4, 23, 3) = 33 skip gains
    model = build("nf_resnet101", num_classes=1000)
    assert n_params(model) == 44_549_160 + 33


# ----------------------------------------------------------------------------- shapes

def test_feature_shapes():
    model = build("nf_resnet50")
    x = torch.empty(2, 3, 224, 224, device="meta")
    assert model.forward_features(x).shape == (2, 2048, 7, 7)  # 224 / 32
    assert model(x).shape == (2, 2048)
    model = build("nf_resnet50", num_classes=1000)
    assert model(x).shape == (2, 1000)
    tiny = build("tiny", meta=False).eval()
    with torch.no_grad():
        features = tiny.forward_features(torch.randn(2, 3, 64, 64))
        assert features.shape == (2, tiny.num_features, 4, 4)  # 64 / 16
        assert tiny(torch.randn(2, 3, 32, 32)).shape == (2, tiny.num_features)


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = build("tiny", meta=False)
    for b in model.blocks:  # make the residual branches count
        b.skip_gain.data.fill_(1.0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- signal propagation

def test_non_transition_block_is_identity_at_init():
    torch.manual_seed(0)
    model = build("tiny", meta=False, depths=(2, 2, 1, 1))
    x = torch.randn(2, model.config.stem_width, 16, 16)
    with torch.no_grad():
        for block in model.blocks:
            y = block(x)
            if block.downsample is None:
                assert torch.equal(y, x)  # skip_gain = 0: exactly the shortcut
            else:
                assert not torch.equal(y, x)
            x = y


def test_beta_bookkeeping():
    # Var grows by alpha^2 per block and is reset to 1 + alpha^2 after each transition block
    # (first block of a stage); the very first block sees the stem's output, Var = 1.
    model = build("nf_resnet50")
    depths = model.config.depths
    expected = []
    for stage, depth in enumerate(depths):
        for i in range(depth):
            if stage == 0 and i == 0:
                var = 1.0
            elif i == 0:  # after the previous stage's transition and its depth - 1 more blocks
                var = 1.0 + depths[stage - 1] * ALPHA ** 2
            else:
                var = 1.0 + i * ALPHA ** 2
            expected.append(math.sqrt(var))
    betas = [b.beta for b in model.blocks]
    assert betas == pytest.approx(expected, rel=1e-12)
    assert [b.downsample is not None for b in model.blocks] == \
        [i == 0 for d in depths for i in range(d)]


def test_measured_variance_follows_beta_without_skipinit():
    # One stride-1 stage (no average pool in the shortcut), skip gains set to 1: the variance of
    # each block's input is what beta^2 predicts. (After an average-pooled shortcut it is lower
    # for spatially white input, 1/4 for i.i.d. noise; see the module docstring.)
    torch.manual_seed(0)
    model = build("tiny", meta=False, depths=(5,), widths=(128,), stem_width=32)
    for b in model.blocks:
        b.skip_gain.data.fill_(1.0)
    h = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        h = model.stem(h)
        for block in model.blocks:
            assert h.var().item() == pytest.approx(block.beta ** 2, rel=0.1)
            h = block(h)


def test_standardized_weight_statistics():
    torch.manual_seed(0)
    conv = WSConv2d(64, 32, 3)
    conv.weight.data = 5 * conv.weight.data + 3  # any scale and offset is standardised away
    with torch.no_grad():
        conv.gain.uniform_(0.5, 2.0)
        w = conv.standardized_weight()
    fan_in = 64 * 3 * 3
    mean = w.mean(dim=(1, 2, 3))
    var = w.var(dim=(1, 2, 3), correction=0)
    torch.testing.assert_close(mean, torch.zeros(32), atol=1e-7, rtol=0)
    torch.testing.assert_close(var, conv.gain.detach() ** 2 / fan_in, rtol=1e-4, atol=0)


def test_wsconv_after_relu_keeps_unit_variance():
    # Var(relu(z)) = (1 - 1/pi) / 2 ~ 0.34 and E[relu(z)] = 1/sqrt(2 pi); with gamma =
    # sqrt(2 / (1 - 1/pi)) the standardised 1x1 conv of relu(z) has mean ~0 and variance ~1.
    torch.manual_seed(0)
    gamma = ACT_GAMMA["relu"]
    assert gamma == math.sqrt(2 / (1 - 1 / math.pi))  # the paper's closed form
    x = torch.relu(torch.randn(16, 256, 16, 16))
    with torch.no_grad():
        y = WSConv2d(256, 256, 1, gamma=gamma)(x)
        y_no_gamma = WSConv2d(256, 256, 1)(x)
    assert abs(y.mean().item()) < 0.02
    assert y.var().item() == pytest.approx(1.0, rel=0.05)
    assert y_no_gamma.var().item() == pytest.approx((1 - 1 / math.pi) / 2, rel=0.05)


@pytest.mark.parametrize("name", sorted(ACT_GAMMA))
def test_gamma_table_by_quadrature(name):
    # gamma = 1 / std(g(z)), z ~ N(0, 1), by the trapezoid rule on [-12, 12]
    z = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    pdf = torch.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi)
    g = ACT_FN[name](z)
    mean = torch.trapezoid(g * pdf, z)
    var = torch.trapezoid((g - mean) ** 2 * pdf, z)
    # gelu: torch's is exact, deepmind's gamma used jax's tanh approximation
    assert ACT_GAMMA[name] == pytest.approx(1 / var.sqrt().item(), rel=1e-3)


# ----------------------------------------------------------------------------- AGC

def test_agc_clips_each_output_unit_to_lambda_times_weight_norm():
    torch.manual_seed(0)
    clip = 0.01
    w = torch.nn.Parameter(torch.randn(3, 5))
    grad = torch.randn(3, 5)
    w_norm = w.detach().norm(dim=1)
    grad[0] *= 10 * clip * w_norm[0] / grad[0].norm()   # ratio 10 * clip: clipped
    grad[1] *= 0.5 * clip * w_norm[1] / grad[1].norm()  # ratio 0.5 * clip: untouched
    grad[2] *= 2 * clip * w_norm[2] / grad[2].norm()    # ratio 2 * clip: clipped
    w.grad = grad.clone()
    adaptive_grad_clip([w], clip=clip)
    new_norm = w.grad.norm(dim=1)
    assert new_norm[0].item() == pytest.approx(clip * w_norm[0].item(), rel=1e-6)
    assert new_norm[2].item() == pytest.approx(clip * w_norm[2].item(), rel=1e-6)
    assert torch.equal(w.grad[1], grad[1])
    # direction kept
    torch.testing.assert_close(w.grad[0] / new_norm[0], grad[0] / grad[0].norm())


def test_agc_conv_units_scalars_and_excluded_head():
    torch.manual_seed(0)
    model = build("tiny", meta=False, num_classes=10)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 100  # every unit far above the threshold
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    adaptive_grad_clip(model.agc_parameters(), clip=0.02, eps=1e-3)
    for name, p in model.named_parameters():
        if name.startswith("head."):
            assert torch.equal(p.grad, before[name])  # excluded: untouched
            continue
        max_norm = unitwise_norm(p.detach()).clamp(min=1e-3) * 0.02
        torch.testing.assert_close(unitwise_norm(p.grad), max_norm.expand_as(unitwise_norm(p.grad)))
    # a zero-initialised skip gain is a unit of norm 0: its gradient is capped at clip * eps
    assert model.blocks[0].skip_gain.grad.abs().item() == pytest.approx(0.02 * 1e-3, rel=1e-6)
    # conv weights are clipped per output filter (dim 0), not as a whole
    conv_norms = unitwise_norm(model.blocks[0].conv2.weight.grad)
    assert conv_norms.shape == (model.blocks[0].conv2.out_channels, 1, 1, 1)


# ----------------------------------------------------------------------------- training step

def test_tiny_forward_backward_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = build("tiny", meta=False, num_classes=7)
    x = torch.randn(4, 3, 64, 64)
    y = torch.randint(0, 7, (4,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # at init the branches are switched off (skip_gain = 0), so only the gains themselves move
    assert all(b.skip_gain.grad.abs() > 0 for b in model.blocks)
    adaptive_grad_clip(model.agc_parameters())
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_strided_shortcut_keeps_the_variance_that_average_pooling_quarters():
    # at init (skip gains 0) the tiny encoder is its chain of transition shortcuts; on spatially
    # white input each 2x2 average pool divides the variance by ~4, a strided 1x1 conv does not
    x = torch.randn(64, 3, 64, 64)

    def variances(shortcut):
        torch.manual_seed(0)
        model = NFResNet(replace(PRESETS["tiny"], shortcut=shortcut))
        with torch.no_grad():
            h, out = model.stem(x), []
            for block in model.blocks:
                h = block(h)
                out.append(h.var().item())
        return out, sum(p.numel() for p in model.parameters())

    (pooled, n_pooled), (strided, n_strided) = variances("avgpool"), variances("strided")
    assert n_pooled == n_strided  # the same parameters, only the sampling differs
    for k in (1, 2, 3):  # the downsampling stages
        assert pooled[k] < 0.4 * pooled[k - 1]
        assert strided[k] > 0.7 * strided[k - 1]
