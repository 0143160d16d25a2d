"""
Frozen (Tsimpoukelli et al. 2021, "Multimodal Few-Shot Learning with Frozen Language Models").

A language model trained on text is frozen. A vision encoder (vision.py: an NF-ResNet, globally
pooled, then a linear map) turns each image into n embeddings in the LM's input space, the *visual
prefix* (Sec. 3.1, "Vision encoder"; n = 2 in the paper). It is trained with the frozen LM's
captioning log-likelihood (Sec. 3.2):

    log p(y | x) = sum_l log p_LM(y_l | prefix(x), y_1, ..., y_{l-1}),

the gradient flowing *through* the frozen LM into the encoder only. At inference any interleaved
list of images and texts becomes one sequence of embeddings (Sec. 3.3, "Interface at
inference time") and the frozen LM continues it: a multimodal few-shot learner.

Differences from the paper: the LM is this repo's small GPT (the paper's has 7B parameters) and the
images are world/'s drawings, so the encoder is a small NF-ResNet at 32-128 px by default
(NF-ResNet-50 at 224 px is `--encoder nf_resnet50 --image-size 224`). The ablations of Sec. 4
(fine-tuned LM, LM from scratch, blind training) are flags of train.py --stage prefix.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from gpt import GPT, left_pad
from nfresnet import PRESETS as ENCODER_PRESETS
from prefix_levers import LeverPrefix
from vision import LM_BLOCK_MODES, VisionPrefix


@dataclass
class FrozenConfig:
    encoder: str = "tiny"  # an nfresnet.py preset
    encoder_shortcut: str = "avgpool"  # avgpool (timm's) | strided (deepmind's; the tiny preset's)
    n_prefix: int = 2  # visual prefix length n (paper Sec. 3.1: 2; 1 and 4 in its ablations)
    image_size: int = 64
    lm_block: str = "none"  # none | last | K: an LM block inside the vision encoder (Pang et al. 2024)
    lm_block_mode: str = "frozen"  # frozen | finetune | random (its init, trained) | mlp (same size)
    # "token" rms-normalises each prefix vector to the size of the LM's token embeddings (the tiny
    # preset's; README: trained prefixes grow 6-9x larger); the paper's map is linear ("free"). The
    # other values and the fields below are prefix_levers.py's levers (README's lever table), each
    # off by default: "centred" slots less their mean over images, "vocab" a softmax mixture of the
    # token embeddings, "words" the nearest token embedding (gradient straight through)
    prefix_scale: str = "free"  # free | token | centred | vocab | words
    prefix_words: str = ""  # words the prefix starts at, one slot each: "a big thing."
    fixed_slots: str = ""  # slots ("0,3") that stay their prefix_words word for every image
    word_slots: str = ""  # slots ("2") that are always a word, as prefix_scale "words"
    word_choice: str = "nearest"  # how a word slot's word is chosen in training: nearest | gumbel (drawn)
    codebook: int = 0  # K > 0: word slots drawn (gumbel) from K vectors of the encoder's own
    centred_slots: str = ""  # slots ("3") centred as prefix_scale "centred" centres all, the others free
    visual_word: bool = False  # the prefix's last three slots ' a <w>.', w the image's visual word
    # a lever, off by default: in training, Gaussian noise of this std (times the LM's token rms) on
    # every prefix vector, a noisy channel that the captions must be read through, so that what sets
    # one image's caption apart from another's must lie far apart in the prefix; none at inference
    prefix_noise: float = 0.0

    CHOICES = dict(encoder=tuple(ENCODER_PRESETS), encoder_shortcut=("avgpool", "strided"),
                   prefix_scale=("free", "token", "centred", "vocab", "words"),
                   lm_block_mode=LM_BLOCK_MODES, word_choice=("nearest", "gumbel"))

    def _slot_strings(self, flag):
        return [i.strip() for i in getattr(self, flag).split(",") if i.strip()]

    def slots(self, flag):
        """The prefix slots a comma-separated field names ("0,3" -> [0, 3]), checked at construction."""
        return [int(i) for i in self._slot_strings(flag)]

    def has_prefix_lever(self):
        """Whether a flag asks for one of prefix_levers.py's levers (all off by default)."""
        return (self.prefix_scale in ("centred", "vocab", "words") or bool(self.prefix_words) or self.visual_word
                or any(self._slot_strings(f) for f in ("word_slots", "fixed_slots", "centred_slots")))

    def __post_init__(self):  # flags of train.py: a wrong value is an error naming the flag
        for name, choices in self.CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, "
                                 f"got {getattr(self, name)!r}")
        for flag in ("word_slots", "fixed_slots", "centred_slots"):
            if not all(i.isdigit() and int(i) < self.n_prefix for i in self._slot_strings(flag)):
                raise ValueError(f"--{flag.replace('_', '-')} must be prefix slots below --n-prefix {self.n_prefix}, "
                                 f"comma-separated, got {getattr(self, flag)!r}")
        if self.word_choice == "gumbel" and not self.word_slots.strip():
            raise ValueError("--word-choice gumbel draws the --word-slots' words: give --word-slots too")
        if self.codebook and not (self.word_slots.strip() and self.word_choice == "gumbel"):
            raise ValueError("--codebook is what --word-slots draw from: give --word-slots and --word-choice gumbel too")
        if self.visual_word and (self.n_prefix < 4 or self.prefix_words or self.word_slots.strip()):
            raise ValueError("--visual-word takes the last 3 of the --n-prefix slots: give --n-prefix 4 or more, "
                             "and not --prefix-words or --word-slots")
        if self.fixed_slots.strip() and not self.prefix_words:
            raise ValueError("--fixed-slots keeps slots at their --prefix-words words: give --prefix-words too")
        if self.centred_slots.strip() and self.prefix_scale != "token":
            raise ValueError("--centred-slots centres slots before token scale: give --prefix-scale token")
        if self.prefix_noise < 0:
            raise ValueError(f"--prefix-noise is a standard deviation, >= 0, got {self.prefix_noise}")
        if not (self.lm_block in ("none", "last") or self.lm_block.isdigit()):
            raise ValueError(f"--lm-block must be none, last or a block number, got {self.lm_block!r}")


