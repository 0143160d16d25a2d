"""
The command line: look at the world, read its corpus, time it.

    python -m world --sheet out/sheet.png   a grid of images with their captions
    python -m world --text 2000             the first 2000 characters of the corpus
    python -m world --bench                 images/s and corpus chars/s
    python -m world --mix 5000              each passage type's share of the first 5000 documents
"""

import argparse
import os
import sys
import time

from .drawing import draw_sheet
from .scenes import SPLITS, World
from .text import corpus_text, text_document, text_documents


def sample_sheet(path: str, image_size=64, n=24, split="train", seed=0, cols=6):
    """The first n images of a split of the world, with their captions, as one PNG."""
    world = World(seed, image_size, split)
    return draw_sheet([world[i][:2] for i in range(n)], path, cols)


def bench(seconds=2.0):
    """Images drawn per second at three sizes, and corpus characters generated per second."""
    for size in (32, 64, 128):
        world, i, t0 = World(0, size), 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            world[i]
            i += 1
        print(f"images {size:>3}px: {i / (time.perf_counter() - t0):8.0f} /s")
    t0, chars = time.perf_counter(), 0
    for doc in text_documents(0):
        chars += len(doc) + 2
        if time.perf_counter() - t0 > seconds:
            break
    print(f"corpus: {chars / (time.perf_counter() - t0) / 1e6:8.2f} M chars/s")


def print_mix(seed, n):
    """The share of documents and of characters of each passage type in the corpus's first n."""
    docs, chars = {}, {}
    for i in range(n):
        kind, text = text_document(seed, i)
        docs[kind] = docs.get(kind, 0) + 1
        chars[kind] = chars.get(kind, 0) + len(text)
    total = sum(chars.values())
    print("| passage | documents | characters |\n|---|---|---|")
    for kind in sorted(chars, key=chars.get, reverse=True):
        print(f"| {kind} | {docs[kind] / n:.0%} | {chars[kind] / total:.0%} |")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m world",
                                     description="The drawn world: sample sheets, corpus samples, speed.")
    parser.add_argument("--sheet", help="write a grid PNG of images with their captions to this path")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels (32, 64 or 128)")
    parser.add_argument("--n", type=int, default=24, help="number of images on the sheet")
    parser.add_argument("--split", default="train", choices=sorted(SPLITS), help="which split to draw")
    parser.add_argument("--seed", type=int, default=0, help="world seed")
    parser.add_argument("--text", type=int, default=0, help="print this many characters of the corpus")
    parser.add_argument("--bench", action="store_true", help="print images/s and corpus chars/s")
    parser.add_argument("--mix", type=int, default=0, help="print each passage type's share of this many documents")
    args = parser.parse_args(argv)
    if not (args.sheet or args.text or args.bench or args.mix):
        parser.print_help()
        return
    if args.sheet:
        os.makedirs(os.path.dirname(os.path.abspath(args.sheet)), exist_ok=True)
        print(f"wrote {sample_sheet(args.sheet, args.size, args.n, args.split, args.seed)}")
    if args.text:
        sys.stdout.write(corpus_text(args.seed, args.text) + "\n")
    if args.bench:
        bench()
    if args.mix:
        print_mix(args.seed, args.mix)


if __name__ == "__main__":
    main()
