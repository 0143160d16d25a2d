"""
Evaluation: the paper's experiments (Frozen, Sec. 4) re-made on world/'s episodes, and the
text-only in-context scores that decide whether any few-shot result can appear at all.

  python eval.py --ckpt out/prefix.pt                      # every image table of one model
  python eval.py --ckpt out/prefix.pt --task vqa,binding --episodes 50
  python eval.py --ckpt out/prefix.pt --blind              # the same model, every image black
  python eval.py --ckpt frozen=a/prefix.pt --compare blind=a/prefix.pt:blind scratch=b/prefix.pt
  python eval.py --task text-binding --ckpt out/lm.pt      # the LM's binding, in text
  python eval.py --plot-log out/lm_log.txt                 # loss, copy and binding against step

Scoring is the paper's (Sec. 4.1): greedy decoding, the answer normalised (lower case, no
punctuation or leading article), exact match, no shortlist of answers. Every score comes with
its episode count and a 95% Wilson interval.

The image tasks (paper -> here; the episodes are world/'s, deterministic in --seed):

  Conceptual Captions   caption held-out scenes (split "test": seen kinds; "heldout": kinds the
                        vision encoder never saw); score kind, colour, count and position as
                        world.parse_caption reads them, and the teacher-forced caption perplexity
  VQAv2, 0/1/4 shots    a question about what is visible, after 0, 1 or 4 solved examples
  OKVQA, 0/1/4 shots    a question whose answer is a fact only the text corpus states
  Open-Ended            bind nonsense names to held-out kinds, name a new picture: 2- and 5-way;
  miniImageNet          the paper's Table 2 columns (task induction, inner shots, repeats); both
                        prompt layouts; Real-Name miniImageNet is the same with the kinds' names
  Fast-VQA              bind names, then answer a question that uses one: 0/1/3/5 inner shots
  (here only)           prefix separation: do two held-out kinds get different visual prefixes?
                        (the vision trap: unseen kinds collapsing onto one prefix makes binding
                        impossible, whatever the LM can do)

Baselines and ablations are other checkpoints (train.py --blind, --finetune-lm, --lm-init scratch,
--n-prefix) and `--blind` here (a trained model shown black images); several models give one
comparison table in the shape of the paper's Tables 1 and 2. `make paper` trains and evaluates
them all.

Text binding: the image binding task with a text
description standing where each image will stand, in two layouts,

  paper:   a small red apple. This is a dax. a big blue car. This is a blicket.
           Question: What is this? Answer: a green apple. This is a      -> dax
  direct:  a small red apple dax. a big blue car blicket. a green apple  -> dax

and three query styles: `different` (the query thing has another colour or size than its
support example: matching a thing, not copying a string), `same` (identical description: plain
induction), `paraphrase` (other words for the same thing, closer to what an image prefix is).
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

import world
from checkpoint import checkpoint_kind, load_for_text, load_frozen
from data import InputError, black_images, encode_pieces, image_to_tensor
from frozen import caption_targets
from plots import plot_log, plot_results
from scoring import (answer_text, binding_cell, copy_score, exact_match, fmt, normalize_answer, score_binding,
                     stop_ids, summarize)

# ---------------------------------------------------------------------------------------------
# text binding: the LM alone, text where the images will be


def text_binding_table(lm, tokenizer, n=200, seed=0):
    """The whole text-binding grid: layout x query x ways x inner shots."""
    rows = []
    for layout in ("paper", "direct"):
        for query in ("different", "same", "paraphrase"):
            for ways in (2, 5):
                for inner in (1, 3):
                    cell = binding_cell(lm, tokenizer, n, seed, ways=ways, inner_shots=inner,
                                        layout=layout, query=query)
                    rows.append(dict(layout=layout, query=query, ways=ways, inner_shots=inner, **cell))
    return {"task": "text-binding", "episodes_per_cell": n, "seed": seed,
            "copy": copy_score(lm, tokenizer, n, seed), "rows": rows}


def print_text_binding(result, out=print):
    out(f"Text binding: {result['episodes_per_cell']} episodes a cell, seed {result['seed']}, "
        f"greedy, exact match; [.] is the 95% Wilson interval. Copy score {result['copy']:.2f}.")
    out("| layout | query | ways | inner shots | accuracy | chance | answer is a support name |")
    out("|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        out(f"| {r['layout']} | {r['query']} | {r['ways']} | {r['inner_shots']} | {fmt(r)} | "
            f"{r['chance']:.2f} | {r['some_name']:.2f} |")


# ---------------------------------------------------------------------------------------------
# image episodes through Frozen


@dataclass
class Subject:
    """A model under test: a trained Frozen, its tokenizer, and whether it is shown black images
    (the paper's blind baseline, Sec. 4: the same model, no visual information)."""
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
    if f.get("lm_block", "none") != "none":  # Pang et al. 2024's variant (frozen.LMBlockLayer)
        block = f", LM block {f['lm_block']} ({f['lm_block_mode']}) in the encoder"
    return f"step {ckpt['step']}, n={f['n_prefix']}, {f['image_size']} px, LM {lm}{block}, trained on {images}"


def load_subject(spec, device, blind=False, batch_size=32):
    """A Subject and its checkpoint dict from '[NAME=]PATH[:blind]'."""
    name, path, spec_blind = parse_model_spec(spec)
    model, tokenizer, ckpt = load_frozen(path, device)
    return Subject(name, model, tokenizer, path, blind or spec_blind, batch_size), ckpt


def image_episodes(subject, task, n, seed, **options):
    return world.episodes(task, n, seed, image_size=subject.image_size, **options)


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


def answer_cell(subject, task, n, seed, **options):
    """One table cell: exact-match accuracy of greedy answers to n episodes, with count and CI,
    and three (expected, answered) examples."""
    episodes = image_episodes(subject, task, n, seed, **options)
    answers = generate_answers(subject, episodes)
    if task == "binding":  # with chance and how often the answer is a support name
        cell = score_binding(answers, episodes)
    else:
        cell = summarize([exact_match(a, e.answer) for a, e in zip(answers, episodes)])
    cell["examples"] = [[e.answer, a] for e, a in zip(episodes[:3], answers[:3])]
    return cell


# --- captioning (Conceptual Captions' role) ---------------------------------------------------

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


def caption_table(subject, n, seed, splits=("test", "heldout")):
    """Zero-shot captions of new scenes: seen kinds ("test") and kinds the encoder never saw
    ("heldout"). The reference for the perplexity is world.describe(scene), a plain caption."""
    rows = []
    for split in splits:
        episodes = image_episodes(subject, "caption", n, seed, split=split)
        captions = generate_answers(subject, episodes, max_new_tokens=32)
        scores = [caption_correct(c, e.info["scene"]) for c, e in zip(captions, episodes)]
        rows.append(dict(split=split, **{f: summarize([s[f] for s in scores]) for f in CAPTION_FIELDS},
                         perplexity=caption_perplexity(subject, episodes),
                         examples=[[e.answer, c] for e, c in zip(episodes[:3], captions[:3])]))
    return rows


# --- VQA and OKVQA (Table 1) ------------------------------------------------------------------

SHOTS = (0, 1, 4)  # the paper's Table 1: 0, 1 and 4 solved examples before the question


def shots_table(subject, task, n, seed, shots=SHOTS):
    return [dict(shots=k, **answer_cell(subject, task, n, seed, shots=k)) for k in shots]


# --- Open-Ended miniImageNet (Table 2) and Fast-VQA (Table 3) ---------------------------------

@dataclass(frozen=True)
class BindingColumn:
    """A column of the paper's Table 2. Its `repeats` counts the extra showings of the support
    set; world's episodes count all showings, so they get repeats + 1."""
    task_induction: bool
    inner_shots: int
    repeats: int


BINDING_COLUMNS = (BindingColumn(False, 1, 0), BindingColumn(True, 1, 0), BindingColumn(True, 3, 0),
                   BindingColumn(True, 5, 0), BindingColumn(True, 1, 1), BindingColumn(True, 1, 3),
                   BindingColumn(True, 1, 5))
FAST_VQA_SHOTS = (0, 1, 3, 5)  # the paper's Table 3: inner shots, no task induction


def binding_table(subject, n, seed, *, layouts, names=("nonsense", "real"), ways=(2, 5), columns=BINDING_COLUMNS):
    """Rows of (names, layout, ways), a cell per column. Nonsense names in every layout given;
    real names (Real-Name miniImageNet) in the first layout only."""
    rows = []
    for name_style in names:
        for layout in layouts if name_style == "nonsense" else layouts[:1]:
            for w in ways:
                cells = [dict(task_induction=c.task_induction, inner_shots=c.inner_shots, repeats=c.repeats,
                              **answer_cell(subject, "binding", n, seed, ways=w, inner_shots=c.inner_shots,
                                            repeats=c.repeats + 1, task_induction=c.task_induction,
                                            names=name_style, layout=layout))
                         for c in columns]
                rows.append(dict(names=name_style, layout=layout, ways=w, chance=1 / w, cells=cells))
    return rows


def fast_vqa_table(subject, n, seed, layout, *, names=("nonsense", "real"), inner_shots=FAST_VQA_SHOTS):
    """2-way: two kinds get names, then a picture of both and a question about one, by name.
    Answering about either object at random scores about 0.5."""
    rows = []
    for name_style in names:
        cells = [dict(inner_shots=k, **answer_cell(subject, "fast_vqa", n, seed, ways=2, inner_shots=k,
                                                   names=name_style, layout=layout))
                 for k in inner_shots]
        rows.append(dict(names=name_style, layout=layout, cells=cells))
    return rows


# --- prefix separation (here only: the vision trap that makes binding impossible) -------------


@torch.no_grad()
def prefix_separation(subject, n, seed, kinds, label):
    """Do different kinds get different visual prefixes? n triplets (a, a', b) of lone things, a
    and a' of one kind, b of another: the prefixes' mean cosine within and across kinds, how often
    a is nearer a' than b (0.5 if kinds are mixed at random, 0 if they all collapse onto one
    prefix), and how often the greedy captions of a and b differ."""

    rng = random.Random(f"separation/{seed}/{label}")
    scenes = []
    for _ in range(n):
        a, b = rng.sample(list(kinds), 2)
        scenes += [world.lone_scene(rng, a), world.lone_scene(rng, a), world.lone_scene(rng, b)]
    images = [world.render(s, subject.image_size, rng) for s in scenes]
    x = torch.stack([image_to_tensor(im, subject.image_size) for im in images]).to(subject.device)
    if subject.blind:
        x = black_images(x)
    with subject.autocast():
        prefixes = torch.cat([subject.model.vision(x[i: i + 256]) for i in range(0, len(x), 256)])
    p = torch.nn.functional.normalize(prefixes.float().flatten(1), dim=1).view(n, 3, -1)  # (n, 3, n_prefix*D)
    within, across = (p[:, 0] * p[:, 1]).sum(-1), (p[:, 0] * p[:, 2]).sum(-1)  # (n,), (n,)
    shown = [world.Episode([im], "", "caption") for im in images[0::3] + images[2::3]]
    captions = generate_answers(subject, shown, max_new_tokens=32)
    differ = [normalize_answer(ca) != normalize_answer(cb) for ca, cb in zip(captions[:n], captions[n:])]
    return dict(kinds=label, n=n, within=within.mean().item(), across=across.mean().item(),
                nearer=summarize((within > across).tolist()), captions_differ=summarize(differ),
                examples=[[sa.objects[0].kind, ca, sb.objects[0].kind, cb] for sa, sb, ca, cb
                          in zip(scenes[0::3][:3], scenes[2::3][:3], captions[:3], captions[n: n + 3])])


def separation_table(subject, n, seed, full=True):
    rows = [prefix_separation(subject, n, seed, world.HELD_OUT_KINDS, "held-out")]
    if full:
        rows.append(prefix_separation(subject, n, seed, world.SEEN_KINDS, "seen"))
    return rows


# --- every table of a model, and the comparison across models ---------------------------------

IMAGE_TASKS = ("caption", "vqa", "okvqa", "binding", "fast_vqa", "separation")


def run_tasks(subject, tasks, n, seed, layout="paper", full=True):
    """The results of `tasks` for one model, keyed by task. full=False computes only the cells that
    the comparison table shows (and what comes with them for free)."""
    other = {"direct": "paper", "paper": "direct"}[layout]
    results = {}
    for task in tasks:
        t0 = time.time()
        if task == "caption":
            results[task] = caption_table(subject, n, seed, ("test", "heldout") if full else ("test",))
        elif task in ("vqa", "okvqa"):
            results[task] = shots_table(subject, task, n, seed)
        elif task == "binding" and full:
            results[task] = binding_table(subject, n, seed, layouts=(layout, other))
        elif task == "binding":
            results[task] = binding_table(subject, n, seed, layouts=(layout,), names=("nonsense",), ways=(2,),
                                          columns=[BindingColumn(task_induction=True, inner_shots=5, repeats=0)])
        elif task == "fast_vqa" and full:
            results[task] = fast_vqa_table(subject, n, seed, layout)
        elif task == "fast_vqa":
            results[task] = fast_vqa_table(subject, n, seed, layout, names=("nonsense",), inner_shots=(5,))
        elif task == "separation":
            results[task] = separation_table(subject, n, seed, full)
        else:
            raise ValueError(f"unknown task {task!r}; choose from {IMAGE_TASKS}")
        print(f"{subject.name}: {task} in {time.time() - t0:.0f} s", file=sys.stderr)
    return results


def _find(rows, **keys):
    return next((r for r in rows if all(r.get(k) == v for k, v in keys.items())), None)


def compare_cells(results, layout):
    """The comparison table's cells (the paper's Tables 1 and 2 in one row), picked out of one
    model's results; None where that task was not run."""
    cells = {}
    caption = _find(results.get("caption", []), split="test")
    cells["caption kind"] = caption and caption["kind"]
    for task, label in (("vqa", "VQA"), ("okvqa", "OKVQA")):
        for k in SHOTS:
            cells[f"{label} {k}-shot"] = _find(results.get(task, []), shots=k)
    row = _find(results.get("binding", []), names="nonsense", layout=layout, ways=2)
    cells["bind 2-way 5-shot TI"] = row and _find(row["cells"], task_induction=True, inner_shots=5, repeats=0)
    row = _find(results.get("fast_vqa", []), names="nonsense")
    cells["fast-VQA 5-shot"] = row and _find(row["cells"], inner_shots=5)
    row = _find(results.get("separation", []), kinds="held-out")
    cells["held-out prefixes apart"] = row and row["nearer"]
    return cells


# ---------------------------------------------------------------------------------------------
# tables (Markdown, shaped like the paper's)


def fmt_or_dash(cell):
    return fmt(cell) if cell else "–"


def print_model_tables(name, entry, out=print):
    """Every table of one model's results (the entry of result["models"])."""
    results, blind = entry["results"], " Every image shown black (blind)." if entry["blind"] else ""
    out(f"## {name}\n\n`{entry['ckpt']}`: {entry['about']}.{blind}\n")
    if "caption" in results:
        out("Captioning new scenes (Conceptual Captions' role), zero-shot: what the caption names right, "
            "and the reference captions' teacher-forced perplexity.\n")
        out("| split | kind | colour | count | position | perplexity |")
        out("|---|---|---|---|---|---|")
        for r in results["caption"]:
            split = {"test": "test (seen kinds)", "heldout": "heldout (unseen kinds)"}[r["split"]]
            out(f"| {split} | " + " | ".join(fmt(r[f]) for f in CAPTION_FIELDS) + f" | {r['perplexity']:.2f} |")
        for r in results["caption"]:
            for reference, generated in r["examples"]:
                out(f"- {r['split']}: {reference!r} -> {generated!r}")
        out()
    if "vqa" in results or "okvqa" in results:
        out("VQA (VQAv2's role: what is visible) and OKVQA (facts only the text states), by solved "
            "examples in the prompt (the paper's Table 1).\n")
        out("| task | " + " | ".join(f"{k}-shot" for k in SHOTS) + " |")
        out("|---|" + "---|" * len(SHOTS))
        for task, label in (("vqa", "VQA"), ("okvqa", "OKVQA")):
            if task in results:
                out(f"| {label} | " + " | ".join(fmt_or_dash(_find(results[task], shots=k)) for k in SHOTS) + " |")
        out()
    if "binding" in results:
        out("Open-ended binding of names to held-out kinds (Open-Ended and Real-Name miniImageNet, the "
            "paper's Table 2). TI: task induction ('Answer with dax or blicket.'); shots: inner shots; "
            "rep: extra showings of the support set. Last column: how often the answer is one of the "
            "episode's names at all, right or wrong (mean over the row).\n")
        columns = results["binding"][0]["cells"]
        head = [f"{'TI' if c['task_induction'] else 'no TI'}, {c['inner_shots']} shot, {c['repeats']} rep"
                for c in columns]
        out("| names | layout | ways | chance | " + " | ".join(head) + " | a name |")
        out("|---|---|---|---|" + "---|" * len(head) + "---|")
        for r in results["binding"]:
            some = sum(c["some_name"] for c in r["cells"]) / len(r["cells"])
            out(f"| {r['names']} | {r['layout']} | {r['ways']} | {r['chance']:.2f} | "
                + " | ".join(fmt(c) for c in r["cells"]) + f" | {some:.2f} |")
        out()
    if "fast_vqa" in results:
        out("Fast-VQA (the paper's Table 3): 2-way; name two kinds, then ask about one of them, by name, "
            "in a picture of both. Answering about either object at random scores about 0.5.\n")
        shots = [c["inner_shots"] for c in results["fast_vqa"][0]["cells"]]
        out("| names | layout | " + " | ".join(f"{k} inner shots" for k in shots) + " |")
        out("|---|---|" + "---|" * len(shots))
        for r in results["fast_vqa"]:
            out(f"| {r['names']} | {r['layout']} | " + " | ".join(fmt(c) for c in r["cells"]) + " |")
        out()
    if "separation" in results:
        out("Prefix separation: for triplets (a, a', b), a and a' of one kind and b of another, the "
            "visual prefixes' cosine within and across kinds; how often a is nearer a' than b (0 when "
            "every kind collapses onto one prefix); how often the greedy captions of a and b differ.\n")
        out("| kinds | triplets | cos within | cos across | a nearer a' | captions differ |")
        out("|---|---|---|---|---|---|")
        for r in results["separation"]:
            out(f"| {r['kinds']} | {r['n']} | {r['within']:.3f} | {r['across']:.3f} | {fmt(r['nearer'])} | "
                f"{fmt(r['captions_differ'])} |")
        out()


def print_comparison(result, out=print):
    """Rows: models; columns: the headline cells (the paper's Tables 1 and 2 in one)."""
    rows = {name: compare_cells(m["results"], result["layout"]) for name, m in result["models"].items()}
    columns = list(next(iter(rows.values())))
    out(f"## Comparison\n\nBinding and Fast-VQA in the {result['layout']} layout, nonsense names, 2-way "
        f"(chance 0.50). Held-out prefixes apart: 'a nearer a'' of the separation table.\n")
    out("| model | trained | " + " | ".join(columns) + " |")
    out("|---|---|" + "---|" * len(columns))
    for name, cells in rows.items():
        m = result["models"][name]
        about = m["about"] + (", shown black images" if m["blind"] else "")
        out(f"| {name} | {about} | " + " | ".join(fmt_or_dash(cells[c]) for c in columns) + " |")
    out()


# ---------------------------------------------------------------------------------------------
# entry point

TEXT_TASKS = ("text-binding",)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", nargs="+", default=["out/prefix.pt"], metavar="[NAME=]PATH[:blind]",
                   help="stage-prefix checkpoint(s): every --task table of each; ':blind' shows that one "
                        "black images. A stage-lm checkpoint: --task text-binding")
    p.add_argument("--compare", nargs="*", default=[], metavar="[NAME=]PATH[:blind]",
                   help="more models for the comparison table: only its cells are computed")
    p.add_argument("--task", default="auto",
                   help=f"comma-separated: {', '.join(IMAGE_TASKS)}, all (these), text-binding; "
                        "auto: all for a stage-prefix checkpoint, text-binding for a stage-lm one")
    # paper by default: measured, after a visual prefix the frozen LM goes on with a caption where
    # the direct layout wants a name ('<image> dax.'); '<image> This is a dax.' it binds (README)
    p.add_argument("--layout", choices=("direct", "paper"), default="paper",
                   help="binding prompt layout of the comparison table and Fast-VQA (the binding table "
                        "shows both): direct '<image> dax.', paper '<image> This is a dax.'")
    p.add_argument("--blind", action="store_true", help="show every model black images (the blind baseline)")
    p.add_argument("--episodes", type=int, default=200, help="episodes per table cell")
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
    unknown = [t for t in tasks if t not in IMAGE_TASKS + TEXT_TASKS]
    if unknown or not tasks or (set(tasks) & set(TEXT_TASKS) and len(tasks) > 1):
        raise InputError(f"--task {args.task!r}: choose text-binding alone, or from {', '.join(IMAGE_TASKS)}, all")
    return tuple(tasks)


