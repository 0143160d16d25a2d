"""
Evaluation: the paper's experiments (Frozen, Sec. 4) re-made on world/'s episodes, and the
text-only binding table that says whether any few-shot result can appear at all.

  python eval.py --ckpt out/prefix.pt                      # every image table of one model
  python eval.py --ckpt out/prefix.pt --split val          # the validation episodes (choose recipes here)
  python eval.py --ckpt frozen=s0/prefix.pt frozen=s1/prefix.pt frozen=s2/prefix.pt   # 3 seeds, one row
  python eval.py --ckpt frozen=a/prefix.pt --compare blind=a/prefix.pt:blind scratch=b/prefix.pt
  python eval.py --task text-binding --ckpt out/lm.pt      # the LM's binding, in text
  python eval.py --task attention,nearest --split val      # diagnostics: where the LM looks; prefix vs words
  python eval.py --plot-log out/lm_log.txt                 # loss, copy and binding against step

The protocol, so that the numbers teach the truth:
- Episodes come in two splits with different draws: every choice of a recipe is made on `--split
  val`; what is reported is `--split test` (the default).
- Checkpoints given under one name are training seeds of one model: each cell is then the mean over
  the seeds with a 95% t-interval across them (scoring.seed_interval), so the spread between
  training runs is in the interval; one seed's cells carry a Wilson interval over its episodes.
- Binding is reported with the evaluation names tuning looked at (NONSENSE_NAMES) and with names
  nothing was ever tuned on (HELD_BACK_NAMES); in the paper's naming sentence and in sentences the
  corpus never contains (HELD_BACK_NAMINGS); on held-out kinds and on seen kinds (the paper's
  setting: its encoder had seen the categories).
- Baselines: chance; blind (`NAME=PATH:blind`: the model shown black images); train-blind and the
  other ablations are checkpoints; for Fast-VQA, answering about a random object of the picture.

Scoring is scoring.py's (the paper's Sec. 4.1): greedy decoding, exact match after normalisation,
no answer shortlist. The image tasks (paper -> here):

  Conceptual Captions   caption new scenes (seen kinds; kinds the encoder never saw); score kind,
                        colour, count and position as world.parse_caption reads them, and the
                        reference captions' teacher-forced perplexity
  VQAv2, 0/1/4 shots    a question about what is visible, after 0, 1 or 4 solved examples
  OKVQA, 0/1/4 shots    a question whose answer is a fact only the text corpus states
  Open-Ended            bind names to kinds from the prompt, name a new picture: 2- and 5-way, the
  miniImageNet          paper's Table 2 columns; Real-Name miniImageNet with the kinds' own names
  Fast-VQA              bind names, then answer a question that uses one: 0/1/3/5 inner shots
  (here only)           prefix separation: do two kinds get different visual prefixes? and the
                        ladder: the same binding episodes with text, own captions, prefixes

Diagnostics, only when asked for (--task attention, nearest, visual-word, prefix-parts;
diagnostics.py): on the ladder's episodes, the attention at the answer position on each support
thing and name; the token embeddings nearest to each visual prefix vector; a visual word added at
inference; each thing written in forms between its noun and its visual prefix.
"""

import argparse
import json
import math
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import diagnostics
import world
from checkpoint import checkpoint_kind, load_for_text, load_frozen
from data import InputError, black_images, encode_pieces, image_to_tensor
from frozen import caption_targets
from plots import plot_log, plot_results
from prefix_levers import frame_ids, framed_word, visual_word_map
from scoring import (answer_text, answer_text_episodes, binding_cell, copy_score, exact_match, normalize_answer,
                     score_binding, seed_interval, stop_ids, summarize)
from tables import find, print_comparison, print_model_tables, print_text_binding


@dataclass
class Protocol:
    """Which episodes a model is scored on: `episodes` a cell, the episode seed, the split (val:
    where recipes are chosen; test: what is reported), the binding layout of the headline cells."""
    episodes: int = 200
    seed: int = 0
    split: str = "test"
    layout: str = "paper"


# ---------------------------------------------------------------------------------------------
# text binding: the LM alone, a text description where each image will stand

TEXT_ROWS = [dict(layout=layout, query=query, names="nonsense", templates="paper")
             for layout in ("paper", "direct") for query in ("different", "same", "paraphrase")]
TEXT_ROWS += [dict(layout="paper", query="different", names="heldback", templates="paper"),
              dict(layout="paper", query="different", names="nonsense", templates="heldback"),
              dict(layout="paper", query="different", names="heldback", templates="heldback")]


def text_binding_table(lm, tokenizer, protocol):
    """Layouts x query styles, then held-back names and sentences; 2- and 5-way, 1 and 3 shots."""
    rows = []
    for row in TEXT_ROWS:
        for ways in (2, 5):
            for inner in (1, 3):
                cell = binding_cell(lm, tokenizer, protocol.episodes, protocol.seed, split=protocol.split,
                                    ways=ways, inner_shots=inner, **row)
                rows.append(dict(row, ways=ways, inner_shots=inner, **cell))
    return {"task": "text-binding", "episodes_per_cell": protocol.episodes, "seed": protocol.seed,
            "split": protocol.split, "copy": copy_score(lm, tokenizer, protocol.episodes, protocol.seed, protocol.split),
            "rows": rows, "forms": text_forms_table(lm, tokenizer, protocol),
            "vectors": text_vectors_table(lm, tokenizer, protocol)}


