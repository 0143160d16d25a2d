"""bench.py: every stage runs through the real code paths and reports positive numbers, ratios and
the machine (no timing assertions: the machine is shared)."""

import json

import pytest
import torch

import bench
import common
import gpt

TINY = ["--steps", "1", "--rounds", "2", "--warmup", "1", "--batch-size", "2", "--n-layer", "1",
        "--n-embd", "32", "--n-head", "2", "--vocab-size", "64", "--block-size", "16", "--image-size", "32",
        "--caption-len", "4", "--prompt-len", "4", "--new-tokens", "4", "--device", "cpu"]
ROW_KEYS = {"stage", "device", "dtype", "config", "batch", "rate", "unit", "step_ms", "warmup_s", "tflops", "mfu",
            "peak_mem_mib"}
ROWS = {"lm", "prefix", "sample_cached", "sample_uncached"}


def test_every_stage_reports_rates_flops_memory_and_the_machine(capsys):
    results = bench.main([*TINY, "--json"])
    assert set(results) == ROWS | {"machine", "ratios", "dtype_choice"}
    for name in ROWS:
        row = results[name]
        assert set(row) == ROW_KEYS
        assert row["rate"] > 0 and row["step_ms"] > 0 and row["peak_mem_mib"] > 0, row
        assert row["mfu"] is None  # a CPU has no known peak unless --peak-tflops is given
    assert results["lm"]["unit"] == "tok/s" and results["prefix"]["unit"] == "pairs/s"
    assert results["lm"]["tflops"] > 0 and results["prefix"]["tflops"] > 0
    assert results["ratios"]["KV cache / none"] > 0
    assert results["machine"]["cpu"] and set(results["machine"]["cpu_bf16"]) == set(common.CPU_BF16_FLAGS)
    # --dtype auto on a CPU: stage lm in float32 unmeasured, as train.py keeps it; the others
    # measured both and ran in the one they picked, and measured which attention is faster under bf16
    assert set(results["dtype_choice"]) == {"lm", "prefix", "sample"}
    assert results["dtype_choice"]["lm"]["dtype"] == results["lm"]["dtype"] == "float32"
    assert "bf16_over_fp32" not in results["dtype_choice"]["lm"]
    for stage in ("prefix", "sample"):
        choice = results["dtype_choice"][stage]
        assert choice["bf16_over_fp32"] > 0 and isinstance(choice["float32_attention"], bool)
        assert results["sample_cached" if stage == "sample" else stage]["dtype"] == choice["dtype"]
    assert json.loads(capsys.readouterr().out) == results  # --json prints exactly what main returns


def test_the_table_prints_ratios_and_the_cpu_first(capsys):
    bench.main([*TINY, "--stage", "sample", "--dtype", "float32"])
    lines = capsys.readouterr().out.splitlines()
    assert common.cpu_name() in lines[0]
    assert lines[1].strip().startswith("KV cache / none:")


def test_baseline_runs_in_the_same_dtype_and_gives_the_ratio():
    # (--compile adds the eager rows; not tested here: a CPU compile takes most of a minute)
    results = bench.main([*TINY, "--stage", "lm", "--baseline", "--dtype", "bfloat16"])
    assert {results[name]["dtype"] for name in ("lm", "lm_baseline")} == {"bfloat16"}
    assert "baseline: plain" in results["lm_baseline"]["config"]
    assert results["ratios"]["lm / baseline"] > 0


