"""
eval.py's results as Markdown tables, shaped like the paper's (Frozen, Tables 1-3), each naming
its episodes, its interval and its baselines.
"""

from diagnostics import MASSES, TOPS
from scoring import fmt

KINDS_LABEL = {"seen": "seen kinds (the encoder saw them in training)", "heldout": "held-out kinds (never seen)"}


def fmt_or_dash(cell):
    return fmt(cell) if cell else "–"


def header(out, *columns):
    """A Markdown table's header row and its separator."""
    out("| " + " | ".join(columns) + " |")
    out("|" + "---|" * len(columns))


def print_text_binding(result, out=print):
    if "command" in result:
        out(f"Re-make: `{result['command']}`\n")
    out(f"Text binding: {result['split']} episodes, {result['episodes_per_cell']} a cell, seed {result['seed']}, "
        f"greedy, exact match; [.] is the 95% Wilson interval. Copy score {result['copy']:.2f}. Names: "
        f"nonsense (NONSENSE_NAMES) or heldback (HELD_BACK_NAMES, never tuned on); sentences: paper ('This is "
        f"a dax.'), trained (the corpus's others) or heldback (never in the corpus).\n")
    header(out, "layout", "query", "names", "sentences", "ways", "inner shots", "accuracy", "chance",
           "answer is a support name")
    for r in result["rows"]:
        out(f"| {r['layout']} | {r['query']} | {r['names']} | {r['templates']} | {r['ways']} | {r['inner_shots']} | "
            f"{fmt(r)} | {r['chance']:.2f} | {r['some_name']:.2f} |")
    forms = result["forms"]
    out(f"\nThe same LM when each thing is written in another form ({forms[0]['ways']}-way, task induction, "
        f"{forms[0]['inner_shots']} inner shots, paper layout; the ladder's episodes): what its binding needs of a "
        f"description, and so of a visual prefix.\n")
    header(out, "thing written as", "kinds", "accuracy", "chance", "answer is a support name")
    for r in forms:
        out(f"| {r['form']} | {r['kinds']} | {fmt(r)} | {r['chance']:.2f} | {r['some_name']:.2f} |")
    vectors = result["vectors"]
    out(f"\nThe same episodes (seen kinds) with each thing written 'a small red <v>.': v a random vector at the "
        f"token embeddings' rms whose expected cosine to another thing's is `between` across kinds and `within` "
        f"inside one (vector_things.VECTOR_GEOMETRIES). Text nouns are (0, 1); what geometry can a prefix bind "
        f"with?\n")
    header(out, "cosine between kinds", "cosine within a kind", "accuracy", "chance", "answer is a support name")
    for r in vectors:
        out(f"| {r['between']:.2f} | {r['within']:.2f} | {fmt(r)} | {r['chance']:.2f} | {r['some_name']:.2f} |")


def find(rows, **keys):
    """The first row whose fields have these values, or None."""
    return next((r for r in rows if all(r.get(k) == v for k, v in keys.items())), None)


def print_captions(rows, out):
    out("Captioning new scenes (Conceptual Captions' role), zero-shot: what the caption names right, "
        "and the reference captions' teacher-forced perplexity.\n")
    header(out, "kinds", "kind", "colour", "count", "position", "perplexity")
    for r in rows:
        fields = " | ".join(fmt(r[f]) for f in ("kind", "colour", "count", "position"))
        out(f"| {KINDS_LABEL[r['kinds']]} | {fields} | {r['perplexity']:.2f} |")
    for r in rows:
        for reference, generated in r["examples"]:
            out(f"- {r['kinds']}: {reference!r} -> {generated!r}")
    out()


def print_shots(results, out):
    out("VQA (VQAv2's role: what is visible) and OKVQA (facts only the text states), by solved "
        "examples in the prompt (the paper's Table 1).\n")
    shots = sorted({r["shots"] for task in ("vqa", "okvqa") for r in results.get(task, [])})
    header(out, "task", *(f"{k}-shot" for k in shots))
    for task, label in (("vqa", "VQA"), ("okvqa", "OKVQA")):
        if task in results:
            out(f"| {label} | " + " | ".join(fmt_or_dash(find(results[task], shots=k)) for k in shots) + " |")
    out()


def column_label(c):
    return f"{'TI' if c['task_induction'] else 'no TI'}, {c['inner_shots']} shot, {c['repeats']} rep"


