"""
What every training script shares (train.py's two stages, lmblock.py's classify stage, bench.py):
the run config every stage starts from, the command line generated from dataclasses, device and
precision, processes under torchrun, the learning-rate schedule and the optimizer, resuming, and
the per-interval log line. Each stage's loop itself is written out in its script.
"""

import argparse
import contextlib
import math
import os
import platform
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.distributed as dist
import torch.nn.functional as F

import gpt
from checkpoint import Log, config_differences, load_checkpoint
from data import InputError, row_seed

# ---------------------------------------------------------------------------------------------
# the fields every stage has


@dataclass
class RunConfig:
    """A training run: where it writes, its seed, batch, optimizer, schedule and intervals.
    Each stage's config extends this one with its own fields and defaults."""
    out_dir: str = "out"
    seed: int = 0
    batch_size: int = 32  # rows per process per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    max_steps: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    log_interval: int = 20
    eval_interval: int = 250
    ckpt_interval: int = 250
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | bfloat16 (autocast)
    compile: str = "auto"  # auto | true | false
    resume: bool = False


# fields a resumed run may change: they say how the run is watched and where it runs, not what it
# trains (the global batch is compared as a whole, so a resume may regroup it into micro-steps)
RESUMABLE_FIELDS = ("max_steps", "resume", "log_interval", "eval_interval", "ckpt_interval", "eval_batches",
                    "icl_episodes", "eval_images", "num_workers", "device", "compile", "out_dir", "lm_ckpt",
                    "batch_size", "grad_accum", "image_dir", "max_bad")


# ---------------------------------------------------------------------------------------------
# the command line, generated from the dataclasses


def parse_bool(text):
    if isinstance(text, bool):
        return text
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_dataclass_args(parser, cls, group_name):
    """One flag per field (`n_layer` -> `--n-layer`), default None so that presets fill the rest."""
    group = parser.add_argument_group(group_name)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            group.add_argument(flag, type=parse_bool, nargs="?", const=True, default=None,
                               dest=f.name, help=f"(bool, default {f.default})")
        else:
            group.add_argument(flag, type=type(f.default), default=None, dest=f.name,
                               help=f"(default {f.default})")


def build_config(cls, args, preset_values):
    """Dataclass defaults, then the preset's values, then the flags that were given."""
    values = dict(preset_values)
    values.update({f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None})
    try:
        return cls(**values)
    except ValueError as e:  # the config's own check of a flag's value (its __post_init__)
        raise InputError(str(e)) from None


