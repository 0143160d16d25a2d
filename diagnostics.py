"""
Diagnostics of binding through visual prefixes (issue 16, items 2 and 3): the ladder
(eval.py --task ladder) says that the prefix carries the kind but the frozen LM does not bind
names to prefixes; these two say where that breaks. eval.py runs them (--task attention,
--task nearest) on its episodes; this module holds the mechanics.

- Where the LM looks. Binding in text works by induction (Olsson et al. 2022): at the answer
  position ('... Answer: <thing> This is a' -> 'dax') a head attends to the name that followed an
  earlier thing like the query, and copies it. Through images the LM must first find the support
  image that matches the query image. So at the prompt's last position we take every layer's and
  head's attention probabilities and sum them over each support thing (an image's n prefix
  positions, or a description's tokens) and over the name tokens after it: is the mass on the
  things and names of the query's kind, or spread evenly over all of them?
- What the LM can match. The ladder's text episodes with each thing's noun replaced by a vector
  of a chosen geometry: how alike two things' vectors are across kinds and within a kind. Text
  nouns are distinct words, alike only within a kind; a prefix is mostly what every image
  shares. Which geometries does the LM's induction bind, and where do prefixes sit?
- What else a prefix lacks. The same episodes with each thing in forms between its noun and its
  visual prefix: a distinct vector or the prefix's kind slot (the slot least alike across kinds)
  framed as a noun, the prefix with its kind slot swapped for a distinct vector or for the kind's
  noun. Does the prefix fail by what its kind slot holds, or by the slots around it?
- Nearest token embeddings. Frozen's encoder writes into the LM's input space, to be read "as if
  it were words" (the paper, Sec. 3.1). The cosine of each prefix vector to every row of the
  token embedding table says whether it writes anything word-like (near some token, at a token's
  norm), and whether the word is the kind's own name.

gpt.py computes attention with F.scaled_dot_product_attention, which never materialises the
probabilities. `attention_maps` hooks each layer's CausalSelfAttention for one forward and
recomputes its queries and keys with the module's own code (its qkv projection, its smear_keys,
gpt.apply_rope); the hooks are removed after that forward, so the training path runs no extra
code. tests/test_diagnostics.py checks that the probabilities times the values give the fused
kernel's output.
"""

import math

import torch
import torch.nn.functional as F

import world
from frozen import is_image
from gpt import apply_rope
from prefix_levers import frame_ids
from scoring import answer_embedded, score_binding
from vector_things import VECTOR_GEOMETRIES, ThingDraw, embed_with_vectors, noun_vectors, passage_tensors

# ---------------------------------------------------------------------------------------------
# where each piece of a prompt lies in its embedded sequence


def piece_spans(prompt, n_prefix):
    """(start, end) of each piece of a Frozen prompt (image tensors and token-id lists) in the
    sequence Frozen.embed_sequences makes of it: an image takes its n_prefix positions, a text
    piece one position a token (an empty one none). The spans tile the sequence in order."""
    spans, start = [], 0
    for piece in prompt:
        end = start + (n_prefix if is_image(piece) else len(piece))
        spans.append((start, end))
        start = end
    return spans


def find_tokens(ids, part):
    """Offset of the token run `part` in the list `ids`, or None."""
    for i in range(len(ids) - len(part) + 1):
        if ids[i: i + len(part)] == part:
            return i
    return None


def thing_pieces(episode):
    """Indices of an image episode's images: the support things, then the query (the last one).
    An episode of the same draw with as_text=True has its descriptions at these indices."""
    return [i for i, p in enumerate(episode.pieces) if not isinstance(p, str)]