# How a thing is written where its image will stand. The corpus writes 'a small red apple.'; a
# visual prefix is n vectors with nothing after them but ' This is a dax.'. Which parts of the
# description does the LM's binding need: the article, the full stop, the kind's name?
THING_FORMS = {
    "a small red apple. (the corpus's)": world.describe,
    "a small red apple": lambda o: world.noun_phrase(o.kind, o.colour, o.size),
    "small red apple": lambda o: f"{o.size} {o.colour} {o.kind}",
    "apple.": lambda o: f"{o.kind}.",
    "an apple.": lambda o: f"{world.noun_phrase(o.kind, None, None)}.",
    "a big thing. (every thing)": lambda o: "a big thing.",
}


def text_forms_table(lm, tokenizer, protocol, ways=2, inner_shots=5):
    """The ladder's episodes (paper layout, task induction) with each thing written in each of
    THING_FORMS: binding accuracy, seen and held-out kinds."""
    rows = []
    for kinds in ("seen", "heldout"):
        slotted = world.episodes("binding", protocol.episodes, protocol.seed, split=protocol.split, as_slots=True,
                                 ways=ways, inner_shots=inner_shots, task_induction=True, kinds=kinds)
        for form, write in THING_FORMS.items():
            texts = [world.Episode([p if isinstance(p, str) else write(p.scene.objects[0]) for p in e.pieces],
                                   e.answer, e.task, e.info) for e in slotted]
            rows.append(dict(kinds=kinds, form=form, ways=ways, inner_shots=inner_shots,
                             **score_binding(answer_text_episodes(lm, tokenizer, texts), texts)))
    return rows


def text_vectors_table(lm, tokenizer, protocol, ways=2, inner_shots=5):
    """The ladder's episodes (seen kinds) with each thing 'a small red <v>.', v a vector of each of
    vector_things.VECTOR_GEOMETRIES: how alike must two things be, and how unlike two kinds, for the
    LM to bind a name to them?"""
    slotted = world.episodes("binding", protocol.episodes, protocol.seed, split=protocol.split, as_slots=True,
                             ways=ways, inner_shots=inner_shots, task_induction=True, kinds="seen")
    return [dict(r, ways=ways, inner_shots=inner_shots)
            for r in diagnostics.vector_binding_rows(lm, tokenizer, slotted, seed=protocol.seed)]


# ---------------------------------------------------------------------------------------------
# a model under test


@dataclass
class Subject:
    """A trained Frozen, its tokenizer, and whether it is shown black images (the paper's blind
    baseline, Sec. 4: the same model, no visual information)."""
    name: str
    model: object  # frozen.Frozen
    tokenizer: object  # data.Tokenizer
    ckpt: str = ""
    blind: bool = False
    batch_size: int = 32

    @property
    def image_size(self):
        return self.model.config.image_size

    @property
    def device(self):
        return self.model.lm.wte.weight.device

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")


def parse_model_spec(spec):
    """'[NAME=]PATH[:blind]' -> (name, path, blind); the name defaults to the run folder's."""
    name, _, path = spec.partition("=") if "=" in spec else ("", "", spec)
    blind = path.endswith(":blind")
    path = path.removesuffix(":blind")
    if not name:
        name = Path(path).parent.name if Path(path).name == "prefix.pt" else Path(path).stem
        name = (name or path) + (" blind" if blind else "")
    return name, path, blind


def describe_training(ckpt):
    """'step 600, n=2, 64 px, LM frozen, world images' from a stage-prefix checkpoint."""
    t, f = ckpt["train_config"], ckpt["frozen_config"]
    lm = "from scratch" if t["lm_init"] == "scratch" else "fine-tuned" if t["finetune_lm"] else "frozen"
    images = "black images" if t["blind"] else f"{t['data']} images"
    block = ""
    if f.get("lm_block", "none") != "none":  # Pang et al. 2024's variant (vision.LMBlockLayer)
        block = f", LM block {f['lm_block']} ({f['lm_block_mode']}) in the encoder"
    return f"step {ckpt['step']}, n={f['n_prefix']}, {f['image_size']} px, LM {lm}{block}, trained on {images}"


def load_subject(spec, device, blind=False, batch_size=32):
    """A Subject and its checkpoint dict from '[NAME=]PATH[:blind]'."""
    name, path, spec_blind = parse_model_spec(spec)
    model, tokenizer, ckpt = load_frozen(path, device)
    return Subject(name, model, tokenizer, path, blind or spec_blind, batch_size), ckpt


def image_episodes(subject, protocol, task, **options):
    return world.episodes(task, protocol.episodes, protocol.seed, image_size=subject.image_size,
                          split=protocol.split, **options)


