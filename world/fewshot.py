"""
Chapter 3, few-shot: how a multimodal few-shot prompt is laid out, for the corpus and the episodes.

Frozen is evaluated by prompting: a few (image, text) pairs, then a query image and a question
(Sec. 3.3, "Interface at inference time"). Its hardest tests bind new words to new things from
the prompt alone: open-ended miniImageNet ("This is a dax." after an image, then a new image:
"What is this?") and Fast-VQA (the bound word used in a question about another image). A
language model picks such a layout up only if it has read it, and our generated corpus would not
contain it by chance, so text.py writes these same layouts, with made-up names and text
descriptions where the images will be. One builder serves both: episodes.py calls it with images
(or, as_text, descriptions) and the evaluation's names, text.py with descriptions and training
names, so the corpus's binding passages are exactly the evaluation's layout.

A prompt is a list of pieces, images and strings in order; the consumer joins the strings with
one space (`_join`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .scenes import (KINDS, PAIRED_POSITIONS, POSITION_PHRASES, SIZES, Scene, _group_objects, _staged, article,
                     describe, lone_scene, render)


def qa(question: str, answer: str | None = None) -> str:
    """The question-answer layout, the paper's: 'Question: What colour is the car? Answer: red.'"""
    return f"Question: {question} Answer:" + (f" {answer}." if answer is not None else "")


# ----------------------------------------------------------------------------------------------
# Pieces: what stands where an image would be


class Slot:
    """Where a thing's input vectors will stand (vector_things.py): the scene it stands for. The
    same scene object gets the same vectors; another scene of the same kind, a noisy copy."""

    def __init__(self, scene: Scene):
        self.scene = scene


class _Pieces:
    """Turns scenes into pieces: a rendered image, (as_text) its text description or (as_slots) a
    Slot for input vectors. Has its own RNGs so that an episode's structure and answers do not
    depend on which."""

    def __init__(self, key: str, image_size: int, as_text: bool, as_slots: bool = False):
        self.image_size, self.as_text, self.as_slots = image_size, as_text, as_slots
        self.render_rng = random.Random(f"render/{key}")
        self.text_rng = random.Random(f"text/{key}")

    def scene(self, scene: Scene, style="plain"):
        if self.as_slots:
            return Slot(scene)
        if self.as_text:
            return describe(scene, self.text_rng, style)
        return render(scene, self.image_size, self.render_rng)

    def thing(self, scene: Scene, style="plain", bare=False):
        """A lone object: described as 'a small red apple.' (no position) in text; `bare` drops the
        full stop, for the direct layout where the name follows the thing as an image's would."""
        if self.as_slots:
            return Slot(scene)
        if self.as_text:
            text = describe(scene.objects[0], self.text_rng, style)
            return text.removesuffix(".") if bare else text
        return render(scene, self.image_size, self.render_rng)


# ----------------------------------------------------------------------------------------------
# Binding names to things: the support set, then queries that use the names


@dataclass(frozen=True)
class Naming:
    """A sentence template of the paper's layout: how a support example is named, and how the query
    asks for the name so that the answer completes the same sentence:
    '<thing> This is a dax.' ... 'Question: What is this? Answer: <thing> This is a' -> 'dax'."""
    statement: str  # "This is {a} {name}."
    question: str  # "What is this?"
    lead: str  # "This is {a}": the answer's start; the name comes next

    def name(self, name: str) -> str:
        return self.statement.format(a=article(name), name=name)

    def ask(self, name: str) -> str:
        return self.lead.format(a=article(name))


