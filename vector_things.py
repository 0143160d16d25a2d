"""
Binding passages whose things are input vectors: an optional stage-lm lever (README, "Why binding
through images is hard"), `python train.py --stage lm --vector-things 0.25`. Off by default.

Frozen's few-shot binding (Sec. 4.3, open-ended miniImageNet) asks the frozen LM to find, among
the support images' visual prefixes, the one that matches the query image's, and to copy the name
that followed it. The corpus teaches binding in text, where a query's description repeats a
support's tokens, and induction heads match identical tokens. Two pictures of a kind never give
identical prefixes, only nearby ones, and an LM that has only ever read tokens has no reason to
match nearby input vectors (the ladder: its own captions as text bind, its prefixes do not).

Here a share of stage lm's rows are the corpus's binding passages (world/text.py:
passage_binding_slots: the paper's layout, training names) in which each thing is n input vectors
drawn fresh for every passage: each kind a random prototype, every example of it a noisy copy,
part of every prototype shared by all the kinds of the passage (as pictures share a background).
No such vector is a row of the embedding table, so the only way to name the query is to match
its vectors against the support's in context, which is what the frozen LM must do with visual
prefixes. This departs from the paper, whose LM read text only: README reports results with and
without it.
"""

import argparse
import random
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import world
from checkpoint import load_lm
from data import InputError, row_seed
from scoring import answer_embedded, score_binding
from world.fewshot import Slot
from world.text import passage_binding_slots


def thing_vectors(slots, n, width, gen, hardness=1.0):
    """(n, width) vectors for each Slot, in order: a prototype per kind, sqrt(a) of it shared by
    the passage's kinds; each distinct scene a noisy copy, noise share b; the same scene object,
    the same vectors. a, b and an overall scale are drawn per passage, so the LM meets near and far
    kinds, clean and noisy examples, small and large vectors. Unit variance before the scale.
    hardness scales a and b: 1 draws a in [0, 0.75), b in [0.1, 0.6); 0.5 half of each."""
    a = hardness * 0.75 * torch.rand((), generator=gen)
    b = hardness * (0.1 + 0.5 * torch.rand((), generator=gen))
    scale = 2.0 ** (2 * torch.rand((), generator=gen) - 1)  # 0.5 .. 2
    common = torch.randn(n, width, generator=gen)
    prototypes, examples, out = {}, {}, []
    for slot in slots:
        kind = slot.scene.objects[0].kind
        if kind not in prototypes:
            prototypes[kind] = a.sqrt() * common + (1 - a).sqrt() * torch.randn(n, width, generator=gen)
        if id(slot.scene) not in examples:
            noise = torch.randn(n, width, generator=gen)
            examples[id(slot.scene)] = scale * ((1 - b).sqrt() * prototypes[kind] + b.sqrt() * noise)
        out.append(examples[id(slot.scene)])
    return out


# (between, within): the expected cosine of two things' vectors of different kinds, and of the
# same kind. Distinct words are (0, 1); the preset's prefixes sit near (0.89, 0.94) (README's
# geometry table, eval.py --task text-binding)
VECTOR_GEOMETRIES = ((0.0, 1.0), (0.0, 0.9), (0.0, 0.75), (0.0, 0.5), (0.5, 1.0), (0.75, 1.0), (0.9, 1.0),
                     (0.9, 0.97), (0.93, 0.96))


def geometry_vectors(kinds, count, geometry, width, generator):
    """For each kind, `count` vectors (count, width) at unit rms whose expected cosine is `between`
    across kinds and `within` inside one: a part shared by all, a part of the kind's own and a part
    of each vector's own, with variances between, within - between and 1 - within (independent
    random directions are near orthogonal)."""
    between, within = geometry
    shared = torch.randn(width, generator=generator)
    vectors = {}
    for kind in kinds:
        own, each = torch.randn(width, generator=generator), torch.randn(count, width, generator=generator)
        mixed = between ** 0.5 * shared + (within - between) ** 0.5 * own + (1 - within) ** 0.5 * each
        vectors[kind] = F.rms_norm(mixed, (width,))
    return vectors


