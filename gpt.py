"""
The language model: a decoder-only transformer written from scratch.

In Frozen (Tsimpoukelli et al. 2021, Sec. 3.1) the language model is trained on text alone and
then frozen; a vision encoder learns to write into its input embedding space. So this GPT must
accept either token ids or ready-made input embeddings, and it must read an embedding the same
way wherever it sits in a sequence.

The layer design is GPT-2's (Radford et al. 2019): pre-LayerNorm blocks, a 4x GELU MLP, tied
input/output embeddings, the residual projections initialised with std 0.02/sqrt(2*n_layer).
Chosen because it is the most widely published design, so any layer here can be checked against
nanoGPT or Hugging Face's GPT-2.

Differences from GPT-2:
- Rotary position embeddings (RoPE, Su et al. 2021) instead of learned absolute positions, in the
  "rotate half" form of GPT-NeoX. The paper's LM uses relative positions (Transformer-XL style) so
  that an image prefix placed anywhere in an interleaved sequence is read the same way; RoPE has
  that property (attention scores depend only on the distance between tokens).
- No biases in the linear layers and LayerNorms (as nanoGPT's bias=False option).
- `generate` has a KV cache and batches prompts of different lengths by left padding.
- Optional "smeared keys" (`smear_keys`, off by default): each head's key becomes a learned mix
  of the keys of the current and the previous token, k'_j = s k_j + (1 - s) k_{j-1}, s = sigmoid(a),
  one a per head. Olsson et al. 2022 ("In-context learning and induction heads", Argument 2)
  introduced it to show that induction heads, which need a previous-token head in an earlier
  layer, form much earlier when a head can see the previous token directly. In-context copying
  is what Frozen's few-shot binding stands on, and on a 2-core CPU its late, sudden arrival is
  the bottleneck; the tiny preset turns this on (README, "In-context learning").
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 4096
    block_size: int = 256  # longest sequence the model is trained on
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    rope_base: float = 10000.0  # RoPE's theta, from Su et al. 2021
    smear_keys: bool = False  # mix each key with the previous token's (Olsson et al. 2022), see below


# PyTorch's bf16 attention kernel is the fast one on GPUs; on the CPUs measured so far it is
# slower than its float32 one (2.1x at 16 x 128 positions on a Zen 4; slower too on an Intel with
# AMX at the tiny preset's shapes). A property of the machine, not of the model: a script that has
# measured it (train.py, bench.py) sets this to True, and attention under bf16 autocast on a CPU
# then runs in float32, the rest of the model in bf16.
float32_attention_on_cpu = False


# ---------------------------------------------------------------------------------------------
# rotary position embeddings


def rope_tables(head_dim, max_len, base):
    """cos and sin tables of shape (max_len, head_dim), one frequency per pair of channels (i, i + hd/2).

    The pair (x1, x2) turns into (x1 cos - x2 sin, x2 cos + x1 sin). The sin table carries that
    minus sign in its first half, so that rotating is x * cos + swap_halves(x) * sin, with no
    negation at each call.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(max_len).float(), inv_freq)  # (max_len, head_dim/2)
    return torch.cat([angles.cos(), angles.cos()], dim=-1), torch.cat([-angles.sin(), angles.sin()], dim=-1)


