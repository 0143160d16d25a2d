"""The vector-things lever of stage lm (vector_things.py): passages, rows, embeddings, the flag."""

import random

import pytest
import torch

import train
import vector_things
import world
from conftest import lm_args
from checkpoint import read_log
from data import WorldText, text_batch, train_tokenizer
from gpt import GPT, GPTConfig
from vector_things import VectorThings, embed_with_vectors, prefix_like_vectors, thing_vectors, vector_batch
from world.fewshot import HELD_BACK_NAMINGS, Slot
from world.text import passage_binding_slots


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    text = world.corpus_text(0, 200_000).split("\n\n")
    return train_tokenizer(text, 512, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def test_slot_passages_are_the_paper_layout_with_training_names_only():
    rng = random.Random(0)
    evaluation_names = set(world.NONSENSE_NAMES) | set(world.HELD_BACK_NAMES)
    held_back = [n.statement.split("{")[0].strip() for n in HELD_BACK_NAMINGS]
    for _ in range(300):
        pieces = passage_binding_slots(rng)
        assert any(isinstance(p, Slot) for p in pieces)
        for piece, after in zip(pieces, pieces[1:]):
            if isinstance(piece, Slot):  # a thing is named, or asked about, in the paper's sentence
                assert after.startswith("This is")
        words = {w.strip(".,?") for p in pieces if isinstance(p, str) for w in p.split()}
        assert not words & evaluation_names
        text = " ".join(p for p in pieces if isinstance(p, str))
        assert not any(h in text for h in held_back)


def test_the_same_scene_gets_the_same_vectors_and_a_kind_its_own_cluster():
    gen = torch.Generator().manual_seed(0)
    near, far = [], []
    for _ in range(50):
        a1, a2, b = world.lone_scene(random.Random(1), "apple"), world.lone_scene(random.Random(2), "apple"), \
            world.lone_scene(random.Random(3), "car")
        v = thing_vectors([Slot(a1), Slot(a1), Slot(a2), Slot(b)], 4, 16, gen)
        assert v[0].shape == (4, 16) and torch.equal(v[0], v[1])
        near.append((v[0] - v[2]).norm())
        far.append((v[0] - v[3]).norm())
    assert sum(n < f for n, f in zip(near, far)) >= 45  # another apple is nearer than a car


def test_prefix_like_things_share_all_slots_but_one_which_holds_the_kind():
    gen = torch.Generator().manual_seed(0)
    a1, a2, b = (world.lone_scene(random.Random(i), kind) for i, kind in ((1, "apple"), (2, "apple"), (3, "car")))
    v = prefix_like_vectors([Slot(a1), Slot(a1), Slot(a2), Slot(b)], 4, 64, gen)
    assert v[0].shape == (4, 64) and torch.equal(v[0], v[1])  # the same scene, the same vectors
    cosine = torch.nn.functional.cosine_similarity
    across = cosine(v[0], v[3], dim=-1)  # an apple's slots against a car's
    kind = int(across.argmin())
    assert all(across[i] > 0.9 for i in range(4) if i != kind)  # shared slots: 95% shared
    assert cosine(v[0][kind], v[2][kind], dim=0) > across[kind]  # the kind slot: another apple is nearer


def test_a_fixed_kind_slot_holds_the_kind_in_every_passage_and_leaves_the_other_draws_as_they_were():
    a1, b = (world.lone_scene(random.Random(i), kind) for i, kind in ((1, "apple"), (3, "car")))
    cosine = torch.nn.functional.cosine_similarity
    for seed in range(8):
        drawn = prefix_like_vectors([Slot(a1), Slot(b)], 4, 64, torch.Generator().manual_seed(seed))
        fixed = prefix_like_vectors([Slot(a1), Slot(b)], 4, 64, torch.Generator().manual_seed(seed), kind_slot=3)
        assert int(cosine(fixed[0], fixed[1], dim=-1).argmin()) == 3  # the apple and the car differ there
        drawn_slot = int(cosine(drawn[0], drawn[1], dim=-1).argmin())
        assert torch.equal(fixed[0][3], drawn[0][drawn_slot])  # the same kind vector, moved
    with pytest.raises(SystemExit, match="--vector-slot"):
        train.main(["--stage", "lm", "--vector-slot", "4"])


def test_lower_hardness_brings_the_examples_of_a_kind_nearer():
    apples = [Slot(world.lone_scene(random.Random(i), "apple")) for i in range(2)]

    def spread(hardness):  # an apple's distance to another apple, relative to its size
        gen = torch.Generator().manual_seed(0)
        pairs = [thing_vectors(apples, 4, 64, gen, hardness) for _ in range(50)]
        return sum(((v - w).norm() / v.norm()).item() for v, w in pairs) / 50

    assert spread(0.3) < 0.6 * spread(1.0)
    gen = torch.Generator().manual_seed(0)
    clean = thing_vectors(apples, 4, 64, gen, hardness=0.0)
    assert torch.equal(clean[0], clean[1])  # no noise: every example is its kind's prototype


def test_a_lower_within_brings_the_kinds_nearer_each_other_than_copies_of_one_kind_are():
    slots = [Slot(world.lone_scene(random.Random(i), kind)) for i, kind in ((1, "apple"), (2, "apple"), (3, "car"))]

    def margin(within):  # a copy of the kind against another kind, relative to how far from alike
        gen, margins = torch.Generator().manual_seed(0), []
        for _ in range(200):
            v = torch.nn.functional.normalize(torch.cat(vector_things.noun_vectors(slots, 256, gen, within=within)), dim=-1)
            margins.append(((v[0] @ v[1] - v[0] @ v[2]) / (1 - v[0] @ v[2])).item())
        return torch.tensor(margins)

    # halfway or more from between to 1, up to the sampling noise of 256-wide vectors
    assert margin(0.5).quantile(0.05) > 0.45 and margin(0.5).mean() > 0.7
    assert margin(0.1).quantile(0.05) < 0.3 and margin(0.1).mean() < margin(0.5).mean() - 0.1
    with pytest.raises(SystemExit, match="--vector-within"):
        train.main(["--stage", "lm", "--vector-within", "1"])


def test_a_run_scores_its_vector_things_drawn_as_it_trains_on_them():
    cfg = train.LMConfig(vector_things=0.25, vector_form="prefix", vector_hardness=0.3, vector_within=0.2,
                         vector_slot=2)
    assert cfg.thing_draw == vector_things.ThingDraw(form="prefix", hardness=0.3, within=0.2, kind_slot=2)
    assert train.LMConfig(vector_slot=-1).thing_draw.kind_slot is None  # -1: drawn per passage


def test_rows_hold_vectors_on_slots_only_and_no_loss_where_a_slot_comes_next(tokenizer):
    source = VectorThings(tokenizer, 128, 4, 16, seed=0)
    x, y, vectors, is_slot = vector_batch(source, 3, range(2))
    assert x.shape == y.shape == is_slot.shape == (2, 128) and vectors.shape == (2, 128, 16)
    assert is_slot.any() and (~is_slot).any()
    assert torch.all(vectors[~is_slot] == 0) and torch.all(vectors[is_slot].abs().sum(-1) > 0)
    assert torch.all(x[is_slot] == tokenizer.pad_id)
    assert torch.equal((y == -100)[:, :-1], is_slot[:, 1:])
    assert torch.equal(x, vector_batch(source, 3, range(2))[0])  # deterministic per (k, r)
    assert not torch.equal(x, vector_batch(source, 4, range(2))[0])


def test_the_noun_form_writes_a_thing_as_its_words_one_vector_and_the_stop(tokenizer):
    rng = random.Random(0)
    pieces = passage_binding_slots(rng)
    slots = [p for p in pieces if isinstance(p, Slot)]
    gen = torch.Generator().manual_seed(0)
    noun = vector_things.ThingDraw(form="noun")
    ids, vectors, is_slot = vector_things.passage_tensors(pieces, tokenizer, 4, 16, gen, noun)
    assert int(is_slot.sum()) == len(slots)  # one vector a thing
    stop = tokenizer.encode(".")
    where = is_slot.nonzero().flatten().tolist()
    for slot, at in zip(slots, where):
        obj = slot.scene.objects[0]
        words = tokenizer.encode(" " + world.noun_phrase(obj.kind, obj.colour, obj.size).rsplit(" ", 1)[0])
        assert ids[at - len(words): at].tolist() == words and ids[at + 1: at + 1 + len(stop)].tolist() == stop
    assert torch.all(vectors[~is_slot] == 0) and torch.allclose(vectors[is_slot].pow(2).mean(-1), torch.ones(len(slots)))
    # a passage's things of one kind are nearer each other than to another kind's, on average
    unit = torch.nn.functional.normalize(vectors[is_slot], dim=-1)
    kinds = [s.scene.objects[0].kind for s in slots]
    same = [(i, j) for i in range(len(kinds)) for j in range(i) if kinds[i] == kinds[j]]
    other = [(i, j) for i in range(len(kinds)) for j in range(i) if kinds[i] != kinds[j]]
    assert same and other
    assert sum(unit[i] @ unit[j] for i, j in same) / len(same) > sum(unit[i] @ unit[j] for i, j in other) / len(other)
    with pytest.raises(SystemExit, match="--vector-form"):
        train.main(["--stage", "lm", "--vector-form", "framed"])


def test_slots_embed_as_their_vectors_at_token_scale_and_text_as_tokens(tokenizer):
    lm = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16))
    x, _, vectors, is_slot = vector_batch(VectorThings(tokenizer, 64, 4, 16), 0, range(2))
    embeds = embed_with_vectors(lm, x, vectors, is_slot)
    rms = lm.wte.weight.pow(2).mean().sqrt()
    assert torch.allclose(embeds[is_slot], rms * vectors[is_slot])
    assert torch.equal(embeds[~is_slot], lm.wte(x)[~is_slot])
    embeds.sum().backward()  # the pad row is only ever under a slot here: no gradient reaches it
    assert lm.wte.weight.grad[tokenizer.pad_id].abs().sum() == 0