def run_image_tasks(args, tasks, command, out=print):
    """Every table of each --ckpt model, the comparison cells of each --compare model, and the
    comparison table when there are several models."""
    result = {"command": command, "episodes": args.episodes, "seed": args.seed, "layout": args.layout,
              "models": {}}
    out(f"# Frozen on the drawn world\n\nRe-make: `{command}`\n\n{args.episodes} episodes a cell, seed "
        f"{args.seed}; greedy decoding, exact match after normalisation (lower case, no punctuation or "
        f"leading article), no answer shortlist (the paper's Sec. 4.1); [.] is the 95% Wilson "
        f"interval.\n")
    for spec, full in [(s, True) for s in args.ckpt] + [(s, False) for s in args.compare]:
        subject, ckpt = load_subject(spec, args.device, args.blind, args.batch_size)
        if subject.name in result["models"]:
            subject.name += f" ({len(result['models'])})"
        entry = {"ckpt": subject.ckpt, "blind": subject.blind, "about": describe_training(ckpt)}
        entry["results"] = run_tasks(subject, tasks if full else IMAGE_TASKS, args.episodes, args.seed,
                                     args.layout, full)
        result["models"][subject.name] = entry
        if full:
            print_model_tables(subject.name, entry, out)
        del subject
    if len(result["models"]) > 1:
        print_comparison(result, out)
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
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
            result = text_binding_table(lm, tokenizer, args.episodes, args.seed)
            print_text_binding(result, out)
        else:
            with torch.no_grad():
                result = run_image_tasks(args, tasks, command, out)
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