# ---------------------------------------------------------------------------------------------
# device, precision, processes


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype  # autocast dtype, or float32 for none
    rank: int = 0
    world_size: int = 1

    @property
    def master(self):
        return self.rank == 0

    @property
    def precision(self):
        """'float32' or 'bfloat16', as --dtype names it and checkpoints record it."""
        return str(self.dtype).removeprefix("torch.")

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def setup_runtime(device="auto", dtype="auto"):
    """Pick the device and precision (auto: bf16 on CUDA, float32 on a CPU, where train.py's
    stage prefix then measures whether bf16 pays: choose_precision); join the process group when
    launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device = torch.device(device)
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    return Runtime(device, getattr(torch, dtype), rank, world_size)


def choose_cpu_attention(rt, batch, lm_config, T, quiet=False):
    """Under bf16 autocast on a CPU, run attention in float32 where this CPU's bf16 attention is
    the slower (2.1x at 16 x 128 positions on a Zen 4; slower too at the tiny preset on an Intel
    with AMX; gpt.py's float32_attention_on_cpu), measured at the stage's shape: batch rows of T
    positions through the heads of the GPT of lm_config. Elsewhere nothing changes."""
    if rt.device.type != "cpu" or rt.dtype != torch.bfloat16:
        return
    head_dim = lm_config.n_embd // lm_config.n_head
    gpt.float32_attention_on_cpu = bf16_attention_is_slower(batch, lm_config.n_head, T, head_dim)
    if rt.master and not quiet:
        print(f"bf16 on a CPU: attention in {cpu_attention_dtype()} (measured faster)")


def cpu_attention_dtype():
    return "float32" if gpt.float32_attention_on_cpu else "bf16"


def bf16_attention_is_slower(batch, n_head, T, head_dim, rounds=3):
    """Whether PyTorch's causal attention, forward and backward, at this shape is slower in bf16
    than in float32 on this CPU (timed in turns, the fastest round of each; it was on every CPU
    measured so far, an Intel with AMX included)."""
    inputs = {dtype: [torch.randn(batch, n_head, T, head_dim, dtype=dtype, requires_grad=True) for _ in range(3)]
              for dtype in (torch.bfloat16, torch.float32)}

    def run(dtype):
        F.scaled_dot_product_attention(*inputs[dtype], is_causal=True).sum().backward()

    seconds = {dtype: [] for dtype in inputs}
    for dtype in inputs:
        run(dtype)  # untimed
    for _ in range(rounds):
        for dtype in inputs:
            t0 = time.perf_counter()
            run(dtype)
            seconds[dtype].append(time.perf_counter() - t0)
    return min(seconds[torch.bfloat16]) > min(seconds[torch.float32])


# the CPU: its name, its bf16 arithmetic, the autocast dtype --dtype auto keeps on it (in train.py
# and bench.py alike)

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")  # bf16 dot products; AMX tiles
# --dtype auto keeps bf16 only this much faster than float32: the same step timed twice on these
# 2-core machines differs by up to ~10%, and a choice that flips between runs would make a
# command train differently from one run to the next on one machine
AUTO_BF16_MIN_SPEEDUP = 1.15
# the stages --dtype auto keeps in float32 on a CPU, however fast bf16 autocast measures: trained
# in bf16 the LM binds worse exactly what the visual prefix needs matched, though it reads text as
# well (six seeds on two CPUs; README, Precision); --dtype bfloat16 still asks for it
AUTO_FLOAT32_STAGES_ON_CPU = ("lm",)


def cpu_name():
    """lscpu's "Model name", else /proc/cpuinfo's "model name", else what platform knows."""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for line in cpuinfo_lines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpuinfo_lines():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read().splitlines()
    except OSError:  # not Linux
        return []


def cpu_bf16_flags():
    """{flag: bool} for the bf16 features of CPU_BF16_FLAGS, from /proc/cpuinfo's flags (all False
    where there is no /proc/cpuinfo)."""
    flags = set()
    for line in cpuinfo_lines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {flag: flag in flags for flag in CPU_BF16_FLAGS}


def time_cpu_dtypes(step, steps=2, rounds=3):
    """Time step() under CPU autocast in float32 (no autocast) and bfloat16, in turns, after one
    untimed call each; return {dtype: seconds per step}, each dtype's fastest round: on a shared
    machine noise only ever adds time, so the fastest round is the best estimate of its speed.

    step: a callable without arguments doing one training step (forward, backward, optimizer),
    without an autocast of its own. It trains what it trains: give it a model whose weights do
    not matter, or a copy.
    """
    def run(dtype):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            step()

    dtypes = (torch.float32, torch.bfloat16)
    for dtype in dtypes:
        run(dtype)  # untimed: the allocator, oneDNN's kernel choice, a compile for this dtype
    seconds = {dtype: [] for dtype in dtypes}
    for _ in range(rounds):
        for dtype in dtypes:
            t0 = time.perf_counter()
            for _ in range(steps):
                run(dtype)
            seconds[dtype].append((time.perf_counter() - t0) / steps)
    return {dtype: min(s) for dtype, s in seconds.items()}


def bf16_speedup(seconds):
    """bf16 autocast's speed as a multiple of float32's, from time_cpu_dtypes' seconds."""
    return seconds[torch.float32] / seconds[torch.bfloat16]


def auto_cpu_dtype(speedup):
    """What --dtype auto keeps on a CPU at bf16_speedup `speedup`, in train.py and bench.py alike:
    bf16 autocast only where it is AUTO_BF16_MIN_SPEEDUP x faster than float32."""
    return torch.bfloat16 if speedup >= AUTO_BF16_MIN_SPEEDUP else torch.float32