def prompts_of(subject, episodes):
    """Episodes' pieces (PIL images and strings) -> Frozen prompts (image tensors and token ids),
    every image black when the subject is blind."""
    prompts = []
    for e in episodes:
        prompt = encode_pieces(e.pieces, subject.tokenizer, subject.image_size)
        if subject.blind:
            prompt = [black_images(p) if torch.is_tensor(p) else p for p in prompt]
        prompts.append(prompt)
    return prompts


def check_length(subject, prompts, max_new_tokens, task):
    """A clear error, not a shape error deep in the LM, when a prompt outgrows the positions."""
    n_prefix = subject.model.config.n_prefix
    longest = max(sum(n_prefix if torch.is_tensor(p) else len(p) for p in prompt) for prompt in prompts)
    limit = subject.model.lm.rope_cos.size(0)
    if longest + max_new_tokens > limit:
        raise InputError(f"{subject.ckpt}: a {task} prompt needs {longest + max_new_tokens} positions, "
                         f"the LM supports {limit} (4 x block_size); use fewer shots")


@torch.no_grad()
def generate_answers(subject, episodes, max_new_tokens=12):
    """Greedy completions of image episodes, in batches (Frozen.generate left-pads them), each cut
    at the end of its first sentence, as answers are written in the corpus ('Answer: red.')."""
    stops = stop_ids(subject.tokenizer)
    answers = []
    for start in range(0, len(episodes), subject.batch_size):
        prompts = prompts_of(subject, episodes[start: start + subject.batch_size])
        check_length(subject, prompts, max_new_tokens, episodes[start].task)
        with subject.autocast():
            rows = subject.model.generate(prompts, max_new_tokens=max_new_tokens, stop_tokens=stops)
        answers += [answer_text(subject.tokenizer, row) for row in rows]
    return answers


def answer_cell(subject, protocol, task, **options):
    """One table cell: exact-match accuracy of greedy answers, with count and interval, and three
    (expected, answered) examples; binding cells also carry chance and how often the answer is a
    support name, Fast-VQA cells what answering about a random object of the picture scores."""
    episodes = image_episodes(subject, protocol, task, **options)
    answers = generate_answers(subject, episodes)
    if task == "binding":
        cell = score_binding(answers, episodes)
    else:
        cell = summarize([exact_match(a, e.answer) for a, e in zip(answers, episodes)])
    if task == "fast_vqa":  # half the time the asked-about object, half the other one
        cell["random_object"] = sum((1 + exact_match(e.info["other_answers"][0], e.answer)) / 2
                                    for e in episodes) / len(episodes)
    cell["examples"] = [[e.answer, a] for e, a in zip(episodes[:3], answers[:3])]
    return cell


# ---------------------------------------------------------------------------------------------
# captioning (Conceptual Captions' role)

CAPTION_FIELDS = ("kind", "colour", "count", "position")


def caption_correct(text, scene):
    """What a caption gets right about a scene, as world.parse_caption reads it: `kind` when the
    first thing it names is in the scene; colour, count and position of that thing's group (the
    scene's first group when the kind is wrong). Nothing is right in a caption that names nothing."""
    parsed = world.parse_caption(text)
    if not parsed["groups"]:
        return dict.fromkeys(CAPTION_FIELDS, False)
    head, groups = parsed["groups"][0], scene.groups()
    group = next((g for g in groups if g["kind"] == head["kind"]), groups[0])
    return {"kind": head["kind"] in {g["kind"] for g in groups}, "colour": head["colour"] == group["colour"],
            "count": head["count"] == group["count"], "position": head["position"] == group["position"]}


@torch.no_grad()
def caption_perplexity(subject, episodes):
    """exp(mean loss per token) of the reference captions, teacher-forced: Frozen.forward, the
    training loss, over every caption token and the end-of-text."""
    tok, device = subject.tokenizer, subject.device
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(episodes), subject.batch_size):
        chunk = episodes[start: start + subject.batch_size]
        images = torch.stack([image_to_tensor(e.pieces[-1], subject.image_size) for e in chunk]).to(device)
        if subject.blind:
            images = black_images(images)
        captions = tok.encode_batch([" " + e.answer for e in chunk])  # as data.CaptionCollate does
        inputs, targets = caption_targets(captions, subject.model.config.n_prefix, tok.eot_id, tok.pad_id)
        with subject.autocast():
            loss = subject.model(images, inputs.to(device), targets.to(device))
        n_tokens = (targets != -100).sum().item()
        total_loss, total_tokens = total_loss + loss.item() * n_tokens, total_tokens + n_tokens
    return math.exp(total_loss / total_tokens)


