"""train.py under torchrun: two CPU processes (gloo) reach the weights of one process that sees
the same global batch, in both stages; only rank 0 writes; a two-process run resumes exactly.

Each distributed run is `python -m torch.distributed.run --nproc_per_node=2 train.py ...`, as a
user types it; the one-process references run in this process.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

import checkpoint
import train
from data import Tokenizer

from conftest import lm_args, write_pairs

REPO = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(argv, nproc=2):
    """train.py ARGV in `nproc` CPU processes; fails the test with the processes' output."""
    port = free_port()
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={port}", "train.py", *argv, "--device", "cpu"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def assert_same_weights(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=1e-4), (name, (a[name] - b[name]).abs().max())


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def logged_steps(path):
    return [int(r["step"]) for r in checkpoint.read_log(path) if "loss" in r]


def test_stage_lm_two_processes_with_accumulation_and_resume_match_one_process(corpus, tmp_path):
    # one process: 4 rows per step
    train.main(lm_args(corpus, tmp_path / "one", 4, "--batch-size", "4"))
    # two processes x 1 row x 2 micro-batches, killed after step 2 (its last checkpoint), resumed.
    # Steps 0-1 are warmup, so the lr does not depend on --max-steps there.
    two = tmp_path / "two"
    torchrun(lm_args(corpus, two, 2, "--batch-size", "1", "--grad-accum", "2"))
    assert torch.load(two / "lm.pt", weights_only=True)["step"] == 2
    torchrun(lm_args(corpus, two, 4, "--batch-size", "1", "--grad-accum", "2", "--resume"))

    assert Tokenizer(two / "tokenizer.json").hash == Tokenizer(tmp_path / "one" / "tokenizer.json").hash
    assert_same_weights(weights(tmp_path / "one" / "lm.pt"), weights(two / "lm.pt"))
    assert logged_steps(two / "lm_log.txt") == [2, 4]  # one line per interval: only rank 0 logs
    assert sorted(p.name for p in two.iterdir()) == ["lm.pt", "lm_log.txt", "tokenizer.json"]


def prefix_args(lm_dir, data, out, steps, *extra):
    return ["--stage", "prefix", "--lm-ckpt", str(lm_dir / "lm.pt"), "--data", str(data),
            "--out-dir", str(out), "--max-steps", str(steps), "--image-size", "32", "--num-workers", "0",
            "--warmup-steps", "1", "--log-interval", "1", "--eval-interval", "3", "--eval-batches", "1",
            "--ckpt-interval", "3", "--lr", "3e-3", *extra]


def first_step_gradients(path):
    """The gradient of a run's first step, read from its step-1 checkpoint: after one AdamW step
    exp_avg = (1 - beta1) * grad exactly, whatever the lr (its weights after several steps would
    not do: Adam divides by sqrt(v), which amplifies float rounding wherever a gradient is near 0)."""
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 1
    beta1 = ckpt["train_config"]["beta1"]
    return [s["exp_avg"] / (1 - beta1) for s in ckpt["optimizer"]["state"].values()]


def assert_same_gradients(a, b):
    """Equal up to float32 summation order: the batch is summed in another order when split
    over micro-batches or processes, so each gradient may differ by a few ulps of the largest
    term summed, ~1e-6 of the gradient's scale; a wrong weighting of tokens is off by ~10%."""
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        scale = x.abs().max().item()
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-5 * scale), (i, (x - y).abs().max().item(), scale)


def test_stage_prefix_gradients_are_token_weighted_over_processes_and_micro_batches(lm_dir, tmp_path):
    # captions of 3 to 9 words: a step's rows hold different numbers of caption tokens, so a mean
    # of per-process (or per-micro-batch) means would weight tokens unequally and differ
    data = tmp_path / "pairs"
    data.mkdir()
    for i, (_, caption) in enumerate(write_pairs(data, 24)):
        (data / f"{i:03d}.txt").write_text(caption[:-1] + " near the tree" * (i % 3) + ".")
    tokenizer = Tokenizer(lm_dir / "tokenizer.json")
    assert len({len(tokenizer.encode(p.read_text())) for p in data.glob("*.txt")}) > 2

    one_step = ("--ckpt-interval", "1", "--eval-interval", "1")
    train.main(prefix_args(lm_dir, data, tmp_path / "one", 1, "--batch-size", "4", *one_step))
    train.main(prefix_args(lm_dir, data, tmp_path / "accum", 1, "--batch-size", "2", "--grad-accum", "2", *one_step))
    torchrun(prefix_args(lm_dir, data, tmp_path / "two", 1, "--batch-size", "2", *one_step))

    one = first_step_gradients(tmp_path / "one" / "prefix.pt")
    assert_same_gradients(one, first_step_gradients(tmp_path / "accum" / "prefix.pt"))
    assert_same_gradients(one, first_step_gradients(tmp_path / "two" / "prefix.pt"))
    assert logged_steps(tmp_path / "two" / "prefix_log.txt") == [1]