def choose_precision(rt, asked, trial_step, attention, stage, recorded=None):
    """The stage's autocast precision; rt with it set. --dtype float32 or bfloat16 as asked; auto:
    bf16 on CUDA; on a CPU float32 for the stages in AUTO_FLOAT32_STAGES_ON_CPU, and for the others
    bf16 autocast only where the CPU has bf16 arithmetic (CPU_BF16_FLAGS) and the stage's own
    training step, trial_step() (forward and backward, weights untouched), measures
    AUTO_BF16_MIN_SPEEDUP x faster in it (a Zen 4: ~1.5x at the tiny preset; emulated elsewhere,
    0.07-0.4x). A resumed run keeps the precision its
    checkpoint recorded; several processes on a CPU stay float32 (each would measure its own).
    attention: (batch, lm_config, T) for choose_cpu_attention. Prints the choice and why."""
    reason = None
    if asked == "auto" and rt.device.type == "cpu":
        if recorded:
            asked, reason = recorded, "as the checkpoint resumed from recorded"
        elif stage in AUTO_FLOAT32_STAGES_ON_CPU:
            asked, reason = "float32", f"stage {stage} trains worse in bf16 (README, Precision; --dtype bfloat16 asks)"
        elif rt.world_size > 1 or not any(cpu_bf16_flags().values()):
            asked, reason = "float32", "several processes" if rt.world_size > 1 else "no bf16 arithmetic on this CPU"
    if asked != "auto" or rt.device.type != "cpu":  # setup_runtime's choice, or the one asked
        rt = replace(rt, dtype=getattr(torch, asked)) if asked != "auto" else rt
        choose_cpu_attention(rt, *attention)
        if reason and rt.master:
            print(f"precision (--dtype auto): {rt.precision}, {reason}")
        return rt
    rt = replace(rt, dtype=torch.bfloat16)
    choose_cpu_attention(rt, *attention, quiet=True)  # said below, if bf16 is kept
    with torch.random.fork_rng(devices=[]):
        speedup = bf16_speedup(time_cpu_dtypes(trial_step))
    if auto_cpu_dtype(speedup) == torch.float32:
        rt, gpt.float32_attention_on_cpu = replace(rt, dtype=torch.float32), False
    if rt.master:
        attention = f", attention in {cpu_attention_dtype()} (measured faster)" if rt.dtype == torch.bfloat16 else ""
        print(f"precision (--dtype auto): {rt.precision}{attention}; bf16 autocast measured {speedup:.2f}x float32's "
              f"speed at this stage's step on this CPU (kept at {AUTO_BF16_MIN_SPEEDUP}x or more)")
    return rt


def resolve_compile(flag, device):
    return device.type == "cuda" if flag == "auto" else parse_bool(flag)


def usable_workers(asked, rt):
    """DataLoader workers. -1 (auto): none on a CPU, whose cores the model's threads already use
    (a drawing worker only takes turns with them: stage prefix on 2 cores ran 1.2x faster with 0
    workers than with 2, and 1.05-1.3x faster than with 1 on a Zen 3, 122-132 against 139-173 ms a
    step, three runs each), up to 4 beside a GPU. A number asked is capped at this process's share
    of the cores (more only makes the processes fight over them)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = max(1, cores // rt.world_size)
    if asked < 0:
        return 0 if rt.device.type == "cpu" else min(4, share)
    if asked > share and rt.master:
        print(f"note: --num-workers {asked} capped at {share}, the cores this process has")
    return min(asked, share)


def warn_if_gpu_preset_on_cpu(preset, device):
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if preset != "tiny" and on_cpu:
        warnings.warn(f"--preset {preset} is sized for one GPU; on this CPU a step takes seconds to minutes "
                      f"and memory runs to GBs. Use --preset tiny on a CPU.", stacklevel=2)


def seed_step(seed, step, rank):
    """Seed torch's generator from (seed, step, rank) at every step: dropout masks (and any other
    draw) are then a function of the step, so a resumed run repeats an unbroken one exactly, and
    each process of a torchrun job draws its own."""
    torch.manual_seed(row_seed(seed, step, rank) % 2**63)


# ---------------------------------------------------------------------------------------------
# learning rate and optimizer


def lr_at(step, cfg, cosine=True):
    """Linear warmup, then cosine decay to cfg.min_lr (or constant when cosine is False)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if not cosine:
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def make_optimizer(param_groups, cfg, device):
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **extra)