def caption_table(subject, protocol, kinds=("seen", "heldout")):
    """Zero-shot captions of new scenes of seen kinds and of kinds the encoder never saw. The
    reference for the perplexity is world.describe(scene), a plain caption."""
    rows = []
    for kind_set in kinds:
        episodes = image_episodes(subject, protocol, "caption", kinds=kind_set)
        captions = generate_answers(subject, episodes, max_new_tokens=32)
        scores = [caption_correct(c, e.info["scene"]) for c, e in zip(captions, episodes)]
        rows.append(dict(kinds=kind_set, **{f: summarize([s[f] for s in scores]) for f in CAPTION_FIELDS},
                         perplexity=caption_perplexity(subject, episodes),
                         examples=[[e.answer, c] for e, c in zip(episodes[:3], captions[:3])]))
    return rows


# ---------------------------------------------------------------------------------------------
# VQA and OKVQA (the paper's Table 1)

SHOTS = (0, 1, 4)  # 0, 1 and 4 solved examples before the question


def shots_table(subject, protocol, task, shots=SHOTS):
    return [dict(shots=k, **answer_cell(subject, protocol, task, shots=k)) for k in shots]


# ---------------------------------------------------------------------------------------------
# Open-Ended miniImageNet (the paper's Table 2) and Fast-VQA (its Table 3)


@dataclass(frozen=True)
class BindingColumn:
    """A column of the paper's Table 2. Its `repeats` counts the extra showings of the support
    set; world's episodes count all showings, so they get repeats + 1."""
    task_induction: bool
    inner_shots: int
    repeats: int = 0


PAPER_COLUMNS = (BindingColumn(False, 1), BindingColumn(True, 1), BindingColumn(True, 3), BindingColumn(True, 5),
                 BindingColumn(True, 1, 1), BindingColumn(True, 1, 3), BindingColumn(True, 1, 5))
SHORT_COLUMNS = (BindingColumn(True, 1), BindingColumn(True, 5))  # task induction, 1 and 5 inner shots
HEADLINE = BindingColumn(True, 5)


@dataclass(frozen=True)
class BindingRow:
    """Which episodes a row of the binding table holds (world.episodes' binding options)."""
    names: str = "nonsense"  # nonsense | heldback | real
    templates: str = "paper"  # paper | trained | heldback: the naming sentence (paper layout only)
    kinds: str = "heldout"  # heldout | seen
    layout: str = "paper"  # paper | direct


def binding_rows(layout):
    """(row, ways, columns): the paper's Table 2 in full, then the protocol's other settings."""
    paper = BindingRow(layout=layout)
    rows = [(paper, ways, PAPER_COLUMNS) for ways in (2, 5)]
    for other in (BindingRow(layout=layout, names="heldback"), BindingRow(layout=layout, templates="heldback"),
                  BindingRow(layout=layout, names="heldback", templates="heldback"),
                  BindingRow(layout=layout, kinds="seen"), BindingRow(layout=layout, names="real"),
                  BindingRow(layout="direct" if layout == "paper" else "paper")):
        rows += [(other, ways, SHORT_COLUMNS) for ways in (2, 5)]
    return rows


def binding_table(subject, protocol, rows):
    table = []
    for row, ways, columns in rows:
        cells = [dict(task_induction=c.task_induction, inner_shots=c.inner_shots, repeats=c.repeats,
                      **answer_cell(subject, protocol, "binding", ways=ways, inner_shots=c.inner_shots,
                                    repeats=c.repeats + 1, task_induction=c.task_induction,
                                    names=row.names, templates=row.templates, kinds=row.kinds, layout=row.layout))
                 for c in columns]
        table.append(dict(names=row.names, templates=row.templates, kinds=row.kinds, layout=row.layout,
                          ways=ways, chance=1 / ways, cells=cells))
    return table


FAST_VQA_SHOTS = (0, 1, 3, 5)  # the paper's Table 3: inner shots, no task induction


def fast_vqa_table(subject, protocol, names=("nonsense", "real"), inner_shots=FAST_VQA_SHOTS):
    """2-way: two kinds get names, then a picture of both and a question about one, by name."""
    rows = []
    for name_style in names:
        cells = [dict(inner_shots=k, **answer_cell(subject, protocol, "fast_vqa", ways=2, inner_shots=k,
                                                   names=name_style, layout=protocol.layout))
                 for k in inner_shots]
        rows.append(dict(names=name_style, layout=protocol.layout, cells=cells))
    return rows


# ---------------------------------------------------------------------------------------------
# prefix separation (here only: the vision trap that makes binding impossible)


@torch.no_grad()
def prefixes_of(subject, images, batch_size=256):
    """The visual prefixes (N, n, D) of PIL images, as the subject reads them, on the CPU."""
    x = torch.stack([image_to_tensor(im, subject.image_size) for im in images]).to(subject.device)
    if subject.blind:
        x = black_images(x)
    with subject.autocast():
        return torch.cat([subject.model.vision(x[i: i + batch_size]).float().cpu()
                          for i in range(0, len(x), batch_size)])