def vision_prefix(config, lm):
    """The paper's visual prefix, or, when a lever flag is set, prefix_levers.py's LeverPrefix."""
    prefix = LeverPrefix if config.has_prefix_lever() else VisionPrefix
    return prefix(config, lm.config.n_embd, lm)


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
        self.vision = vision_prefix(config, lm)
        self.noise_std = config.prefix_noise * lm.embedding_rms().item()

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
        Or captions in a row (`caption_rows`): inputs and targets (R, T), the images' prefixes
        standing at the inputs' IMAGE_SLOT positions, in order.
        """
        prefix = self.vision(images)  # (B, n, D)
        if self.training and self.noise_std:
            prefix = prefix + self.noise_std * torch.randn_like(prefix)
        if caption_inputs.shape == targets.shape:  # captions in a row
            slots = (caption_inputs == IMAGE_SLOT).unsqueeze(-1)  # (R, T, 1)
            embeds = self.lm.embed(caption_inputs.clamp(min=0))  # (R, T, D)
            embeds = embeds.masked_scatter(slots, prefix.to(embeds.dtype))
        else:
            embeds = torch.cat([prefix, self.lm.embed(caption_inputs)], dim=1)  # (B, n + L, D)
        _, loss = self.lm(embeds=embeds, targets=targets)
        return loss

    # --- inference: interleaved images and text (Sec. 3.3) -----------------------------------

    def embed_sequences(self, prompts):
        """Prompts, each a list of image tensors (3, H, W) and token-id lists -> one embedding
        sequence (T_i, D) each, every image replaced by its n prefix embeddings where it stands.
        All images of all prompts go through the vision encoder in one batch."""
        device = self.lm.wte.weight.device
        images = [p for prompt in prompts for p in prompt if is_image(p)]
        prefixes = iter(self.vision(torch.stack(images).to(device))) if images else iter(())  # (n, D) each
        sequences = []
        for prompt in prompts:
            parts = [next(prefixes) if is_image(p) else self.lm.embed(torch.as_tensor(p, device=device))
                     for p in prompt if is_image(p) or len(p)]
            sequences.append(torch.cat(parts, dim=0))  # (T_i, D)
        return sequences

    @torch.no_grad()
    def generate(self, prompts, **decoding):
        """Continue a batch of interleaved prompts (see embed_sequences) with the frozen LM's KV
        cache; returns each prompt's new token ids. Decoding options are GPT.generate's."""
        embeds, mask = left_pad(self.embed_sequences(prompts))
        return self.lm.generate(embeds=embeds, prompt_mask=mask, **decoding)


def is_image(piece):
    return torch.is_tensor(piece) and piece.dim() == 3


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


IMAGE_SLOT = -1  # where a prefix vector stands in a row of captions (`caption_rows`)


def caption_rows(rows, n_prefix, eot_id, pad_id):
    """Inputs and targets (R, T) for rows of tokenised captions, each row several image-caption
    pairs in one sequence: [image 1] caption 1 [image 2] caption 2 ... end-of-text. An image is n
    IMAGE_SLOT inputs. As in `caption_targets`, the loss is on caption tokens only: the last
    prefix position predicts its caption's first token, a caption's last token predicts the next
    image (no loss) or, at the row's end, end-of-text."""
    inputs, targets = [], []
    for captions in rows:
        row_in, row_out = [], []
        for j, c in enumerate(captions):
            last = j == len(captions) - 1
            row_in += [IMAGE_SLOT] * n_prefix + c
            row_out += [-100] * (n_prefix - 1) + c + [eot_id if last else -100]
        inputs.append(row_in)
        targets.append(row_out)
    T = max(len(r) for r in inputs)  # right-padded, as caption_targets
    return (torch.tensor([r + [pad_id] * (T - len(r)) for r in inputs], dtype=torch.long),
            torch.tensor([r + [-100] * (T - len(r)) for r in targets], dtype=torch.long))
