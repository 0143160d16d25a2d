"""
Evaluation: the paper's experiments (Frozen, Sec. 4) re-made on world.py's episodes, and the
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

The image tasks (paper -> here; the episodes are world.py's, deterministic in --seed):

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

Text binding (issue: in-context learning in the text LM): the image binding task with a text
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
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from gpt import left_pad

ARTICLES = ("a ", "an ", "the ")


# ---------------------------------------------------------------------------------------------
# scoring


def normalize_answer(text):
    """Lower case, no punctuation, no leading article, single spaces (VQA-style normalisation)."""
    text = re.sub(r"[^\w\s']", " ", text.lower()).replace("'", " ")
    text = " ".join(text.split())
    for a in ARTICLES:
        if text.startswith(a):
            text = text[len(a):]
    return text


def exact_match(prediction, answer):
    return normalize_answer(prediction) == normalize_answer(answer)


def wilson_interval(successes, n, z=1.96):
    """95% confidence interval of a proportion (Wilson 1927): sane at 0, 1 and small n."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(correct):
    """Accuracy, its interval and the count, of a list of booleans."""
    n, k = len(correct), sum(correct)
    low, high = wilson_interval(k, n)
    return {"acc": k / n if n else 0.0, "ci": [low, high], "n": n}


def fmt(cell):
    """'0.62 ±0.07' from a summarize() dict (the half-width of its interval)."""
    return f"{cell['acc']:.2f} ±{(cell['ci'][1] - cell['ci'][0]) / 2:.2f}"


# ---------------------------------------------------------------------------------------------
# running text episodes through the LM


def text_prompt_ids(pieces, tokenizer):
    """Text pieces joined by single spaces, tokenised piece by piece (sample.encode_pieces), as one list."""
    from sample import encode_pieces

    return [t for ids in encode_pieces(pieces, tokenizer, image_size=None) for t in ids]


@torch.no_grad()
def answer_text_episodes(lm, tokenizer, episodes, batch_size=64, max_new_tokens=8):
    """Greedy answers of the LM to text-only episodes, each cut at the end of its first sentence."""
    from sample import answer_text, stop_ids

    device = lm.wte.weight.device
    stops = stop_ids(tokenizer)
    answers = []
    for start in range(0, len(episodes), batch_size):
        chunk = episodes[start: start + batch_size]
        prompts = [torch.tensor(text_prompt_ids(e.pieces, tokenizer), device=device) for e in chunk]
        idx, mask = left_pad(prompts)
        rows = lm.generate(idx, prompt_mask=mask, max_new_tokens=max_new_tokens, stop_tokens=stops)
        answers += [answer_text(tokenizer, row) for row in rows]
    return answers


@torch.no_grad()
def copy_score(lm, tokenizer, n=100, seed=0):
    """The share of the second half of repeated random word sequences that the LM predicts
    (teacher-forced, greedy): near 0 before induction heads form, near 1 after."""
    import world

    device = lm.wte.weight.device
    hits, total = 0, 0
    for ep in world.episodes("copy", n, seed=seed):
        prompt = text_prompt_ids(ep.pieces, tokenizer)
        answer = tokenizer.encode(" " + ep.answer)
        ids = torch.tensor([prompt + answer], device=device)
        logits, _ = lm(ids)
        predicted = logits[0, len(prompt) - 1: -1].argmax(-1)
        hits += (predicted == ids[0, len(prompt):]).sum().item()
        total += len(answer)
    return hits / total


def binding_cell(lm, tokenizer, n, seed=0, **options):
    """One cell of the text-binding table: accuracy, chance, and how often the answer is *some*
    support name (the format is learnt) against the right one (binding is learnt)."""
    import world

    episodes = world.episodes("binding", n, seed=seed, as_text=True, **options)
    return score_binding(answer_text_episodes(lm, tokenizer, episodes), episodes)


def score_binding(answers, episodes):
    """Exact-match accuracy with its interval, chance, and the share of answers that are one of
    the episode's support names, right or wrong."""
    correct = [exact_match(a, e.answer) for a, e in zip(answers, episodes)]
    some_name = [normalize_answer(a) in {normalize_answer(v) for v in e.info["names"].values()}
                 for a, e in zip(answers, episodes)]
    cell = summarize(correct)
    cell.update(chance=1 / episodes[0].info["ways"], some_name=sum(some_name) / len(some_name))
    return cell