def prefix_separation(subject, protocol, kinds, label):
    """Do different kinds get different visual prefixes? Triplets (a, a', b) of lone things, a and
    a' of one kind, b of another: the prefixes' mean cosine within and across kinds, how often a is
    nearer a' than b (0.5 if kinds are mixed at random, 0 if they all collapse onto one prefix),
    and how often the greedy captions of a and b differ."""
    n = protocol.episodes
    rng = random.Random(f"separation/{protocol.split}/{protocol.seed}/{label}")
    scenes = []
    for _ in range(n):
        a, b = rng.sample(list(kinds), 2)
        scenes += [world.lone_scene(rng, a), world.lone_scene(rng, a), world.lone_scene(rng, b)]
    images = [world.render(s, subject.image_size, rng) for s in scenes]
    prefixes = prefixes_of(subject, images)  # (3n, n_prefix, D)
    p = torch.nn.functional.normalize(prefixes.flatten(1), dim=1).view(n, 3, -1)  # (n, 3, n_prefix*D)
    within, across = (p[:, 0] * p[:, 1]).sum(-1), (p[:, 0] * p[:, 2]).sum(-1)  # (n,), (n,)
    # slot by slot: the LM matches a noun, one position, not the whole description (diagnostics.py)
    slots = torch.nn.functional.normalize(prefixes, dim=-1).view(n, 3, prefixes.size(1), -1)
    slot_within, slot_across = (slots[:, 0] * slots[:, 1]).sum(-1), (slots[:, 0] * slots[:, 2]).sum(-1)  # (n, n_prefix)
    shown = [world.Episode([im], "", "caption") for im in images[0::3] + images[2::3]]
    captions = generate_answers(subject, shown, max_new_tokens=32)
    differ = [normalize_answer(ca) != normalize_answer(cb) for ca, cb in zip(captions[:n], captions[n:])]
    return dict(kinds=label, n=n, within=within.mean().item(), across=across.mean().item(),
                slot_within=slot_within.mean(0).tolist(), slot_across=slot_across.mean(0).tolist(),
                nearer=summarize((within > across).tolist()), captions_differ=summarize(differ),
                examples=[[sa.objects[0].kind, ca, sb.objects[0].kind, cb] for sa, sb, ca, cb
                          in zip(scenes[0::3][:3], scenes[2::3][:3], captions[:3], captions[n: n + 3])])


def separation_table(subject, protocol, full=True):
    rows = [prefix_separation(subject, protocol, world.HELD_OUT_KINDS, "held-out")]
    if full:
        rows.append(prefix_separation(subject, protocol, world.SEEN_KINDS, "seen"))
    return rows


# ---------------------------------------------------------------------------------------------
# the ladder (here only): where binding through images breaks


@torch.no_grad()
def own_captions(subject, images):
    """The model's greedy caption of each image, its first sentence: what it 'says' it sees."""
    shown = [world.Episode([im], "", "caption") for im in images]
    return [c + "." for c in generate_answers(subject, shown, max_new_tokens=32)]


def ladder_episodes(subject, protocol, ways, inner_shots):
    """For seen and held-out kinds: the ladder's binding episodes (paper layout, task induction)
    with images, and the same episodes with text descriptions where the images are."""
    options = dict(ways=ways, inner_shots=inner_shots, task_induction=True, layout=protocol.layout)
    for kinds in ("seen", "heldout"):
        images = image_episodes(subject, protocol, "binding", kinds=kinds, **options)
        texts = world.episodes("binding", protocol.episodes, protocol.seed, split=protocol.split, as_text=True,
                               kinds=kinds, **options)
        yield kinds, images, texts


def ladder_table(subject, protocol, ways=2, inner_shots=5):
    """The same binding episodes (paper layout, task induction) with each image replaced by (a) its
    reference description, as text: the text upper bound; (b) the model's own caption of it, as
    text; (c) its visual prefix, as Frozen reads it. (b) against (c): does the prefix carry the
    thing while the LM cannot match one prefix against another? (a) against (b): do the captions
    lose the kind?"""
    rows = []
    for kinds, images, texts in ladder_episodes(subject, protocol, ways, inner_shots):
        pictures = [p for e in images for p in e.pieces if not isinstance(p, str)]
        captions = iter(own_captions(subject, pictures))
        captioned = [world.Episode([p if isinstance(p, str) else next(captions) for p in e.pieces], e.answer,
                                   e.task, e.info) for e in images]
        lm, tok = subject.model.lm, subject.tokenizer
        rungs = {"reference text": score_binding(answer_text_episodes(lm, tok, texts), texts),
                 "own captions as text": score_binding(answer_text_episodes(lm, tok, captioned), captioned),
                 "visual prefixes": score_binding(generate_answers(subject, images), images)}
        rows.append(dict(kinds=kinds, ways=ways, inner_shots=inner_shots, **rungs))
    return rows


# ---------------------------------------------------------------------------------------------
# diagnostics (issue 16's second and third; diagnostics.py): opt-in, never in `all`


