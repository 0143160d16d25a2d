"""
Normalizer-Free ResNets and Adaptive Gradient Clipping: Frozen's vision encoder.

Frozen (Tsimpoukelli et al. 2021, Sec. 3.1) encodes an image with an NF-ResNet-50 and keeps
"the final output vector of the NF-ResNet after the global pooling layer"; frozen.py maps that
vector to the visual prefix. NF-ResNets train like BatchNorm ResNets without any normalisation:

1) Brock, De, Smith 2021a, "Characterizing signal propagation to close the performance gap in
   unnormalized ResNets" (arXiv 2101.08692), Sec. 3-4: pre-activation residual blocks
   x_{l+1} = x_l + alpha * f_l(x_l / beta_l), where beta_l = sqrt(Var(x_l)) is known
   analytically (Var grows by alpha^2 per block), and Scaled Weight Standardisation so every
   conv preserves variance at init.
2) Brock, De, Smith, Simonyan 2021b, "High-Performance Large-Scale Image Recognition Without
   Normalization" (NFNets, arXiv 2102.06171), Sec. 4.1: Adaptive Gradient Clipping (AGC).

Differences from the papers and the reference code (deepmind-research nfnets/nf_resnet.py and
base.py, timm models/nfnet.py):
- The activation gain gamma is folded into the standardised weight of the conv that follows the
  activation (as timm does), not multiplied onto the activation (deepmind). Same function, one
  elementwise op less. The final activation before pooling therefore carries no gamma, so the
  pooled feature is 1/gamma times deepmind's; the learned map after it absorbs that.
- The stem conv keeps its bias (deepmind: with_bias=False), so that each BatchNorm weight/bias
  pair of a standard ResNet becomes exactly one conv gain/bias pair and parameter counts match
  torchvision's ResNet (25,557,032 for ResNet-50 with a 1000-way head) plus one skip-init scalar
  per block (+16 for ResNet-50), see tests/test_nfresnet.py.
- ReLU's gamma is the paper's closed form; deepmind's table (used for the other activations)
  has a sampled estimate 0.06% higher.
- Downsampling shortcuts are 2x2 average pool + 1x1 conv (ResNet-D, as in NFNets and timm);
  deepmind's NF-ResNet uses a strided 1x1 conv. Same parameters, no input pixel skipped. The
  bookkeeping still assumes the paper's unit-variance shortcut: averaging 4 neighbours keeps
  the variance of smooth (image-like) features but quarters that of spatially white ones, so
  after a downsampling block the real variance can be below the predicted 1 + alpha^2.
  `shortcut="strided"` (train.py `--encoder-shortcut`) is deepmind's; train.py's tiny preset uses
  it (measured better for captions, README's lever table).
- The stride sits on the 3x3 conv (ResNet v1.5, like both references); padding is symmetric
  k // 2, not TF "SAME".
- SkipInit: a learnable scalar gain initialised to 0 on every residual branch (deepmind's
  skip_gain; timm instead zero-inits conv3's gain and disables skip-init by default).
- No stochastic depth, dropout or squeeze-excite (deepmind's defaults use stochastic depth 0.1).
- Extra presets (tiny, small-stem "3x3") for 32-64 px images on a CPU.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# gamma = 1 / std(g(z)) for z ~ N(0, 1) rescales g's output to unit variance. For ReLU the
# NF-ResNet paper (Sec. 4) gives the closed form Var(relu(z)) = (1 - 1/pi) / 2, so
# gamma = sqrt(2 / (1 - 1/pi)) = 1.71286. The others are deepmind-research nfnets/base.py
# `nonlinearities`, estimated there by sampling: 0.01-0.09% high (their ReLU: 1.71396).
# tests/test_nfresnet.py re-derives each one by quadrature.
ACT_GAMMA = {
    "relu": math.sqrt(2 / (1 - 1 / math.pi)),  # the NF-ResNets' activation, and this repo's
    "gelu": 1.7015043497085571,  # NFNets' (Brock et al. 2021b)
    "silu": 1.7881293296813965,
}
ACT_FN = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


class WSConv2d(nn.Conv2d):
    """Conv2d with Scaled Weight Standardisation (NF-ResNet paper Sec. 4):
    W_hat[i] = gamma * gain[i] * (W[i] - mean(W[i])) / (std(W[i]) * sqrt(fan_in)).
    Each output unit's weights have mean 0 and sum of squares 1, so for i.i.d. inputs of
    variance 1/gamma^2 the output has variance gain^2: no BatchNorm needed. gain and bias play
    BatchNorm's weight and bias."""

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, gamma=1.0, eps=1e-4):
        super().__init__(in_ch, out_ch, kernel_size, stride, padding=kernel_size // 2)
        self.gain = nn.Parameter(torch.ones(out_ch))
        self.gamma = gamma
        self.eps = eps  # floor on var * fan_in, deepmind base.py WSConv2D
        # fan-in normal init (deepmind base.py); matters for AGC, whose ratio uses the raw W
        nn.init.normal_(self.weight, std=self.weight[0].numel() ** -0.5)
        nn.init.zeros_(self.bias)

    def standardized_weight(self):
        fan_in = self.weight[0].numel()  # in_ch * kh * kw
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), correction=0, keepdim=True)
        scale = torch.rsqrt((var * fan_in).clamp(min=self.eps)) * self.gamma
        return (self.weight - mean) * (scale * self.gain.view(-1, 1, 1, 1))

    def forward(self, x):
        return F.conv2d(x, self.standardized_weight(), self.bias, self.stride, self.padding)