def text_icl_scores(lm, tokenizer, n=100):
    """The scores stage lm logs every eval_interval: copy, and 2-way / 5-way 1-shot text binding
    (query described differently) in both layouts."""
    scores = {"copy": copy_score(lm, tokenizer, n)}
    for layout in ("paper", "direct"):
        for ways in (2, 5):
            cell = binding_cell(lm, tokenizer, n, ways=ways, inner_shots=1, layout=layout, query="different")
            scores[f"bind{ways}_{layout}"] = cell["acc"]
    return scores


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
        f"greedy, exact match; ± is the 95% Wilson half-width. Copy score {result['copy']:.2f}.")
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
    from train import load_frozen

    name, path, spec_blind = parse_model_spec(spec)
    model, tokenizer, ckpt = load_frozen(path, device)
    return Subject(name, model, tokenizer, path, blind or spec_blind, batch_size), ckpt


def image_episodes(subject, task, n, seed, **options):
    import world

    return world.episodes(task, n, seed, image_size=subject.image_size, **options)


def prompts_of(subject, episodes):
    """Episodes' pieces (PIL images and strings) -> Frozen prompts (image tensors and token ids),
    every image black when the subject is blind."""
    from data import black_images
    from sample import encode_pieces

    prompts = []
    for e in episodes:
        prompt = encode_pieces(e.pieces, subject.tokenizer, subject.image_size)
        if subject.blind:
            prompt = [black_images(p) if torch.is_tensor(p) else p for p in prompt]
        prompts.append(prompt)
    return prompts


def check_length(subject, prompts, max_new_tokens, task):
    """A clear error, not a shape error deep in the LM, when a prompt outgrows the positions."""
    from data import InputError

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
    from sample import answer_text, stop_ids

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
    from world import parse_caption

    parsed = parse_caption(text)
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
    from data import black_images, image_to_tensor
    from frozen import caption_targets

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

# The paper's Table 2 columns: (task induction, inner shots, repeats). Its repeats count the extra
# showings of the support set; world.py's `repeats` counts all showings, so it gets repeats + 1.
BINDING_COLUMNS = ((False, 1, 0), (True, 1, 0), (True, 3, 0), (True, 5, 0), (True, 1, 1), (True, 1, 3),
                   (True, 1, 5))
FAST_VQA_SHOTS = (0, 1, 3, 5)  # the paper's Table 3: inner shots, no task induction


def binding_table(subject, n, seed, layouts, names=("nonsense", "real"), ways=(2, 5), columns=BINDING_COLUMNS):
    """Rows of (names, layout, ways), a cell per column. Nonsense names in every layout given;
    real names (Real-Name miniImageNet) in the first layout only."""
    rows = []
    for name_style in names:
        for layout in layouts if name_style == "nonsense" else layouts[:1]:
            for w in ways:
                cells = [dict(task_induction=ti, inner_shots=k, repeats=r,
                              **answer_cell(subject, "binding", n, seed, ways=w, inner_shots=k, repeats=r + 1,
                                            task_induction=ti, names=name_style, layout=layout))
                         for ti, k, r in columns]
                rows.append(dict(names=name_style, layout=layout, ways=w, chance=1 / w, cells=cells))
    return rows


def fast_vqa_table(subject, n, seed, layout, names=("nonsense", "real"), inner_shots=FAST_VQA_SHOTS):
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
    import world
    from data import black_images, image_to_tensor

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
    import world

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
            results[task] = binding_table(subject, n, seed, (layout, other))
        elif task == "binding":
            results[task] = binding_table(subject, n, seed, (layout,), ("nonsense",), (2,), [(True, 5, 0)])
        elif task == "fast_vqa":
            results[task] = fast_vqa_table(subject, n, seed, layout, *(() if full else (("nonsense",), (5,))))
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
# plots (Pillow only: no plotting dependency for a few line charts)

PLOT_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"]