def attention_table(subject, protocol, ways=2, inner_shots=5):
    """The ladder's episodes, as text and as images: at the answer position, each layer's
    attention on the support things and names of the query's kind and of the others, and how
    often the most attended support thing is one of the query's kind."""
    rows = []
    for kinds, images, texts in ladder_episodes(subject, protocol, ways, inner_shots):
        things = [diagnostics.thing_pieces(e) for e in images]  # the same pieces in the text twin
        for rung, episodes in (("reference text", texts), ("visual prefixes", images)):
            prompts = prompts_of(subject, episodes)
            check_length(subject, prompts, 0, "binding")
            layers = diagnostics.attention_rows(subject.model, subject.tokenizer, episodes, prompts, things,
                                                subject.batch_size)
            rows += [dict(kinds=kinds, things=rung, ways=ways, inner_shots=inner_shots, **r) for r in layers]
    return rows


def nearest_table(subject, protocol, per_kind=4, k=5):
    """`per_kind` lone objects of each seen and held-out kind: each visual prefix vector against
    the LM's token embedding table (diagnostics.nearest_rows), a row per kind set and prefix slot."""
    rows = []
    for label, kinds in (("seen", world.SEEN_KINDS), ("heldout", world.HELD_OUT_KINDS)):
        rng = random.Random(f"nearest/{protocol.split}/{protocol.seed}/{label}")
        drawn = [kind for kind in kinds for _ in range(per_kind)]
        images = [world.render(world.lone_scene(rng, kind), subject.image_size, rng) for kind in drawn]
        rows += diagnostics.nearest_rows(prefixes_of(subject, images), drawn, subject.model.lm.wte.weight.cpu(),
                                         subject.tokenizer, label, k)
    return rows


def visual_word_table(subject, protocol, ways=2, inner_shots=5, n_mean=512):
    """The ladder's prefix rung, and the same episodes with each image's prefix followed by a
    visual word the model was not trained with (prefix_levers.framed_word: ' a <w>.', w the image's
    features less their mean over n_mean training scenes, through the fixed random map). A probe:
    only inference changes. Would a part that sets images apart, as distinct words are apart
    (README, "What the LM can match"), let the LM bind?"""
    vision, lm, tok = subject.model.vision, subject.model.lm, subject.tokenizer
    if subject.model.config.visual_word:
        raise InputError(f"{subject.ckpt}: --task visual-word adds a visual word to a model without one "
                         f"(this one was trained with --visual-word)")
    scenes = world.World(protocol.seed, subject.image_size, "train", length=n_mean)
    x = torch.stack([image_to_tensor(scenes[i][0], subject.image_size) for i in range(n_mean)]).to(subject.device)
    with subject.autocast():
        mean = vision.features(x).float().mean(0)
    word_map = visual_word_map(vision.features.num_features, lm.config.n_embd).to(subject.device)
    frame = lm.embed(torch.tensor(frame_ids(tok), device=subject.device))
    plain = vision.forward

    def with_word(images):
        return torch.cat([plain(images), framed_word(vision.features(images), mean, word_map, frame,
                                                     lm.embedding_rms())], dim=1)

    rows = []
    for kinds, images, _ in ladder_episodes(subject, protocol, ways, inner_shots):
        rungs = {"visual prefixes": score_binding(generate_answers(subject, images), images)}
        vision.forward = with_word
        try:
            rungs["visual prefixes and a visual word"] = score_binding(generate_answers(subject, images), images)
        finally:
            del vision.forward  # the class's forward again
        rows.append(dict(kinds=kinds, ways=ways, inner_shots=inner_shots, **rungs))
    return rows


def prefix_parts_table(subject, protocol, ways=2, inner_shots=5):
    """The ladder's episodes with each thing in forms between its noun and its visual prefix
    (diagnostics.part_forms): is it what the prefix's kind slot holds that the LM cannot match,
    or the slots around it?"""
    rows = []
    options = dict(ways=ways, inner_shots=inner_shots, task_induction=True, layout=protocol.layout)
    for kinds in ("seen", "heldout"):
        images = image_episodes(subject, protocol, "binding", kinds=kinds, **options)
        slotted = world.episodes("binding", protocol.episodes, protocol.seed, split=protocol.split, as_slots=True,
                                 kinds=kinds, **options)
        prefixes = [prefixes_of(subject, [p for p in e.pieces if not isinstance(p, str)]) for e in images]
        rows += [dict(kinds=kinds, ways=ways, inner_shots=inner_shots, **r) for r in
                 diagnostics.prefix_part_rows(subject.model.lm, subject.tokenizer, slotted, prefixes, protocol.seed)]
    return rows


# ---------------------------------------------------------------------------------------------
# every table of a model; seeds; the comparison across models

IMAGE_TASKS = ("caption", "vqa", "okvqa", "binding", "fast_vqa", "separation", "ladder")
DIAGNOSTIC_TASKS = ("attention", "nearest", "visual-word", "prefix-parts")  # only when --task names them


