"""gpt.py: causality, the embeddings path, RoPE, attention against a hand-written reference,
KV-cached generation, sampling filters, and that the model can learn (overfit one batch)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import gpt
from gpt import GPT, GPTConfig, apply_rope, causal_mask, left_pad, pick_token, rope_tables

CFG = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(params=[False, True], ids=["plain", "smeared-keys"])
def model(request):
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(CFG, smear_keys=request.param)).eval()
    if request.param:  # away from the 0.5 start, so a wrong previous key would show
        for block in model.blocks:
            block.attn.smear.data.normal_()
    return model


def test_changing_a_later_token_never_changes_earlier_logits(model):
    idx = torch.randint(0, 97, (2, 16))
    changed = idx.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 97
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.equal(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_ids_and_embeddings_give_identical_logits(model):
    idx = torch.randint(0, 97, (3, 12))
    a, _ = model(idx)
    b, _ = model(embeds=model.embed(idx))
    assert torch.equal(a, b)


def test_output_embedding_is_tied_to_input(model):
    assert model.lm_head.weight is model.wte.weight


def test_rope_scores_depend_only_on_relative_position():
    cos, sin = rope_tables(16, 64, 10000.0)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        rq = apply_rope(q.view(1, 1, 1, 16), cos[m].view(1, 1, 1, 16), sin[m].view(1, 1, 1, 16))
        rk = apply_rope(k.view(1, 1, 1, 16), cos[n].view(1, 1, 1, 16), sin[n].view(1, 1, 1, 16))
        return (rq * rk).sum().item()

    assert score(5, 2) == pytest.approx(score(40, 37), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)


def test_rope_rotates_each_channel_pair_by_position_times_frequency():
    """Su et al. 2021, eq. 34 in GPT-NeoX's pairing: channel i pairs with i + hd/2."""
    hd, pos = 8, 5
    cos, sin = rope_tables(hd, 16, 10000.0)
    x = torch.randn(hd)
    angle = pos * 10000.0 ** (-torch.arange(0, hd, 2).float() / hd)
    x1, x2 = x[: hd // 2], x[hd // 2:]
    expected = torch.cat([x1 * angle.cos() - x2 * angle.sin(), x2 * angle.cos() + x1 * angle.sin()])
    assert torch.allclose(apply_rope(x, cos[pos], sin[pos]), expected, atol=1e-6)


def test_attention_matches_a_hand_written_reference():
    """softmax(QK^T / sqrt(d) + causal mask) V, per head, written out with no fused kernel."""
    torch.manual_seed(0)
    attn = GPT(CFG).blocks[0].attn
    model = GPT(CFG)
    x = torch.randn(2, 7, 32)
    cos, sin = model.rope_cos[:7], model.rope_sin[:7]  # (T, hd), against (B, nh, T, hd)
    q, k, v = attn.qkv(x).split(32, dim=2)
    q, k, v = (t.view(2, 7, 2, 16).transpose(1, 2) for t in (q, k, v))
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    scores = q @ k.transpose(-1, -2) / math.sqrt(16)
    scores = scores.masked_fill(torch.triu(torch.ones(7, 7, dtype=torch.bool), 1), float("-inf"))
    expected = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 7, 32))
    out = attn(x, cos, sin, torch.arange(7).expand(2, 7))
    assert torch.allclose(out, expected, atol=1e-5)


