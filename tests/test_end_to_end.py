"""The whole pipeline through the entry points, on tiny settings: stage lm on the world's text,
stage prefix on the world's images with the LM frozen, then few-shot prompts from examples/."""

import sample
import train
from checkpoint import read_log


def test_lm_then_prefix_then_few_shot_samples(tmp_path, capsys):
    out = tmp_path / "run"
    train.main(["--stage", "lm", "--out-dir", str(out), "--max-steps", "200", "--vocab-size", "512",
                "--n-layer", "2", "--n-embd", "64", "--n-head", "2", "--block-size", "128",
                "--batch-size", "8", "--warmup-steps", "5", "--log-interval", "10", "--eval-interval", "200",
                "--eval-batches", "1", "--icl-episodes", "4", "--ckpt-interval", "200",
                "--tokenizer-chars", "200000"])
    evaluations = [r for r in read_log(out / "lm_log.txt") if "val_loss" in r]
    assert [r["step"] for r in evaluations] == [200]  # the in-context scores are logged beside the loss
    scores = {k: evaluations[0][k] for k in ("copy", "bind2_paper", "bind5_paper", "bind2_direct", "bind5_direct")}
    assert all(0.0 <= v <= 1.0 for v in scores.values()), scores

    train.main(["--stage", "prefix", "--out-dir", str(out), "--max-steps", "100", "--batch-size", "16",
                "--image-size", "32", "--num-workers", "0", "--warmup-steps", "1", "--log-interval", "1",
                "--eval-interval", "100", "--eval-batches", "1", "--ckpt-interval", "100"])
    losses = [r["loss"] for r in read_log(out / "prefix_log.txt") if "loss" in r]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    # measured: 2.60 -> 2.31 (mean of the first and the last 10 steps); the LM only had 200 steps
    assert last < 0.93 * first

    capsys.readouterr()
    sample.main(["--ckpt", str(out / "prefix.pt"), "--shots", "examples/", "--max-new-tokens", "4"])
    printed = capsys.readouterr().out
    for task in ("bind_nonsense_names", "visual_qa", "outside_knowledge"):
        assert f"== {task}" in printed
    assert printed.count("completion:") == len(sample.EXAMPLES)
    assert "<image>" in printed and "(expected:" in printed