def apply_rope(x, cos, sin):
    """Rotate each channel pair of x (..., hd) by its position's angle; cos, sin (from rope_tables)
    broadcast against x."""
    return torch.addcmul(x * cos, x.roll(x.size(-1) // 2, dims=-1), sin)  # x cos + (halves swapped) sin


# ---------------------------------------------------------------------------------------------
# the transformer


class KVCache:
    """Keys and values of every layer for the positions seen so far, so each new token costs one
    position of compute instead of the whole sequence.

    Allocated once, for the longest sequence, and always attended whole: the attention mask (which
    a call with a cache must give) hides the columns not written yet. So a decoding step has the
    same shapes at every position, and compiles once (`generate(compile=True)`). Where the next
    call writes is a tensor, `filled`, for the same reason."""

    def __init__(self, config, batch_size, max_len, device, dtype):
        shape = (batch_size, config.n_head, max_len, config.n_embd // config.n_head)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        # smeared keys: the unmixed key of the last position written (zero before the first)
        self.last_raw_k = [torch.zeros(shape[:2] + (1, shape[3]), device=device, dtype=dtype)
                           for _ in range(config.n_layer)]
        self.max_len = max_len
        self.filled = torch.zeros((), dtype=torch.long, device=device)  # columns written so far
        self.columns = None  # where this call writes (GPT.forward sets it)

    def update(self, layer, k, v):
        """Store k, v (B, nh, T, hd) at this call's columns; return every column's keys and values."""
        self.k[layer].index_copy_(2, self.columns, k)
        self.v[layer].index_copy_(2, self.columns, v)
        return self.k[layer], self.v[layer]


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.proj.is_residual_out = True
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        # smeared keys: sigmoid(0) = 0.5, an even mix of the two keys to start
        self.smear = nn.Parameter(torch.zeros(config.n_head)) if config.smear_keys else None

    def forward(self, x, cos, sin, positions, mask=None, cache=None, layer=0):
        """x (B, T, C); cos, sin broadcast against (B, nh, T, hd): (T, hd), or (B, 1, T, hd) for
        positions that differ between rows. mask (B, 1, T, S) or None: causal (S: the cache's
        length, or T)."""
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv  # (B, nh, T, hd) each: views, no copies
        if self.smear is not None and positions is not None:  # no order, no previous token
            qk = torch.stack([q, self.smear_keys(k, positions, mask, cache, layer)])
        else:
            qk = qkv[:2]
        q, k = apply_rope(qk, cos, sin)  # q and k rotated in one op
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, S, hd), S = the cache's length
        # no mask: causal, which the fused kernel builds itself
        y = attention(q, k, v, mask, self.dropout if self.training else 0.0, causal=mask is None)
        y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble the heads
        return self.resid_dropout(self.proj(y))

    def smear_keys(self, k, positions, mask, cache, layer):
        """k'_j = s k_j + (1 - s) k_{j-1} for k (B, nh, T, hd); a sequence's first token has no
        previous key (zero)."""
        if cache is None:
            previous = F.pad(k[:, :, :-1], (0, 0, 1, 0))  # zero before the first token
        else:  # the key before this call's first is the cache's (zero in an empty cache)
            previous = torch.cat([cache.last_raw_k[layer], k[:, :, :-1]], dim=2)  # a copy
            cache.last_raw_k[layer].copy_(k[:, :, -1:])
        if mask is not None:  # left padding (it comes with a mask): a row's first real token is at position 0
            previous = previous * (positions > 0)[:, None, :, None]
        s = torch.sigmoid(self.smear).to(k.dtype).view(-1, 1, 1)  # (nh, 1, 1)
        return torch.lerp(previous, k, s)  # previous + s (k - previous)


def attention(q, k, v, mask, dropout, causal):
    """softmax(q k^T / sqrt(hd) + mask) v, by PyTorch's fused kernel (flash attention where it applies)."""
    if float32_attention_on_cpu and q.device.type == "cpu" and q.dtype == torch.bfloat16:
        with torch.autocast("cpu", enabled=False):
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                               dropout_p=dropout, is_causal=causal)
        return y.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)
        self.proj.is_residual_out = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=False)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=False)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, positions, mask=None, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), cos, sin, positions, mask, cache, layer)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=False)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017)
        # RoPE tables cover 4x the training context: few-shot prompts may be longer than the
        # training sequences, and relative positions let the model read them (less well).
        cos, sin = rope_tables(config.n_embd // config.n_head, 4 * config.block_size, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.rope_in_dtype = {}  # (dtype, device) -> the tables in that dtype
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "is_residual_out", False):  # GPT-2: scale by depth of the residual sum
                std = 0.02 / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def embed(self, idx):
        """Token ids (B, T) -> input embeddings (B, T, C): the space the visual prefix is written into."""
        return self.wte(idx)

    def embedding_rms(self):
        """The rms of the token embedding table, no gradient: the size of a word as the LM reads it."""
        return self.wte.weight.detach().pow(2).mean().sqrt()

    def rope(self, x, positions, longest):
        """cos and sin for the T positions of x (B, T, C): 0..T-1, (T, hd), a slice of the tables;
        or positions (B, T), each row's own, (B, 1, T, hd). In the dtype q and k will have: x's, or
        autocast's (bf16), the tables converted once per dtype. longest: the sequence's length,
        which no position reaches."""
        T, dtype = x.size(1), compute_dtype(x)
        key = (dtype, self.rope_cos.device)
        if key not in self.rope_in_dtype:
            self.rope_in_dtype[key] = self.rope_cos.to(dtype), self.rope_sin.to(dtype)
        cos, sin = self.rope_in_dtype[key]
        if longest > cos.size(0):
            raise ValueError(f"sequence of {longest} positions is longer than the "
                             f"{cos.size(0)} this model supports (4 x block_size)")
        if positions is None:
            return cos[:T], sin[:T]
        return cos[positions][:, None], sin[positions][:, None]

    def forward(self, idx=None, embeds=None, targets=None, positions=None, mask=None, cache=None):
        """Logits (B, T, vocab) for token ids `idx` (B, T) or input embeddings `embeds` (B, T, C).

        targets (B, T): next-token ids, -100 where no loss is wanted; gives (None, mean loss): the
        logits of a training step are not kept (see `loss`).
        positions (B, T) and mask (B, 1, T, S) are for left-padded batches and the KV cache
        (see `generate`); by default positions are 0..T-1 and attention is causal. With a cache,
        both are needed: the T new positions are written after the cache's filled ones, and the
        mask (S = the cache's length) says which columns each of them sees.
        """
        assert (idx is None) != (embeds is None), "pass exactly one of idx or embeds"
        x = self.embed(idx) if idx is not None else embeds
        B, T, _ = x.shape
        cos, sin = self.rope(x, positions, T if cache is None else cache.max_len)
        if positions is None:  # smeared keys need the positions
            positions = torch.arange(T, device=x.device).expand(B, T)
        if cache is not None:
            assert mask is not None, "a call with a KV cache needs its attention mask"
            cache.columns = cache.filled + torch.arange(T, device=x.device)
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, positions, mask, cache, layer)
        if cache is not None:
            cache.filled += T
        x = self.ln_f(x)
        if targets is None:
            return self.lm_head(x), None
        return None, self.loss(x, targets)

    def loss(self, x, targets, chunks=8):
        """Mean cross-entropy of the predictions from x (B, T, C) over the targets that are not -100.
        The (B*T, vocab) logits, their float32 copy and their gradients are a step's biggest tensors;
        a chunk of rows at a time they stay in cache (13% faster steps at vocab 4096, bf16, 2-core CPU)."""
        x, targets = x.reshape(-1, x.size(-1)), targets.reshape(-1)
        total = sum(F.cross_entropy(self.lm_head(xc).float(), tc, ignore_index=-100, reduction="sum")
                    for xc, tc in zip(x.chunk(chunks), targets.chunk(chunks)))
        return total / (targets != -100).sum()

    @torch.inference_mode()
    def generate(self, idx=None, embeds=None, prompt_mask=None, max_new_tokens=32, temperature=0.0,
                 top_k=None, top_p=None, stop_tokens=(), use_cache=True, generator=None, compile=False):
        """Continue a batch of prompts; return the new token ids of each row as a list.

        A prompt is token ids `idx` (B, T) or embeddings `embeds` (B, T, C). Prompts of different
        lengths are left-padded, with `prompt_mask` (B, T) True on real positions (see `left_pad`).
        temperature 0 is greedy decoding; otherwise sample, optionally from the top_k tokens or the
        smallest set of tokens with probability mass top_p. A row stops at any of `stop_tokens`
        (the stop token is not returned) or after max_new_tokens. compile: torch.compile the
        one-token decoding step (its shapes are the same at every position, so it compiles once per
        batch size and length; it pays when many tokens are made, as in bench.py).
        """
        x = self.embed(idx) if idx is not None else embeds
        (B, T, _), N, device = x.shape, max_new_tokens, x.device
        if prompt_mask is None:
            prompt_mask = torch.ones(B, T, dtype=torch.bool, device=device)
        # Made once for all T + N positions: which are real (the prompt's, then every new token),
        # each row's position, counted from its first real token, and who sees whom; each step
        # takes its slice.
        valid = torch.cat([prompt_mask, prompt_mask.new_ones(B, N)], dim=1)  # (B, T + N)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        mask = causal_mask(valid, T + N)  # (B, 1, T + N, T + N)
        stop = torch.tensor(sorted(stop_tokens), dtype=torch.long, device=device)
        out = torch.zeros(B, N, dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        cache = KVCache(self.config, B, T + N, device, compute_dtype(x)) if use_cache else None
        step = compiled_step(self, device) if compile and use_cache else self
        logits, _ = self(embeds=x, positions=positions[:, :T], mask=mask[:, :, :T, :T + N if use_cache else T],
                         cache=cache)
        n = 0  # new tokens so far
        for n in range(1, N + 1):
            next_token = pick_token(logits[:, -1].float(), temperature, top_k, top_p, generator)
            out[:, n - 1] = next_token.masked_fill(done, 0)
            if stop_tokens:
                done |= torch.isin(out[:, n - 1], stop)
            if n == N or (stop_tokens and done.all()):
                break
            S, new = T + n, out[:, n - 1:n]  # positions so far, the new token's included
            if use_cache:  # the new token alone; it sees the real positions written so far
                logits, _ = step(new, positions=positions[:, S - 1:S], mask=mask[:, :, S - 1:S], cache=cache)
            else:  # the whole sequence again
                seq = torch.cat([x, self.embed(out[:, :n])], dim=1)
                logits, _ = self(embeds=seq, positions=positions[:, :S], mask=mask[:, :, :S, :S])
        return [cut_at_stop(row, stop_tokens) for row in out[:, :n].tolist()]


def compiled_step(model, device):
    """torch.compile of the model for one-token decoding steps, whose shapes never change. On a CPU
    such a step is ~20 small kernels, each a few microseconds, and Python between them is a large
    share of its time: inductor's C++ wrapper calls them from compiled code (1.2x tok/s at the tiny
    preset on a 2-core AMD EPYC; its first compile takes ~17 s instead of ~4 s). The GPU path is
    left as it was."""
    options = {"cpp_wrapper": True} if device.type == "cpu" else None
    return torch.compile(model, dynamic=False, options=options)


def compute_dtype(x):
    """The dtype the layers compute in from input x: x's, or autocast's (bf16) where it is on."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def causal_mask(valid, n_query):
    """Boolean attention mask (B, 1, n_query, S) for the last n_query of S positions.

    A query sees the real positions at or before it. A padding query sees itself only, so that no
    row of the softmax is empty (an empty row gives NaN, and NaN times a zero weight is still NaN).
    """
    B, S = valid.shape
    key_pos = torch.arange(S, device=valid.device)
    query_pos = key_pos[S - n_query:]
    causal = key_pos[None, :] <= query_pos[:, None]  # (n_query, S)
    is_self = key_pos[None, :] == query_pos[:, None]
    mask = causal[None] & (valid[:, None, :] | is_self[None])  # (B, n_query, S)
    return mask[:, None]


def pick_token(logits, temperature, top_k, top_p, generator=None):
    """One next token per row from logits (B, vocab): greedy at temperature 0, else sampled."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:  # nucleus sampling (Holtzman et al. 2020)
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # mass before this token already exceeds top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def cut_at_stop(tokens, stop_tokens):
    for i, t in enumerate(tokens):
        if t in stop_tokens:
            return tokens[:i]
    return tokens


def left_pad(sequences, pad_value=0):
    """Stack 1-D token tensors (or (T, C) embedding tensors) of different lengths, padding on the
    left; return the batch and a mask (B, T) that is True on real positions. The pad value never
    matters: padded positions are masked out of attention."""
    T = max(s.size(0) for s in sequences)
    batch = sequences[0].new_full((len(sequences), T, *sequences[0].shape[1:]), pad_value)
    mask = torch.zeros(len(sequences), T, dtype=torch.bool, device=sequences[0].device)
    for i, s in enumerate(sequences):
        batch[i, T - s.size(0):] = s
        mask[i, T - s.size(0):] = True
    return batch, mask
