"""bench.py: every stage runs through the real code paths and reports positive numbers (no timing
assertions: the machine is shared)."""

import json

import bench

TINY = ["--steps", "2", "--warmup", "1", "--batch-size", "2", "--n-layer", "1", "--n-embd", "32",
        "--n-head", "2", "--vocab-size", "64", "--block-size", "16", "--image-size", "32",
        "--caption-len", "4", "--prompt-len", "4", "--new-tokens", "4"]
ROW_KEYS = {"stage", "device", "dtype", "config", "batch", "rate", "unit", "step_ms", "tflops", "mfu",
            "peak_mem_mib"}


def test_every_stage_reports_rates_flops_and_memory(capsys):
    results = bench.main([*TINY, "--device", "cpu", "--json"])
    assert set(results) == {"lm", "prefix", "sample_cached", "sample_uncached", "kv_cache_speedup"}
    for name in ("lm", "prefix", "sample_cached", "sample_uncached"):
        row = results[name]
        assert set(row) == ROW_KEYS
        assert row["rate"] > 0 and row["step_ms"] > 0 and row["peak_mem_mib"] > 0, row
        assert row["mfu"] is None  # a CPU has no known peak unless --peak-tflops is given
    assert results["lm"]["unit"] == "tok/s" and results["prefix"]["unit"] == "pairs/s"
    assert results["lm"]["tflops"] > 0 and results["prefix"]["tflops"] > 0
    assert results["kv_cache_speedup"] > 0
    assert json.loads(capsys.readouterr().out) == results  # --json prints exactly what main returns


def test_bf16_autocast_and_a_given_peak_give_mfu():
    results = bench.main([*TINY, "--stage", "lm", "--device", "cpu", "--dtype", "bfloat16",
                          "--peak-tflops", "1"])
    row = results["lm"]
    assert row["dtype"] == "bfloat16"
    assert row["mfu"] == row["tflops"] / 1.0 > 0


def test_lm_flops_are_nanogpts_estimate():
    from gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    N = model.num_params()
    assert bench.gpt_flops_per_token(model, 16) == 6 * N + 12 * 2 * 2 * 16 * 16
    # frozen weights: no weight gradients, so 4N instead of 6N
    assert bench.gpt_flops_per_token(model, 16, weight_grads=False) == 4 * N + 12 * 2 * 32 * 16