def noun_vectors(slots, width, gen, hardness=1.0, geometry=None, kinds=None, within=0.5):
    """One vector (1, width) for each Slot, in order, for the form 'a small red <v>.', drawn by
    geometry_vectors (the kinds' vectors in the order of `kinds`, by default sorted). Without a
    `geometry`, one is drawn per passage: a part shared by the passage's kinds of cosine `between`
    in [0, 0.95) (times hardness), and copies of a kind alike at a cosine at least the share
    `within` of the way from between to 1 (by default halfway): so the LM meets things that share
    most of their vector, as visual prefixes do, and must match on what differs."""
    if geometry is None:
        between = hardness * 0.95 * torch.rand((), generator=gen).item()
        share = within + (1 - within) * torch.rand((), generator=gen).item()
        geometry = (between, between + (1 - between) * share)
    of_slot = [slot.scene.objects[0].kind for slot in slots]
    vectors = geometry_vectors(kinds or sorted(set(of_slot)), len(slots), geometry, width, gen)
    used = dict.fromkeys(vectors, 0)
    out = []
    for kind in of_slot:
        out.append(vectors[kind][used[kind]][None])
        used[kind] += 1
    return out


def prefix_like_vectors(slots, n, width, gen, hardness=1.0, within=0.5, kind_slot=None):
    """n vectors (n, width) for each Slot, laid out as a trained visual prefix is (README, "What
    else a prefix lacks"): n - 1 slots nearly the same for every thing of the passage (a vector
    drawn per passage, 5% noise of each thing's own), and one, the kind's, a noun_vectors vector (a
    part shared by the kinds, copies of a kind alike), at position `kind_slot` (None: drawn per
    passage). The LM must match on that one slot and pass over the others, as it would over a
    prefix's shared slots."""
    shared = torch.randn(n, width, generator=gen)
    drawn = int(torch.randint(n, (), generator=gen))  # drawn even when fixed: the other draws stay as they were
    kind_slot = drawn if kind_slot is None else kind_slot
    nouns = noun_vectors(slots, width, gen, hardness, within=within)
    examples, out = {}, []
    for slot, noun in zip(slots, nouns):
        if id(slot.scene) not in examples:
            thing = F.rms_norm(0.95 ** 0.5 * shared + 0.05 ** 0.5 * torch.randn(n, width, generator=gen), (width,))
            thing[kind_slot] = noun[0]
            examples[id(slot.scene)] = thing
        out.append(examples[id(slot.scene)])
    return out


@dataclass(frozen=True)
class ThingDraw:
    """How a passage's things are drawn, in training and in its scores alike. form: unframed, a
    thing is its n thing_vectors; prefix, its n prefix_like_vectors; noun, its words 'a small red',
    one noun_vectors vector, '.'. hardness: the kinds' overlap and the examples' noise (each
    function); within: how alike copies of a kind are at the least, for noun and prefix
    (noun_vectors); kind_slot: the prefix form's kind slot, None drawn per passage."""
    form: str = "unframed"
    hardness: float = 1.0
    within: float = 0.5
    kind_slot: int | None = None

    def things(self, slots, n, width, gen):
        """The vectors of each Slot, in order."""
        if self.form == "noun":
            return noun_vectors(slots, width, gen, self.hardness, within=self.within)
        if self.form == "prefix":
            return prefix_like_vectors(slots, n, width, gen, self.hardness, self.within, self.kind_slot)
        return thing_vectors(slots, n, width, gen, self.hardness)


def passage_tensors(pieces, tokenizer, n, width, gen, draw=ThingDraw(), things=None):
    """Pieces (strings and Slots) -> ids (L,), pad_id at each slot's vector positions; vectors
    (L, width), the slot's vectors there and zeros on text; is_slot (L,). Text after anything gets
    a leading space, as data.encode_pieces joins pieces. draw: how the things are drawn and
    written (ThingDraw); things: the slots' vectors, in order, instead of drawing them."""
    form = draw.form
    if things is None:
        things = draw.things([p for p in pieces if isinstance(p, Slot)], n, width, gen)
    things = iter(things)
    ids, vectors, is_slot = [], [], []

    def text(words):
        tokens = tokenizer.encode(words)
        ids.extend(tokens)
        vectors.append(torch.zeros(len(tokens), width))
        is_slot.extend([False] * len(tokens))

    for i, piece in enumerate(pieces):
        lead = " " if i > 0 else ""
        if not isinstance(piece, Slot):
            text(lead + piece)
            continue
        if form == "noun":
            obj = piece.scene.objects[0]
            text(lead + world.noun_phrase(obj.kind, obj.colour, obj.size).rsplit(" ", 1)[0])  # 'a small red'
        thing = next(things)
        ids.extend([tokenizer.pad_id] * len(thing))
        vectors.append(thing)
        is_slot.extend([True] * len(thing))
        if form == "noun":
            text(".")
    return torch.tensor(ids), torch.cat(vectors), torch.tensor(is_slot)


