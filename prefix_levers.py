"""
Levers on the visual prefix, each a flag of train.py --stage prefix and off by default: the paper's
map is linear (vision.py: VisionPrefix), and these are what README's "Why binding through images is
hard" tried instead, each row of its lever table naming its flag. Frozen builds a LeverPrefix only
when one of them is set (frozen.py: vision_prefix), so a checkpoint trained with a lever loads and
runs as it was trained.

- `--prefix-scale centred | vocab | words`: slots centred over images; each slot a softmax mixture
  of the LM's token embeddings; each slot its nearest token embedding (straight through).
- `--word-slots`, `--word-choice gumbel`, `--codebook K`: some slots words, nearest or drawn, from
  the LM's vocabulary or from K vectors of the encoder's own (a drawn code is the same vector for
  every image that draws it, and the frozen LM binds names to identical vectors it has never read
  as tokens: README, "What the LM can match").
- `--prefix-words`, `--fixed-slots`: the prefix started at words ('a big thing.': the LM binds
  'a small red apple.' but not the same words without the article or the full stop), some slots
  kept at them.
- `--centred-slots`: some slots centred, the others free to carry what every image shares (a
  trained prefix's kind slot, centred and framed `a <c>.`, binds where the whole prefix does not).
- `--visual-word`: the prefix's last three slots ' a <w>.', w the image's features centred through
  a fixed random map (`framed_word`), so that images unlike each other get words unlike each other.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vision import VisionPrefix


class LeverPrefix(VisionPrefix):
    """vision.py's VisionPrefix with the levers of FrozenConfig's flags (each off by default)."""

    def __init__(self, config, lm_width, lm):
        # the visual word takes the last 3 of the n slots: the others are learned
        super().__init__(config, lm_width, lm, n_learned=config.n_prefix - (3 if config.visual_word else 0))
        self.visual_word = config.visual_word
        E = self.features.num_features
        if config.prefix_scale in ("centred", "words"):  # both at token scale after their own step
            self.token_rms = lm.embedding_rms().item()
        self.words, self.nearest = None, config.prefix_scale == "words"
        self.word_slots, self.fixed_slots = config.slots("word_slots"), config.slots("fixed_slots")
        # slots less their mean over images: every slot (--prefix-scale centred) or some (--centred-slots)
        centred_all = config.prefix_scale == "centred"
        self.centred_slots = list(range(self.n_prefix)) if centred_all else config.slots("centred_slots")
        self.sampled = config.word_choice == "gumbel"  # drawn word slots (FrozenConfig requires some), centred
        if self.centred_slots or self.sampled:  # as BatchNorm's mean: the batch's in training, a running one at inference
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
        if self.centred_slots:
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
