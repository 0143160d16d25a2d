"""diagnostics.py (issue 16's 'where the LM looks' and 'nearest tokens'): piece spans that tile the
embedded prompt, attention probabilities that reproduce the fused kernel, the nearest-token
search on hand-made cases, and eval.py's two opt-in tasks end to end on a random-init Frozen."""

import pytest
import torch

import diagnostics
import eval
import tables
import vector_things
import world
from data import InputError, encode_pieces, train_tokenizer
from frozen import Frozen, FrozenConfig, is_image
from gpt import GPT, GPTConfig, causal_mask, left_pad


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A 300-token BPE on world text (a fraction of a second): prompts tokenise as they do for real."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    return train_tokenizer([world.corpus_text(0, 40_000)], 300, path)


def tiny_frozen(vocab_size, smear_keys=True, seed=0):
    """Random init: a 2-layer, width-32 LM (positions for 4 x 160, the longest episodes fit) and the
    tiny NF-ResNet at 16 px, n = 2."""
    torch.manual_seed(seed)
    lm = GPT(GPTConfig(vocab_size=vocab_size, block_size=160, n_layer=2, n_head=2, n_embd=32, smear_keys=smear_keys))
    return Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=2, image_size=16)).eval()


def sharpen(lm, seed=0):
    """Large query/key weights and uneven smear mixes: peaked attention, so that a wrong mask, a
    missing rotation or unsmeared keys would change the output by far more than rounding."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in lm.blocks:
            block.attn.qkv.weight.copy_(torch.randn(block.attn.qkv.weight.shape, generator=g) * 0.5)
            if block.attn.smear is not None:
                block.attn.smear.copy_(torch.randn(block.attn.smear.shape, generator=g) * 2)
    return lm


# --- where each piece lies ------------------------------------------------------------------


def test_piece_spans_tile_the_embedded_sequence():
    model = tiny_frozen(50)
    image = torch.rand(3, 16, 16)
    prompt = [[1, 2, 3], image, [], [4], torch.rand(3, 16, 16), [5, 6]]
    spans = diagnostics.piece_spans(prompt, model.config.n_prefix)
    with torch.no_grad():
        sequence, = model.embed_sequences([prompt])
        assert spans[0][0] == 0 and spans[-1][1] == len(sequence) == 3 + 2 + 0 + 1 + 2 + 2
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, in order
        for piece, (start, end) in zip(prompt, spans):  # each span holds its piece's embeddings
            if is_image(piece):  # encoded alone here, in a batch of two there: equal up to rounding
                torch.testing.assert_close(sequence[start:end], model.vision(piece[None])[0])
            else:
                assert torch.equal(sequence[start:end], model.lm.embed(torch.tensor(piece, dtype=torch.long)))


@pytest.mark.parametrize("as_text", [False, True])
def test_binding_positions_find_each_support_thing_and_its_name(tokenizer, as_text):
    images = world.episodes("binding", 3, image_size=16, split="val", ways=2, inner_shots=2, task_induction=True,
                            kinds="seen", names="real")  # real names: 'car' and 'carrot' may meet
    episodes = world.episodes("binding", 3, split="val", as_text=True, ways=2, inner_shots=2, task_induction=True,
                              kinds="seen", names="real") if as_text else images
    for e, twin in zip(episodes, images):
        prompt = encode_pieces(e.pieces, tokenizer, 16)
        things = diagnostics.thing_pieces(twin)
        where = diagnostics.binding_positions(e, prompt, tokenizer, 2, things)
        flat = [t for p in prompt for t in ([None, None] if is_image(p) else p)]  # a slot per position
        assert len(where["support"]) == 4 and where["query_kind"] == e.info["query_kinds"][0]
        for s, i in zip(where["support"], things):
            assert tokenizer.decode(flat[slice(*s["name"])]) == " " + e.info["names"][s["kind"]]
            if as_text:  # the description names its kind ('a big white house.')
                assert s["kind"] in tokenizer.decode(flat[slice(*s["thing"])]) == " " + e.pieces[i]
            else:
                assert s["thing"][1] - s["thing"][0] == 2 and flat[slice(*s["thing"])] == [None, None]
        assert sorted(s["kind"] for s in where["support"]) == sorted(e.info["kinds"] * 2)


# --- attention probabilities ------------------------------------------------------------------


@pytest.mark.parametrize("smear_keys", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_attention_probs_times_values_is_the_fused_kernels_output(smear_keys, padded):
    """Recomputed probabilities @ v against what F.scaled_dot_product_attention gave the layer
    (the input of its output projection), at every position, with and without smeared keys, for a
    plain causal sequence and a left-padded batch (mask and per-row positions, as generate has).
    float32 throughout: the fused kernel sums in another order (blocked, online softmax), so the
    two agree to rounding, about 1e-7 relative (measured: 1e-6 on outputs up to 10); 1e-5 leaves room for that
    and is far below what any real difference (no smear, no rotation, wrong mask) makes here."""
    lm = sharpen(tiny_frozen(50, smear_keys).lm)
    x = torch.randn(2, 12, 32)
    forward = dict(embeds=x)
    if padded:
        x, valid = left_pad([x[0, :12], x[1, :7]])
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        forward = dict(embeds=x, positions=positions, mask=causal_mask(valid, 12))
    calls, outputs = [], []
    hooks = [h for b in lm.blocks for h in (
        b.attn.register_forward_hook(lambda m, args, out: calls.append(args)),
        b.attn.proj.register_forward_pre_hook(lambda m, args: outputs.append(args[0])))]
    maps = diagnostics.attention_maps(lm, **forward)
    for h in hooks:
        h.remove()
    for block, probs, args, y in zip(lm.blocks, maps, calls, outputs):
        _, _, v = diagnostics.queries_keys_values(block.attn, *args)
        mixed = (probs @ v.float()).transpose(1, 2).reshape(y.shape)  # (B, T, C)
        torch.testing.assert_close(mixed, y, atol=1e-5, rtol=1e-5)
        assert (y - y.mean()).abs().max() > 0.1  # the outputs are not all alike
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
        T = probs.size(-1)
        assert (probs.triu(1) == 0).all()  # causal: no query sees a later key
        if padded:  # the short row's real queries never see its padding
            assert (probs[1, :, T - 7:, : T - 7] == 0).all()
        if smear_keys:  # unsmeared keys would give another output: the check has teeth
            smear, block.attn.smear = block.attn.smear, None
            plain = diagnostics.attention_probs(block.attn, *args)
            block.attn.smear = smear
            assert ((plain @ v.float()).transpose(1, 2).reshape(y.shape) - y).abs().max() > 1e-3


def test_last_query_attention_is_the_last_row_of_the_maps():
    lm = sharpen(tiny_frozen(50).lm)
    x = torch.randn(9, 32)
    last = diagnostics.last_query_attention(lm, x)
    maps = diagnostics.attention_maps(lm, embeds=x[None])
    assert last.shape == (2, 2, 9)
    assert torch.equal(last, torch.stack([m[0, :, -1] for m in maps]))
    assert not any(b.attn._forward_hooks for b in lm.blocks)  # the hooks are gone after the call


def test_episode_looks_on_a_hand_made_attention():
    """Two support things (kinds a, b) with their names; the query is an a. One layer, two heads:
    head 0 looks at a's thing and name, head 1 at b's."""
    where = dict(support=[dict(kind="a", thing=(0, 2), name=(3, 4)), dict(kind="b", thing=(4, 6), name=(7, 8))],
                 query=(8, 10), query_kind="a")
    probs = torch.zeros(1, 2, 11)
    probs[0, 0, [0, 1, 3, 9, 10]] = torch.tensor([0.3, 0.2, 0.4, 0.05, 0.05])
    probs[0, 1, [4, 7, 10]] = torch.tensor([0.6, 0.3, 0.1])
    looks = diagnostics.episode_looks(probs, where)
    assert torch.allclose(looks["matching things"], torch.tensor([[0.5, 0.0]]))
    assert torch.allclose(looks["other things"], torch.tensor([[0.0, 0.6]]))
    assert torch.allclose(looks["matching names"], torch.tensor([[0.4, 0.0]]))
    assert torch.allclose(looks["query thing"], torch.tensor([[0.05, 0.0]]))
    assert looks["top thing matches"].tolist() == [[1.0, 0.0]]
    assert looks["top name matches, head mean"].tolist() == [1.0]  # 0.4 / 2 on a's name, 0.3 / 2 on b's
    row, = diagnostics.per_layer_rows([looks, looks])
    assert row["other things"] == {"mean": pytest.approx(0.3), "max": pytest.approx(0.6), "head": 1}
    assert row["top thing matches"]["mean"] == 0.0 and row["episodes"] == 2  # head mean: 0.25 < 0.3


# --- nearest tokens ---------------------------------------------------------------------------


class OneTokenNames:
    """A stand-in tokenizer: ' apple' is token 5, ' kite' token 9; a token decodes as 't<id>'."""

    def encode(self, text):
        return {" apple": [5], " kite": [9]}[text]

    def decode(self, ids):
        return "".join(f"t{i}" for i in ids)


def test_a_prefix_vector_equal_to_a_token_embedding_has_it_nearest():
    table = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    vectors = torch.stack([3 * table[5], table[11]])  # a scaled copy: cosine 1 all the same
    values, ids, cosines = diagnostics.nearest_tokens(vectors, table, k=3)
    assert ids[:, 0].tolist() == [5, 11] and torch.allclose(values[:, 0], torch.ones(2))
    assert cosines.shape == (2, 20)
    rows = diagnostics.nearest_rows(vectors[:, None], ["apple", "kite"], table, OneTokenNames(), "seen", k=3)
    row, = rows  # n = 1: one slot
    assert row["own_name_in_top_k"] == 0.5  # apple's vector is ' apple'; kite's is token 11
    assert row["top1_cosine"] == pytest.approx(1.0) and row["vectors"] == 2
    assert row["prefix_norm"] == pytest.approx((3 * table[5].norm() + table[11].norm()).item() / 2)
    assert row["examples"][0][0] == "apple" and row["examples"][0][1][0] == ["t5", pytest.approx(1.0)]


def test_nearest_other_token_skips_the_token_itself():
    table = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # rows 0 and 1 point the same way
    assert diagnostics.nearest_other_token(table, chunk=2) == pytest.approx((1 + 1 + 0) / 3)


# --- eval.py's tasks ----------------------------------------------------------------------------


def test_the_diagnostics_are_opt_in():
    def tasks(task):
        return eval.choose_tasks(eval.parse_args(["--task", task]))

    assert tasks("all") == eval.IMAGE_TASKS and not set(eval.DIAGNOSTIC_TASKS) & set(eval.IMAGE_TASKS)
    assert tasks("attention,nearest") == ("attention", "nearest")


def test_attention_and_nearest_tables_end_to_end(tokenizer):
    """Both tasks on a random-init Frozen (structure, not skill), printed as eval.py prints them."""
    subject = eval.Subject("tiny", tiny_frozen(tokenizer.vocab_size), tokenizer)
    protocol = eval.Protocol(episodes=2, split="val")
    with torch.no_grad():
        results = {"attention": eval.attention_table(subject, protocol),
                   "nearest": eval.nearest_table(subject, protocol, per_kind=1)}
    attention = results["attention"]
    assert [(r["kinds"], r["things"], r["layer"]) for r in attention] == [
        (kinds, things, layer) for kinds in ("seen", "heldout") for things in ("reference text", "visual prefixes")
        for layer in (0, 1)]
    for r in attention:
        masses = sum(r[m]["mean"] for m in diagnostics.MASSES)
        assert 0 < masses <= 1 + 1e-6 and r["episodes"] == 2 and 0 <= r["top thing matches"]["max"] <= 1
    nearest = results["nearest"]
    assert [(r["kinds"], r["slot"]) for r in nearest] == [("seen", 0), ("seen", 1), ("heldout", 0), ("heldout", 1)]
    assert nearest[2]["vectors"] == len(world.HELD_OUT_KINDS) and len(nearest[0]["examples"]) == 3
    lines = []
    tables.print_model_tables("tiny", {"results": results, "blind": False, "seeds": 1, "ckpts": ["x"],
                                       "about": "random init"}, lambda line="": lines.append(line))
    text = "\n".join(lines)
    assert "Where the LM looks" in text and "Nearest token embeddings" in text
    assert text.count("| seen | visual prefixes |") == 2 and text.count("| heldout | 1 |") == 1


@pytest.mark.parametrize("geometry", [(0.0, 1.0), (0.5, 0.8), (0.9, 0.97)])
def test_geometry_vectors_have_the_asked_cosines_across_and_within_kinds(geometry):
    g = torch.Generator().manual_seed(0)
    vectors = vector_things.geometry_vectors(["a", "b"], 4, geometry, 8192, g)  # wide: random parts ~orthogonal
    unit = {k: torch.nn.functional.normalize(v, dim=-1) for k, v in vectors.items()}
    within = (unit["a"] @ unit["a"].T)[~torch.eye(4, dtype=torch.bool)]
    between = unit["a"] @ unit["b"].T
    # each cosine's sampling error at width 8192 is about 1 / sqrt(8192) = 0.011
    assert torch.allclose(within, torch.full_like(within, geometry[1]), atol=0.05)
    assert torch.allclose(between, torch.full_like(between, geometry[0]), atol=0.05)
    assert torch.allclose(vectors["a"].pow(2).mean(-1), torch.ones(4), atol=1e-4)  # unit rms


def test_a_vector_thing_takes_the_nouns_place_between_its_words_and_the_stop(tokenizer):
    lm = tiny_frozen(tokenizer.vocab_size).lm
    options = dict(split="val", ways=2, inner_shots=1, task_induction=True)
    episode = world.episodes("binding", 1, 0, as_slots=True, **options)[0]
    text = world.episodes("binding", 1, 0, as_text=True, **options)[0]  # the same draw, in words
    prompt = diagnostics.vector_thing_prompt(lm, tokenizer, episode, (0.0, 1.0), torch.Generator().manual_seed(0))
    ids = [t for p in encode_pieces(text.pieces, tokenizer, image_size=None) for t in p]
    kinds = [p.scene.objects[0].kind for p in episode.pieces if not isinstance(p, str)]  # 2 supports, the query
    nouns = sum(len(tokenizer.encode(" " + kind)) for kind in kinds)
    # one vector where each noun's tokens were; the text before the first thing is the text's own
    assert len(prompt) == len(ids) - nouns + len(kinds)
    assert torch.equal(prompt[:3], lm.embed(torch.tensor(ids[:3])))
    vectors = [i for i, row in enumerate(prompt) if not (row == lm.wte.weight).all(-1).any()]
    assert len(vectors) == 3
    # within = 1: the query's vector is its kind's support's exactly, and not the other kind's
    same = kinds.index(kinds[2])
    assert torch.equal(prompt[vectors[same]], prompt[vectors[2]])
    assert not torch.equal(prompt[vectors[1 - same]], prompt[vectors[2]])
    # each followed by the full stop, at the token embeddings' rms
    assert all(torch.equal(prompt[i + 1], lm.embed(torch.tensor(tokenizer.encode(".")))[0]) for i in vectors)
    assert torch.allclose(prompt[vectors].pow(2).mean(-1).sqrt(), lm.embedding_rms().expand(3), rtol=1e-4)


def test_the_visual_word_probe_adds_three_positions_at_inference_only(tokenizer):
    """--task visual-word on a random-init Frozen: both rungs scored, every image's prefix three
    positions longer while the probe runs (' a', its word, '.'), and the model as it was after."""
    model = tiny_frozen(tokenizer.vocab_size)
    subject = eval.Subject("tiny", model, tokenizer)
    lengths = []
    model.vision.register_forward_hook(lambda module, args, out: lengths.append(out.shape[1]))
    with torch.no_grad():
        rows = eval.visual_word_table(subject, eval.Protocol(episodes=2, split="val"), n_mean=8)
    assert [r["kinds"] for r in rows] == ["seen", "heldout"]
    assert all(r[rung]["n"] == 2 for r in rows for rung in ("visual prefixes", "visual prefixes and a visual word"))
    assert set(lengths) == {2, 5}  # n = 2 learned slots, + 3 with the word
    assert "forward" not in vars(model.vision)  # the class's forward again
    lines = []
    tables.print_visual_word(rows, lambda line="": lines.append(line))
    assert sum(line.startswith("| ") for line in lines) == 3  # the header (its rule with it), seen, held-out
    trained_with_one = Frozen(model.lm, FrozenConfig(encoder="tiny", n_prefix=5, image_size=16, visual_word=True))
    with pytest.raises(InputError, match="trained with --visual-word"):
        eval.visual_word_table(eval.Subject("vw", trained_with_one, tokenizer, ckpt="vw.pt"), eval.Protocol(episodes=2))


def test_prefix_parts_write_the_noun_the_prefix_and_the_swaps_where_the_thing_stands(tokenizer):
    """part_prompts on a random-init Frozen: 'a small red apple.' is the text's own embedding, <prefix>
    is the sequence Frozen itself reads (so that row is the ladder's prefix rung), and a swap
    changes only the kind slot's position."""
    model = tiny_frozen(tokenizer.vocab_size)
    subject = eval.Subject("tiny", model, tokenizer)
    options = dict(split="val", ways=2, inner_shots=1, task_induction=True)
    images = world.episodes("binding", 2, 0, image_size=16, **options)
    slotted = world.episodes("binding", 2, 0, as_slots=True, **options)
    texts = world.episodes("binding", 2, 0, as_text=True, **options)
    prefixes = [eval.prefixes_of(subject, [p for p in e.pieces if not isinstance(p, str)]) for e in images]
    with torch.no_grad():
        prompts, slot = diagnostics.part_prompts(model.lm, tokenizer, slotted, prefixes)
        framed = model.embed_sequences([encode_pieces(e.pieces, tokenizer, 16) for e in images])
        words = [model.lm.embed(torch.tensor([t for p in encode_pieces(e.pieces, tokenizer, None) for t in p]))
                 for e in texts]
    assert list(prompts) == list(diagnostics.part_forms(*[torch.zeros(2, 4)] * 5, kind_slot=0, nearest=torch.zeros(1, 4),
                                                            slot_mean=torch.zeros(4)))
    for i in range(2):
        # the table's rows are rescaled by the token rms and back: equal up to float32 rounding
        assert torch.allclose(prompts["a small red apple."][i], words[i], rtol=1e-5, atol=1e-6)
        assert torch.allclose(prompts["<prefix>"][i], framed[i], rtol=1e-5, atol=1e-6)
        swapped = prompts["<prefix>, kind slot <v>"][i]
        differs = (swapped != prompts["<prefix>"][i]).any(-1).nonzero().flatten()
        things = [s for s, piece in zip(diagnostics.piece_spans(encode_pieces(images[i].pieces, tokenizer, 16), 2),
                                        images[i].pieces) if not isinstance(piece, str)]
        assert differs.tolist() == [start + slot for start, _ in things]  # each thing's kind slot, and only those
    rows = diagnostics.prefix_part_rows(model.lm, tokenizer, slotted, prefixes)
    assert [r["form"] for r in rows] == list(prompts) and all(r["n"] == 2 and r["kind_slot"] == slot for r in rows)
    lines = []
    tables.print_prefix_parts([dict(r, kinds="seen", ways=2) for r in rows], lambda line="": lines.append(line))
    assert sum(line.startswith("| seen") for line in lines) == len(rows)


def test_the_kind_slot_is_the_one_least_alike_across_kinds():
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(3, 64, generator=g)  # slots 0 and 2 the same for every thing
    prefixes = shared.repeat(4, 1, 1)
    own = {kind: torch.randn(64, generator=g) for kind in "ab"}
    kinds = ["a", "b", "a", "b"]
    for i, kind in enumerate(kinds):
        prefixes[i, 1] = own[kind] + 0.1 * torch.randn(64, generator=g)
    assert diagnostics.kind_slot(prefixes, kinds) == 1
