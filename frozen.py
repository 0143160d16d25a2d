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
images are world/'s drawings, so the encoder is a small NF-ResNet at 32-128 px by default
(NF-ResNet-50 at 224 px is `--encoder nf_resnet50 --image-size 224`). The ablations of Sec. 4
(fine-tuned LM, LM from scratch, blind training) are flags of train.py --stage prefix.
"""

import copy
import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt import GPT, left_pad
from nfresnet import PRESETS as ENCODER_PRESETS, NFResNet


@dataclass
class FrozenConfig:
    encoder: str = "tiny"  # an nfresnet.py preset
    encoder_shortcut: str = "avgpool"  # avgpool (timm's) | strided (deepmind's; the tiny preset's)
    n_prefix: int = 2  # visual prefix length n (paper Sec. 3.1: 2; 1 and 4 in its ablations)
    image_size: int = 64
    lm_block: str = "none"  # none | last | K: an LM block inside the vision encoder (Pang et al. 2024)
    lm_block_mode: str = "frozen"  # frozen | finetune | random (its init, trained) | mlp (same size)
    # a lever, off by default (the paper's map is linear): "token" rms-normalises each prefix vector
    # to the size of the LM's token embeddings (README: trained prefixes grow 6-9x larger);
    # "centred" first subtracts each slot's mean over images (README: most slots barely vary);
    # "vocab" makes each prefix vector a softmax-weighted average of the LM's token embeddings;
    # "words" makes it the nearest token embedding itself (gradient straight through)
    prefix_scale: str = "free"  # free | token | centred | vocab | words
    # levers, off by default, that give the prefix the shape of a description (README: the LM binds
    # 'a small red apple.' but not the same words without the article or the full stop):
    prefix_words: str = ""  # words the prefix starts at, one slot each: "a big thing."
    word_slots: str = ""  # slots ("2") that are always their nearest word, as prefix_scale "words"
    # how a word slot's word is chosen in training: nearest (straight through to the slot's vector)
    # or gumbel (drawn from a softmax over the words, straight-through Gumbel-softmax; README: neither
    # found the kinds' names)
    word_choice: str = "nearest"
    # a lever, off by default: word slots drawn (gumbel) from K vectors of the encoder's own, a
    # codebook, instead of the LM's vocabulary. A drawn code is the same vector for every image
    # that draws it, and the frozen LM binds names to identical vectors it has never read as
    # tokens (README: "What the LM can match")
    codebook: int = 0
    # a lever, off by default: the prefix's last three slots written ' a <w>.', w the image's own
    # "visual word": its features, centred, through a fixed random map, at a token's rms. Images
    # unlike each other get words unlike each other, as distinct nouns are (README: "What the LM
    # can match"); the learned slots before it are the paper's prefix, and train the features
    visual_word: bool = False
    fixed_slots: str = ""  # slots ("0,3") that stay their prefix_words word for every image
    # a lever, off by default: slots ("3") centred as prefix_scale "centred" centres all of them,
    # the others free to carry what every image shares (README: a trained prefix's kind slot,
    # centred and framed `a <slot>.`, binds where the whole prefix does not)
    centred_slots: str = ""

    CHOICES = dict(encoder=tuple(ENCODER_PRESETS), encoder_shortcut=("avgpool", "strided"),
                   prefix_scale=("free", "token", "centred", "vocab", "words"),
                   lm_block_mode=("frozen", "finetune", "random", "mlp"), word_choice=("nearest", "gumbel"))

    def _slot_strings(self, flag):
        return [i.strip() for i in getattr(self, flag).split(",") if i.strip()]

    def slots(self, flag):
        """The prefix slots a comma-separated field names ("0,3" -> [0, 3]), checked at construction."""
        return [int(i) for i in self._slot_strings(flag)]

    def __post_init__(self):  # flags of train.py: a wrong value is an error naming the flag
        for name, choices in self.CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, "
                                 f"got {getattr(self, name)!r}")
        for flag in ("word_slots", "fixed_slots", "centred_slots"):
            if not all(i.isdigit() and int(i) < self.n_prefix for i in self._slot_strings(flag)):
                raise ValueError(f"--{flag.replace('_', '-')} must be prefix slots below --n-prefix {self.n_prefix}, "
                                 f"comma-separated, got {getattr(self, flag)!r}")
        if self.codebook and not (self.word_slots.strip() and self.word_choice == "gumbel"):
            raise ValueError("--codebook is what --word-slots draw from: give --word-slots and --word-choice gumbel too")
        if self.visual_word and (self.n_prefix < 4 or self.prefix_words or self.word_slots.strip()):
            raise ValueError("--visual-word takes the last 3 of the --n-prefix slots: give --n-prefix 4 or more, "
                             "and not --prefix-words or --word-slots")
        if self.fixed_slots.strip() and not self.prefix_words:
            raise ValueError("--fixed-slots keeps slots at their --prefix-words words: give --prefix-words too")
        if self.centred_slots.strip() and self.prefix_scale != "token":
            raise ValueError("--centred-slots centres slots before token scale: give --prefix-scale token")
        if not (self.lm_block in ("none", "last") or self.lm_block.isdigit()):
            raise ValueError(f"--lm-block must be none, last or a block number, got {self.lm_block!r}")


class VisionPrefix(nn.Module):
    """image (B, 3, H, W) -> pooled feature (B, E) -> Linear(E, n*D) -> prefix (B, n, D)."""

    def __init__(self, config, lm_width, lm=None):
        super().__init__()
        self.visual_word = config.visual_word
        self.n_prefix, self.lm_width = config.n_prefix - (3 if self.visual_word else 0), lm_width  # learned slots
        self.features = VisualFeatures(config, lm)
        E = self.features.num_features
        self.proj = nn.Linear(E, self.n_prefix * lm_width)
        # Start the prefix at the scale of the LM's token embeddings (std 0.02, gpt.py), so the
        # frozen LM first reads it as an ordinary, if meaningless, word.
        nn.init.normal_(self.proj.weight, std=0.02 / E ** 0.5)
        nn.init.zeros_(self.proj.bias)
        self.token_rms = None
        if config.prefix_scale in ("token", "centred", "words"):
            self.token_rms = lm.embedding_rms().item()
        self.words, self.nearest = None, config.prefix_scale == "words"
        self.word_slots, self.fixed_slots = config.slots("word_slots"), config.slots("fixed_slots")
        self.centred = config.prefix_scale == "centred"
        self.centred_slots = config.slots("centred_slots")
        self.sampled = config.word_choice == "gumbel" and bool(self.word_slots)  # drawn word slots, centred
        if self.centred or self.centred_slots or self.sampled:  # as BatchNorm's mean: the batch's in training, a running one at inference
            self.register_buffer("slot_mean", torch.zeros(self.n_prefix, lm_width))
        if self.fixed_slots:  # the words they keep, set by start_at_words
            self.register_buffer("fixed_words", torch.zeros(len(self.fixed_slots), lm_width))
        self.codes = None
        if config.codebook:  # K random vectors at the token embeddings' rms: new "words" to learn
            rms = lm.embedding_rms().item()
            self.codes = nn.Parameter(rms * F.rms_norm(torch.randn(config.codebook, lm_width), (lm_width,)))
        elif config.prefix_scale in ("vocab", "words") or self.word_slots:
            # the LM's embedding table, read, not owned: a list keeps it out of this module's
            # parameters and state dict (it is the frozen LM's)
            self.words = [lm.wte]
            self.register_buffer("readable", torch.ones(lm.config.vocab_size, dtype=torch.bool))
        if config.prefix_scale == "vocab" or self.sampled:
            self.sharpness = nn.Parameter(torch.tensor(math.log(10.0)))  # a cosine of 1 -> logit 10
        if self.visual_word:  # the map is fixed (a buffer), the features it reads are trained
            self.word_rms = lm.embedding_rms().item()
            self.register_buffer("word_map", visual_word_map(E, lm_width))
            self.register_buffer("feature_mean", torch.zeros(E))
            self.register_buffer("frame", torch.zeros(2, lm_width))  # ' a' and '.', set by frame_visual_word

    def forward(self, images):
        features = self.features(images)  # (B, E)
        prefix = self.proj(features).view(-1, self.n_prefix, self.lm_width)  # (B, n, D)
        if self.centred:
            prefix = prefix - self.mean_over_images(prefix)
        elif self.centred_slots:
            mean = self.mean_over_images(prefix)
            prefix = prefix.clone()
            prefix[:, self.centred_slots] -= mean[self.centred_slots]
        if self.token_rms is not None:
            prefix = self.token_rms * F.rms_norm(prefix, (self.lm_width,))
        if self.nearest:
            prefix = self.nearest_words(prefix)
        elif self.word_slots:
            prefix = prefix.clone()
            queries = prefix[:, self.word_slots]
            if self.sampled:  # a word chosen by what sets this image apart (else: one word for all)
                queries = queries - self.mean_over_images(prefix)[self.word_slots]
            choose = self.sampled_words if self.sampled and self.training else self.nearest_words
            prefix[:, self.word_slots] = choose(queries)
        elif self.words is not None:
            prefix = self.mixture_of_words(prefix)
        if self.fixed_slots:
            prefix = prefix.clone()
            prefix[:, self.fixed_slots] = self.fixed_words.to(prefix.dtype)
        if self.visual_word:
            prefix = torch.cat([prefix, self.framed_visual_word(features).to(prefix.dtype)], dim=1)
        return prefix

    def framed_visual_word(self, features):
        """(B, 3, D): ' a', the image's visual word, '.' (`framed_word`). The features it reads are
        trained by the learned slots alone: with the caption loss's gradient through the word too,
        the words of different kinds grew alike (README, the visual word's rows)."""
        features = features.detach()
        mean = self.mean_over_images(features, self.feature_mean)
        return framed_word(features, mean, self.word_map, self.frame, self.word_rms)

    def frame_visual_word(self, a_id, stop_id, table):
        """The visual word's frame: the token embeddings of ' a' and '.' (train.py sets them)."""
        with torch.no_grad():
            self.frame.copy_(table[[a_id, stop_id]])

    def start_at_words(self, ids, table):
        """Start the prefix at real words, whatever the image, as prompt tuning starts its soft
        prompts (Lester et al. 2021): the token ids (at least n) are cut into n consecutive groups,
        and slot i's bias becomes the mean embedding of group i (one token each when there are n).
        The weight starts small, so the frozen LM first reads every image as these words, laid out
        as the descriptions it binds names to ('a big thing.'), and training moves the words."""
        groups = torch.tensor_split(torch.as_tensor(ids), self.n_prefix)
        with torch.no_grad():
            words = torch.stack([table[g].mean(0) for g in groups])  # (n, D)
            self.proj.bias.copy_(words.reshape(-1))
            if self.fixed_slots:
                self.fixed_words.copy_(words[self.fixed_slots])

    def word_table(self):
        """(V, D): what word slots choose from: the codebook, else the LM's token embeddings."""
        return self.codes if self.codes is not None else self.words[0].weight

    def cosine_to_words(self, queries, scale=None):
        """(B, n, V): each query's cosine with each word (times scale), -inf for excluded words.
        Masked after scaling: a gradient that met -inf would turn into nan."""
        table = self.word_table()
        cosine = (F.normalize(queries, dim=-1) @ F.normalize(table, dim=-1).t()).float()
        if scale is not None:
            cosine = scale * cosine
        return cosine if self.codes is not None else cosine.masked_fill(~self.readable, float("-inf"))

    def word_logits(self, queries):
        """(B, n, V): the cosines times the learned sharpness, as CLIP's logit scale."""
        return self.cosine_to_words(queries, scale=self.sharpness.exp().clamp(max=100))

    def nearest_words(self, queries):
        """Each prefix vector replaced by the token embedding nearest to it (cosine): the frozen LM
        reads real words, and a query image that is written with its support's words is matched
        by the LM's induction heads as text is. Not differentiable, so the gradient goes straight
        through to the query (VQ-VAE, van den Oord et al. 2017), which is kept at the token
        embeddings' rms: as in PEZ (Wen et al. 2023), which finds hard text prompts by gradient
        descent on soft ones that are projected to their nearest tokens. A lever: the paper's map
        is linear."""
        words = self.word_table()[self.cosine_to_words(queries).argmax(-1)]  # (B, n, D)
        return words + (queries - queries.detach())  # the word exactly; the query's gradient

    def sampled_words(self, queries):
        """In training, each query replaced by a word drawn from the softmax over the vocabulary of
        its cosine with each word times a learned sharpness; the forward pass reads the word itself,
        the backward pass that of the soft mixture (straight-through Gumbel-softmax, Jang et al.
        2017), so the gradient says which words would have served the caption better, not only how
        to move the query. At inference the most likely word: the nearest (`nearest_words`)."""
        table = self.word_table()  # (V, D)
        # (B, n, V): a word in the forward pass, the soft mixture in the backward
        one_hot = F.gumbel_softmax(self.word_logits(queries), tau=1.0, hard=True)
        return one_hot.to(table.dtype) @ table

    def mixture_of_words(self, queries):
        """Each prefix vector as a weighted average of the frozen LM's token embeddings (B, n, D),
        the weights a softmax over the vocabulary of the query's cosine with each word, times a
        learned sharpness (as CLIP's logit scale). A prefix then lies among the words the LM has
        learned to read and to match in context: its induction heads bind a query to a support
        example by the words they share (README, "Why binding through images is hard"). A lever:
        the paper's map is linear."""
        table = self.words[0].weight  # (V, D)
        return self.word_logits(queries).softmax(-1).to(table.dtype) @ table

    def exclude_words(self, ids):
        """Words no prefix may use: end-of-text would end the document, padding is never read."""
        self.readable[list(ids)] = False

    def mean_over_images(self, x, running=None, momentum=0.1):
        """The mean over images of x (B, ...): this batch's in training (and folded into the running
        mean, the slots' unless another buffer is given), the running mean at inference, so that one
        image is centred as a batch of them was."""
        running = self.slot_mean if running is None else running
        if not self.training:
            return running
        mean = x.mean(0)
        with torch.no_grad():
            running.lerp_(mean.float(), momentum)
        return mean


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
        self.vision = VisionPrefix(config, lm.config.n_embd, lm)

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


def visual_word_map(num_features, width):
    """The fixed random map (E, D) from features to visual words, the same for every model."""
    return torch.randn(num_features, width, generator=torch.Generator().manual_seed(0))


def frame_ids(tokenizer):
    """The token ids of ' a' and '.', the visual word's frame (one token each)."""
    (a_id,), (stop_id,) = tokenizer.encode(" a"), tokenizer.encode(".")
    return [a_id, stop_id]


def framed_word(features, mean, word_map, frame, token_rms):
    """(B, 3, D): ' a', the visual word w, '.', for features (B, E). The LM binds a name to a
    description 'a small red <v>.' for any vector v, if the things of other kinds have vectors
    unlike it (cosine near 0) and things of its kind vectors like it (README, "What the LM can
    match": binding falls to chance as all things share a part, as the learned slots' prefixes do).
    So w is the image's features less their mean over images, through a fixed random map (random
    directions are near orthogonal: the part every image shares is gone, what sets images apart
    stays), at a token's rms. frame (2, D): the embeddings of ' a' and '.'."""
    centred = features - mean
    word = token_rms * F.rms_norm(centred @ word_map.to(centred.dtype), (word_map.size(1),))
    a, stop = frame.to(word.dtype).unbind(0)
    return torch.stack([a.expand_as(word), word, stop.expand_as(word)], dim=1)


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
        assert mode in FrozenConfig.CHOICES["lm_block_mode"], mode
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
