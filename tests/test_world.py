"""Tests for the world package: determinism, splits, captions, the corpus, and episodes. Fast (a few seconds)."""

import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import world  # noqa: E402
from world import (HELD_OUT_KINDS, KINDS, NONSENSE_NAMES, SEEN_KINDS, Scene, TextMix, World,  # noqa: E402
                   caption, corpus_text, describe, episodes, parse_caption, render, sample_scene)
from world.fewshot import _binding, _passage, _Pieces  # noqa: E402


def words_of(text):
    return set(re.findall(r"[a-z]+", text.lower()))


def kind_words(kinds):
    return {KINDS[k].name for k in kinds} | {KINDS[k].plural for k in kinds}


# ---------------------------------------------------------------------------------------------- determinism

def test_world_is_deterministic():
    a, b, c = World(seed=0, image_size=32), World(seed=0, image_size=32), World(seed=1, image_size=32)
    for i in range(5):
        (ia, ca, sa), (ib, cb, sb) = a[i], b[i]
        assert ca == cb and sa == sb
        assert np.array_equal(np.asarray(ia), np.asarray(ib))
    assert [a[i][1] for i in range(10)] != [c[i][1] for i in range(10)]
    assert not np.array_equal(np.asarray(a[0][0]), np.asarray(c[0][0]))


def test_world_item_independent_of_order():
    w = World(seed=3, image_size=32)
    late = w[7]
    for i in range(7):
        w[i]
    assert np.array_equal(np.asarray(w[7][0]), np.asarray(late[0]))


