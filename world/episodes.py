"""
Chapter 5, episodes: the paper's few-shot evaluations (Sec. 4), re-made on the drawn world.

`episodes(task, n)` builds n deterministic prompts with their answers, which eval.py scores:

- caption: Conceptual Captions' role, caption a scene (after `shots` captioned examples).
- vqa: VQAv2's role, a question about what is visible (after `shots` solved examples).
- okvqa: OKVQA's role, a question whose answer is a fact that only the text corpus states.
- binding: open-ended miniImageNet's role, bind nonsense (or real) names to held-out kinds from
  the prompt, then name a new example.
- fast_vqa: Fast-VQA's role, bind names, then answer a question that uses one of them.
- copy: a plain copy task, the in-context skill binding stands on (not in the paper).

`as_text=True` puts a text description where each image would be, so the LM's in-context ability
can be measured before any vision exists. Its episodes have the same structure and answers as
the image ones: descriptions and renders draw from their own RNGs (fewshot._Pieces).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .fewshot import HELD_BACK_NAMINGS, PAPER_NAMING, TRAINED_NAMINGS, _binding, _fast_vqa, _join, _Pieces, qa
from .scenes import (HELD_BACK_NAMES, HELD_OUT_KINDS, NONSENSE_NAMES, SEEN_KINDS, caption, describe, lone_scene,
                     sample_scene)
from .text import _copy_sequence, knowledge_question, visual_question


@dataclass
class Episode:
    pieces: list  # PIL images and str, in order; the consumer joins text pieces with one space
    answer: str
    task: str
    info: dict = field(default_factory=dict)


KIND_SETS = {"seen": SEEN_KINDS, "heldout": HELD_OUT_KINDS}  # what the vision encoder has / never has seen


def _kinds(kinds):
    """A kind set by name ('seen', 'heldout') or a tuple of kinds."""
    if isinstance(kinds, str):
        if kinds not in KIND_SETS:
            raise ValueError(f"unknown kinds {kinds!r} (seen, heldout or a tuple of kinds)")
        return KIND_SETS[kinds]
    return tuple(kinds)


def _episode_caption(rng, out: _Pieces, shots=0, kinds="seen"):
    """Captioning (Conceptual Captions' role): caption a scene, after `shots` captioned examples."""
    pieces = []
    for _ in range(shots):
        scene = sample_scene(rng, _kinds(kinds))
        pieces += [out.scene(scene), caption(scene, rng)]
    scene = sample_scene(rng, _kinds(kinds))
    pieces.append(out.scene(scene))
    return pieces, describe(scene), dict(scene=scene, shots=shots)


def _episode_vqa(rng, out: _Pieces, shots=0, question="any", kinds="seen"):
    """VQAv2's role: a question about what is visible, after `shots` solved examples."""
    pieces = []
    for _ in range(shots):
        scene = sample_scene(rng, _kinds(kinds))
        pieces += [out.scene(scene), qa(*visual_question(scene, rng, question)[:2])]
    scene = sample_scene(rng, _kinds(kinds))
    q, a, qtype = visual_question(scene, rng, question)
    pieces += [out.scene(scene), qa(q)]
    return pieces, a, dict(scene=scene, shots=shots, question=qtype)


def _episode_okvqa(rng, out: _Pieces, shots=0, kinds="seen"):
    """OKVQA's role: the answer is a fact that only the text corpus states."""
    pieces = []
    for _ in range(shots):
        kind = rng.choice(_kinds(kinds))
        pieces += [out.thing(lone_scene(rng, kind)), qa(*knowledge_question(kind, rng))]
    kind = rng.choice(_kinds(kinds))
    scene = lone_scene(rng, kind)
    q, a = knowledge_question(kind, rng)
    pieces += [out.thing(scene), qa(q)]
    return pieces, a, dict(scene=scene, kind=kind, shots=shots)


NAME_LISTS = {"nonsense": NONSENSE_NAMES, "heldback": HELD_BACK_NAMES}


def _names_for(rng, names, ways):
    """The names the prompt binds: `ways` of NONSENSE_NAMES or HELD_BACK_NAMES, or None for the
    kinds' own names (Real-Name miniImageNet)."""
    if names in NAME_LISTS:
        return rng.sample(NAME_LISTS[names], ways)
    if names == "real":
        return None
    raise ValueError(f"unknown names {names!r} (nonsense, heldback or real)")


def _naming_for(rng, templates):
    """The naming sentence of an episode: the paper's, one the corpus also uses, or one held back."""
    if templates == "paper":
        return PAPER_NAMING
    if templates == "trained":
        return rng.choice(TRAINED_NAMINGS[1:])
    if templates == "heldback":
        return rng.choice(HELD_BACK_NAMINGS)
    raise ValueError(f"unknown templates {templates!r} (paper, trained or heldback)")


def _named_episode(rng, out: _Pieces, build, task, min_ways, ways=2, names="nonsense", kinds="heldout",
                   templates="paper", **options):
    """What binding and Fast-VQA episodes share: `ways` of `kinds` and their names, a prompt that
    binds them (named in a sentence of `templates`) built by `build` (fewshot's _binding or
    _fast_vqa, given the other options), and one query."""
    kinds = _kinds(kinds)
    if not min_ways <= ways <= len(kinds):
        raise ValueError(f"{task}: ways must be {min_ways}..{len(kinds)}, got {ways}")
    chosen = rng.sample(list(kinds), ways)
    name_list = _names_for(rng, names, ways) or chosen
    naming = _naming_for(rng, templates)
    pieces, queries, info = build(rng, out, chosen, name_list, n_queries=1, naming=naming, **options)
    (query, answer), = queries
    return pieces + query, answer, dict(info, name_style=names, templates=templates)


def _episode_binding(rng, out: _Pieces, **options):
    """Open-ended miniImageNet's role: bind names to held-out kinds from the prompt, name a new one."""
    return _named_episode(rng, out, _binding, task="binding", min_ways=1, **options)


def _episode_fast_vqa(rng, out: _Pieces, **options):
    """Fast-VQA's role: bind names, then answer a question that uses one of them. Its scene shows
    the named kind beside another one, so it needs two ways at least."""
    return _named_episode(rng, out, _fast_vqa, task="fast_vqa", min_ways=2, **options)


def _episode_copy(rng, out: _Pieces, length=8):
    """Plain copy: a word sequence, then its first half again; the answer is the rest of it."""
    seq = _copy_sequence(rng, length)
    half = length // 2
    return [" ".join(seq + seq[:half])], " ".join(seq[half:]), dict(length=length, sequence=seq)


_EPISODES = {"caption": _episode_caption, "vqa": _episode_vqa, "okvqa": _episode_okvqa,
             "binding": _episode_binding, "fast_vqa": _episode_fast_vqa, "copy": _episode_copy}
TASKS = tuple(_EPISODES)


EPISODE_SPLITS = ("val", "test")


def episodes(task: str, n: int, seed: int = 0, image_size: int = 64, as_text: bool = False, split: str = "test",
             as_slots: bool = False, **options) -> list[Episode]:
    """n deterministic episodes of a task, from the validation or the test split: every choice of
    a recipe is made on "val", and "test" is what gets reported; the split is part of every draw's
    seed, so the two share no episode, scene or render. Options by task:
    caption: shots, kinds (seen/heldout) | vqa: shots, question (colour/count/kind/position/any),
    kinds | okvqa: shots, kinds | binding: ways, inner_shots, repeats, task_induction, names
    (nonsense/heldback/real), layout (paper/direct), templates (paper/trained/heldback), query
    (different/same/paraphrase), kinds (heldout/seen) | fast_vqa: ways, inner_shots, repeats,
    task_induction, names, layout, templates, question (colour/position/any), kinds | copy: length.
    as_slots puts a fewshot.Slot where each image would be (vector_things.py fills it)."""
    if task not in _EPISODES:
        raise ValueError(f"episodes: unknown task {task!r}; choose one of {TASKS}")
    if split not in EPISODE_SPLITS:
        raise ValueError(f"episodes: unknown split {split!r}; choose one of {EPISODE_SPLITS}")
    key = "/".join(f"{k}={options[k]}" for k in sorted(options))
    result = []
    for i in range(n):
        rng = random.Random(f"episode/{split}/{task}/{seed}/{key}/{i}")
        out = _Pieces(f"{split}/{task}/{seed}/{key}/{i}", image_size, as_text, as_slots)
        pieces, answer, info = _EPISODES[task](rng, out, **options)
        result.append(Episode(pieces, answer, task, info))
    return result


def episode_text(episode: Episode) -> str:
    """An as_text episode as one string (the consumer's join rule)."""
    return _join(p for p in episode.pieces)