def draw_panel(draw, box, title, series, lo=0.0, hi=1.0, x_label=""):
    """One chart in `box` (x0, y0, x1, y1): a frame, a title, the y limits, and each series
    (label, colour, points) as a line with its label top-left. A point is (x, y) or (x, y, low,
    high), the last two drawn as an error bar. x runs over the points' range; when there are few
    distinct x values, each is marked."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline="black")
    draw.text((x0, y0 - 20), title, fill="black")
    draw.text((x0 - 40, y0), f"{hi:.2f}", fill="black")
    draw.text((x0 - 40, y1 - 10), f"{lo:.2f}", fill="black")
    xs = sorted({p[0] for _, _, points in series for p in points})
    if not xs:
        return
    span = (xs[-1] - xs[0]) or 1
    margin = 0.05 * (x1 - x0)
    px = lambda x: x0 + margin + (x1 - x0 - 2 * margin) * (x - xs[0]) / span
    py = lambda y: y1 - (y1 - y0) * (min(max(y, lo), hi) - lo) / (hi - lo)
    for x in (xs if len(xs) <= 8 else xs[:1] + xs[-1:]):
        draw.text((px(x) - 4, y1 + 4), f"{x:g}", fill="black")
    draw.text((x1 - 8 * len(x_label), y1 + 18), x_label, fill="black")
    for i, (label, colour, points) in enumerate(series):
        line = [(px(p[0]), py(p[1])) for p in points]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        for p, (x, y) in zip(points, line):
            if len(p) == 4:  # an interval
                draw.line([(x, py(p[2])), (x, py(p[3]))], fill=colour, width=1)
            if len(points) <= 20:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((x0 + 10, y0 + 8 + 14 * i), label, fill=colour)


def new_canvas(n_panels, width=450, height=380):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width * n_panels, height), "white")
    boxes = [(60 + p * width, 40, (p + 1) * width - 20, height - 50) for p in range(n_panels)]
    return img, ImageDraw.Draw(img), boxes


def save_png(img, png_path):
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    img.save(png_path)
    return png_path


def plot_log(log_path, png_path, keys=("loss", "val_loss", "copy", "bind2_direct", "bind5_direct",
                                         "bind2_paper", "bind5_paper")):
    """Draw the log's series against step: loss on a left panel, in-context scores on the right."""
    from train import read_log

    rows = read_log(log_path)
    series = {k: [(r["step"], r[k]) for r in rows if k in r] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        raise ValueError(f"{log_path}: no {', '.join(keys)} values to plot")
    colour = {k: PLOT_COLOURS[i % len(PLOT_COLOURS)] for i, k in enumerate(series)}
    img, draw, boxes = new_canvas(2)
    losses = [k for k in series if "loss" in k]
    values = [v for k in losses for _, v in series[k]] or [0.0, 1.0]
    lo, hi = min(values), max(values)
    draw_panel(draw, boxes[0], "loss", [(k, colour[k], series[k]) for k in losses], lo, hi if hi > lo else lo + 1,
               x_label="step")
    draw_panel(draw, boxes[1], "in-context score", [(k, colour[k], series[k]) for k in series if k not in losses],
               x_label="step")
    return save_png(img, png_path)


def plot_results(result, png_path):
    """Binding accuracy against inner shots (each fully evaluated model, 2- and 5-way, task
    induction, the default layout), and VQA and OKVQA accuracy against shots (every model), with
    95% intervals."""
    img, draw, boxes = new_canvas(3)
    models = list(result["models"].items())
    colour = {name: PLOT_COLOURS[i % len(PLOT_COLOURS)] for i, (name, _) in enumerate(models)}
    point = lambda x, cell: (x, cell["acc"], *cell["ci"])
    binding, ways_shown = [], set()
    for name, m in models:
        for row in m["results"].get("binding", []):
            cells = [c for c in row["cells"] if c["task_induction"] and c["repeats"] == 0]
            if row["names"] == "nonsense" and row["layout"] == result["layout"] and len(cells) > 1:
                binding.append((f"{name} {row['ways']}-way", PLOT_COLOURS[len(binding) % len(PLOT_COLOURS)],
                                [point(c["inner_shots"], c) for c in cells]))
                ways_shown.add(row["ways"])
    binding += [(f"chance {w}-way", "#999999", [(1, 1 / w), (5, 1 / w)]) for w in sorted(ways_shown)]
    draw_panel(draw, boxes[0], f"binding, {result['layout']} layout, task induction", binding,
               x_label="inner shots")
    for box, task, label in ((boxes[1], "vqa", "VQA"), (boxes[2], "okvqa", "OKVQA")):
        series = [(name, colour[name], [point(c["shots"], c) for c in m["results"][task]])
                  for name, m in models if task in m["results"]]
        draw_panel(draw, box, f"{label} accuracy", series, x_label="shots")
    return save_png(img, png_path)


# ---------------------------------------------------------------------------------------------
# entry point

TEXT_TASKS = ("text-binding",)
CLASSIFY_TASKS = ("classify",)


def classify_table(specs, out=print):
    """The LM-block comparison: test accuracy of each `train.py --stage classify` run (scored on
    the world's test split when it finished), beside Pang et al. 2024's finding on ImageNet.
    Runs given under one name (other seeds) make one row: their test images pooled, and the
    lowest and highest single-run accuracy beside it."""
    from train import load_checkpoint

    runs = {}  # name -> checkpoints, in the order given
    for spec in specs:
        name, path, _ = parse_model_spec(spec)
        runs.setdefault(name, []).append(load_checkpoint(path, "classify"))
    out("| vision encoder | kinds accuracy (test) | 95% CI | runs: lowest - highest | test images | training |")
    out("|---|---|---|---|---|---|")
    rows = {}
    for name, ckpts in runs.items():
        correct = sum(c["correct"] for c in ckpts)
        cell = summarize([True] * correct + [False] * (sum(c["n"] for c in ckpts) - correct))
        single = [c["correct"] / c["n"] for c in ckpts]
        f = ckpts[0]["frozen_config"]
        what = "none" if f["lm_block"] == "none" else f"block {f['lm_block']}, {f['lm_block_mode']}"
        out(f"| {name} ({what}) | {cell['acc']:.3f} | [{cell['ci'][0]:.3f}, {cell['ci'][1]:.3f}] | "
            f"{len(ckpts)}: {min(single):.3f} - {max(single):.3f} | {cell['n']} | "
            f"step {ckpts[0]['step']}, {f['image_size']} px |")
        rows[name] = dict(cell, runs=single)
    return {"task": "classify", "rows": rows}


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
                        "auto: all for a stage-prefix checkpoint, text-binding for a stage-lm one; "
                        "classify: the LM-block table of stage-classify checkpoints")
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
        from train import checkpoint_kind

        return TEXT_TASKS if checkpoint_kind(parse_model_spec(args.ckpt[0])[1]) == "lm" else IMAGE_TASKS
    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    tasks = [t for task in tasks for t in (IMAGE_TASKS if task == "all" else (task,))]
    unknown = [t for t in tasks if t not in IMAGE_TASKS + TEXT_TASKS + CLASSIFY_TASKS]
    alone = set(TEXT_TASKS) | set(CLASSIFY_TASKS)
    if unknown or not tasks or (set(tasks) & alone and len(tasks) > 1):
        from data import InputError

        raise InputError(f"--task {args.task!r}: choose text-binding or classify alone, or from {', '.join(IMAGE_TASKS)}, all")
    return tuple(tasks)


def run_image_tasks(args, tasks, command, out=print):
    """Every table of each --ckpt model, the comparison cells of each --compare model, and the
    comparison table when there are several models."""
    result = {"command": command, "episodes": args.episodes, "seed": args.seed, "layout": args.layout,
              "models": {}}
    out(f"# Frozen on the drawn world\n\nRe-make: `{command}`\n\n{args.episodes} episodes a cell, seed "
        f"{args.seed}; greedy decoding, exact match after normalisation (lower case, no punctuation or "
        f"leading article), no answer shortlist (the paper's Sec. 4.1); ± is the half-width of the 95% "
        f"Wilson interval.\n")
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
    import shlex

    from data import InputError
    from sample import load_for_text

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
        if tasks == CLASSIFY_TASKS:
            result = classify_table(args.ckpt, out)
        elif tasks == TEXT_TASKS:
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