def print_binding(rows, out):
    out("Open-ended binding of names to kinds (Open-Ended and Real-Name miniImageNet, the paper's "
        "Table 2). TI: task induction ('Answer with dax or blicket.'); shots: inner shots; rep: extra "
        "showings of the support set. Names: nonsense (tuning looked at them), heldback (never tuned on), "
        "real (the kinds' own); sentences: paper ('This is a dax.') or heldback (never in the corpus). "
        "Last column: how often the answer is one of the episode's names at all, right or wrong.\n")
    for columns in dict.fromkeys(tuple(column_label(c) for c in r["cells"]) for r in rows):
        header(out, "names", "sentences", "kinds", "layout", "ways", "chance", *columns, "a name")
        for r in rows:
            if tuple(column_label(c) for c in r["cells"]) != columns:
                continue
            some = sum(c["some_name"] for c in r["cells"]) / len(r["cells"])
            out(f"| {r['names']} | {r['templates']} | {r['kinds']} | {r['layout']} | {r['ways']} | {r['chance']:.2f} | "
                + " | ".join(fmt(c) for c in r["cells"]) + f" | {some:.2f} |")
        out()


def print_fast_vqa(rows, out):
    out("Fast-VQA (the paper's Table 3): 2-way; name two kinds, then ask about one of them, by name, "
        "in a picture of both. Baseline: answering about a random object of the picture (half the "
        "time the other one), the score of a model that sees the picture but cannot bind the name.\n")
    shots = [c["inner_shots"] for c in rows[0]["cells"]]
    header(out, "names", "layout", *(f"{k} inner shots" for k in shots), "random object")
    for r in rows:
        baseline = sum(c["random_object"] for c in r["cells"]) / len(r["cells"])
        out(f"| {r['names']} | {r['layout']} | " + " | ".join(fmt(c) for c in r["cells"]) + f" | {baseline:.2f} |")
    out()


def print_separation(rows, out):
    out("Prefix separation: for triplets (a, a', b), a and a' of one kind and b of another, the "
        "visual prefixes' cosine within and across kinds; how often a is nearer a' than b (0.5 at "
        "random, 0 when every kind collapses onto one prefix); how often the captions of a and b differ.\n")
    header(out, "kinds", "triplets", "cos within", "cos across", "a nearer a'", "captions differ",
           "cos within / across, slot by slot")
    for r in rows:
        slots = ", ".join(f"{w:.2f} / {a:.2f}" for w, a in zip(r["slot_within"], r["slot_across"]))
        out(f"| {r['kinds']} | {r['n']} | {r['within']:.3f} | {r['across']:.3f} | {fmt(r['nearer'])} | "
            f"{fmt(r['captions_differ'])} | {slots} |")
    out()


def fmt_seeds(cell):
    """fmt, then each training seed's accuracy where the cell merges several."""
    seeds = cell.get("per_seed")
    return fmt(cell) + (f" ({', '.join(f'{a:.2f}' for a in seeds)})" if seeds else "")


def print_visual_word(rows, out):
    out("A visual word added at inference only (a probe): the ladder's episodes through the visual prefixes, "
        "and with each prefix followed by ' a <w>.', w the image's centred features through a fixed random map "
        "(prefix_levers.framed_word; the model was trained without it).\n")
    header(out, "kinds", "ways", "inner shots", "visual prefixes", "and a visual word", "answer is a support name")
    for r in rows:
        plain, word = r["visual prefixes"], r["visual prefixes and a visual word"]
        out(f"| {KINDS_LABEL[r['kinds']]} | {r['ways']} | {r['inner_shots']} | {fmt_seeds(plain)} | {fmt_seeds(word)} | "
            f"{plain['some_name']:.2f} -> {word['some_name']:.2f} |")
    out()


def print_prefix_parts(rows, out):
    out("What else a prefix lacks: the ladder's episodes with each thing written in forms between its noun and "
        "its visual prefix (diagnostics.part_forms). <v>: a vector distinct across kinds and the same within one, "
        "as nouns are; <kind slot>: the prefix's slot least alike across kinds (diagnostics.kind_slot); apple: "
        "the kind's noun as the LM embeds it.\n")
    header(out, "kinds", "chance", "thing written as", "binding", "answer is a support name", "kind slot")
    for r in rows:
        slots = r["kind_slot"] if isinstance(r["kind_slot"], list) else [r["kind_slot"]]
        out(f"| {KINDS_LABEL[r['kinds']]} | {1 / r['ways']:.2f} | `{r['form']}` | {fmt_seeds(r)} | "
            f"{r['some_name']:.2f} | {', '.join(str(s) for s in slots)} |")
    out()


