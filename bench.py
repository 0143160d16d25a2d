"""
Benchmark each stage: throughput, step time, model FLOPs utilisation (MFU) and peak memory.

  python bench.py                                  # every stage, tiny preset, CUDA if present
  python bench.py --stage lm --dtype bfloat16      # bf16 autocast, on CPUs too (AMX: wins from width ~256)
  python bench.py --stage lm --n-embd 256          # any GPT or Frozen config field is a flag
  python bench.py --preset small --compile --json  # one GPU; JSON for machines

What is timed is the real code: gpt.py's GPT and frozen.py's Frozen built from train.py's preset
configs (the Frozen around a randomly initialised, frozen GPT), train.py's optimizer (AdamW,
fused on CUDA) and its clipping (global norm for the LM, AGC for the encoder), under train.py's
autocast. The data is random tokens and images made once on the device, so data loading (drawing
the world, decoding, tokenising, the DataLoader) is *not* measured: the rates are upper bounds
for train.py's. A step is one batch of --batch-size (grad_accum is ignored). The first --warmup
steps (allocator, kernel choice, torch.compile) run untimed.

FLOPs per training step (matmuls and convolutions only; elementwise ops are not counted):
- lm: nanoGPT's estimate_mfu (after PaLM, Chowdhery et al. 2022, App. B): 6N per token for the
  N parameters (forward 2N, backward 4N) plus attention's 12 * n_layer * n_embd * T per token,
  T the context, counted as if not causal.
- prefix: the encoder and its projection counted by torch.utils.flop_counter.FlopCounterMode on one
  forward, x3 for forward + backward. The frozen LM's backward computes the gradients of its
  activations (to reach the prefix) but not of its weights: its matmuls cost 2N per token forward
  and 2N backward, attention 4 * n_layer * n_embd * S forward and twice that backward (q, k and v
  all need gradients), so 4N + 12 * n_layer * n_embd * S per token of the S = n_prefix + caption
  positions: about 2x its forward, not the 3x of a trained model. (Counted analytically because
  FlopCounterMode does not see CPU attention kernels; for the same reason, and the x3, the count
  of an encoder with --lm-block is rough.)
- sampling: no MFU; a few tokens per forward are bound by memory traffic and Python, not FLOPs.
MFU = achieved FLOP/s over the device's peak dense bf16 FLOP/s (the table below, from NVIDIA's
datasheets), or over --peak-tflops for any other device, CPUs included; "-" when unknown.

Peak memory: on CUDA, max_memory_allocated, reset before each stage. On CPU, the process's
maximum resident set size (resource.getrusage), which cannot be reset: it includes the Python
process and torch (a few hundred MiB), and a later stage's number includes the earlier stages'.
"""

import argparse
import json
import resource
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import train
from frozen import Frozen, FrozenConfig, caption_targets
from gpt import GPT, GPTConfig

# dense (non-sparse) bf16 tensor-core peak, TFLOP/s, NVIDIA datasheets; first match wins
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0)]


# ---------------------------------------------------------------------------------------------
# measuring


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn, calls, warmup, device):
    """Mean wall time of fn() over `calls` calls, after `warmup` calls that are not timed."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / calls


def reset_peak_memory(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def peak_flops(device, override_tflops):
    """The device's peak FLOP/s, or None when unknown."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_TFLOPS:
            if key in name:
                return tflops * 1e12
    return None