class VectorThings:
    """Stage-lm rows of binding passages with vector things. Row r of batch k is packed from its
    own passages (seeded by seed, split, k, r), end-of-text between them, like data.WorldText."""

    def __init__(self, tokenizer, block_size, n_vectors, width, seed=0, split="train", draw=ThingDraw()):
        self.tokenizer, self.block_size, self.n, self.width, self.draw = tokenizer, block_size, n_vectors, width, draw
        self.seed = seed if split == "train" else seed + 1_000_003

    def row(self, k, r):
        """ids (T + 1,), vectors (T + 1, width) (zeros on text), is_slot (T + 1,) bool."""
        rng = random.Random(row_seed(self.seed, k, r, 7))
        gen = torch.Generator().manual_seed(row_seed(self.seed, k, r, 8) % 2 ** 63)
        end_of_text = (torch.tensor([self.tokenizer.eot_id]), torch.zeros(1, self.width), torch.tensor([False]))
        parts, length = [], 0
        while length < self.block_size + 1:
            parts += [passage_tensors(passage_binding_slots(rng), self.tokenizer, self.n, self.width, gen, self.draw),
                      end_of_text]
            length += len(parts[-2][0]) + 1
        T = self.block_size + 1
        return tuple(torch.cat(column)[:T] for column in zip(*parts))


def vector_batch(source, k, rows):
    """Inputs, targets, vectors and the slot mask (len(rows), block_size) of batch k: as
    data.text_batch, with no loss where the next position is a slot (a vector is not a token)."""
    ids, vectors, is_slot = (torch.stack(t) for t in zip(*(source.row(k, r) for r in rows)))
    targets = ids[:, 1:].masked_fill(is_slot[:, 1:], -100)
    return ids[:, :-1], targets, vectors[:, :-1], is_slot[:, :-1]


def embed_with_vectors(lm, ids, vectors, is_slot):
    """The LM's input embeddings of `ids`, with the slots' vectors in place of their tokens, scaled
    to the size of a token embedding (the table's rms, no gradient through the scale)."""
    vectors = vectors.to(device=ids.device, dtype=lm.wte.weight.dtype)
    return torch.where(is_slot[..., None].to(ids.device), lm.embedding_rms() * vectors, lm.embed(ids))


@torch.no_grad()
def vector_binding_score(lm, tokenizer, n_episodes, n_vectors, split="val", batch_size=50, draw=ThingDraw(),
                         **options):
    """Binding through vector things: world's binding episodes (the paper's layout) with each
    image a Slot, filled as in training; the greedy answer scored as the image episodes are."""
    episodes = world.episodes("binding", n_episodes, split=split, as_slots=True, **options)
    gen = torch.Generator().manual_seed(row_seed(split, n_vectors, 9))
    device, sequences = lm.wte.weight.device, []
    for ep in episodes:
        ids, vectors, is_slot = passage_tensors(ep.pieces, tokenizer, n_vectors, lm.config.n_embd, gen, draw)
        sequences.append(embed_with_vectors(lm, ids.to(device), vectors, is_slot))
    return score_binding(answer_embedded(lm, tokenizer, sequences, batch_size), episodes)


def main(argv=None):
    """`python vector_things.py --lm-ckpt out/lm.pt --hardness 0 0.3 1`: an LM's binding through
    vector things at each hardness (0: every example its kind's prototype, the query an exact copy)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--lm-ckpt", default="out/lm.pt")
    parser.add_argument("--hardness", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args(argv)
    try:
        lm, tokenizer, ckpt = load_lm(args.lm_ckpt)
    except InputError as e:
        sys.exit(f"error: {e}")
    n = ckpt["train_config"].get("n_vectors", 4)
    print(f"{args.lm_ckpt}: binding through {n} vectors a thing, 1 inner shot, {args.episodes} val episodes a cell")
    print("| hardness | 2-way | 5-way |\n|---|---|---|")
    for hardness in args.hardness:
        acc = [vector_binding_score(lm.eval(), tokenizer, args.episodes, n, draw=ThingDraw(hardness=hardness), ways=w,
                                    inner_shots=1)["acc"] for w in (2, 5)]
        print(f"| {hardness:g} | {acc[0]:.2f} | {acc[1]:.2f} |")


if __name__ == "__main__":
    main()