def binding_positions(episode, prompt, tokenizer, n_prefix, things):
    """Where a binding episode's parts lie in its embedded prompt: each support thing's span and
    the span of the name tokens after it, with its kind; the query thing's span and kind.

    `things` are the indices of the thing pieces (thing_pieces). A support thing is followed by
    its naming piece ('This is a dax.', or 'dax.' in the direct layout), which names one of the
    episode's names; the byte-level BPE splits at spaces, so the name's tokens there are those of
    ' ' + name. Where one name begins another ('car', 'carrot'), the longer one found is the one
    named."""
    spans = piece_spans(prompt, n_prefix)
    name_ids = {kind: tokenizer.encode(" " + name) for kind, name in episode.info["names"].items()}
    support = []
    for i in things[:-1]:
        naming = list(prompt[i + 1])
        found = [(kind, find_tokens(naming, ids)) for kind, ids in name_ids.items()]
        found = [(kind, at) for kind, at in found if at is not None]
        if not found:
            raise ValueError(f"piece {i + 1} of a binding prompt ({naming}) names none of {episode.info['names']}")
        kind, at = max(found, key=lambda f: len(name_ids[f[0]]))
        start = spans[i + 1][0] + at
        support.append(dict(kind=kind, thing=spans[i], name=(start, start + len(name_ids[kind]))))
    return dict(support=support, query=spans[things[-1]], query_kind=episode.info["query_kinds"][0])


# ---------------------------------------------------------------------------------------------
# attention probabilities, recomputed from each layer's queries and keys


def queries_keys_values(attn, x, cos, sin, positions, mask=None, cache=None, layer=0):
    """q, k, v (B, nh, T, hd) of a CausalSelfAttention called on these arguments, as its forward
    makes them: the qkv projection split into heads, keys smeared where the layer smears them,
    q and k rotated. A whole sequence only (no KV cache). The split into heads is forward's line
    copied; the rest calls the module's own code. tests/test_diagnostics.py catches any drift."""
    assert cache is None, "attention maps are taken from whole sequences, not cached decoding"
    B, T, C = x.shape
    q, k, v = attn.qkv(x).view(B, T, 3, attn.n_head, C // attn.n_head).permute(2, 0, 3, 1, 4)
    if attn.smear is not None and positions is not None:
        k = attn.smear_keys(k, positions, mask, cache, layer)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def attention_probs(attn, x, cos, sin, positions, mask=None, cache=None, layer=0):
    """softmax(q k^T / sqrt(hd)) (B, nh, T, S) in float32, over the keys each query may see: the
    boolean mask's, or causal when there is none (as gpt.attention asks of the fused kernel)."""
    q, k, _ = queries_keys_values(attn, x, cos, sin, positions, mask, cache, layer)
    scores = q.float() @ k.float().transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, T, S)
    if mask is None:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)


@torch.no_grad()
def attention_maps(lm, **forward):
    """Run lm(**forward) once and return each layer's attention probabilities (B, nh, T, S).
    CausalSelfAttention is called positionally by its Block: (x, cos, sin, positions, mask,
    cache, layer), which a forward hook receives as `args`."""
    maps = [None] * len(lm.blocks)

    def recorder(layer):
        def hook(attn, args, output):
            maps[layer] = attention_probs(attn, *args)
        return hook

    handles = [block.attn.register_forward_hook(recorder(i)) for i, block in enumerate(lm.blocks)]
    try:
        lm(**forward)
    finally:
        for handle in handles:
            handle.remove()
    return maps


def last_query_attention(lm, embeds):
    """Attention of the last position of one embedded sequence (T, D) over its T positions:
    (n_layer, n_head, T)."""
    return torch.stack([m[0, :, -1] for m in attention_maps(lm, embeds=embeds[None])])


# ---------------------------------------------------------------------------------------------
# where the LM looks, on binding episodes

MASSES = ("matching things", "other things", "matching names", "other names", "query thing")
TOPS = ("top thing matches", "top name matches")


def episode_looks(probs, where):
    """One episode's attention at the answer position, probs (L, H, T), summed over its parts
    (binding_positions' `where`): the masses (L, H) on support things and names of the query's
    kind and of the others, and on the query thing; and whether the most attended support thing
    (name) is one of the query's kind, by each head (L, H) and by the head-mean attention (L,)."""

    def mass(span):
        return probs[..., span[0]: span[1]].sum(-1)  # (L, H)

    things = torch.stack([mass(s["thing"]) for s in where["support"]])  # (S, L, H)
    names = torch.stack([mass(s["name"]) for s in where["support"]])
    match = torch.tensor([s["kind"] == where["query_kind"] for s in where["support"]])  # (S,)
    looks = {"matching things": things[match].sum(0), "other things": things[~match].sum(0),
             "matching names": names[match].sum(0), "other names": names[~match].sum(0),
             "query thing": mass(where["query"])}
    for top, per_support in zip(TOPS, (things, names)):
        looks[top] = match[per_support.argmax(0)].float()  # (L, H)
        looks[top + ", head mean"] = match[per_support.mean(-1).argmax(0)].float()  # (L,)
    return looks


