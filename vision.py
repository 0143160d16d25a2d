"""
The vision side of Frozen (Tsimpoukelli et al. 2021, Sec. 3.1): an NF-ResNet's pooled features and
the paper's linear map from them to the visual prefix, n vectors in the frozen LM's input space.
frozen.py puts it in front of the LM; prefix_levers.py builds the levers it tried on top of it.
"""

import copy
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from nfresnet import PRESETS as ENCODER_PRESETS, NFResNet


class VisionPrefix(nn.Module):
    """image (B, 3, H, W) -> pooled feature (B, E) -> Linear(E, n*D) -> prefix (B, n, D): the
    paper's vision encoder and its linear map (Sec. 3.1). prefix_levers.py builds its levers on it."""

    def __init__(self, config, lm_width, lm=None, n_learned=None):
        super().__init__()
        self.n_prefix = config.n_prefix if n_learned is None else n_learned  # learned slots
        self.lm_width = lm_width
        self.features = VisualFeatures(config, lm)
        E = self.features.num_features
        self.proj = nn.Linear(E, self.n_prefix * lm_width)
        # Start the prefix at the scale of the LM's token embeddings (std 0.02, gpt.py), so the
        # frozen LM first reads it as an ordinary, if meaningless, word.
        nn.init.normal_(self.proj.weight, std=0.02 / E ** 0.5)
        nn.init.zeros_(self.proj.bias)
        # --prefix-scale token (the tiny preset's): each prefix vector rms-normalised to the size of
        # the LM's token embeddings; the paper's map ("free") lets trained prefixes grow 6-9x larger
        self.token_rms = lm.embedding_rms().item() if config.prefix_scale == "token" else None

    def forward(self, images):
        prefix = self.proj(self.features(images)).view(-1, self.n_prefix, self.lm_width)  # (B, n, D)
        if self.token_rms is not None:
            prefix = self.token_rms * F.rms_norm(prefix, (self.lm_width,))
        return prefix


# ---------------------------------------------------------------------------------------------
# Appendix: a frozen LM block inside the vision encoder (Pang et al. 2024, the follow-up study;
# lmblock.py runs it). Off by default (lm_block="none"): VisualFeatures is then the NF-ResNet.


class VisualFeatures(nn.Module):
    """image (B, 3, H, W) -> NF-ResNet feature map -> [LM block over its cells] -> pooled (B, E)."""

    def __init__(self, config, lm=None):
        super().__init__()
        self.encoder = NFResNet(replace(ENCODER_PRESETS[config.encoder], shortcut=config.encoder_shortcut))
        self.num_features = self.encoder.num_features
        self.lm_block = None
        if config.lm_block != "none":
            self.lm_block = LMBlockLayer(lm, config.lm_block, self.num_features, config.lm_block_mode)

    def forward(self, images):
        if self.lm_block is None:
            return self.encoder(images)  # (B, E), global average pool
        fmap = self.encoder.forward_features(images)  # (B, E, H', W')
        tokens = fmap.flatten(2).transpose(1, 2)  # (B, H'W', E)
        return self.lm_block(tokens).mean(dim=1)  # (B, E)


LM_BLOCK_MODES = ("frozen", "finetune", "random", "mlp")  # --lm-block-mode


class LMBlockLayer(nn.Module):
    """A transformer block of the text-trained LM as a layer of the vision encoder (Pang et al.
    2024, "Frozen transformers in language models are effective visual encoder layers", Sec. 3):

        visual tokens (B, N, E) -> Linear(E, D) -> LM block -> Linear(D, E)

    The block reads the N = H' x W' feature-map cells as an unordered set: attention is not causal
    and no rotary positions are applied (as in the paper). Only the two linears train, unless
    `mode` asks for the paper's controls: `finetune` (the block trains too), `random` (a freshly
    initialised block of the same shape, trained), `mlp` (a trainable MLP of the block's size).
    """

    def __init__(self, lm, which, width, mode="frozen"):
        super().__init__()
        k = lm.config.n_layer - 1 if which == "last" else int(which)
        if not 0 <= k < lm.config.n_layer:
            raise ValueError(f"--lm-block {which}: the LM has blocks 0..{lm.config.n_layer - 1}")
        assert mode in LM_BLOCK_MODES, mode
        D = lm.config.n_embd
        self.mode = mode
        self.inp, self.out = nn.Linear(width, D), nn.Linear(D, width)
        block = copy.deepcopy(lm.blocks[k])  # a copy: the LM itself never changes
        if mode == "random":
            block.apply(lm._init_weights)
            for ln in (block.ln_1, block.ln_2):
                nn.init.ones_(ln.weight)
        if mode == "mlp":  # as many parameters as the block, no attention
            n = sum(p.numel() for p in block.parameters())
            hidden = n // (2 * D)
            block = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, hidden), nn.GELU(), nn.Linear(hidden, D))
        # set both ways: a copy of a block of a frozen LM (stage prefix) comes frozen
        block.requires_grad_(mode != "frozen")
        self.block = block
        head_dim = D // lm.config.n_head
        self.register_buffer("no_rotation_cos", torch.ones(1, 1, 1, head_dim), persistent=False)
        self.register_buffer("no_rotation_sin", torch.zeros(1, 1, 1, head_dim), persistent=False)

    def train(self, mode=True):
        super().train(mode)
        if self.mode == "frozen":
            self.block.eval()
        return self

    def forward(self, tokens):
        x = self.inp(tokens)  # (B, N, D)
        if self.mode == "mlp":
            return self.out(x + self.block(x))
        every = torch.ones(1, 1, x.size(1), x.size(1), dtype=torch.bool, device=x.device)  # not causal
        x = self.block(x, self.no_rotation_cos, self.no_rotation_sin, positions=None, mask=every)
        return self.out(x)  # (B, N, E)
