"""
Benchmark each stage: throughput, step time, model FLOPs utilisation (MFU) and peak memory.

  python bench.py                                  # every stage, tiny preset, CUDA if present
  python bench.py --stage lm --baseline            # ours against a plain GPT of the same size
  python bench.py --stage lm --n-embd 256          # any GPT or Frozen config field is a flag
  python bench.py --preset small --compile --json  # one GPU; JSON for machines

What is timed is the real code: gpt.py's GPT and frozen.py's Frozen built from train.py's preset
configs (the Frozen around a randomly initialised, frozen GPT), train.py's optimizer (AdamW,
fused on CUDA) and its clipping (global norm for the LM, AGC for the encoder), under train.py's
autocast. The data is random tokens and images made once on the device, so data loading (drawing
the world, decoding, tokenising, the DataLoader) is *not* measured: the rates are upper bounds
for train.py's. A step is one batch of --batch-size (grad_accum is ignored). The first --warmup
steps (allocator, kernel choice, torch.compile) run untimed; their seconds are reported
(`warmup_s`, and `measure_s` for --dtype auto's trial steps, which compile first under --compile),
so that a compile's cost is seen. Contenders (ours and the baseline, cached and uncached
sampling) are timed in turns, --rounds times, and each rate is the median of its rounds: on a
shared machine, a slow spell then hits all of them instead of one.

--dtype auto (the default): bf16 on CUDA. On a CPU, as train.py does: stage lm in float32 (bf16
trains it worse: README, Precision; --dtype bfloat16 times it in bf16); the other stages, where
bf16 autocast pays only if the CPU has bf16 arithmetic (avx512_bf16, AMX) and the model is big
enough, time a few steps in float32 and in bf16 on this CPU, for the config at hand, and keep bf16
where it is 1.15x faster or more (`common.auto_cpu_dtype`). Before that, on a CPU, it times
causal attention at the stage's shape in both dtypes (`bf16_attention_is_slower`): where bf16
loses (every CPU measured so far, one with AMX included), gpt.py runs attention in float32 under
bf16 autocast (--cpu-attention sets it by hand).

--baseline (stage lm): a plain GPT of the same size, written for the comparison below
(`PlainGPT`: learned absolute positions, causal SDPA, nothing else), is timed in the same run with
the same batch, context, dtype, optimizer step and threads. Tricks of ours that the baseline could
use as well are shown both ways: with --compile both are compiled and both are timed eager too;
float32 attention under bf16 is ours only (--cpu-attention autocast turns it off).

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
import dataclasses
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import gpt
import train
from common import (AUTO_BF16_MIN_SPEEDUP, AUTO_FLOAT32_STAGES_ON_CPU, auto_cpu_dtype, bf16_attention_is_slower,
                    bf16_speedup, cpu_bf16_flags, cpu_name, time_cpu_dtypes)
from frozen import Frozen, FrozenConfig, caption_targets
from gpt import GPT, GPTConfig

# dense (non-sparse) bf16 tensor-core peak, TFLOP/s, NVIDIA datasheets; first match wins
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0)]


# ---------------------------------------------------------------------------------------------
# measuring


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_in_turns(contenders, rt, steps, rounds, warmup, profile=0):
    """contenders {name: fn}: each fn() runs under rt's autocast, `warmup` untimed calls first;
    then `rounds` rounds in which each contender makes `steps` calls in turn. Returns
    {name: (median seconds per call, seconds of the warmup calls)}. profile > 0: then print, for
    each contender, torch.profiler's `profile` ops with the most time of their own over `steps` calls."""
    def run(fn):
        with rt.autocast():
            fn()

    warmup_s = {}
    for name, fn in contenders.items():
        t0 = time.perf_counter()
        for _ in range(warmup):
            run(fn)
        sync(rt.device)
        warmup_s[name] = time.perf_counter() - t0
    seconds = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                run(fn)
            sync(rt.device)
            seconds[name].append((time.perf_counter() - t0) / steps)
    if profile:
        for name, fn in contenders.items():
            with torch.profiler.profile() as prof:
                for _ in range(steps):
                    run(fn)
                sync(rt.device)
            print(f"bench.py: profile of {name}, {steps} calls", file=sys.stderr)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=profile), file=sys.stderr)
    return {name: (statistics.median(s), warmup_s[name]) for name, s in seconds.items()}


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