def per_layer_rows(looks):
    """Episodes' looks -> a row per layer: each mass as its mean over heads, its largest head and
    that head; each top-match rate by the head-mean attention, its best head and that head."""
    mean = {key: torch.stack([e[key] for e in looks]).mean(0) for key in looks[0]}  # over episodes
    rows = []
    for layer in range(mean[MASSES[0]].size(0)):
        row = dict(layer=layer, episodes=len(looks))
        for key in MASSES + TOPS:
            heads = mean[key][layer]  # (H,)
            row[key] = {"mean": (mean[key + ", head mean"][layer] if key in TOPS else heads.mean()).item(),
                        "max": heads.max().item(), "head": int(heads.argmax())}
        rows.append(row)
    return rows


@torch.no_grad()
def attention_rows(model, tokenizer, episodes, prompts, things, batch_size=32):
    """Where a Frozen's LM looks at the answer position of binding episodes, a row per layer.
    prompts: the episodes' Frozen prompts (eval.prompts_of); things: each episode's thing piece
    indices (thing_pieces of the image episode: the same for its as_text twin)."""
    n_prefix, looks = model.config.n_prefix, []
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        for e, prompt, idx, embeds in zip(episodes[chunk], prompts[chunk], things[chunk],
                                          model.embed_sequences(prompts[chunk])):
            probs = last_query_attention(model.lm, embeds).cpu()
            looks.append(episode_looks(probs, binding_positions(e, prompt, tokenizer, n_prefix, idx)))
    return per_layer_rows(looks)


# ---------------------------------------------------------------------------------------------
# nearest token embeddings of the visual prefix


def nearest_tokens(vectors, table, k=5):
    """Cosine of each vector (N, D) to every row of the embedding table (V, D): the k nearest
    rows' (cosines (N, k), ids (N, k)), and all the cosines (N, V)."""
    cosines = F.normalize(vectors.float(), dim=-1) @ F.normalize(table.float(), dim=-1).T  # (N, V)
    top = cosines.topk(k, dim=-1)
    return top.values, top.indices, cosines


def nearest_other_token(table, chunk=1024):
    """Mean cosine of each token embedding to its nearest other token: the scale against which
    a prefix vector's nearest cosine reads as word-like or not."""
    unit = F.normalize(table.float(), dim=-1)
    best = []
    for start in range(0, len(unit), chunk):
        cosines = unit[start: start + chunk] @ unit.T  # (chunk, V)
        rows = torch.arange(cosines.size(0))
        cosines[rows, rows + start] = -2.0  # not itself
        best.append(cosines.max(dim=-1).values)
    return torch.cat(best).mean().item()


def nearest_rows(prefixes, kinds, wte, tokenizer, label, k=5, examples=3):
    """For prefixes (N, n, D) of lone objects of `kinds` (N,), a row per prefix slot: the mean
    top-1 cosine to a token, the mean prefix and token norms, how often one of the kind's own name
    tokens (those of ' ' + kind, as the corpus writes it) is among the k nearest and its median
    rank among all tokens; and the k nearest tokens, decoded, of the first image of a few kinds."""
    N, n, _ = prefixes.shape
    token_norm, reference = wte.float().norm(dim=-1).mean().item(), nearest_other_token(wte)
    own = [tokenizer.encode(" " + kind) for kind in kinds]
    shown = {kind: kinds.index(kind) for kind in list(dict.fromkeys(kinds))[:examples]}  # first image of each
    rows = []
    for slot in range(n):
        vectors = prefixes[:, slot]  # (N, D)
        values, ids, cosines = nearest_tokens(vectors, wte, k)
        in_top = [bool(set(ids[i].tolist()) & set(own[i])) for i in range(N)]
        # rank of the kind's best-placed own token: 1 + how many tokens are nearer
        ranks = [1 + int((cosines[i] > cosines[i, own[i]].max()).sum()) for i in range(N)]
        rows.append(dict(kinds=label, slot=slot, vectors=N, top1_cosine=values[:, 0].mean().item(),
                         token_nearest_other=reference, prefix_norm=vectors.float().norm(dim=-1).mean().item(),
                         token_norm=token_norm, k=k, own_name_in_top_k=sum(in_top) / N,
                         own_name_median_rank=float(torch.tensor(ranks, dtype=torch.float).median()),
                         examples=[[kind, [[tokenizer.decode([t]), round(c, 3)] for t, c in
                                           zip(ids[i].tolist(), values[i].tolist())]] for kind, i in shown.items()]))
    return rows