class NFBlock(nn.Module):
    """Pre-activation bottleneck, x_out = shortcut + alpha * skip_gain * f(act(x / beta)).
    f = 1x1 conv -> act -> 3x3 conv (stride) -> act -> 1x1 conv; mid width = out * ratio.
    A transition block (the first of a stage) has a projection shortcut."""

    def __init__(self, in_ch, out_ch, stride, beta, alpha, ratio, act, gamma, transition, shortcut="avgpool"):
        super().__init__()
        mid = int(out_ch * ratio)
        self.beta, self.alpha, self.act = beta, alpha, act
        self.conv1 = WSConv2d(in_ch, mid, 1, gamma=gamma)
        self.conv2 = WSConv2d(mid, mid, 3, stride=stride, gamma=gamma)
        self.conv3 = WSConv2d(mid, out_ch, 1, gamma=gamma)
        # SkipInit (De & Smith 2020): a scalar gain at 0 makes every block start as its shortcut,
        # so a deep unnormalised net starts as a shallow one.
        self.skip_gain = nn.Parameter(torch.zeros(()))
        assert transition or (stride == 1 and in_ch == out_ch)
        self.downsample = None
        if transition and shortcut == "strided":  # deepmind's: keeps the variance of white features
            self.downsample = WSConv2d(in_ch, out_ch, 1, stride=stride, gamma=gamma)
        elif transition:
            pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
            self.downsample = nn.Sequential(pool if stride > 1 else nn.Identity(),
                                            WSConv2d(in_ch, out_ch, 1, gamma=gamma))

    def forward(self, x):  # (B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)
        # beta = sqrt(Var(x)) is predicted analytically, so the branch sees unit variance
        # without measuring it (BatchNorm's job, done by bookkeeping).
        out = self.act(x / self.beta)
        # a transition shortcut sees the normalised input, so its output has variance ~1 again:
        # that is why the expected variance resets after each transition block
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(self.act(out))
        out = self.conv3(self.act(out))
        return shortcut + (self.alpha * self.skip_gain) * out


@dataclass
class NFResNetConfig:
    depths: tuple = (3, 4, 6, 3)
    widths: tuple = (256, 512, 1024, 2048)  # block output channels per stage
    stem_width: int = 64
    bottleneck_ratio: float = 0.25
    alpha: float = 0.2  # the NF-ResNet paper's and deepmind nf_resnet.py's default
    activation: str = "relu"  # a key of ACT_GAMMA
    in_chans: int = 3
    num_classes: int = 0  # 0 = no head, forward returns the pooled feature
    # "7x7_pool": ResNet's 7x7 stride-2 conv + 3x3 stride-2 max pool (/4, for 224 px);
    # "3x3": one 3x3 stride-2 conv (/2, for 32-64 px)
    stem: str = "7x7_pool"
    # downsampling shortcut: "avgpool" (2x2 average pool + 1x1 conv: ResNet-D, NFNets, timm) or
    # "strided" (a 1x1 stride-2 conv: deepmind's NF-ResNet); see the module docstring
    shortcut: str = "avgpool"