def result(args, rt, stage, config, batch, rate, unit, step_s, warmup_s, flops_per_step=None):
    """One row of the table."""
    tflops = flops_per_step / step_s / 1e12 if flops_per_step else None
    peak = peak_flops(rt.device, args.peak_tflops)
    return {"stage": stage, "device": str(rt.device), "dtype": str(rt.dtype).replace("torch.", ""),
            "config": config, "batch": batch, "rate": rate, "unit": unit, "step_ms": step_s * 1000,
            "warmup_s": warmup_s, "tflops": tflops, "mfu": tflops * 1e12 / peak if (tflops and peak) else None,
            "peak_mem_mib": peak_memory_mib(rt.device)}


def stage_runtime(args, rt, step, attention_shape, stage):
    """rt with the stage's autocast dtype: the one asked for, or with --dtype auto on a CPU the
    faster of float32 and bf16 for this stage's step, but float32 for a stage that train.py keeps
    in float32 (common.AUTO_FLOAT32_STAGES_ON_CPU: stage lm); and what was measured for it, if
    anything.

    On a CPU, first whether attention under bf16 autocast runs in float32 (gpt.py's
    float32_attention_on_cpu): per --cpu-attention, or measured at attention_shape (B, nh, T, hd).
    """
    choice, t0 = {}, time.perf_counter()
    if args.dtype == "auto" and rt.device.type == "cpu" and stage in AUTO_FLOAT32_STAGES_ON_CPU:
        choice["as_train"] = f"float32, as train.py keeps stage {stage} on a CPU (--dtype bfloat16 times bf16)"
        return dataclasses.replace(rt, dtype=torch.float32), choice
    if rt.device.type == "cpu" and args.dtype != "float32":
        if args.cpu_attention == "auto":
            gpt.float32_attention_on_cpu = bf16_attention_is_slower(*attention_shape)
        else:
            gpt.float32_attention_on_cpu = args.cpu_attention == "float32"
        choice["float32_attention"] = gpt.float32_attention_on_cpu
    if args.dtype == "auto" and rt.device.type == "cpu":
        speedup = bf16_speedup(time_cpu_dtypes(step))
        rt = dataclasses.replace(rt, dtype=auto_cpu_dtype(speedup))
        choice["bf16_over_fp32"] = speedup
        choice["measure_s"] = time.perf_counter() - t0  # with --compile, the compiles for both dtypes
    return rt, choice


# ---------------------------------------------------------------------------------------------
# the baseline of --baseline: a plain GPT, written for the comparison and used nowhere else.
# GPT-2's layers as in nanoGPT (bias=False) with learned absolute positions and causal SDPA;
# no RoPE, no smeared keys, no KV cache.


class PlainBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head = c.n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(c.n_embd, bias=False), nn.LayerNorm(c.n_embd, bias=False)
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd, bias=False)
        self.proj = nn.Linear(c.n_embd, c.n_embd, bias=False)
        self.fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=False)
        self.fc_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x))))


class PlainGPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList([PlainBlock(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=False)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


# ---------------------------------------------------------------------------------------------
# the stages


def gpt_config(args):
    return train.build_config(GPTConfig, args, train.PRESETS["lm"][args.preset]["model"])


def describe_gpt(model):
    c = model.config
    return f"GPT {c.n_layer}x{c.n_embd} V{c.vocab_size} {model.num_params() / 1e6:.1f}M"


def lm_step(model, x, y, cfg, device, compile_it):
    """A train.py stage-lm step on fixed tokens: forward, backward, clip, AdamW."""
    optimizer = train.make_optimizer(train.decay_groups(model.parameters(), cfg.weight_decay), cfg, device)
    train_model = torch.compile(model) if compile_it else model

    def step():
        _, loss = train_model(x, targets=y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench_lm(args, rt):
    """Stage lm on random tokens; with --baseline, PlainGPT too (and with --compile, both eager
    and compiled)."""
    cfg = train.LMConfig(**train.PRESETS["lm"][args.preset]["train"])
    model_cfg = gpt_config(args)
    B, T = args.batch_size or cfg.batch_size, model_cfg.block_size
    x = torch.randint(model_cfg.vocab_size, (B, T), device=rt.device)
    y = torch.randint(model_cfg.vocab_size, (B, T), device=rt.device)
    models = {"lm": GPT, "lm_baseline": PlainGPT} if args.baseline else {"lm": GPT}
    contenders, described, flops, built = {}, {}, {}, {}
    for name, cls in models.items():
        torch.manual_seed(0)
        model = built[name] = cls(model_cfg).to(rt.device).train()
        variants = {name: args.compile}
        if args.compile and args.baseline:
            variants[name + "_eager"] = False
        for variant, compiled in variants.items():  # eager and compiled: the same weights
            contenders[variant] = lm_step(model, x, y, cfg, rt.device, compiled)
            described[variant] = (f"{'baseline: plain ' if cls is PlainGPT else ''}{describe_gpt(model)}, T {T}"
                                  f"{', compiled' if compiled else ''}")
            flops[variant] = gpt_flops_per_token(model, T) * B * T
    if args.baseline_fp32:  # the plain GPT as written, without autocast, whatever ours runs in
        step = lm_step(built["lm_baseline"], x, y, cfg, rt.device, False)
        contenders["lm_baseline_fp32"] = without_autocast(step, rt.device)
        described["lm_baseline_fp32"], flops["lm_baseline_fp32"] = described["lm_baseline"], flops["lm_baseline"]
    head_dim = model_cfg.n_embd // model_cfg.n_head
    rt, choice = stage_runtime(args, rt, contenders["lm"], (B, model_cfg.n_head, T, head_dim), "lm")
    reset_peak_memory(rt.device)
    timed = time_in_turns(contenders, rt, args.steps, args.rounds, args.warmup, args.profile)
    as_run = {"lm_baseline_fp32": dataclasses.replace(rt, dtype=torch.float32)}  # autocast off
    rows = {name: result(args, as_run.get(name, rt), "lm", described[name], B, B * T / step_s, "tok/s", step_s,
                         warmup_s, flops[name])
            for name, (step_s, warmup_s) in timed.items()}
    return rows, choice


def without_autocast(step, device):
    def step_in_float32():
        with torch.autocast(device.type, enabled=False):
            step()
    return step_in_float32


def bench_prefix(args, rt):
    """A train.py stage-prefix step on random images and captions: the frozen LM's captioning loss,
    backward into the encoder, AGC, AdamW."""
    preset = train.PRESETS["prefix"][args.preset]
    cfg = train.PrefixConfig(**preset["train"])
    frozen_cfg = train.build_config(FrozenConfig, args, preset["model"])
    B, L, S = args.batch_size or cfg.batch_size, args.caption_len, frozen_cfg.image_size
    torch.manual_seed(0)
    model = Frozen(GPT(gpt_config(args)), frozen_cfg).to(rt.device).train()
    model.vision.to(memory_format=torch.channels_last)  # as train.py
    optimizer = train.make_optimizer(train.prefix_param_groups(model, cfg), cfg, rt.device)
    train_model = torch.compile(model) if args.compile else model
    images = torch.randn(B, 3, S, S, device=rt.device).contiguous(memory_format=torch.channels_last)
    captions = torch.randint(2, model.lm.config.vocab_size, (B, L)).tolist()
    inputs, targets = (t.to(rt.device) for t in caption_targets(captions, frozen_cfg.n_prefix, eot_id=0, pad_id=1))

    def step():
        loss = train_model(images, inputs, targets)
        loss.backward()
        train.clip_prefix_gradients(model, cfg)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    encoder_flops = 3 * forward_flops(lambda: model.vision(images))
    positions = frozen_cfg.n_prefix + L
    lm_flops = gpt_flops_per_token(model.lm, positions, weight_grads=False) * B * positions
    lm_cfg = model.lm.config
    attention_shape = (B, lm_cfg.n_head, positions, lm_cfg.n_embd // lm_cfg.n_head)
    rt, choice = stage_runtime(args, rt, step, attention_shape, "prefix")
    reset_peak_memory(rt.device)
    (step_s, warmup_s), = time_in_turns({"prefix": step}, rt, args.steps, args.rounds, args.warmup, args.profile).values()
    config = (f"{frozen_cfg.encoder} {S}px n={frozen_cfg.n_prefix}, caption {L}, "
              f"frozen {describe_gpt(model.lm)}")
    row = result(args, rt, "prefix", config, B, B / step_s, "pairs/s", step_s, warmup_s, encoder_flops + lm_flops)
    return {"prefix": row}, choice


def bench_sample(args, rt):
    """Greedy generation of --new-tokens after a --prompt-len prompt, with and without the KV cache
    (no stop tokens: every row makes all of them); with --compile also the compiled decoding step,
    whose tokens must be the eager ones."""
    model_cfg = gpt_config(args)
    torch.manual_seed(0)
    model = GPT(model_cfg).to(rt.device).eval()
    B, P, N = args.sample_batch, args.prompt_len, args.new_tokens
    prompt = torch.randint(model_cfg.vocab_size, (B, P), device=rt.device)
    contenders = {"sample_cached": lambda: model.generate(prompt, max_new_tokens=N),
                  "sample_uncached": lambda: model.generate(prompt, max_new_tokens=N, use_cache=False)}
    if args.compile:
        contenders["sample_compiled"] = lambda: model.generate(prompt, max_new_tokens=N, compile=True)
        if contenders["sample_compiled"]() != contenders["sample_cached"]():
            raise SystemExit("bench.py: the compiled decoding step made other tokens than the eager one")
    head_dim = model_cfg.n_embd // model_cfg.n_head
    attention_shape = (B, model_cfg.n_head, P + N, head_dim)
    rt, choice = stage_runtime(args, rt, contenders["sample_cached"], attention_shape, "sample")
    reset_peak_memory(rt.device)
    timed = time_in_turns(contenders, rt, 1, args.rounds, min(args.warmup, 1), args.profile)
    rows = {}
    for name, (call_s, warmup_s) in timed.items():
        how = {"sample_cached": "KV cache", "sample_uncached": "no cache", "sample_compiled": "KV cache, compiled"}[name]
        config = f"{describe_gpt(model)}, {how}, {P} + {N} tokens"
        # step: one new token (one forward of the batch)
        rows[name] = result(args, rt, "sample", config, B, B * N / call_s, "tok/s", call_s / N, warmup_s)
    return rows, choice


# ---------------------------------------------------------------------------------------------
# report


def ratios_of(rows):
    """The speed ratios that answer questions: ours against the baseline, compiled against eager,
    the KV cache against none."""
    ratios = {}

    def ratio(name, a, b):
        if a in rows and b in rows:
            ratios[name] = rows[a]["rate"] / rows[b]["rate"]

    ratio("lm / baseline", "lm", "lm_baseline")
    ratio("lm / baseline in float32", "lm", "lm_baseline_fp32")
    ratio("lm compiled / baseline eager", "lm", "lm_baseline_eager")
    ratio("lm eager / baseline eager", "lm_eager", "lm_baseline_eager")
    ratio("lm compiled / lm eager", "lm", "lm_eager")
    ratio("baseline compiled / baseline eager", "lm_baseline", "lm_baseline_eager")
    ratio("KV cache / none", "sample_cached", "sample_uncached")
    ratio("KV cache compiled / none", "sample_compiled", "sample_uncached")
    ratio("KV cache compiled / eager", "sample_compiled", "sample_cached")
    return ratios


def machine(rt):
    device = torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else "cpu"
    return {"device": device, "cpu": cpu_name(), "cpu_bf16": cpu_bf16_flags(), "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_report(results):
    m = results["machine"]
    bf16 = ", ".join(f"{flag} {'yes' if has else 'no'}" for flag, has in m["cpu_bf16"].items())
    print(f"bench.py: {m['cpu']} ({bf16}), {m['device']}, {m['threads']} threads, torch {m['torch']}; "
          f"synthetic data (data loading not measured)")
    for name, value in results["ratios"].items():
        print(f"  {name}: {value:.2f}x")
    for stage, choice in results["dtype_choice"].items():
        line = f"  {stage}: "
        if "bf16_over_fp32" in choice:
            line += (f"bf16 measured {choice['bf16_over_fp32']:.2f}x fp32's speed ({choice['measure_s']:.0f} s; "
                     f"kept at {AUTO_BF16_MIN_SPEEDUP}x or more) -> ")
        line += choice.get("as_train", choice["dtype"])
        if choice["dtype"] == "bfloat16":
            line += ", attention in " + ("float32 (measured faster)" if choice["float32_attention"] else "bf16")
        print(line)
    rows = {name: row for name, row in results.items() if isinstance(row, dict) and "rate" in row}
    header = ["row", "dtype", "batch", "rate", "step ms", "warmup s", "TFLOP/s", "MFU", "peak MiB", "config"]
    lines = [header]
    for name, row in rows.items():
        lines.append([name, row["dtype"], str(row["batch"]), f"{row['rate']:,.0f} {row['unit']}",
                      f"{row['step_ms']:.2f}", f"{row['warmup_s']:.1f}", fmt(row["tflops"], ".3g"),
                      fmt(row["mfu"], ".1%"), f"{row['peak_mem_mib']:,.0f}", row["config"]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["lm", "prefix", "sample", "all"], default="all",
                        help="which stage to measure (default: all)")
    parser.add_argument("--preset", choices=["tiny", "small"], default="tiny",
                        help="train.py's preset for the model configs and batch sizes")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round (sampling: one generate call)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of turns between the contenders (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (sampling: at most 1)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present) | cpu | cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for every contender (default: torch's, one per core)")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="autocast precision; auto: bf16 on CUDA, on a CPU the faster of the two, measured")
    parser.add_argument("--cpu-attention", choices=["auto", "float32", "autocast"], default="auto",
                        help="CPU, bf16 autocast: attention in float32, or in bf16 as autocast has it; "
                             "auto: the faster, measured (gpt.float32_attention_on_cpu)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training models, and the decoding step")
    parser.add_argument("--baseline", action="store_true", help="stage lm: time a plain GPT of the same size too")
    parser.add_argument("--baseline-fp32", action="store_true",
                        help="stage lm: --baseline, and the plain GPT in float32 too (no autocast) whatever ours is in")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows per training step (default: the preset's, per stage)")
    parser.add_argument("--caption-len", type=int, default=16, help="caption tokens per image (prefix)")
    parser.add_argument("--sample-batch", type=int, default=1, help="prompts generated together (sampling)")
    parser.add_argument("--prompt-len", type=int, default=32, help="prompt tokens (sampling)")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens per prompt (sampling)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s for MFU (default: the table for NVIDIA GPUs)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after timing, print each contender's N ops with the most self time (torch.profiler)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    # every model field, as in train.py: --block-size, --n-embd, --encoder, --image-size, ...
    train.add_dataclass_args(parser, GPTConfig, "GPT (all stages; default: the preset's)")
    train.add_dataclass_args(parser, FrozenConfig, "Frozen (stage prefix; default: the preset's)")
    args = parser.parse_args(argv)
    args.baseline = args.baseline or args.baseline_fp32
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    rt = train.setup_runtime(args.device, "float32" if args.dtype == "auto" else args.dtype)
    if args.dtype == "auto" and rt.device.type == "cuda":
        rt = dataclasses.replace(rt, dtype=torch.bfloat16)
    stages = {"lm": bench_lm, "prefix": bench_prefix, "sample": bench_sample}
    rows, dtype_choice = {}, {}
    float32_attention = gpt.float32_attention_on_cpu
    for stage, bench_stage in stages.items():
        if args.stage in (stage, "all"):
            stage_rows, choice = bench_stage(args, rt)
            rows.update(stage_rows)
            if choice:
                dtype_choice[stage] = {**choice, "dtype": next(iter(stage_rows.values()))["dtype"]}
    gpt.float32_attention_on_cpu = float32_attention  # as it was: a setting of this process
    results = {"machine": machine(rt), "ratios": ratios_of(rows), "dtype_choice": dtype_choice, **rows}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_report(results)
    return results


if __name__ == "__main__":
    main()