def test_without_the_flag_stage_lm_reads_plain_text_rows(tokenizer):
    text = WorldText(tokenizer, 64, seed=0)
    lm = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16))
    inputs, y = train.lm_inputs(lm, text, None, 5, range(3), 0, "cpu")
    x, y_text = text_batch(text, 5, range(3))
    assert list(inputs) == ["idx"] and torch.equal(inputs["idx"], x) and torch.equal(y, y_text)
    things = VectorThings(tokenizer, 64, 4, 16)
    inputs, y = train.lm_inputs(lm, text, things, 5, range(3), 1, "cpu")
    assert inputs["embeds"].shape == (3, 64, 16) and torch.equal(y[1:], y_text[1:])


def test_stage_lm_with_vector_things_trains_and_logs_vector_binding(corpus, tmp_path):
    train.main(lm_args(corpus, tmp_path, 4, "--vector-things", "0.5", "--icl-episodes", "4", "--block-size", "64"))
    evals = [r for r in read_log(tmp_path / "lm_log.txt") if "vec2" in r]
    assert evals and 0 <= evals[-1]["vec2"] <= 1 and 0 <= evals[-1]["vec5"] <= 1


def test_the_cli_scores_an_lm_at_each_hardness_and_names_a_missing_checkpoint(corpus, tmp_path, capsys):
    train.main(lm_args(corpus, tmp_path, 2, "--block-size", "64"))  # binding episodes need > 128 positions
    vector_things.main(["--lm-ckpt", str(tmp_path / "lm.pt"), "--hardness", "0", "1", "--episodes", "4"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 0 |") or line.startswith("| 1 |")]
    assert len(rows) == 2 and all(0 <= float(x) <= 1 for row in rows for x in row.strip("|").split("|")[1:])
    with pytest.raises(SystemExit, match="nothing.pt"):
        vector_things.main(["--lm-ckpt", str(tmp_path / "nothing.pt")])