# ---------------------------------------------------------------------------------------------
# what the LM can match: the kind's noun replaced by a vector of chosen geometry

def vector_thing_prompt(lm, tokenizer, episode, geometry, generator):
    """A slotted binding episode (world.episodes(as_slots=True)) as embeddings (T, D), each thing
    written 'a small red <v>.' as stage lm's vector nouns are (vector_things.passage_tensors): its
    words, then in the kind's place a vector of `geometry` at the token embeddings' rms, then the
    full stop."""
    slots = [p for p in episode.pieces if not isinstance(p, str)]
    width = lm.config.n_embd
    things = noun_vectors(slots, width, generator, geometry=geometry, kinds=episode.info["kinds"])
    ids, vectors, is_slot = passage_tensors(episode.pieces, tokenizer, 1, width, generator, ThingDraw(form="noun"),
                                            things)
    return embed_with_vectors(lm, ids.to(lm.wte.weight.device), vectors, is_slot)


def vector_binding_rows(lm, tokenizer, episodes, geometries=VECTOR_GEOMETRIES, seed=0, batch_size=50):
    """Binding accuracy of slotted binding episodes with each noun a vector of each geometry."""
    generator, rows = torch.Generator().manual_seed(seed), []
    for geometry in geometries:
        prompts = [vector_thing_prompt(lm, tokenizer, e, geometry, generator) for e in episodes]
        answers = answer_embedded(lm, tokenizer, prompts, batch_size)
        rows.append(dict(between=geometry[0], within=geometry[1], **score_binding(answers, episodes)))
    return rows


# ---------------------------------------------------------------------------------------------
# what else a prefix lacks: forms between a noun and the visual prefix


def part_forms(prefix, noun, described, distinct, frame, kind_slot, nearest, slot_mean):
    """One thing written in forms between 'a small red apple.' and its visual prefix, each a
    passage form (vector_things.passage_tensors) and the vectors in the thing's place. prefix
    (n, D): the image's visual prefix, its slot `kind_slot` the one that carries the kind; noun
    (k, D): the kind's noun as the LM embeds it; described (m, D): its whole description, ' a small
    red apple.'; distinct (1, D): a vector of the thing's kind, distinct across kinds as nouns
    are; frame (2, D): ' a' and '.'; nearest (1, D): the token embedding nearest the kind's slot
    (cosine); slot_mean (D,): the kind's slot's mean over images, taken out of `<c>` (the slot centred,
    at unit rms). All at the scale embed_with_vectors multiplies by the token embeddings' rms."""
    before, kind, after = prefix[:kind_slot], prefix[kind_slot: kind_slot + 1], prefix[kind_slot + 1:]
    a, stop = frame[:1], frame[1:]
    centred = F.rms_norm(kind - slot_mean, (kind.size(-1),))
    return {"a small red apple.": ("noun", noun),
            "a small red <v>.": ("noun", distinct),
            "a small red <kind slot>.": ("noun", kind),
            "a <v>.": ("unframed", torch.cat([a, distinct, stop])),
            "a <kind slot>.": ("unframed", torch.cat([a, kind, stop])),
            "<kind slot>.": ("unframed", torch.cat([kind, stop])),
            "a <c>. (the kind slot centred)": ("unframed", torch.cat([a, centred, stop])),
            "a small red <prefix>.": ("noun", prefix),
            "a <prefix>.": ("unframed", torch.cat([a, prefix, stop])),
            "<prefix>.": ("unframed", torch.cat([prefix, stop])),
            "<prefix>": ("unframed", prefix),
            "<prefix>, kind slot <v>": ("unframed", torch.cat([before, distinct, after])),
            "<prefix>, kind slot apple": ("unframed", torch.cat([before, noun, after])),
            "<prefix>, kind slot its nearest word": ("unframed", torch.cat([before, nearest, after])),
            "<prefix>, kind slot <c>": ("unframed", torch.cat([before, centred, after])),
            "<prefix> a <v>.": ("unframed", torch.cat([prefix, a, distinct, stop])),
            "<prefix> a small red apple.": ("unframed", torch.cat([prefix, described]))}