def forward_flops(fn):
    """Matmul and convolution FLOPs of one call of fn(), counted by FlopCounterMode."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def gpt_flops_per_token(model, T, weight_grads=True):
    """Forward + backward FLOPs per token of a GPT over T positions (see the module docstring)."""
    c = model.config
    matmuls = (6 if weight_grads else 4) * model.num_params()
    return matmuls + 12 * c.n_layer * c.n_embd * T


def result(args, rt, stage, config, batch, rate, unit, step_s, flops_per_step=None):
    """One row of the table."""
    tflops = flops_per_step / step_s / 1e12 if flops_per_step else None
    peak = peak_flops(rt.device, args.peak_tflops)
    return {"stage": stage, "device": str(rt.device), "dtype": str(rt.dtype).replace("torch.", ""),
            "config": config, "batch": batch, "rate": rate, "unit": unit, "step_ms": step_s * 1000,
            "tflops": tflops, "mfu": tflops * 1e12 / peak if (tflops and peak) else None,
            "peak_mem_mib": peak_memory_mib(rt.device)}


# ---------------------------------------------------------------------------------------------
# the stages


def gpt_config(args):
    return train.build_config(GPTConfig, args, train.PRESETS["lm"][args.preset]["model"])


def describe_gpt(model):
    c = model.config
    return f"GPT {c.n_layer}x{c.n_embd} V{c.vocab_size} {model.num_params() / 1e6:.1f}M"


def bench_lm(args, rt):
    """A train.py stage-lm step on random tokens: forward, backward, clip, AdamW."""
    cfg = train.LMConfig(**train.PRESETS["lm"][args.preset]["train"])
    model_cfg = gpt_config(args)
    B, T = args.batch_size or cfg.batch_size, model_cfg.block_size
    torch.manual_seed(0)
    model = GPT(model_cfg).to(rt.device).train()
    optimizer = train.make_optimizer(train.decay_groups(model.parameters(), cfg.weight_decay), cfg, rt.device)
    train_model = torch.compile(model) if args.compile else model
    x = torch.randint(model_cfg.vocab_size, (B, T), device=rt.device)
    y = torch.randint(model_cfg.vocab_size, (B, T), device=rt.device)

    def step():
        with rt.autocast():
            _, loss = train_model(x, targets=y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    reset_peak_memory(rt.device)
    step_s = seconds_per_call(step, args.steps, args.warmup, rt.device)
    return result(args, rt, "lm", f"{describe_gpt(model)}, T {T}", B, B * T / step_s, "tok/s", step_s,
                  gpt_flops_per_token(model, T) * B * T)


def bench_prefix(args, rt):
    """A train.py stage-prefix step on random images and captions: the frozen LM's captioning loss,
    backward into the encoder, AGC, AdamW."""
    preset = train.PRESETS["prefix"][args.preset]
    cfg = train.PrefixConfig(**preset["train"])
    frozen_cfg = train.build_config(FrozenConfig, args, preset["model"])
    B, L, S = args.batch_size or cfg.batch_size, args.caption_len, frozen_cfg.image_size
    torch.manual_seed(0)
    model = Frozen(GPT(gpt_config(args)), frozen_cfg).to(rt.device).train()
    memory_format = torch.channels_last if rt.device.type == "cuda" else torch.contiguous_format
    model.vision.to(memory_format=memory_format)  # as train.py
    optimizer = train.make_optimizer(train.prefix_param_groups(model, cfg), cfg, rt.device)
    train_model = torch.compile(model) if args.compile else model
    images = torch.randn(B, 3, S, S, device=rt.device).contiguous(memory_format=memory_format)
    captions = torch.randint(2, model.lm.config.vocab_size, (B, L)).tolist()
    inputs, targets = (t.to(rt.device) for t in caption_targets(captions, frozen_cfg.n_prefix, eot_id=0, pad_id=1))

    def step():
        with rt.autocast():
            loss = train_model(images, inputs, targets)
        loss.backward()
        train.clip_prefix_gradients(model, cfg)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    encoder_flops = 3 * forward_flops(lambda: model.vision(images))
    positions = frozen_cfg.n_prefix + L
    lm_flops = gpt_flops_per_token(model.lm, positions, weight_grads=False) * B * positions
    reset_peak_memory(rt.device)
    step_s = seconds_per_call(step, args.steps, args.warmup, rt.device)
    config = (f"{frozen_cfg.encoder} {S}px n={frozen_cfg.n_prefix}, caption {L}, "
              f"frozen {describe_gpt(model.lm)}")
    return result(args, rt, "prefix", config, B, B / step_s, "pairs/s", step_s, encoder_flops + lm_flops)


def bench_sample(args, rt):
    """Greedy generation of --new-tokens after a --prompt-len prompt, with and without the KV cache."""
    model_cfg = gpt_config(args)
    torch.manual_seed(0)
    model = GPT(model_cfg).to(rt.device).eval()
    B, P, N = args.sample_batch, args.prompt_len, args.new_tokens
    prompt = torch.randint(model_cfg.vocab_size, (B, P), device=rt.device)
    rows = {}
    for name, use_cache in (("sample_cached", True), ("sample_uncached", False)):
        def generate():
            with rt.autocast():
                # no stop tokens: every row makes all N tokens
                model.generate(prompt, max_new_tokens=N, use_cache=use_cache)

        reset_peak_memory(rt.device)
        call_s = seconds_per_call(generate, args.steps, min(args.warmup, 1), rt.device)
        config = f"{describe_gpt(model)}, {'KV cache' if use_cache else 'no cache'}, {P} + {N} tokens"
        # step: one new token (one forward of the batch)
        rows[name] = result(args, rt, "sample", config, B, B * N / call_s, "tok/s", call_s / N)
    return rows


# ---------------------------------------------------------------------------------------------
# report


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_table(results, rt):
    print(f"bench.py: synthetic data (data loading not measured), {rt.device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    header = ["stage", "dtype", "batch", "rate", "step ms", "TFLOP/s", "MFU", "peak MiB", "config"]
    lines = [header]
    for row in (r for r in results.values() if isinstance(r, dict)):
        lines.append([row["stage"], row["dtype"], str(row["batch"]), f"{row['rate']:,.0f} {row['unit']}",
                      f"{row['step_ms']:.2f}", fmt(row["tflops"], ".3g"), fmt(row["mfu"], ".1%"),
                      f"{row['peak_mem_mib']:,.0f}", row["config"]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    if "kv_cache_speedup" in results:
        print(f"KV cache speedup: {results['kv_cache_speedup']:.1f}x (sample step = one new token)")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["lm", "prefix", "sample", "all"], default="all",
                        help="which stage to measure (default: all)")
    parser.add_argument("--preset", choices=["tiny", "small"], default="tiny",
                        help="train.py's preset for the model configs and batch sizes")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (sampling: timed generate calls)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (sampling: at most 1)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present) | cpu | cuda")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="autocast precision; auto: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training models")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows per training step (default: the preset's, per stage)")
    parser.add_argument("--caption-len", type=int, default=16, help="caption tokens per image (prefix)")
    parser.add_argument("--sample-batch", type=int, default=1, help="prompts generated together (sampling)")
    parser.add_argument("--prompt-len", type=int, default=32, help="prompt tokens (sampling)")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens per prompt (sampling)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s for MFU (default: the table for NVIDIA GPUs)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    # every model field, as in train.py: --block-size, --n-embd, --encoder, --image-size, ...
    train.add_dataclass_args(parser, GPTConfig, "GPT (all stages; default: the preset's)")
    train.add_dataclass_args(parser, FrozenConfig, "Frozen (stage prefix; default: the preset's)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    rt = train.setup_runtime(args.device, args.dtype)
    stages = ["lm", "prefix", "sample"] if args.stage == "all" else [args.stage]
    results = {}
    if "lm" in stages:
        results["lm"] = bench_lm(args, rt)
    if "prefix" in stages:
        results["prefix"] = bench_prefix(args, rt)
    if "sample" in stages:
        results.update(bench_sample(args, rt))
        results["kv_cache_speedup"] = results["sample_cached"]["rate"] / results["sample_uncached"]["rate"]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results, rt)
    return results


if __name__ == "__main__":
    main()
