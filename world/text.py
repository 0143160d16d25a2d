"""
Chapter 4, text: the English corpus that stage lm trains the language model on.

Frozen's language model is pretrained on a large web text corpus and then frozen: all it knows
about the world, and its ability to pick up a task from examples in its prompt, comes from that
text. A web corpus has both for free; ours is generated, one deterministic document at a time,
about the same world the images show:

- Facts that are only ever in text (what a thing is, what it is used for, where it is found,
  whether it can be eaten, fly or swim): OKVQA's "outside knowledge". The held-out kinds are in
  the text too: the LM knows their names and facts, only the vision side never saw them.
- Q/A passages (the VQA and OKVQA layouts, with text where the image will be), stories and scene
  descriptions.
- The passages that make in-context learning learnable at all: naming stories, solved-example
  lists, copy passages, and binding passages in exactly the layout of the evaluation's binding
  and Fast-VQA tasks (built by fewshot.py, with made-up names instead of the evaluation's).

It is made from templates, so it is repetitive by design, and its in-context skills are planted
on purpose. TextMix sets the share of each passage type.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from dataclasses import dataclass, fields
from typing import Callable, Iterator

from .drawing import BACKGROUNDS, COLOURS
from .fewshot import PAPER_NAMING, TRAINED_NAMINGS, _answered, _binding, _fast_vqa, _join, _passage, _Pieces, qa
from .scenes import (HELD_BACK_NAMES, KINDS, NONSENSE_NAMES, NUMBER_WORDS, POSITION_PHRASES, SIZES, Scene,
                     _looks_sentence, article, caption, describe, lone_scene, noun_phrase, sample_scene, with_article)

# ----------------------------------------------------------------------------------------------
# Facts and questions (facts appear only in text, never in captions)


def _singular(verb: str) -> str:
    """'grow' -> 'grows', 'are found' -> 'is found'."""
    return "is" + verb[3:] if verb.startswith("are") else verb + "s"


def fact_sentences(kind: str) -> list[str]:
    """Every form a fact about this kind takes in the corpus (tests check none is in a caption)."""
    k, f = KINDS[kind], KINDS[kind].facts
    a_name = with_article(k.name)
    out = [f"{a_name} is {f.is_}.", f"every {k.name} is {f.is_}."]
    if f.use:
        out += [f"{k.plural} are used for {f.use}.", f"people use {k.plural} for {f.use}."]
    verb, place = f.found
    out += [f"{k.plural} {verb} {place}.", f"you can find {k.plural} {place}."]
    out += [f"you can eat {k.plural}." if f.eat else f"you can not eat {k.plural}.",
            f"{k.plural} are good to eat." if f.eat else f"{k.plural} are not food."]
    for ability, can in (("fly", f.fly), ("swim", f.swim)):
        out.append(f"{a_name} can {ability}." if can else f"{a_name} can not {ability}.")
    return out + list(f.extra)


def _it_sentences(kind: str) -> list[str]:
    """Facts about a thing already in context, referred to as 'it'."""
    f = KINDS[kind].facts
    verb, place = f.found
    out = [f"it is {f.is_}.", f"it {_singular(verb)} {place}.",
           "you can eat it." if f.eat else "you can not eat it.",
           "it can fly." if f.fly else "it can not fly.",
           "it can swim." if f.swim else "it can not swim."]
    if f.use:
        out.append(f"it is used for {f.use}.")
    return out


def knowledge_question(kind: str, rng: random.Random, about="this") -> tuple[str, str]:
    """A question whose answer is only in the text ('Can you eat this?' -> 'yes'). about='this'
    refers to a thing in context (OKVQA's layout); about='name' names the kind."""
    k, f = KINDS[kind], KINDS[kind].facts
    yes = {True: "yes", False: "no"}
    this = about == "this"
    options = [
        (f"Can you eat {'this' if this else k.plural}?", yes[f.eat]),
        (f"Can {'this' if this else with_article(k.name)} fly?", yes[f.fly]),
        (f"Can {'this' if this else with_article(k.name)} swim?", yes[f.swim]),
        (f"Where can you find {'this' if this else k.plural}?", f.found[1]),
    ]
    if f.use:
        options.append((f"What is {'this' if this else with_article(k.name)} used for?", f.use))
    if not this:
        options.append((f"What is {with_article(k.name)}?", f.is_))
    return rng.choice(options)


VISUAL_QUESTIONS = ("colour", "count", "kind", "position")


def visual_question(scene: Scene, rng: random.Random, qtype="any") -> tuple[str, str, str]:
    """A question about what is visible, its answer, and its type (VQAv2's role)."""
    gs = scene.groups()
    qtype = rng.choice(VISUAL_QUESTIONS) if qtype == "any" else qtype
    if qtype == "kind" and len(gs) > 1:
        qtype = "colour"
    g = rng.choice(gs)
    k = KINDS[g["kind"]]
    one = g["count"] == 1
    the = f"the {k.name}" if one else f"the {k.plural}"
    if qtype == "colour":
        return f"What colour {'is' if one else 'are'} {the}?", g["colour"], qtype
    if qtype == "count":
        return f"How many {k.plural} are there?", NUMBER_WORDS[g["count"]], qtype
    if qtype == "position":
        return f"Where {'is' if one else 'are'} {the}?", POSITION_PHRASES[g["position"]], qtype
    if qtype == "kind":
        return "What kind of thing is in the picture?", k.name, qtype
    raise ValueError(f"visual_question: unknown type {qtype!r}; choose from {VISUAL_QUESTIONS} or 'any'")


# ----------------------------------------------------------------------------------------------
# Made-up names for the corpus: a syllable grammar, with the evaluation's names rejected.
# The grammar is wide on purpose (qu, y, ck, zz, ou, vowel-initial second syllables): an evaluation
# name is cut by the BPE into pieces, and a piece that only ever occurs inside held-out names has an
# untrained embedding that the LM cannot copy. Measured on the demo LM before the grammar was
# widened: unseen names of the grammar were bound 0.87 / 0.92 (2 / 5-way), NONSENSE_NAMES 0.46 / 0.53,
# every failure a name with a piece the corpus never used (' y', 'qu', 'cket').

_ONSETS = ("b c d f g h j k l m n p r s t v w y z "
           "bl br ch cl cr dr fl fr gl gr kl pl qu sh sk sl sn sp st sw th tr").split()
_VOWELS = "a e i o u a e i o u ou oo ee ai".split()  # plain vowels twice as likely
_CODAS = "b d g k l m n p r s t x ck ll ss zz ng rp rg lk mp nt rk".split()
_PEOPLE = ("tom", "anna", "ben", "mia", "sam", "lily", "max", "emma", "leo", "zoe")
_PLACES = ("on the table", "under the bed", "in the box", "next to the door", "in the garden", "on the shelf",
           "under the table", "behind the chair", "in the bag", "by the window")
# English words a made-up name must not be: the corpus's own words (added below from the kinds and
# facts) and short common words that a consonant-vowel-consonant grammar would otherwise produce.
_COMMON = set("""a an the is are was were be it its this that there these those they he she we you i and or
but so of to in on at by for with from up down out as if not no yes can will do did does has have had
one two three four five six many some all any more most very too also just then than now here where what
who how why which when big small left right top bottom middle picture thing things kind question answer
called call name named children looked later saw found put had said took gave ate flew swam away again
next day one pet man men fun sun see say run day get got let lot set sit top hot new old red tan bed box
bag map cap car bus cat dog hen pig fox cow ant bee owl egg leg arm ear eye lip toe tip dot pot pen pin
cup mug jar jug tin tub rug mat net web bat ball toy tree door wall room home road sea sky air fire rock
land lake pond hill farm park shop boat ship bike kite nest tail wing beak horn fin fur hat bun nut pea
yam gum jam ham bun bud mud rod cod kid dad mum son bob tim ned ted kim meg pat jen zip zap pop top bin
bud bug hug mug rub sub tub gut hut nut cut but put pit pot lot rot dot not hot got bot cod god nod pod
rod sod tod lid kid bid did hid mid rid sit kit bit fit hit lit pit wit tin bin din fin kin pin sin win
gap lap map nap rap sap tap yap cab dab jab lab nab tab fan man pan ran tan van bet get jet let met net
pet set wet den hen men pen ten beg keg leg peg ram dam ham jam yam dim him rim vim gum hum rum sum bum
pub rub tub nub rib fib jib sob rob mob job gob bog dog fog hog jog log cog tug rug mug lug jug dug bud
stop spot step stem star stun snap snip slip slap slot plan plot plus trip trap trim grab grin grip glad
blob blot blur drum drip drop flag flap flat flip frog from spin span skin skip swim swam""".split())


@functools.cache
def _reserved_words() -> frozenset[str]:
    words = set(_COMMON) | set(COLOURS) | set(BACKGROUNDS) | set(_PEOPLE) | set(NONSENSE_NAMES)
    words |= set(HELD_BACK_NAMES)
    for k in KINDS.values():
        text = " ".join([k.name, k.plural, k.sort, k.shape, k.parts, k.texture, *fact_sentences(k.name)])
        words |= set(re.findall(r"[a-z]+", text))
    for phrase in (*_PLACES, *POSITION_PHRASES.values()):
        words |= set(phrase.split())
    return frozenset(words)


def made_up_name(rng: random.Random) -> str:
    """1-2 syllables of consonants + vowel (+ consonants): 'tove', 'quimsel', 'blouck'. Never an English
    word of the corpus, never one of the evaluation's NONSENSE_NAMES or HELD_BACK_NAMES."""
    reserved = _reserved_words()
    while True:
        n = rng.choice((1, 2, 2))
        syllables = []
        for i in range(n):
            onset = "" if i > 0 and rng.random() < 0.2 else rng.choice(_ONSETS)
            s = onset + rng.choice(_VOWELS)
            if rng.random() < (0.6 if i == n - 1 else 0.25):
                s += rng.choice(_CODAS)
            syllables.append(s)
        name = "".join(syllables)
        if len(name) >= 3 and name not in reserved:
            return name


def made_up_names(rng: random.Random, n: int) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = made_up_name(rng)
        if name not in names:
            names.append(name)
    return names


# ----------------------------------------------------------------------------------------------
# The text corpus. One function per passage type; TextMix weighs them.


@dataclass
class TextMix:
    """Share of each passage type in the stage-lm corpus (weights; normalised when drawn).

    About a third is the world's knowledge and language (facts, Q/A, stories, scene descriptions,
    naming stories): without it the LM has no facts for OKVQA and no Q/A format. About 40% of the
    documents are binding passages in exactly the evaluation's layouts, the direct one weighted
    higher: measured, a tiny GPT bound names in the direct layout within minutes but chose by
    position in the paper layout. 15% is plain copy passages: measured, a tiny GPT without them
    never learned to copy, and induction heads are what binding rides on. 10% is solved-example
    lists, so that following a format from examples (the 1- and 4-shot VQA prompts) is learnt
    from text. Weights count documents; `python -m world --mix 5000` prints the shares of
    documents and characters (binding passages are long: about half of the characters)."""

    knowledge: float = 0.12
    qa: float = 0.12
    story: float = 0.06
    scene: float = 0.05
    naming: float = 0.05
    binding: float = 0.15  # paper layout: "a red apple. This is a dax."
    copy: float = 0.15
    examples: float = 0.10
    binding_direct: float = 0.25  # direct layout: "a red apple dax."
    # a lever, off by default: paper-layout binding whose things are random word phrases
    binding_words: float = 0.0  # "lamp seven blue. This is a dax."
    # a lever, off by default: paper-layout binding whose things are written in varied shapes
    binding_shapes: float = 0.0  # "small red apple This is a dax."


def _text_pieces(rng) -> _Pieces:
    return _Pieces(f"corpus/{rng.getrandbits(64)}", 0, as_text=True)


def passage_knowledge(rng: random.Random) -> str:
    """Facts about one to three kinds, several forms of each: OKVQA's answers are learnt here."""
    sentences = []
    for kind in rng.sample(list(KINDS), rng.randint(1, 3)):
        facts = fact_sentences(kind)
        sentences += rng.sample(facts, rng.randint(3, min(6, len(facts))))
    return " ".join(sentences)


def passage_qa(rng: random.Random) -> str:
    """Several questions in a row: about named kinds, about 'this' after a description, about what a
    description shows (the OKVQA and VQA layouts, with text where the image will be)."""
    out = _text_pieces(rng)
    items = []
    for _ in range(rng.randint(2, 5)):
        r = rng.random()
        if r < 0.35:
            items.append(qa(*knowledge_question(rng.choice(list(KINDS)), rng, about="name")))
        elif r < 0.7:
            kind = rng.choice(list(KINDS))
            qs = [qa(*knowledge_question(kind, rng)) for _ in range(rng.randint(1, 2))]
            items.append(_join([out.thing(lone_scene(rng, kind))] + list(dict.fromkeys(qs))))
        else:
            scene = sample_scene(rng, KINDS)
            qs = [qa(*visual_question(scene, rng)[:2]) for _ in range(rng.randint(1, 2))]
            items.append(_join([out.scene(scene)] + list(dict.fromkeys(qs))))
    return " ".join(items)


def passage_story(rng: random.Random) -> str:
    """A thing, two of its facts said of 'it', and an ending that fits what it can do."""
    kind = rng.choice(list(KINDS))
    k = KINDS[kind]
    thing = noun_phrase(kind, rng.choice(k.colours), rng.choice(SIZES))
    facts = rng.sample(_it_sentences(kind), 2)
    if rng.random() < 0.4:  # a thing named and then referred to as "this" and "it"
        return f"this is {thing}. " + " ".join(facts) + " " + _looks_sentence(dict(kind=kind, count=1))
    person = rng.choice(_PEOPLE)
    start = rng.choice([f"{person} saw {thing} {rng.choice(_PLACES)}.", f"one day {person} found {thing}.",
                        f"{person} had {thing}."])
    if k.facts.eat:
        end = f"{person} was hungry, so {person} ate the {kind}."
    elif k.facts.fly:
        end = f"then the {kind} flew away, and {person} waved."
    elif k.facts.swim:
        end = f"then the {kind} swam away."
    else:
        end = f"{person} put the {kind} {rng.choice(_PLACES)}."
    return " ".join([start, *facts, end])


def passage_scene(rng: random.Random) -> str:
    """Descriptions of scenes in words, as captions and as paraphrases."""
    lines = []
    for _ in range(rng.randint(3, 6)):
        scene = sample_scene(rng, KINDS)
        lines.append(caption(scene, rng) if rng.random() < 0.7 else describe(scene, rng, "paraphrase"))
    return " ".join(lines)


def passage_naming(rng: random.Random) -> str:
    """A made-up name given to a thing and used again later ('the children called it a tove')."""
    person = rng.choice(_PEOPLE)
    if rng.random() < 0.5:
        kind = rng.choice(list(KINDS))
        name = made_up_name(rng)
        colour = rng.choice(KINDS[kind].colours)
        place, later = rng.sample(_PLACES, 2)
        return (f"{person} had {noun_phrase(kind, colour, rng.choice(SIZES))}. {person} called it {article(name)} "
                f"'{name}'. the {name} was {place}. later {person} put the {name} {later}. "
                f"where is the {name}? the {name} is {later}. " + qa(f"What colour is the {name}?", colour))
    k1, k2 = rng.sample(list(KINDS), 2)
    n1, n2 = made_up_names(rng, 2)
    c1, c2 = rng.choice(KINDS[k1].colours), rng.choice(KINDS[k2].colours)
    p1, p2 = rng.sample(_PLACES, 2)
    questions = [qa(f"Where is the {n1}?", p1), qa(f"What colour is the {n2}?", c2),
                 qa(f"What colour is the {n1}?", c1), qa(f"Where is the {n2}?", p2)]
    return (f"there was {noun_phrase(k1, c1, None)} and {noun_phrase(k2, c2, None)}. the children called the {k1} "
            f"{article(n1)} '{n1}' and the {k2} {article(n2)} '{n2}'. the {n1} was {p1} and the {n2} was {p2}. "
            + " ".join(rng.sample(questions, rng.randint(2, 4))))


# The share of paper-layout binding passages named in the paper's sentence ("This is a dax."); the
# rest use the other sentences of fewshot.TRAINED_NAMINGS. Measured (README, "Why binding through
# images is hard"): at 0.5, after the demo's 2500 steps, text binding in the paper's sentence fell
# from 0.99 / 0.96 (2 / 5-way) to 0.54 / 0.20 and in the held-back sentences rose only from 0.00 to
# 0.09, so the default keeps the paper's sentence alone.
PAPER_NAMING_SHARE = 1.0


def passage_binding(rng: random.Random, layout: str = "paper") -> str:
    """The evaluation's binding (and Fast-VQA) task, as text with training names, several queries."""
    out = _text_pieces(rng)
    return _passage(*_binding_parts(rng, out, layout))


def passage_binding_slots(rng: random.Random) -> list:
    """A binding passage of the paper's layout with a fewshot.Slot where each thing would be, for
    vector_things.py (an optional stage-lm lever); up to 5 inner shots, as the image episodes have.
    No Fast-VQA: its scene holds two things, which one thing's vectors cannot stand for."""
    out = _Pieces(f"slots/{rng.getrandbits(64)}", 0, as_text=False, as_slots=True)
    return _answered(*_binding_parts(rng, out, "paper", fast_vqa=0.0, shots=(1, 2, 3, 5)))


class _WordThings(_Pieces):
    """Things described by made-up phrases: each kind of a passage 1-4 random words, every
    appearance of it half the time the whole phrase, else a part (each word kept with p = 0.75).
    Binding then has to match what two things share, whatever it is, not a kind's noun."""

    def __init__(self, key: str):
        super().__init__(key, 0, as_text=True)
        self.phrases: dict[str, list[str]] = {}

    def thing(self, scene: Scene, style="plain", bare=False):
        rng = self.text_rng
        kind = scene.objects[0].kind
        phrase = self.phrases.setdefault(kind, _copy_sequence(rng, rng.randint(1, 4)))
        if rng.random() < 0.5:
            phrase = [w for w in phrase if rng.random() < 0.75] or [rng.choice(phrase)]
        return " ".join(phrase) + ("" if bare else ".")


def passage_binding_words(rng: random.Random) -> str:
    """The paper layout's binding with word-phrase things (a lever: TextMix.binding_words)."""
    out = _WordThings(f"words/{rng.getrandbits(64)}")
    return _passage(*_binding_parts(rng, out, "paper", fast_vqa=0.0))


class _ShapedThings(_Pieces):
    """Things written in varied shapes: the article and the full stop each kept half the time, so
    that binding cannot key on 'a ... X.' (README's thing-forms table), as a visual prefix has
    neither."""

    def thing(self, scene: Scene, style="plain", bare=False):
        text = super().thing(scene, style, bare)
        rng = self.text_rng
        if rng.random() < 0.5:
            text = text.removesuffix(".")
        if rng.random() < 0.5:
            text = re.sub(r"^an? ", "", text)
        return text


def passage_binding_shapes(rng: random.Random) -> str:
    """The paper layout's binding with things in varied shapes (a lever: TextMix.binding_shapes)."""
    out = _ShapedThings(f"shapes/{rng.getrandbits(64)}", 0, as_text=True)
    return _passage(*_binding_parts(rng, out, "paper", fast_vqa=0.0))


def _binding_parts(rng, out: _Pieces, layout, fast_vqa=0.2, shots=(1, 1, 2, 3)):
    ways = rng.choice((2, 2, 3, 5))
    inner_shots = rng.choice(shots) if ways < 5 else rng.choice((1, 1, 2))
    repeats = rng.choice((1, 1, 2)) if ways * inner_shots <= 6 else 1
    kinds = list(KINDS)
    real = rng.random() < 0.15  # real names too: the Real-Name miniImageNet layout
    names = None if real else made_up_names(rng, ways)
    naming = PAPER_NAMING if PAPER_NAMING_SHARE >= 1 or rng.random() < PAPER_NAMING_SHARE else \
        rng.choice(TRAINED_NAMINGS[1:])
    options = dict(inner_shots=inner_shots, repeats=repeats, task_induction=rng.random() < 0.5,
                   layout=layout, n_queries=rng.randint(1, 4), naming=naming)
    chosen = rng.sample(kinds, ways)
    if rng.random() < fast_vqa:
        pieces, queries, _ = _fast_vqa(rng, out, chosen, names or chosen, **options)
    else:
        query = rng.choices(("different", "same", "paraphrase"), weights=(0.5, 0.2, 0.3))[0]
        pieces, queries, _ = _binding(rng, out, chosen, names or chosen, query=query, **options)
    return pieces, queries


def _copy_vocabulary() -> tuple[str, ...]:
    words = set(KINDS) | {k.plural for k in KINDS.values()} | set(COLOURS) | set(_PEOPLE) | set(SIZES)
    words |= {w for w in _COMMON if len(w) > 2}
    return tuple(sorted(words - set(NONSENSE_NAMES) - set(HELD_BACK_NAMES)))


COPY_WORDS = _copy_vocabulary()


def _copy_sequence(rng: random.Random, n: int) -> list[str]:
    return [made_up_name(rng) if rng.random() < 0.25 else rng.choice(COPY_WORDS) for _ in range(n)]


def passage_copy(rng: random.Random) -> str:
    """A random word sequence, then the same again: the plainest thing induction heads can learn."""
    seq = _copy_sequence(rng, rng.randint(4, 24))
    return " ".join(" ".join(seq) for _ in range(rng.choice((2, 2, 3))))


def passage_examples(rng: random.Random) -> str:
    """Solved examples in a row, in one format, the last one solved too (the LM learns the format)."""
    out = _text_pieces(rng)
    n = rng.randint(3, 6)
    form = rng.randrange(4)
    if form == 0:  # VQA shots with descriptions where images will be
        qtype = rng.choice(VISUAL_QUESTIONS)
        items = []
        for _ in range(n):
            scene = sample_scene(rng, KINDS)
            items.append(_join([out.scene(scene), qa(*visual_question(scene, rng, qtype)[:2])]))
        return " ".join(items)
    if form == 1:  # OKVQA shots
        return " ".join(_join([out.thing(lone_scene(rng, kind)), qa(*knowledge_question(kind, rng))])
                        for kind in rng.choices(list(KINDS), k=n))
    if form == 2:  # word lists: kind -> sort, kind -> plural
        relation = rng.choice([lambda k: k.sort, lambda k: k.plural, lambda k: k.category])
        return "\n".join(f"{k.name}: {relation(k)}." for k in (KINDS[x] for x in rng.sample(list(KINDS), n)))
    # plain description -> paraphrase: ties the kind names to their look words
    lines = []
    for kind in rng.sample(list(KINDS), n):
        scene = lone_scene(rng, kind)
        lines.append(f"{describe(scene.objects[0], rng)[:-1]} means {describe(scene.objects[0], rng, 'paraphrase')}")
    return "\n".join(lines)


PASSAGES: dict[str, Callable[[random.Random], str]] = {
    "knowledge": passage_knowledge, "qa": passage_qa, "story": passage_story, "scene": passage_scene,
    "naming": passage_naming, "binding": passage_binding, "copy": passage_copy, "examples": passage_examples,
    "binding_direct": functools.partial(passage_binding, layout="direct"),
    "binding_words": passage_binding_words, "binding_shapes": passage_binding_shapes,
}


def text_document(seed: int, i: int, mix: TextMix = TextMix()) -> tuple[str, str]:
    """Document i of the corpus with this seed, and its passage type."""
    rng = random.Random(f"corpus/{seed}/{i}")
    names = [f.name for f in fields(mix)]
    kind = rng.choices(names, weights=[getattr(mix, n) for n in names])[0]
    return kind, PASSAGES[kind](rng)


def text_documents(seed: int = 0, mix: TextMix = TextMix()) -> Iterator[str]:
    """The stage-lm corpus: infinite, deterministic, one passage per item."""
    for i in itertools.count():
        yield text_document(seed, i, mix)[1]


def corpus_text(seed: int, n_chars: int, mix: TextMix = TextMix()) -> str:
    """The first n_chars of the corpus, documents joined with blank lines."""
    parts, total = [], 0
    for doc in text_documents(seed, mix):
        parts.append(doc)
        total += len(doc) + 2
        if total >= n_chars:
            break
    return "\n\n".join(parts)[:n_chars]