def run_tasks(subject, protocol, tasks, full=True):
    """The results of `tasks` for one model, keyed by task. full=False computes only the cells that
    the comparison table shows (and what comes with them for free)."""
    results = {}
    for task in tasks:
        t0 = time.time()
        if task == "caption":
            results[task] = caption_table(subject, protocol, ("seen", "heldout") if full else ("seen",))
        elif task in ("vqa", "okvqa"):
            results[task] = shots_table(subject, protocol, task)
        elif task == "binding":
            rows = binding_rows(protocol.layout) if full else [(BindingRow(layout=protocol.layout), 2, (HEADLINE,))]
            results[task] = binding_table(subject, protocol, rows)
        elif task == "fast_vqa":
            results[task] = (fast_vqa_table(subject, protocol) if full else
                             fast_vqa_table(subject, protocol, names=("nonsense",), inner_shots=(5,)))
        elif task == "separation":
            results[task] = separation_table(subject, protocol, full)
        elif task == "ladder" and full:
            results[task] = ladder_table(subject, protocol)
        elif task == "attention" and full:
            results[task] = attention_table(subject, protocol)
        elif task == "nearest" and full:
            results[task] = nearest_table(subject, protocol)
        elif task == "visual-word" and full:
            results[task] = visual_word_table(subject, protocol)
        elif task == "prefix-parts" and full:
            results[task] = prefix_parts_table(subject, protocol)
        elif task in ("ladder",) + DIAGNOSTIC_TASKS:
            continue  # a diagnostic: not in the comparison
        else:
            raise ValueError(f"unknown task {task!r}; choose from {IMAGE_TASKS + DIAGNOSTIC_TASKS}")
        print(f"{subject.name}: {task} in {time.time() - t0:.0f} s", file=sys.stderr)
    return results


def is_cell(x):
    return isinstance(x, dict) and "acc" in x and "n" in x


KEPT_PER_SEED = ("kind_slot",)  # a cell's facts that are each seed's own, not averaged


def merge_seeds(runs):
    """One model's results from several training seeds (the same structure each) -> the same
    structure with each accuracy cell the mean over seeds with a t-interval across them, its
    episodes summed and each seed's accuracy kept; other numbers are averaged."""
    first = runs[0]
    if len(runs) == 1:
        return first
    if is_cell(first):
        merged = {k: merge_seeds([r[k] for r in runs]) for k in first if k not in ("acc", "ci", "n", "examples")}
        merged.update(seed_interval([r["acc"] for r in runs]), n=sum(r["n"] for r in runs),
                      per_seed=[r["acc"] for r in runs], examples=first.get("examples", []))
        merged.update({k: [r[k] for r in runs] for k in KEPT_PER_SEED if k in first})
        return merged
    if isinstance(first, dict):
        return {k: merge_seeds([r[k] for r in runs]) for k in first}
    if isinstance(first, list) and first and isinstance(first[0], (dict, list)):
        return [merge_seeds(list(items)) for items in zip(*runs)]
    if isinstance(first, float):
        return sum(runs) / len(runs)
    return first


def compare_cells(results, layout):
    """The comparison table's cells (the paper's Tables 1 and 2 in one row), picked out of one
    model's results; None where that task was not run."""
    cells = {}
    caption = find(results.get("caption", []), kinds="seen")
    cells["caption kind"] = caption and caption["kind"]
    for task, label in (("vqa", "VQA"), ("okvqa", "OKVQA")):
        for k in SHOTS:
            cells[f"{label} {k}-shot"] = find(results.get(task, []), shots=k)
    row = find(results.get("binding", []), names="nonsense", templates="paper", kinds="heldout", layout=layout, ways=2)
    cells["bind 2-way 5-shot TI (chance 0.50)"] = row and find(row["cells"], task_induction=True, inner_shots=5,
                                                                 repeats=0)
    row = find(results.get("fast_vqa", []), names="nonsense")
    cell = row and find(row["cells"], inner_shots=5)
    cells["fast-VQA 5-shot"] = cell
    cells["fast-VQA random object"] = cell and {"acc": cell["random_object"], "ci": None}
    row = find(results.get("separation", []), kinds="held-out")
    cells["held-out prefixes apart"] = row and row["nearer"]
    return cells


def model_groups(specs):
    """'[NAME=]PATH[:blind]' specs grouped by name, in order: a name given several times is one
    model trained with several seeds."""
    groups = {}
    for spec in specs:
        groups.setdefault(parse_model_spec(spec)[0], []).append(spec)
    return groups


def evaluate_group(name, specs, args, protocol, tasks, full):
    """Every seed of one model, merged."""
    runs, entry = [], None
    for spec in specs:
        subject, ckpt = load_subject(spec, args.device, args.blind, args.batch_size)
        entry = entry or {"ckpts": [], "blind": subject.blind, "about": describe_training(ckpt)}
        entry["ckpts"].append(subject.ckpt)
        runs.append(run_tasks(subject, protocol, tasks if full else IMAGE_TASKS, full))
    entry["seeds"] = len(runs)
    entry["results"] = merge_seeds(runs)
    return entry