def kind_slot(prefixes, kinds):
    """The prefix slot least alike across kinds (mean cosine over pairs of things of different
    kinds; the separation table's 'across'): where a model keeps the kind. prefixes (N, n, D)."""
    unit = F.normalize(prefixes.float(), dim=-1).transpose(0, 1)  # (n, N, D)
    ids = {kind: i for i, kind in enumerate(dict.fromkeys(kinds))}
    kind_ids = torch.tensor([ids[kind] for kind in kinds])
    other = kind_ids[:, None] != kind_ids[None, :]  # (N, N)
    return int((unit @ unit.transpose(1, 2))[:, other].mean(-1).argmin())


def part_prompts(lm, tokenizer, episodes, prefixes, seed=0):
    """Slotted binding episodes (world.episodes(as_slots=True)) as embedded prompts (T, D), with
    each thing in each of part_forms: {form: [one prompt an episode]}. prefixes: for each episode,
    its images' visual prefixes (N, n, D) in the order of its slots (the image episodes of the
    same draw). Also returns the kind's slot (kind_slot over all the episodes' things)."""
    generator, rms, width = torch.Generator().manual_seed(seed), lm.embedding_rms().cpu(), lm.config.n_embd
    device, table = lm.wte.weight.device, lm.wte.weight.detach().cpu()
    frame = table[frame_ids(tokenizer)] / rms
    slots_of = [[p for p in e.pieces if not isinstance(p, str)] for e in episodes]
    things = torch.cat(list(prefixes))
    slot = kind_slot(things, [s.scene.objects[0].kind for slots in slots_of for s in slots])
    slot_mean = things[:, slot].float().mean(0).cpu() / rms
    prompts = {}
    for episode, prefix, slots in zip(episodes, prefixes, slots_of):
        nouns = [table[tokenizer.encode(" " + world.KINDS[s.scene.objects[0].kind].name)] / rms for s in slots]
        # a thing is never a binding episode's first piece: its text has the leading space
        described = [table[tokenizer.encode(" " + world.describe(thing.scene.objects[0]))] / rms for thing in slots]
        distinct = noun_vectors(slots, width, generator, geometry=(0.0, 1.0), kinds=episode.info["kinds"])
        scaled = prefix.float().cpu() / rms
        nearest = table[nearest_tokens(scaled[:, slot], table, k=1)[1][:, 0]] / rms  # (N, D)
        forms = [part_forms(*parts, frame, slot, word[None], slot_mean)
                 for *parts, word in zip(scaled, nouns, described, distinct, nearest)]
        for name, (form, _) in forms[0].items():
            ids, vectors, is_slot = passage_tensors(episode.pieces, tokenizer, 1, width, generator,
                                                    ThingDraw(form=form), [f[name][1] for f in forms])
            prompts.setdefault(name, []).append(embed_with_vectors(lm, ids.to(device), vectors, is_slot))
    return prompts, slot


@torch.no_grad()
def prefix_part_rows(lm, tokenizer, episodes, prefixes, seed=0, batch_size=50):
    """Binding accuracy of the episodes with each thing in each of part_forms (part_prompts)."""
    rows = []
    forms, slot = part_prompts(lm, tokenizer, episodes, prefixes, seed)
    for name, prompts in forms.items():
        answers = answer_embedded(lm, tokenizer, prompts, batch_size)
        rows.append(dict(form=name, kind_slot=slot, **score_binding(answers, episodes)))
    return rows