PRESETS = {
    # for 32-64 px on a CPU: 64 px -> 4x4 map, 128k parameters; fwd+bwd, batch 32, 2 cores:
    # ~800-1000 img/s at 64 px, ~1700-2000 at 32 px (widths 64..512, stem 32: ~400 at 64 px)
    "tiny": NFResNetConfig(depths=(1, 1, 1, 1), widths=(32, 64, 128, 256), stem_width=16,
                           stem="3x3"),
    "nf_resnet26": NFResNetConfig(depths=(2, 2, 2, 2)),
    "nf_resnet50": NFResNetConfig(depths=(3, 4, 6, 3)),
    "nf_resnet101": NFResNetConfig(depths=(3, 4, 23, 3)),
}


class NFResNet(nn.Module):

    def __init__(self, config: NFResNetConfig):
        super().__init__()
        c = self.config = config
        assert c.activation in ACT_GAMMA, f"no gamma for activation {c.activation!r}"
        assert len(c.depths) == len(c.widths) and c.stem in ("7x7_pool", "3x3")
        if c.shortcut not in ("avgpool", "strided"):  # a flag of train.py, so not an assert
            raise ValueError(f"the shortcut (--encoder-shortcut) must be avgpool or strided, got {c.shortcut!r}")
        self.act, gamma = ACT_FN[c.activation], ACT_GAMMA[c.activation]
        # stem: raw pixels are not an activation's output, so gamma = 1; no activation after
        # it either, the first block pre-activates
        if c.stem == "7x7_pool":
            self.stem = nn.Sequential(WSConv2d(c.in_chans, c.stem_width, 7, stride=2),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        else:
            self.stem = WSConv2d(c.in_chans, c.stem_width, 3, stride=2)
        blocks, in_ch, expected_var = [], c.stem_width, 1.0
        for stage, (depth, width) in enumerate(zip(c.depths, c.widths)):
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(NFBlock(in_ch, width, stride, math.sqrt(expected_var), c.alpha,
                                      c.bottleneck_ratio, self.act, gamma, transition=i == 0, shortcut=c.shortcut))
                # Var(x_{l+1}) = Var(x_l) + alpha^2 (unit-variance branch); a transition block's
                # output variance is 1 + alpha^2 whatever came in (NF-ResNet paper Sec. 4)
                expected_var = (1.0 if i == 0 else expected_var) + c.alpha ** 2
                in_ch = width
        self.blocks = nn.Sequential(*blocks)
        self.num_features = in_ch
        self.head = None
        if c.num_classes:
            self.head = nn.Linear(in_ch, c.num_classes)
            nn.init.normal_(self.head.weight, std=0.01)  # deepmind nf_resnet.py fc_init
            nn.init.zeros_(self.head.bias)

    def forward_features(self, x):  # (B, in_chans, H, W) -> (B, C, H/32, W/32) ("3x3": H/16)
        x = self.blocks(self.stem(x))
        return self.act(x)  # a pre-activation net ends with the activation it never applied

    def forward(self, x):
        x = self.forward_features(x).mean(dim=(2, 3))  # global average pool, (B, C)
        return x if self.head is None else self.head(x)  # (B, num_classes)

    def agc_parameters(self):
        """All parameters except the classifier head: NFNets (Sec. 4.1) do not clip the final
        linear layer. A user of the pooled feature excludes its own projection the same way."""
        head = set() if self.head is None else set(self.head.parameters())
        return [p for p in self.parameters() if p not in head]


def unitwise_norm(x):
    """L2 norm per output unit: dim 0 of a Linear (out, in) or conv (out, in, kh, kw) weight;
    a vector (bias, gain) or scalar counts as one unit (as deepmind nfnets' unitwise_norm)."""
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)  # (out, 1, ...)


@torch.no_grad()
def adaptive_grad_clip(parameters, clip: float = 0.01, eps: float = 1e-3) -> None:
    """AGC (NFNets paper Sec. 4.1, eq. 3), in place on .grad; call after backward(), before
    optimizer.step(). Each unit's gradient G_i is rescaled to norm clip * max(|W_i|, eps) when
    |G_i| / max(|W_i|, eps) > clip, else left alone. eps keeps zero-initialised parameters
    (skip gains) trainable. Pass only the parameters to clip, e.g. model.agc_parameters()."""
    for p in parameters:
        if p.grad is None:
            continue
        max_norm = unitwise_norm(p).clamp(min=eps) * clip
        grad_norm = unitwise_norm(p.grad)
        clipped = p.grad * (max_norm / grad_norm.clamp(min=1e-6))
        p.grad.copy_(torch.where(grad_norm > max_norm, clipped, p.grad))