def run_image_tasks(args, protocol, tasks, command, out=print):
    """Every table of each --ckpt model, the comparison cells of each --compare model, and the
    comparison table when there are several models."""
    result = {"command": command, "episodes": protocol.episodes, "seed": protocol.seed, "split": protocol.split,
              "layout": protocol.layout, "models": {}}
    out(f"# Frozen on the drawn world\n\nRe-make: `{command}`\n\n{protocol.split} episodes, {protocol.episodes} "
        f"a cell for each training seed, episode seed {protocol.seed}; greedy decoding, exact match after "
        f"normalisation, no answer shortlist (the paper's Sec. 4.1). [.] is a 95% interval: across training "
        f"seeds (t) where a model has several, else over episodes (Wilson).\n")
    for full, specs in ((True, args.ckpt), (False, args.compare)):
        for name, group in model_groups(specs).items():
            entry = evaluate_group(name, group, args, protocol, tasks, full)
            result["models"][name if name not in result["models"] else f"{name} ({len(result['models'])})"] = entry
            if full:
                print_model_tables(name, entry, out)
    cells = {name: compare_cells(m["results"], protocol.layout) for name, m in result["models"].items()}
    if len(cells) > 1 and any(c is not None for row in cells.values() for c in row.values()):
        print_comparison(result, cells, out)  # not when the tasks run give none of its columns
    return result


# ---------------------------------------------------------------------------------------------
# entry point

TEXT_TASKS = ("text-binding",)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", nargs="+", default=["out/prefix.pt"], metavar="[NAME=]PATH[:blind]",
                   help="stage-prefix checkpoint(s): every --task table of each; one NAME given several times: "
                        "seeds of one model; ':blind' shows it black images. A stage-lm checkpoint: text-binding")
    p.add_argument("--compare", nargs="*", default=[], metavar="[NAME=]PATH[:blind]",
                   help="more models for the comparison table: only its cells are computed")
    p.add_argument("--task", default="auto",
                   help=f"comma-separated: {', '.join(IMAGE_TASKS)}, all (these), text-binding; "
                        f"the diagnostics {', '.join(DIAGNOSTIC_TASKS)} (never in all); "
                        "auto: all for a stage-prefix checkpoint, text-binding for a stage-lm one")
    p.add_argument("--split", choices=world.EPISODE_SPLITS, default="test",
                   help="val: the episodes recipes are chosen on; test: the ones reported")
    # paper by default: measured, after a visual prefix the frozen LM goes on with a caption where
    # the direct layout wants a name ('<image> dax.'); '<image> This is a dax.' it binds (README)
    p.add_argument("--layout", choices=("direct", "paper"), default="paper",
                   help="binding layout of the headline cells and Fast-VQA: direct '<image> dax.', "
                        "paper '<image> This is a dax.'")
    p.add_argument("--blind", action="store_true", help="show every model black images (the blind baseline)")
    p.add_argument("--episodes", type=int, default=200, help="episodes per table cell (per seed)")
    p.add_argument("--seed", type=int, default=0, help="episode seed")
    p.add_argument("--batch-size", type=int, default=32, help="episodes per Frozen.generate call")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--md", default=None, help="also write the tables (Markdown) here")
    p.add_argument("--png", default=None, help="plot: the results (binding and VQA against shots), or "
                                               "--plot-log's (default: beside the log)")
    p.add_argument("--plot-log", default=None, help="draw this training log as a PNG and exit")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def choose_tasks(args):
    if args.task == "auto":
        return TEXT_TASKS if checkpoint_kind(parse_model_spec(args.ckpt[0])[1]) == "lm" else IMAGE_TASKS
    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    tasks = [t for task in tasks for t in (IMAGE_TASKS if task == "all" else (task,))]
    unknown = [t for t in tasks if t not in IMAGE_TASKS + DIAGNOSTIC_TASKS + TEXT_TASKS]
    if unknown or not tasks or (set(tasks) & set(TEXT_TASKS) and len(tasks) > 1):
        raise InputError(f"--task {args.task!r}: choose text-binding alone, or from "
                         f"{', '.join(IMAGE_TASKS + DIAGNOSTIC_TASKS)}, all")
    return tuple(tasks)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    protocol = Protocol(args.episodes, args.seed, args.split, args.layout)
    lines = []

    def out(line=""):
        print(line)
        lines.append(line)

    try:
        if args.plot_log:
            png = args.png or str(Path(args.plot_log).with_suffix(".png"))
            print(f"wrote {plot_log(args.plot_log, png)}")
            return
        tasks = choose_tasks(args)
        command = "python eval.py " + " ".join(shlex.quote(a) for a in argv)
        if tasks == TEXT_TASKS:
            lm, tokenizer = load_for_text(parse_model_spec(args.ckpt[0])[1], args.device)
            result = dict(command=command, **text_binding_table(lm, tokenizer, protocol))
            print_text_binding(result, out)
        else:
            with torch.no_grad():
                result = run_image_tasks(args, protocol, tasks, command, out)
            if args.png and any(t in tasks for t in ("binding", "vqa", "okvqa")):
                print(f"wrote {plot_results(result, args.png)}", file=sys.stderr)
        for path, text in ((args.json, json.dumps(result, indent=1)), (args.md, "\n".join(lines) + "\n")):
            if path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_text(text)
        return result
    except InputError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
