"""
How answers are scored, and the text-only in-context scores that say whether few-shot learning
can appear at all.

Scoring is the paper's (Frozen, Sec. 4.1): greedy decoding, the answer cut at the end of its first
sentence (answers are written 'Answer: red.' in the corpus), normalised (lower case, no
punctuation or leading article), exact match, no shortlist of answers. Every score carries its
count and a 95% interval.

The in-context scores (logged by stage lm, tabulated by `eval.py --task text-binding`) run the
image episodes of world/ with a text description where each image will stand:

  paper:   a small red apple. This is a dax. a big blue car. This is a blicket.
           Question: What is this? Answer: a green apple. This is a      -> dax
  direct:  a small red apple dax. a big blue car blicket. a green apple  -> dax

and a plain copy score (the second half of a repeated word sequence): induction heads, which
copy from context, are what in-context binding stands on (Olsson et al. 2022).
"""

import functools
import math
import re

import torch

import world
from data import encode_pieces
from gpt import left_pad

# ---------------------------------------------------------------------------------------------
# answers

SENTENCE_END = (".", "?", "!", "\n")
ARTICLES = ("a ", "an ", "the ")


@functools.lru_cache(maxsize=4)
def stop_ids(tokenizer, chars=SENTENCE_END):
    """End-of-text and every token that contains one of `chars`: the end of an answer. A scan of
    the whole vocabulary, so computed once per tokenizer."""
    vocab = range(tokenizer.vocab_size)
    return frozenset({tokenizer.eot_id} | {t for t in vocab if any(c in tokenizer.decode([t]) for c in chars)})


def answer_text(tokenizer, tokens):
    """The completion up to the end of its first sentence, without the sentence mark."""
    text = tokenizer.decode(tokens)
    cut = min([text.index(c) for c in SENTENCE_END if c in text] + [len(text)])
    return text[:cut].strip()


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


# ---------------------------------------------------------------------------------------------
# intervals


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


# two-sided 95% quantiles of Student's t with 1..10 degrees of freedom (any table of t, e.g.
# NIST/SEMATECH e-Handbook of Statistical Methods, 1.3.6.7.2); beyond 10, 2.0 is close enough
T_95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def seed_interval(values):
    """Mean of per-seed scores and the 95% t-interval of that mean, across seeds: the spread
    between training runs, which an interval over one run's episodes cannot show. One seed
    has no interval (ci None)."""
    k = len(values)
    mean = sum(values) / k
    if k < 2:
        return {"acc": mean, "ci": None, "seeds": k}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    half = (T_95[k - 2] if k - 1 <= len(T_95) else 2.0) * sd / math.sqrt(k)
    return {"acc": mean, "ci": [max(0.0, mean - half), min(1.0, mean + half)], "seeds": k}


def fmt(cell):
    """'0.62 [0.55, 0.69]' from a summarize() or seed_interval() dict ('0.62' without an interval)."""
    if cell.get("ci") is None:
        return f"{cell['acc']:.2f}"
    return f"{cell['acc']:.2f} [{cell['ci'][0]:.2f}, {cell['ci'][1]:.2f}]"


# ---------------------------------------------------------------------------------------------
# text episodes through the LM


def text_prompt_ids(pieces, tokenizer):
    """Text pieces joined by single spaces, tokenised piece by piece (data.encode_pieces), as one list."""
    return [t for ids in encode_pieces(pieces, tokenizer, image_size=None) for t in ids]


@torch.no_grad()
def answer_text_episodes(lm, tokenizer, episodes, batch_size=64, max_new_tokens=8):
    """Greedy answers of the LM to text-only episodes, each cut at the end of its first sentence."""
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
def answer_embedded(lm, tokenizer, prompts, batch_size=50, max_new_tokens=8):
    """Greedy answers of the LM to prompts given as embeddings (T_i, D), batch_size of them
    left-padded into one batch at a time, each cut at the end of its first sentence."""
    stops, answers = stop_ids(tokenizer), []
    for start in range(0, len(prompts), batch_size):
        embeds, mask = left_pad(prompts[start: start + batch_size])
        rows = lm.generate(embeds=embeds, prompt_mask=mask, max_new_tokens=max_new_tokens, stop_tokens=stops)
        answers += [answer_text(tokenizer, row) for row in rows]
    return answers


@torch.no_grad()
def copy_score(lm, tokenizer, n=100, seed=0, split="test", batch_size=64):
    """The share of the second half of repeated random word sequences that the LM predicts
    (teacher-forced, greedy): near 0 before induction heads form, near 1 after. Sequences are
    batched right-padded: attention is causal, so the padding after a row's last token changes
    none of its predictions."""
    device = lm.wte.weight.device
    hits, total = 0, 0
    episodes = world.episodes("copy", n, seed=seed, split=split)
    for start in range(0, len(episodes), batch_size):
        rows = [(text_prompt_ids(ep.pieces, tokenizer), tokenizer.encode(" " + ep.answer))
                for ep in episodes[start: start + batch_size]]
        longest = max(len(prompt) + len(answer) for prompt, answer in rows)
        ids = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
        for i, (prompt, answer) in enumerate(rows):
            ids[i, :len(prompt) + len(answer)] = torch.tensor(prompt + answer)
        predicted = lm(ids)[0].argmax(-1)  # (B, T): the token predicted after each position
        for i, (prompt, answer) in enumerate(rows):
            end = len(prompt) + len(answer)
            hits += (predicted[i, len(prompt) - 1: end - 1] == ids[i, len(prompt): end]).sum().item()
            total += len(answer)
    return hits / total


def score_binding(answers, episodes):
    """Exact-match accuracy with its interval, chance, and the share of answers that are one of
    the episode's support names, right or wrong (the format is learnt, against binding is)."""
    correct = [exact_match(a, e.answer) for a, e in zip(answers, episodes)]
    some_name = [normalize_answer(a) in {normalize_answer(v) for v in e.info["names"].values()}
                 for a, e in zip(answers, episodes)]
    cell = summarize(correct)
    cell.update(chance=1 / episodes[0].info["ways"], some_name=sum(some_name) / len(some_name))
    return cell


def binding_cell(lm, tokenizer, n, seed=0, **options):
    """Text binding: world's binding episodes with text where the images will be, scored."""
    episodes = world.episodes("binding", n, seed=seed, as_text=True, **options)
    return score_binding(answer_text_episodes(lm, tokenizer, episodes), episodes)


def text_icl_scores(lm, tokenizer, n=100):
    """The scores stage lm logs every eval_interval, on validation episodes (recipes are chosen on
    them): copy; 2-way / 5-way 1-shot text binding (query described differently) in both layouts;
    and 2-way in the naming sentences the corpus never contains (bind2_heldback)."""
    scores = {"copy": copy_score(lm, tokenizer, n, split="val")}
    for layout in ("paper", "direct"):
        for ways in (2, 5):
            cell = binding_cell(lm, tokenizer, n, split="val", ways=ways, inner_shots=1, layout=layout,
                                query="different")
            scores[f"bind{ways}_{layout}"] = cell["acc"]
    cell = binding_cell(lm, tokenizer, n, split="val", ways=2, inner_shots=1, templates="heldback")
    scores["bind2_heldback"] = cell["acc"]
    return scores