def test_world_dataset_contract():
    w = World(seed=0, image_size=64, length=4)
    assert len(w) == 4
    image, text, scene = w[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (64, 64)
    assert isinstance(text, str) and text.endswith(".") and text[0].islower()
    assert isinstance(scene, Scene)
    with pytest.raises(IndexError):
        w[4]
    with pytest.raises(ValueError):
        World(split="nope")


def test_corpus_is_deterministic():
    assert corpus_text(0, 20_000) == corpus_text(0, 20_000)
    assert corpus_text(0, 20_000) != corpus_text(1, 20_000)
    assert len(corpus_text(0, 12_345)) == 12_345


# ---------------------------------------------------------------------------------------------- splits

@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_held_out_kinds_never_in_seen_splits(split):
    w = World(seed=0, split=split)
    held = kind_words(HELD_OUT_KINDS)
    for i in range(400):
        scene, text, _ = w.scene_and_caption(i)
        assert all(o.kind in SEEN_KINDS for o in scene.objects)
        assert not (words_of(text) & held), text


def test_heldout_split_holds_only_held_out_kinds():
    w = World(seed=0, split="heldout")
    seen = {o.kind for i in range(200) for o in w.scene_and_caption(i)[0].objects}
    assert seen == set(HELD_OUT_KINDS)
    assert len(HELD_OUT_KINDS) == 5 and not set(HELD_OUT_KINDS) & set(SEEN_KINDS)


def test_splits_differ():
    assert [World(0, split="train").scene_and_caption(i)[1] for i in range(10)] != \
           [World(0, split="val").scene_and_caption(i)[1] for i in range(10)]


# ---------------------------------------------------------------------------------------------- drawing

@pytest.mark.parametrize("size", [32, 64, 128])
def test_every_kind_renders_at_every_size(size):
    for kind in KINDS:
        scene = world.lone_scene(random.Random(kind), kind)
        scene.noise = 0.0
        image = render(scene, size, random.Random(0))
        empty = render(Scene([], scene.background, 0.0), size, random.Random(0))
        assert image.size == (size, size) and image.mode == "RGB"
        changed = (np.abs(np.asarray(image, int) - np.asarray(empty, int)).sum(-1) > 30).mean()
        assert changed > 0.01, f"{kind} at {size}px barely visible ({changed:.3f} of pixels)"


def test_held_out_kinds_have_distinct_looks():
    looks = {(KINDS[k].shape, KINDS[k].parts, KINDS[k].texture) for k in HELD_OUT_KINDS}
    assert len(looks) == len(HELD_OUT_KINDS)
    rng = random.Random(0)
    paraphrases = {describe(world.lone_scene(rng, k, "red", "big").objects[0], random.Random(1), "paraphrase")
                   for k in HELD_OUT_KINDS}
    assert len(paraphrases) == len(HELD_OUT_KINDS)


# ---------------------------------------------------------------------------------------------- captions

def test_captions_parse_back_to_their_scene():
    rng = random.Random(0)
    with_size = 0
    for _ in range(1000):
        scene = sample_scene(rng, tuple(KINDS))
        text = caption(scene, rng)
        assert text[0].islower() and text.endswith("."), text
        parsed = parse_caption(text)
        truth = scene.groups()
        assert parsed["kinds"] == [g["kind"] for g in truth], text
        for got, want in zip(parsed["groups"], truth):
            for key in ("colour", "count", "position"):
                assert got[key] == want[key], (key, text)
            assert got["size"] in (None, want["size"]), text
            with_size += got["size"] is not None
        assert parsed["colour"] == truth[0]["colour"] and parsed["count"] == truth[0]["count"]
    assert with_size > 500


def test_parse_caption_examples():
    p = parse_caption("two blue cars at the top.")
    assert (p["kinds"], p["colour"], p["count"], p["position"], p["size"]) == (["car"], "blue", 2, "top", None)
    p = parse_caption("there is a big green frog in the middle.")
    assert (p["kinds"], p["colour"], p["count"], p["position"], p["size"]) == (["frog"], "green", 1, "middle", "big")


def test_describe_reads_like_a_caption():
    rng = random.Random(0)
    scene = world.lone_scene(rng, "apple", "red", "small")
    assert describe(scene.objects[0]) == "a small red apple."
    assert describe(scene) == "a small red apple in the middle."
    para = describe(scene.objects[0], random.Random(0), "paraphrase")
    assert "apple" not in para and "red" in para and "fruit" in para and "stem" in para


def test_facts_never_in_captions():
    facts = [s for k in KINDS for s in world.fact_sentences(k)]
    fact_words = {"can", "used", "eat", "fly", "swim", "find", "live", "lives", "grow"}
    w = World(seed=0, kinds=tuple(KINDS))
    for i in range(1500):
        text = w.scene_and_caption(i)[1]
        assert not any(f in text for f in facts), text
        assert not (words_of(text) & fact_words), text


# ---------------------------------------------------------------------------------------------- corpus

def test_nonsense_names_never_in_training_corpus():
    text = corpus_text(0, 1_000_000)
    assert not (words_of(text) & set(NONSENSE_NAMES))


def test_made_up_names_avoid_nonsense_and_real_words():
    rng = random.Random(0)
    names = [world.made_up_name(rng) for _ in range(3000)]
    assert not set(names) & set(NONSENSE_NAMES)
    assert not set(names) & set(KINDS) and not set(names) & set(world.COLOURS)
    assert all(re.fullmatch(r"[a-z]{3,}", n) for n in names)
    assert len(set(names)) > 1000


def test_corpus_has_every_passage_type_and_held_out_kinds():
    docs = [world.text_document(0, i) for i in range(600)]
    weighted = {name for name in world.PASSAGES if getattr(TextMix(), name) > 0}  # the levers weigh 0
    assert {kind for kind, _ in docs} == weighted and "binding_words" not in weighted
    text = " ".join(d for _, d in docs)
    for kind in HELD_OUT_KINDS:  # the LM knows the held-out kinds' names and facts
        assert kind in words_of(text)
    assert "Question:" in text and "Answer:" in text and "This is a" in text


def test_text_mix_controls_passage_types():
    only_copy = TextMix(**{f: 0.0 for f in ("knowledge", "qa", "story", "scene", "naming", "binding", "examples", "binding_direct")},
                        copy=1.0)
    kinds = {world.text_document(0, i, only_copy)[0] for i in range(50)}
    assert kinds == {"copy"}
    doc = world.text_document(0, 0, only_copy)[1]
    words = doc.split()
    assert any(words[:n] == words[n:2 * n] for n in range(4, 25))


PAPER_DESC = r"(?:a|an|one|two|three) [a-z ,]+?\."


def passage_pattern(naming):
    """A binding passage in the paper's layout, named in one Naming sentence throughout."""
    block = PAPER_DESC + " " + re.escape(naming.statement).replace(r"\{a\}", "an?").replace(r"\{name\}", "[a-z]+")
    ask = re.escape(f"Question: {naming.question} Answer:")
    return re.compile(rf"(?:Answer with [a-z, ]+\. )?(?:{block} )+{ask} {block}(?: {ask} {block})*")


def test_corpus_binding_passages_use_the_episode_layout():
    docs = [d for kind, d in (world.text_document(0, i) for i in range(400)) if kind == "binding"]
    paper = [d for d in docs if passage_pattern(world.PAPER_NAMING).fullmatch(d)]
    fast_vqa = [d for d in docs if "What colour is the" in d or "Where is the" in d]
    assert len(paper) > 20 and len(paper) + len(fast_vqa) == len(docs)  # the paper's sentence throughout
    # the episode text, answer appended, has the same layout, in the paper's sentence or a held-back one
    for e in episodes("binding", 5, as_text=True, task_induction=True):
        assert passage_pattern(world.PAPER_NAMING).fullmatch(world.episode_text(e) + " " + e.answer + ".")
    for e in episodes("binding", 20, as_text=True, templates="heldback"):
        text = world.episode_text(e) + " " + e.answer + "."
        assert any(passage_pattern(n).fullmatch(text) for n in world.HELD_BACK_NAMINGS), text


def test_word_thing_passages_bind_each_name_to_one_phrase_and_leave_the_corpus_unchanged_when_off():
    from world.text import passage_binding_words, text_documents
    rng = random.Random(0)
    for _ in range(20):
        text = passage_binding_words(rng)
        # every "<phrase>. This is a <name>." names one phrase's words, whole or in part
        phrase_of = {}
        for phrase, name in re.findall(r"(?:^|\. |Answer: )([a-z ]+)\. This is an? ([a-z]+)\.", text):
            phrase_of.setdefault(name, set()).add(frozenset(phrase.split()))
        assert phrase_of, text
        for name, phrases in phrase_of.items():
            whole = frozenset().union(*phrases)
            assert all(p <= whole for p in phrases) and len(whole) <= 4, (name, phrases)
        assert "Question: What is this? Answer:" in text
    first = [doc for _, doc in zip(range(200), text_documents(0))]
    assert first == [doc for _, doc in zip(range(200), text_documents(0, TextMix(binding_words=0.0)))]
    assert any("binding_words" == world.text.text_document(0, i, TextMix(binding_words=1.0))[0] for i in range(50))


def test_other_naming_sentences_when_the_share_is_lowered(monkeypatch):
    import world.text

    monkeypatch.setattr(world.text, "PAPER_NAMING_SHARE", 0.5)
    docs = [d for kind, d in (world.text_document(0, i) for i in range(800)) if kind == "binding"]
    named = {n.statement: [d for d in docs if passage_pattern(n).fullmatch(d)] for n in world.TRAINED_NAMINGS}
    assert all(len(v) > 0 for v in named.values())


def test_held_back_names_and_sentences_never_occur_in_the_corpus():
    text = world.corpus_text(0, 3_000_000)
    words = set(re.findall(r"[a-z]+", text))
    assert not words & set(world.HELD_BACK_NAMES) and not words & set(world.NONSENSE_NAMES)
    for naming in world.HELD_BACK_NAMINGS:
        for fixed in (naming.statement.split("{")[0], f"Question: {naming.question} Answer:"):
            assert fixed.strip() not in text, fixed


def test_passage_builder_matches_episode_join():
    """A corpus binding passage is the join of as_text episode pieces plus the answer."""
    rng = random.Random(0)
    out = _Pieces("t", 0, as_text=True)
    for layout in ("paper", "direct"):
        pieces, queries, _ = _binding(rng, out, ["apple", "car"], ["tove", "mimsy"], layout=layout)
        (qp, answer), = queries
        assert _passage(pieces, queries) == " ".join(pieces + qp) + " " + answer + "."
    assert " ".join(pieces + qp).startswith(("a ", "an "))


# ---------------------------------------------------------------------------------------------- episodes

@pytest.mark.parametrize("task", world.TASKS)
def test_episode_structure(task):
    eps = episodes(task, 3, image_size=32)
    texts = episodes(task, 3, image_size=32, as_text=True)
    for e, t in zip(eps, texts):
        assert e.task == task and isinstance(e.answer, str) and e.answer
        assert e.answer == t.answer
        assert all(isinstance(p, (str, Image.Image)) for p in e.pieces)
        assert all(isinstance(p, str) for p in t.pieces)
        for p in e.pieces + t.pieces:
            if isinstance(p, str):
                assert p and p == p.strip(), repr(p)
        if task != "copy":
            assert any(isinstance(p, Image.Image) for p in e.pieces)
            assert len(e.pieces) == len(t.pieces)


@pytest.mark.parametrize("task", world.TASKS)
def test_episodes_are_deterministic(task):
    a, b = episodes(task, 3, seed=5, as_text=True), episodes(task, 3, seed=5, as_text=True)
    c = episodes(task, 3, seed=6, as_text=True)
    assert [(x.pieces, x.answer) for x in a] == [(x.pieces, x.answer) for x in b]
    assert [(x.pieces, x.answer) for x in a] != [(x.pieces, x.answer) for x in c]


def test_image_episodes_are_deterministic():
    a, b = episodes("binding", 2, seed=1, image_size=32), episodes("binding", 2, seed=1, image_size=32)
    for x, y in zip(a, b):
        for p, q in zip(x.pieces, y.pieces):
            assert (p == q) if isinstance(p, str) else np.array_equal(np.asarray(p), np.asarray(q))


@pytest.mark.parametrize("ways,inner_shots,repeats", [(2, 1, 1), (5, 3, 1), (2, 5, 2)])
def test_binding_episodes(ways, inner_shots, repeats):
    for e in episodes("binding", 4, image_size=32, ways=ways, inner_shots=inner_shots, repeats=repeats):
        images = [p for p in e.pieces if isinstance(p, Image.Image)]
        assert len(images) == ways * inner_shots * repeats + 1
        assert set(e.info["kinds"]) <= set(HELD_OUT_KINDS) and len(e.info["kinds"]) == ways
        assert e.answer in NONSENSE_NAMES and e.answer == e.info["names"][e.info["query_kinds"][0]]
        assert f"This is a {e.answer}." in e.pieces
        assert e.pieces[-3:-1][0] == "Question: What is this? Answer:" and e.pieces[-1] == "This is a"


def test_binding_options():
    e = episodes("binding", 1, ways=2, task_induction=True, layout="direct")[0]
    assert e.pieces[0].startswith("Answer with ") and e.answer in e.pieces[0]
    assert f"{e.answer}." in e.pieces and isinstance(e.pieces[-1], Image.Image)
    for e in episodes("binding", 5, names="real", as_text=True):
        assert e.answer in HELD_OUT_KINDS and f"This is a {e.answer}." in e.pieces
    for e in episodes("binding", 10, as_text=True, query="same", ways=2, inner_shots=3):
        assert e.pieces[-2] in e.pieces[:-3]
    for e in episodes("binding", 10, as_text=True, query="different", ways=2, inner_shots=1):
        assert e.pieces[-2] not in e.pieces[:-3]
    for e in episodes("binding", 10, as_text=True, query="paraphrase"):
        assert not (words_of(e.pieces[-2]) & kind_words(KINDS))


def test_fast_vqa_answers_the_named_thing():
    for e in episodes("fast_vqa", 10, as_text=True, question="colour"):
        name = e.answer  # colour
        target = e.info["query_kinds"][0]
        nonsense = e.info["names"][target]
        assert e.pieces[-1] == f"Question: What colour is the {nonsense}? Answer:"
        assert f"{name} {target}" in e.pieces[-2]


def test_vqa_and_okvqa():
    for e in episodes("vqa", 5, shots=4, as_text=True):
        assert sum("Answer:" in p for p in e.pieces) == 5 and e.pieces[-1].endswith("Answer:")
    for e in episodes("vqa", 10, question="colour", as_text=True):
        asked = re.search(r"What colour (?:is|are) the ([a-z]+)\?", e.pieces[-1]).group(1)
        group = next(g for g in e.info["scene"].groups() if asked in kind_words([g["kind"]]))
        assert e.answer == group["colour"]
    for e in episodes("okvqa", 10, shots=1, as_text=True):
        q = e.pieces[-1]
        kind = e.info["kind"]
        facts = KINDS[kind].facts
        if "eat" in q:
            assert e.answer == ("yes" if facts.eat else "no")
        assert e.answer not in e.pieces[-2]


def test_copy_episode():
    for e in episodes("copy", 5, length=10):
        seq = e.info["sequence"]
        assert e.pieces == [" ".join(seq + seq[:5])] and e.answer == " ".join(seq[5:])


def test_unknown_task_and_option_fail_clearly():
    with pytest.raises(ValueError):
        episodes("nope", 1)
    with pytest.raises(TypeError):
        episodes("vqa", 1, ways=2)
    with pytest.raises(ValueError):
        episodes("binding", 1, ways=9)


def test_every_piece_of_every_evaluation_name_occurs_in_training_text(tmp_path):
    """The evaluation names never occur in the corpus, so the LM meets them as BPE pieces; a piece
    that only ever occurs inside them has an untrained embedding, and such names were never
    copied (README, "In-context learning"). With the tiny preset's 1024-token BPE every piece
    must be common in fresh corpus text."""
    import collections

    import train
    from data import train_tokenizer

    vocab = train.PRESETS["lm"]["tiny"]["model"]["vocab_size"]
    tok = train_tokenizer(corpus_text(0, 1_000_000).split("\n\n"), vocab, tmp_path / "tok.json")
    counts = collections.Counter(tok.encode(corpus_text(1, 1_000_000)))
    rare = {name: [(tok.decode([i]), counts[i]) for i in tok.encode(" " + name) if counts[i] < 20]
            for name in NONSENSE_NAMES}
    assert not any(rare.values()), {name: pieces for name, pieces in rare.items() if pieces}


def test_naming_captions_name_lone_things_and_change_nothing_else():
    plain, named = world.World(length=200), world.World(length=200, naming_captions=1.0)
    renamed = 0
    for i in range(200):
        scene, text, _ = plain.scene_and_caption(i)
        scene2, text2, _ = named.scene_and_caption(i)
        assert scene2 == scene
        if len(scene.objects) == 1:
            kind = scene.objects[0].kind
            assert text2 == f"This is {world.scenes.article(kind)} {kind}."
            renamed += 1
        else:
            assert text2 == text
    assert renamed > 20
    assert named[0][0].tobytes() == plain[0][0].tobytes()  # the same pixels


def test_shaped_thing_passages_drop_the_article_or_the_stop_and_are_off_by_default():
    from world.text import passage_binding_shapes
    rng = random.Random(0)
    text = " ".join(passage_binding_shapes(rng) for _ in range(30))
    things = re.findall(r"(?:^|\. |Answer: |[a-z] )((?:an? )?(?:small|big) [a-z]+ [a-z]+\.?) This is an? [a-z]+\.", text)
    shapes = {(t.startswith(("a ", "an ")), t.endswith(".")) for t in things}
    assert shapes == {(True, True), (True, False), (False, True), (False, False)}, things[:10]
    weighted = {name for name in world.PASSAGES if getattr(TextMix(), name) > 0}
    assert "binding_shapes" not in weighted
    assert any("binding_shapes" == world.text.text_document(0, i, TextMix(binding_shapes=1.0))[0] for i in range(50))
