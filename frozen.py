"""
Frozen (Tsimpoukelli et al. 2021, "Multimodal Few-Shot Learning with Frozen Language Models").

A language model trained on text is frozen. A vision encoder (an NF-ResNet, globally pooled, then
a linear map) turns each image into n embeddings in the LM's input space, the *visual prefix*
(Sec. 3.1, "Vision encoder"; n = 2 in the paper). It is trained with the frozen LM's captioning
log-likelihood (Sec. 3.2):

    log p(y | x) = sum_l log p_LM(y_l | prefix(x), y_1, ..., y_{l-1}),

the gradient flowing *through* the frozen LM into the encoder only. At inference any interleaved
list of images and texts becomes one sequence of embeddings (Sec. 3.3, "Interface at
inference time") and the frozen LM continues it: a multimodal few-shot learner.

Differences from the paper: the LM is this repo's small GPT (the paper's has 7B parameters) and the
images are world.py's drawings, so the encoder is a small NF-ResNet at 32-128 px by default
(NF-ResNet-50 at 224 px is `--encoder nf_resnet50 --image-size 224`). The ablations of Sec. 4
(fine-tuned LM, LM from scratch, blind training) are flags of train.py --stage prefix.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from gpt import GPT, left_pad
from nfresnet import PRESETS as ENCODER_PRESETS, NFResNet


@dataclass
class FrozenConfig:
    encoder: str = "tiny"  # an nfresnet.py preset
    n_prefix: int = 2  # visual prefix length n (paper Sec. 3.1: 2; 1 and 4 in its ablations)
    image_size: int = 64


class VisionPrefix(nn.Module):
    """image (B, 3, H, W) -> NF-ResNet pooled feature (B, E) -> Linear(E, n*D) -> prefix (B, n, D)."""

    def __init__(self, config, lm_width):
        super().__init__()
        self.n_prefix, self.lm_width = config.n_prefix, lm_width
        self.encoder = NFResNet(ENCODER_PRESETS[config.encoder])
        self.proj = nn.Linear(self.encoder.num_features, config.n_prefix * lm_width)
        # Start the prefix at the scale of the LM's token embeddings (std 0.02, gpt.py), so the
        # frozen LM first reads it as an ordinary, if meaningless, word.
        nn.init.normal_(self.proj.weight, std=0.02 / self.encoder.num_features ** 0.5)
        nn.init.zeros_(self.proj.bias)

    def forward(self, images):
        features = self.encoder(images)  # (B, E)
        return self.proj(features).view(-1, self.n_prefix, self.lm_width)  # (B, n, D)


class Frozen(nn.Module):
    def __init__(self, lm: GPT, config: FrozenConfig, train_lm=False):
        super().__init__()
        self.config = config
        self.lm = lm
        self.train_lm = train_lm
        if not train_lm:
            # Frozen: the LM's weights never change. Freeze once, at construction; train() below
            # keeps its dropout off too, so the LM computes exactly the function it learned.
            self.lm.requires_grad_(False)
        self.vision = VisionPrefix(config, lm.config.n_embd)

    def train(self, mode=True):
        super().train(mode)
        if not self.train_lm:
            self.lm.eval()
        return self

    def trainable_state_dict(self):
        """Only what stage prefix trains: the vision side, plus the LM when it is trained too."""
        return {k: v for k, v in self.state_dict().items() if self.train_lm or not k.startswith("lm.")}

    # --- training: the captioning loss (Sec. 3.2) ------------------------------------------

    def forward(self, images, caption_inputs, targets):
        """Mean next-token loss of captions given their images.

        images (B, 3, H, W); caption_inputs (B, L) caption tokens, right-padded; targets
        (B, n + L) from `caption_targets`: -100 on the prefix positions and padding.
        """
        prefix = self.vision(images)  # (B, n, D)
        embeds = torch.cat([prefix, self.lm.embed(caption_inputs)], dim=1)  # (B, n + L, D)
        _, loss = self.lm(embeds=embeds, targets=targets)
        return loss

    # --- inference: interleaved images and text (Sec. 3.3) -----------------------------------

    def embed_sequence(self, pieces):
        """One prompt: a list of image tensors (3, H, W) and token-id lists -> embeddings (T, D),
        each image replaced by its n prefix embeddings where it stands."""
        images = [p for p in pieces if torch.is_tensor(p) and p.dim() == 3]
        device = self.lm.wte.weight.device
        prefixes = iter(self.vision(torch.stack(images).to(device))) if images else iter(())
        parts = []
        for p in pieces:
            if torch.is_tensor(p) and p.dim() == 3:
                parts.append(next(prefixes))  # (n, D)
            elif len(p):
                parts.append(self.lm.embed(torch.as_tensor(p, device=device)))  # (len, D)
        return torch.cat(parts, dim=0)

    @torch.no_grad()
    def generate(self, prompts, **decoding):
        """Continue a batch of interleaved prompts (see embed_sequence) with the frozen LM's KV
        cache; returns each prompt's new token ids. Decoding options are GPT.generate's."""
        sequences = [self.embed_sequence(p) for p in prompts]
        embeds, mask = left_pad(sequences)
        return self.lm.generate(embeds=embeds, prompt_mask=mask, **decoding)


def caption_targets(captions, n_prefix, eot_id, pad_id):
    """Inputs (B, L) and targets (B, n + L) for a batch of tokenised captions.

    Position i predicts token i + 1: the last prefix position predicts the caption's first token,
    the last caption token predicts end-of-text. Prefix positions and padding get -100, so the
    loss is on caption tokens (and end-of-text) only; the pad id itself never reaches the loss.
    """
    L = max(len(c) for c in captions)
    inputs = torch.full((len(captions), L), pad_id, dtype=torch.long)
    targets = torch.full((len(captions), n_prefix + L), -100, dtype=torch.long)
    for i, c in enumerate(captions):
        inputs[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        targets[i, n_prefix - 1: n_prefix + len(c)] = torch.tensor(c + [eot_id], dtype=torch.long)
    return inputs, targets