PAPER_NAMING = Naming("This is {a} {name}.", "What is this?", "This is {a}")  # the paper's Fig. 1
# Sentences the corpus can name things in: the paper's, and others that text.PAPER_NAMING_SHARE < 1
# mixes in (so that binding might be learnt as "a name after a thing", not as one sentence).
TRAINED_NAMINGS: tuple[Naming, ...] = (
    PAPER_NAMING,
    Naming("That is {a} {name}.", "What is that?", "That is {a}"),
    Naming("This one is {a} {name}.", "Which one is this?", "This one is {a}"),
    Naming("The picture shows {a} {name}.", "What does the picture show?", "The picture shows {a}"),
    Naming("Its name is {name}.", "What is its name?", "Its name is"),
    Naming("This thing is {a} {name}.", "What is this thing?", "This thing is {a}"),
    Naming("Here we have {a} {name}.", "What do we have here?", "Here we have {a}"),
    Naming("You are looking at {a} {name}.", "What are you looking at?", "You are looking at {a}"),
)
# Held back for evaluation only: the corpus never contains these sentences (tests check 3M
# characters of it) and nothing is tuned on them, so binding in them measures binding itself.
HELD_BACK_NAMINGS: tuple[Naming, ...] = (
    Naming("Here is {a} {name}.", "What is here?", "Here is {a}"),
    Naming("We call this {a} {name}.", "What do we call this?", "We call this {a}"),
    Naming("Look, {a} {name}.", "What do you see?", "Look, {a}"),
    Naming("It is called {a} {name}.", "What is it called?", "It is called {a}"),
    Naming("Now you see {a} {name}.", "What do you see now?", "Now you see {a}"),
)


def _naming(name: str, layout: str, naming: Naming = PAPER_NAMING) -> str:
    """What follows a support example: a Naming sentence, 'This is a dax.' (paper layout), or 'dax.'
    (direct layout, the name right after the thing, as a caption follows an image)."""
    if layout == "paper":
        return naming.name(name)
    if layout == "direct":
        return f"{name}."
    raise ValueError(f"unknown binding layout {layout!r} (paper or direct)")


def _induction(names: list[str]) -> str:
    """'Answer with dax or blicket.' (the paper's task induction)."""
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"Answer with {listed}."


def _query_scene(rng: random.Random, kind: str, support: list[Scene], query: str) -> Scene:
    """The query's example of `kind`: a support example again (same), one in a colour or size no
    support example has, where the kind allows (different), or any new one (paraphrase, which the
    text side then describes by its look, without the kind's name)."""
    if query == "same":
        return rng.choice(support)
    if query == "different":  # other colour or size than every support example of this kind
        used = {(s.objects[0].colour, s.objects[0].size) for s in support}
        free = [(c, z) for c in KINDS[kind].colours for z in SIZES if (c, z) not in used]
        if free:
            colour, size = rng.choice(free)
            return lone_scene(rng, kind, colour, size)
        return lone_scene(rng, kind)
    if query == "paraphrase":
        return lone_scene(rng, kind)
    raise ValueError(f"unknown binding query {query!r} (different, same or paraphrase)")


def _support(rng, out: _Pieces, chosen, names, inner_shots, repeats, layout, task_induction, naming=PAPER_NAMING):
    """The support set: each chosen kind (one way each, named by the parallel `names`) shown
    `inner_shots` times (distinct examples), the whole set repeated `repeats` times, shuffled within
    each repeat; each example followed by its name."""
    if len(names) != len(chosen):
        raise ValueError(f"binding: {len(chosen)} kinds but {len(names)} names")
    name_of = dict(zip(chosen, names))
    examples = {k: [lone_scene(rng, k) for _ in range(inner_shots)] for k in chosen}
    pieces = [_induction(rng.sample(names, len(names)))] if task_induction else []
    order = [(k, s) for s in range(inner_shots) for k in chosen]
    for _ in range(repeats):
        rng.shuffle(order)
        for k, s in order:
            pieces += [out.thing(examples[k][s], bare=layout == "direct"), _naming(name_of[k], layout, naming)]
    return name_of, examples, pieces


