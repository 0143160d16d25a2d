"""Shared fixtures: a tiny text corpus, a tiny stage-lm run, and small image-caption folders."""

import random

import pytest
import torch
from PIL import Image, ImageDraw

torch.set_num_threads(1)  # predictable on 2 cores, also beside the 2-process DDP test


@pytest.fixture(autouse=True)
def float32_on_every_cpu(monkeypatch):
    """--dtype auto trains in float32 in the tests, as on a CPU without bf16 arithmetic: the same
    code paths and tolerances on every CPU kind (test_train_lm.py and test_frozen.py test the choice)."""
    import common

    monkeypatch.setattr(common, "cpu_bf16_flags", lambda: dict.fromkeys(common.CPU_BF16_FLAGS, False))


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU with bf16 arithmetic, whatever this one has."""
    import common

    monkeypatch.setattr(common, "cpu_bf16_flags", lambda: dict.fromkeys(common.CPU_BF16_FLAGS, True))
    monkeypatch.setattr(common, "choose_cpu_attention", lambda rt, *shape, quiet=False: None)


def timed_as(monkeypatch, bf16_speedup):
    """time_cpu_dtypes measuring bf16 at bf16_speedup x float32's speed; the calls it got."""
    import common

    calls = []

    def fake(step):
        calls.append(step)
        return {torch.float32: 1.0, torch.bfloat16: 1.0 / bf16_speedup}

    monkeypatch.setattr(common, "time_cpu_dtypes", fake)
    return calls


WORDS = "the a red blue green small big apple car bird sits flies on under near tree house".split()
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def write_corpus(folder, n_lines=600, seed=0):
    rng = random.Random(seed)
    for i in range(2):
        lines = (" ".join(rng.choice(WORDS) for _ in range(10)) + "." for _ in range(n_lines))
        (folder / f"part{i}.txt").write_text("\n".join(lines))
    return folder


def lm_args(corpus, out, steps, *extra):
    """A 2-layer, width-32 GPT on a few KB of text: seconds on a CPU."""
    return ["--stage", "lm", "--text", str(corpus), "--out-dir", str(out), "--max-steps", str(steps),
            "--vocab-size", "300", "--n-layer", "2", "--n-embd", "32", "--n-head", "2",
            "--block-size", "32", "--batch-size", "4", "--warmup-steps", "2", "--log-interval", "2",
            "--eval-interval", "4", "--eval-batches", "1", "--ckpt-interval", "4",
            "--tokenizer-chars", "20000", "--icl-episodes", "0", *extra]


def shape_image(colour, shape, size=(40, 32)):
    im = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(im)
    (d.ellipse if shape == "circle" else d.rectangle)([6, 6, size[0] - 8, size[1] - 6], fill=COLOURS[colour])
    return im


def write_pairs(folder, n=24, seed=0):
    """img2dataset's layout: 000.png + 000.txt, ..."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(["circle", "square"])
        shape_image(colour, shape).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(f"a {colour} {shape}.")
        pairs.append((f"{i:03d}.png", f"a {colour} {shape}."))
    return pairs


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="session")
def lm_dir(corpus, tmp_path_factory):
    """A trained tiny stage-lm run folder (lm.pt + tokenizer.json)."""
    import train

    out = tmp_path_factory.mktemp("lm")
    train.main(lm_args(corpus, out, 8))
    return out
