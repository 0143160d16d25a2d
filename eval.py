"""
Evaluation: the paper's experiments (Frozen, Sec. 4) re-made on world.py's episodes, and the
text-only in-context scores that decide whether any few-shot result can appear at all.

  python eval.py --task text-binding --ckpt out/lm.pt     # the LM's binding, in text
  python eval.py --plot-log out/lm_log.txt                # loss, copy and binding against step

Scoring is the paper's (Sec. 4.1): greedy decoding, the answer normalised (lower case, no
punctuation or leading article), exact match, no shortlist of answers. Every score comes with
its episode count and a 95% Wilson interval.

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
import re
import sys
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
    """Text pieces joined by single spaces, tokenised piece by piece (as sample.encode_pieces)."""
    ids = []
    for i, piece in enumerate(pieces):
        ids += tokenizer.encode((" " if i else "") + piece)
    return ids


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
    answers = answer_text_episodes(lm, tokenizer, episodes)
    correct = [exact_match(a, e.answer) for a, e in zip(answers, episodes)]
    some_name = [normalize_answer(a) in {normalize_answer(v) for v in e.info["names"].values()}
                 for a, e in zip(answers, episodes)]
    cell = summarize(correct)
    cell.update(chance=1 / options.get("ways", 2), some_name=sum(some_name) / len(some_name))
    return cell


def text_icl_scores(lm, tokenizer, n=100, rt=None):
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
# plotting a training log (Pillow only: no plotting dependency for one chart)


def plot_log(log_path, png_path, keys=("loss", "val_loss", "copy", "bind2_direct", "bind5_direct",
                                         "bind2_paper", "bind5_paper")):
    """Draw the log's series against step: loss on a left panel, in-context scores on the right."""
    from PIL import Image, ImageDraw

    from train import read_log

    rows = read_log(log_path)
    series = {k: [(r["step"], r[k]) for r in rows if k in r] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        raise ValueError(f"{log_path}: no {', '.join(keys)} values to plot")
    W, H, pad = 900, 380, 50
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    max_step = max(s for v in series.values() for s, _ in v)
    panels = [("loss", [k for k in series if "loss" in k]), ("in-context score", [k for k in series if "loss" not in k])]
    for p, (title, names) in enumerate(panels):
        x0, x1, y0, y1 = pad + p * W // 2, (p + 1) * W // 2 - 20, 30, H - pad
        draw.rectangle([x0, y0, x1, y1], outline="black")
        draw.text((x0, 10), title, fill="black")
        values = [v for k in names for _, v in series[k]]
        if not values:
            continue
        lo, hi = (0.0, 1.0) if "score" in title else (min(values), max(values))
        hi = hi if hi > lo else lo + 1
        draw.text((x0 - 40, y0), f"{hi:.2f}", fill="black")
        draw.text((x0 - 40, y1 - 10), f"{lo:.2f}", fill="black")
        draw.text((x1 - 60, y1 + 5), f"step {max_step:.0f}", fill="black")
        for i, k in enumerate(names):
            colour = colours[list(series).index(k) % len(colours)]
            points = [(x0 + (x1 - x0) * s / max_step, y1 - (y1 - y0) * (v - lo) / (hi - lo)) for s, v in series[k]]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            draw.text((x0 + 10, y0 + 8 + 14 * i), k, fill=colour)
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    img.save(png_path)
    return png_path


# ---------------------------------------------------------------------------------------------
# entry point


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default="out/lm.pt", help="a stage-lm (text tasks) or stage-prefix checkpoint")
    p.add_argument("--task", default="text-binding", help="text-binding")
    p.add_argument("--episodes", type=int, default=200, help="episodes per table cell")
    p.add_argument("--seed", type=int, default=0, help="episode seed")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--plot-log", default=None, help="draw this training log as a PNG and exit")
    p.add_argument("--png", default=None, help="where --plot-log writes (default: beside the log)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def main(argv=None):
    from data import InputError
    from sample import load_for_text

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.plot_log:
            png = args.png or str(Path(args.plot_log).with_suffix(".png"))
            print(f"wrote {plot_log(args.plot_log, png)}")
            return
        lm, tokenizer = load_for_text(args.ckpt, args.device)
        if args.task == "text-binding":
            result = text_binding_table(lm, tokenizer, args.episodes, args.seed)
            print_text_binding(result)
        else:
            raise InputError(f"unknown task {args.task!r}")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return result
    except InputError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