def test_loss_ignores_minus_100_targets(model):
    idx = torch.randint(0, 97, (2, 8))
    targets = torch.randint(0, 97, (2, 8))
    targets[:, :3] = -100
    logits, _ = model(idx)
    none, loss = model(idx, targets=targets)
    assert none is None  # a training step keeps no logits
    expected = F.cross_entropy(logits[:, 3:].reshape(-1, 97), targets[:, 3:].reshape(-1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_kv_cache_generation_equals_uncached_greedy(model):
    idx = torch.randint(0, 97, (3, 9))
    cached = model.generate(idx, max_new_tokens=20)
    uncached = model.generate(idx, max_new_tokens=20, use_cache=False)
    assert cached == uncached
    assert all(len(row) == 20 for row in cached)


def test_batched_prompts_of_different_lengths_equal_one_at_a_time(model):
    prompts = [torch.randint(0, 97, (n,)) for n in (4, 11, 7)]
    batch, mask = left_pad(prompts)
    together = model.generate(batch, prompt_mask=mask, max_new_tokens=12)
    alone = [model.generate(p[None], max_new_tokens=12)[0] for p in prompts]
    assert together == alone
    assert model.generate(batch, prompt_mask=mask, max_new_tokens=12, use_cache=False) == alone


def test_generation_from_embeddings_equals_generation_from_ids(model):
    idx = torch.randint(0, 97, (2, 6))
    assert model.generate(idx, max_new_tokens=8) == model.generate(embeds=model.embed(idx), max_new_tokens=8)


def test_stop_tokens_end_a_row_and_are_not_returned(model):
    idx = torch.randint(0, 97, (1, 5))
    free = model.generate(idx, max_new_tokens=10)[0]
    stop = free[3]
    stopped = model.generate(idx, max_new_tokens=10, stop_tokens=(stop,))[0]
    assert stopped == free[: free.index(stop)]


def test_padding_queries_see_only_themselves():
    valid = torch.tensor([[False, False, True, True]])
    mask = causal_mask(valid, 4)[0, 0]
    assert mask.tolist() == [[True, False, False, False],
                             [False, True, False, False],
                             [False, False, True, False],
                             [False, False, True, True]]


def test_top_k_and_top_p_only_sample_allowed_tokens():
    logits = torch.tensor([[4.0, 3.0, 2.0, -1.0, -2.0]]).repeat(200, 1)
    g = torch.Generator().manual_seed(0)
    assert set(pick_token(logits, 1.0, 2, None, g).tolist()) <= {0, 1}
    probs = logits[0].softmax(-1)  # 0.66, 0.24, 0.09, ...: top_p 0.8 keeps the first two
    assert probs[0] < 0.8 < probs[0] + probs[1]
    assert set(pick_token(logits, 1.0, None, 0.8, g).tolist()) == {0, 1}
    assert pick_token(logits[:1], 0.0, None, None).item() == 0


def test_overfits_one_batch():
    """Measured (seeds 0 and 1): loss 4.57 -> 0.036 in 150 steps; the bound leaves room for other builds."""
    torch.manual_seed(0)
    model = GPT(CFG)
    idx = torch.randint(0, 97, (4, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        _, loss = model(idx[:, :-1], targets=idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3


def test_too_long_sequence_is_a_clear_error(model):
    with pytest.raises(ValueError, match="longer than"):
        model(torch.zeros(1, 4 * CFG.block_size + 1, dtype=torch.long))


def test_smeared_keys_mix_in_the_previous_key_only():
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(CFG, smear_keys=True))
    attn = model.blocks[0].attn
    k = torch.randn(1, 2, 5, 16)  # (B, nh, T, hd)
    out = attn.smear_keys(k, torch.arange(5)[None], None, None, 0)
    assert torch.allclose(out[:, :, 0], 0.5 * k[:, :, 0])  # the first token has no previous key
    assert torch.allclose(out[:, :, 3], 0.5 * k[:, :, 3] + 0.5 * k[:, :, 2])


# Greedy outputs of gpt.py as it was before the decoding speed-ups (commit 2bfd12a), for the model
# and prompts below: the new code must return exactly these tokens. Top-2 logit gaps along these
# paths are >= 0.0065, far above float rounding, so a change of rounding cannot flip a token.
PINNED = {
    False: dict(ids=[[28, 79, 12, 12, 12, 12, 12, 28, 13, 12], [71, 71, 71, 71, 71, 71, 71, 62, 62, 1],
                     [12, 90, 13, 13, 13, 13, 13, 13, 13, 13]],
                embeds=[[13, 64, 12, 13, 64, 13, 64, 13, 64, 13], [13, 51, 1, 13, 1, 13, 71, 13, 13, 13]],
                stop_tokens=(12, 71), stopped=[[28, 79], [], []]),
    True: dict(ids=[[12, 12, 12, 12, 12, 79, 79, 79, 79, 79], [13, 19, 13, 33, 87, 13, 91, 12, 13, 69],
                    [79, 79, 91, 79, 82, 91, 43, 79, 13, 7]],
               embeds=[[84, 71, 12, 26, 63, 67, 92, 79, 84, 92], [15, 29, 79, 79, 79, 13, 12, 12, 12, 12]],
               stop_tokens=(12, 91), stopped=[[], [13, 19, 13, 33, 87, 13], [79, 79]]),
}


def pinned_model_and_prompts(smear):
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(CFG, smear_keys=smear)).eval()
    for p in model.parameters():  # far from the init's small weights, so every token depends on everything
        if p.dim() > 1 or p.numel() == CFG.n_head:  # the matrices, and the smeared keys' gates
            p.data.normal_(0.0, 0.35 if p.dim() > 1 else 1.0)
    gen = torch.Generator().manual_seed(1)
    ids = [torch.randint(0, 97, (n,), generator=gen) for n in (5, 9, 3)]
    embeds = [torch.randn(n, 32, generator=gen) * 0.5 for n in (4, 7)]
    return model, ids, embeds


@pytest.mark.parametrize("smear", [False, True], ids=["plain", "smeared-keys"])
def test_greedy_outputs_are_the_pinned_ones(smear):
    model, ids, embeds = pinned_model_and_prompts(smear)
    pinned = PINNED[smear]
    batch, mask = left_pad(ids)
    for use_cache in (True, False):
        assert model.generate(batch, prompt_mask=mask, max_new_tokens=10, use_cache=use_cache) == pinned["ids"]
    assert model.generate(ids[1][None], max_new_tokens=10) == [pinned["ids"][1]]  # alone, unpadded
    e, e_mask = left_pad(embeds)
    assert model.generate(embeds=e, prompt_mask=e_mask, max_new_tokens=10) == pinned["embeds"]
    stopped = model.generate(batch, prompt_mask=mask, max_new_tokens=10, stop_tokens=pinned["stop_tokens"])
    assert stopped == pinned["stopped"]


def test_compiled_decoding_step_gives_the_pinned_tokens():
    """generate(compile=True): one compile (the shapes do not change between steps), the same tokens;
    left padding and stop tokens go through the compiled step too."""
    model, ids, _ = pinned_model_and_prompts(smear=True)
    pinned = PINNED[True]
    batch, mask = left_pad(ids)
    assert model.generate(batch, prompt_mask=mask, max_new_tokens=10, compile=True) == pinned["ids"]
    stopped = model.generate(batch, prompt_mask=mask, max_new_tokens=10, stop_tokens=pinned["stop_tokens"],
                             compile=True)
    assert stopped == pinned["stopped"]


def test_float32_attention_under_bf16_autocast_is_bf16_attention_more_precisely(monkeypatch):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 9, 16, dtype=torch.bfloat16) for _ in range(3))
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = gpt.attention(q, k, v, None, 0.0, causal=True)
        monkeypatch.setattr(gpt, "float32_attention_on_cpu", True)
        fp32 = gpt.attention(q, k, v, None, 0.0, causal=True)
    assert bf16.dtype == fp32.dtype == torch.bfloat16
    assert (fp32.double() - exact).abs().max() <= (bf16.double() - exact).abs().max() + 1e-2
    assert torch.allclose(fp32.double(), exact, atol=2e-2)