def _support_and_queries(rng, out: _Pieces, chosen, names, inner_shots, repeats, task_induction, layout,
                         n_queries, ask, naming=PAPER_NAMING, **options):
    """What binding and Fast-VQA share: the support set, then `n_queries` queries, each made by
    ask(name_of, examples) -> (the kind asked about, query pieces, answer). Returns (support pieces,
    [(query pieces, answer)], info); `options` are recorded in info."""
    name_of, examples, pieces = _support(rng, out, chosen, names, inner_shots, repeats, layout, task_induction,
                                         naming)
    queries, query_kinds = [], []
    for _ in range(n_queries):
        kind, query, answer = ask(name_of, examples)
        queries.append((query, answer))
        query_kinds.append(kind)
    info = dict(kinds=chosen, names=name_of, query_kinds=query_kinds, ways=len(chosen), inner_shots=inner_shots,
                repeats=repeats, layout=layout, **options, task_induction=task_induction, naming=naming.statement)
    return pieces, queries, info


def _binding(rng, out: _Pieces, chosen, names, inner_shots=1, repeats=1, task_induction=False,
             layout="paper", query="different", n_queries=1, naming=PAPER_NAMING):
    """Open-ended miniImageNet, re-made: `chosen` kinds are the ways, `names` their names. Each query
    shows one of the kinds again (see _query_scene) and asks its name."""
    style = "paraphrase" if query == "paraphrase" else "plain"

    def ask(name_of, examples):
        kind = rng.choice(chosen)
        thing = out.thing(_query_scene(rng, kind, examples[kind], query), style, bare=layout == "direct")
        name = name_of[kind]
        if layout == "paper":
            return kind, [qa(naming.question), thing, naming.ask(name)], name
        return kind, [thing], name

    return _support_and_queries(rng, out, chosen, names, inner_shots, repeats, task_induction, layout,
                                n_queries, ask, naming, query=query)


def _pair_scene(rng: random.Random, target: str, other: str) -> Scene:
    """The target kind and another, side by side, in other colours where the kinds allow."""
    colours = rng.sample(KINDS[target].colours, 1)
    others = [c for c in KINDS[other].colours if c not in colours] or list(KINDS[other].colours)
    colours.append(rng.choice(others))
    objects = []
    for kind, colour, position in zip((target, other), colours, rng.choice(PAIRED_POSITIONS)):
        objects += _group_objects(rng, kind, colour, rng.choice(SIZES), position, 1)
    return _staged(rng, objects)


def _fast_vqa(rng, out: _Pieces, chosen, names, inner_shots=1, repeats=1, task_induction=False,
              layout="paper", question="any", n_queries=1, naming=PAPER_NAMING):
    """Fast-VQA, re-made: bind names to kinds, then ask about a scene using a name. The scene holds
    the named kind and another support kind, in other colours and places, so the name matters."""

    def ask(name_of, examples):
        target, other = rng.sample(chosen, 2)
        scene = _pair_scene(rng, target, other)
        qtype = rng.choice(("colour", "position")) if question == "any" else question
        name, thing = name_of[target], scene.objects[0]
        if qtype == "colour":
            q, a = f"What colour is the {name}?", thing.colour
        elif qtype == "position":
            q, a = f"Where is the {name}?", POSITION_PHRASES[thing.position]
        else:
            raise ValueError(f"fast_vqa: unknown question {question!r} (colour, position or any)")
        other_answer = scene.objects[1].colour if qtype == "colour" else POSITION_PHRASES[scene.objects[1].position]
        scenes.append((scene, other_answer))
        return target, [out.scene(scene), qa(q)], a

    scenes = []  # each query's scene, and what answering about the other object in it would say
    pieces, queries, info = _support_and_queries(rng, out, chosen, names, inner_shots, repeats, task_induction,
                                                 layout, n_queries, ask, naming)
    return pieces, queries, dict(info, scenes=[sc for sc, _ in scenes], other_answers=[o for _, o in scenes])


# ----------------------------------------------------------------------------------------------
# As one text


def _join(pieces) -> str:
    return " ".join(pieces)


def _answered(pieces, queries) -> list:
    """A support set followed by every query with its answer filled in, as pieces."""
    out = list(pieces)
    for qp, answer in queries:
        out += [*qp, answer + "."]
    return out


def _passage(pieces, queries) -> str:
    """Text of a support set followed by every query with its answer filled in."""
    return _join(_answered(pieces, queries))