def test_baseline_fp32_times_the_plain_gpt_without_autocast_beside_ours_in_bf16(monkeypatch):
    autocast_in_plain = []
    forward = bench.PlainGPT.forward

    def watched(self, *args, **kwargs):
        autocast_in_plain.append(torch.is_autocast_enabled("cpu"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(bench.PlainGPT, "forward", watched)
    results = bench.main([*TINY, "--stage", "lm", "--baseline-fp32", "--dtype", "bfloat16", "--rounds", "1"])
    assert results["lm"]["dtype"] == results["lm_baseline"]["dtype"] == "bfloat16"
    assert results["lm_baseline_fp32"]["dtype"] == "float32" and results["ratios"]["lm / baseline in float32"] > 0
    assert True in autocast_in_plain and False in autocast_in_plain  # the same-dtype row, and the float32 one


def test_profile_prints_each_contenders_busiest_ops(capsys):
    bench.main([*TINY, "--stage", "lm", "--baseline", "--dtype", "float32", "--profile", "5"])
    err = capsys.readouterr().err
    for name in ("lm", "lm_baseline"):
        assert f"bench.py: profile of {name}, 1 calls" in err
    assert "aten::mm" in err and "Self CPU" in err


def test_cpu_attention_flag_is_set_for_the_run_and_restored():
    before = gpt.float32_attention_on_cpu
    results = bench.main([*TINY, "--stage", "lm", "--dtype", "bfloat16", "--cpu-attention", "float32"])
    assert results["dtype_choice"]["lm"] == {"float32_attention": True, "dtype": "bfloat16"}
    assert gpt.float32_attention_on_cpu == before


def test_a_given_peak_gives_mfu():
    row = bench.main([*TINY, "--stage", "lm", "--dtype", "float32", "--peak-tflops", "1"])["lm"]
    assert row["mfu"] == row["tflops"] / 1.0 > 0


def test_time_cpu_dtypes_times_both_in_turns():
    calls = []

    def step():  # bf16 made slow on purpose
        calls.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        if calls[-1] == torch.bfloat16:
            torch.randn(300, 300) @ torch.randn(300, 300)

    seconds = common.time_cpu_dtypes(step, steps=1, rounds=2)
    assert set(seconds) == {torch.float32, torch.bfloat16} and calls.count(torch.bfloat16) == 3
    assert calls[2:] == [torch.float32, torch.bfloat16] * 2  # after one untimed call each, in turns
    assert common.auto_cpu_dtype(common.bf16_speedup(seconds)) == torch.float32 == min(seconds, key=seconds.get)


@pytest.mark.parametrize("bf16_seconds, kept", [(0.5, torch.bfloat16), (0.9, torch.float32), (2.0, torch.float32)])
def test_auto_keeps_bf16_only_clearly_faster(bf16_seconds, kept):
    """1.11x faster is inside run-to-run noise: float32, in bench.py as in train.py."""
    speedup = common.bf16_speedup({torch.float32: 1.0, torch.bfloat16: bf16_seconds})
    assert speedup == 1.0 / bf16_seconds and common.auto_cpu_dtype(speedup) == kept


def test_lm_flops_are_nanogpts_estimate():
    from gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    N = model.num_params()
    assert bench.gpt_flops_per_token(model, 16) == 6 * N + 12 * 2 * 2 * 16 * 16
    # frozen weights: no weight gradients, so 4N instead of 6N
    assert bench.gpt_flops_per_token(model, 16, weight_grads=False) == 4 * N + 12 * 2 * 32 * 16


def test_training_measures_cpu_attention_only_under_bf16(monkeypatch):
    """train.py's choose_cpu_attention: under bf16 on a CPU the flag is the measurement's answer;
    in float32 (or on another device) it is left alone."""
    monkeypatch.setattr(gpt, "float32_attention_on_cpu", False)
    monkeypatch.setattr(common, "bf16_attention_is_slower", lambda *shape: shape == (2, 2, 8, 16))
    lm_config = gpt.GPTConfig(n_head=2, n_embd=32)  # head_dim 16
    common.choose_cpu_attention(common.Runtime(torch.device("cpu"), torch.float32, 0, 1), 2, lm_config, 8)
    assert gpt.float32_attention_on_cpu is False
    common.choose_cpu_attention(common.Runtime(torch.device("cpu"), torch.bfloat16, 0, 1), 2, lm_config, 8)
    assert gpt.float32_attention_on_cpu is True
    monkeypatch.undo()
    assert isinstance(common.bf16_attention_is_slower(1, 1, 4, 8, rounds=1), bool)  # the real one runs