def print_ladder(rows, out):
    out("The ladder: the same binding episodes (2-way, task induction, 5 inner shots) with each image "
        "replaced by its reference description as text (the text upper bound), by the model's own "
        "caption of it as text, or by its visual prefix (Frozen as it is). Own captions above prefixes: "
        "the prefix carries the thing but the frozen LM does not match one prefix against another.\n")
    rungs = ("reference text", "own captions as text", "visual prefixes")
    header(out, "kinds", "chance", *rungs)
    for r in rows:
        out(f"| {KINDS_LABEL[r['kinds']]} | {1 / r['ways']:.2f} | " + " | ".join(fmt(r[k]) for k in rungs) + " |")
    out()


def print_attention(rows, out):
    r0 = rows[0]
    out(f"Where the LM looks (issue 16): the ladder's binding episodes ({r0['ways']}-way, task induction, "
        f"{r0['inner_shots']} inner shots, {r0['episodes']} a row), the things shown as reference text or as "
        f"visual prefixes. At the answer position ('... This is a' -> name), each layer's attention mass on "
        f"the support things of the query's kind (matching) and of the others, on the name tokens after them, "
        f"and on the query thing: mean over heads / the head with most. Top: how often the most attended "
        f"support thing (name) is one of the query's kind, by the head-mean attention / the best head "
        f"(chance {1 / r0['ways']:.2f}).\n")
    columns = MASSES + TOPS
    header(out, "kinds", "things as", "layer", *columns)
    for r in rows:
        cells = [f"{r[c]['mean']:.2f} / {r[c]['max']:.2f} (h{r[c]['head']})" for c in columns]
        out(f"| {r['kinds']} | {r['things']} | {r['layer']} | " + " | ".join(cells) + " |")
    out()


def print_nearest(rows, out):
    r0 = rows[0]
    out(f"Nearest token embeddings (issue 16): each visual prefix vector of lone objects (seen and held-out "
        f"kinds) against every row of the LM's token embedding table, by cosine. For scale, a token's "
        f"nearest other token is at {r0['token_nearest_other']:.3f} on average. Own name: one of the tokens "
        f"of ' kind' among the {r0['k']} nearest; its rank among all tokens.\n")
    header(out, "kinds", "slot", "vectors", "top-1 cosine", "prefix norm", "token norm",
           f"own name in top {r0['k']}", "own name's median rank")
    for r in rows:
        out(f"| {r['kinds']} | {r['slot']} | {r['vectors']} | {r['top1_cosine']:.3f} | {r['prefix_norm']:.3f} | "
            f"{r['token_norm']:.3f} | {r['own_name_in_top_k']:.2f} | {r['own_name_median_rank']:.0f} |")
    for r in rows:
        for kind, nearest in r["examples"]:
            out(f"- {r['kinds']} {kind}, slot {r['slot']}: " + ", ".join(f"{t!r} {c:.2f}" for t, c in nearest))
    out()


def print_model_tables(name, entry, out=print):
    """Every table of one model's results (an entry of eval.py's result["models"])."""
    results = entry["results"]
    blind = " Every image shown black (blind)." if entry["blind"] else ""
    seeds = f"{entry['seeds']} training seeds: " if entry["seeds"] > 1 else ""
    out(f"## {name}\n\n{seeds}{', '.join(f'`{c}`' for c in entry['ckpts'])}: {entry['about']}.{blind}\n")
    if "caption" in results:
        print_captions(results["caption"], out)
    if "vqa" in results or "okvqa" in results:
        print_shots(results, out)
    if "binding" in results:
        print_binding(results["binding"], out)
    if "fast_vqa" in results:
        print_fast_vqa(results["fast_vqa"], out)
    if "separation" in results:
        print_separation(results["separation"], out)
    if "ladder" in results:
        print_ladder(results["ladder"], out)
    if "attention" in results:
        print_attention(results["attention"], out)
    if "nearest" in results:
        print_nearest(results["nearest"], out)
    if "visual-word" in results:
        print_visual_word(results["visual-word"], out)
    if "prefix-parts" in results:
        print_prefix_parts(results["prefix-parts"], out)


def print_comparison(result, cells, out=print):
    """Rows: models; columns: the headline cells (the paper's Tables 1 and 2 in one)."""
    columns = list(next(iter(cells.values())))
    out(f"## Comparison\n\n{result['split']} episodes. Binding and Fast-VQA in the {result['layout']} layout, "
        f"nonsense names, held-out kinds, 2-way. Held-out prefixes apart: 'a nearer a'' of the separation "
        f"table. Baselines: chance, the blind rows, and answering about a random object for Fast-VQA.\n")
    header(out, "model", "seeds", "trained", *columns)
    for name, row in cells.items():
        m = result["models"][name]
        about = m["about"] + (", shown black images" if m["blind"] else "")
        out(f"| {name} | {m['seeds']} | {about} | " + " | ".join(fmt_or_dash(row[c]) for c in columns) + " |")
    out()