def decay_groups(params, weight_decay):
    """Weight decay on matrices (linear and embedding weights), none on gains and biases."""
    params = [p for p in params if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------
# resuming


def run_record(cfg, model_config, rt, model_key="model_config"):
    """What a checkpoint stores about its run: the configs, and the global batch (rows per
    optimizer step, whatever the processes and micro-steps)."""
    return {"train_config": asdict(cfg), model_key: asdict(model_config),
            "global_batch": cfg.batch_size * cfg.grad_accum * rt.world_size, "precision": rt.precision}


def resume_from(path, kind, cfg, model_config, rt, model_key="model_config"):
    """The checkpoint to resume from, or None to start afresh. Refused, naming the fields, when
    the run asked for now differs from the one in the checkpoint in anything but the fields a
    resume may change; refused when --max-steps is below the checkpoint's step."""
    if not (cfg.resume and path.exists()):
        return None
    ckpt = load_checkpoint(path, kind)
    now = run_record(cfg, model_config, rt, model_key)
    saved_batch = ckpt.get("global_batch") or now["global_batch"]  # older checkpoints lack it
    diffs = (config_differences(ckpt["train_config"], now["train_config"], RESUMABLE_FIELDS, type(cfg))
             + config_differences(ckpt[model_key], now[model_key], cls=type(model_config))
             + config_differences({"global batch": saved_batch}, {"global batch": now["global_batch"]}))
    if diffs:
        raise InputError(f"{path}: --resume asks for another run than the checkpoint holds ({'; '.join(diffs)}); "
                         f"give the checkpoint's values, or another --out-dir for a new run")
    if ckpt["step"] > cfg.max_steps:
        raise InputError(f"{path}: the checkpoint is at step {ckpt['step']}, past --max-steps {cfg.max_steps}; "
                         f"nothing to train (raise --max-steps to continue)")
    return ckpt


def restore(ckpt, model, optimizer, path, strict=True):
    """Load a resumed run's weights and optimizer state; the step to continue from (0: fresh)."""
    if ckpt is None:
        return 0
    model.load_state_dict(ckpt["model"], strict=strict)
    optimizer.load_state_dict(ckpt["optimizer"])
    print(f"resuming from {path} at step {ckpt['step']}")
    return ckpt["step"]


def open_log(path, start_step, rt):
    """The stage's log; on resume, the lines a killed run wrote after its checkpoint are dropped
    (the resumed run writes those steps again)."""
    log = Log(path, enabled=rt.master)
    dropped = log.truncate_after(start_step) if start_step else 0
    if dropped:
        print(f"{path}: dropped {dropped} lines logged after the checkpoint's step {start_step}")
    return log


# ---------------------------------------------------------------------------------------------
# the log line of a training loop


def is_due(step, interval, max_steps):
    """Every `interval` steps, and at the last step."""
    return step % interval == 0 or step == max_steps


class StepLog:
    """Time since the last line, over the steps actually taken since then, and one log line:
    `step | loss | lr | dt_ms | <rate>` (the rate in `unit`, `items_per_step` per step)."""

    def __init__(self, log: Log, start_step, items_per_step, unit):
        self.log, self.items, self.unit = log, items_per_step, unit
        self.last_step, self.t0 = start_step, time.time()

    def write(self, step, loss, lr):
        dt = (time.time() - self.t0) / max(1, step - self.last_step)
        self.log.write(step=step, loss=loss, lr=lr, dt_ms=dt * 1000, **{self.unit: self.items / dt if dt else 0.0})
        self.restart(step)

    def restart(self, step):
        """Start timing afresh (after an evaluation, which is not a training step's time)."""
        self.last_step, self.t0 = step, time.time()
