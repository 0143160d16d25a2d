"""
Training, in the paper's two stages (Frozen, Sec. 3):

  python train.py --stage lm       # tokenizer + GPT on text alone            -> out/lm.pt
  python train.py --stage prefix   # frozen GPT, train the vision encoder     -> out/prefix.pt

Each stage has a dataclass config; a preset (`--preset tiny|small`) fills it and every field can
be set from the command line (`--lr 1e-3`, `--n-layer 6`, `--resume`). Checkpoints are plain dicts
of tensors and Python values, written atomically (temp file, then rename) and loaded with
`weights_only=True`; `--resume` continues from the last one exactly (batch k is a pure function
of the seed and k). One log line per interval goes to out/<stage>_log.txt.

On CUDA: bf16 autocast, torch.compile, fused AdamW. Several GPUs:
`torchrun --nproc_per_node=N train.py --stage lm`, DistributedDataParallel, each process taking
its own rows of every batch; only rank 0 writes.
"""

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from data import (CaptionCollate, FileText, InputError, StepBatches, Tokenizer, WorldKinds, WorldText, black_images,
                  caption_dataset, file_hash, text_batch, train_tokenizer)
from nfresnet import adaptive_grad_clip
from frozen import Frozen, FrozenConfig, KindClassifier
from gpt import GPT, GPTConfig

# ---------------------------------------------------------------------------------------------
# configs and presets


@dataclass
class LMConfig:
    """Stage lm: train the tokenizer and the GPT on text."""
    out_dir: str = "out"
    text: str = ""  # a .txt file or folder of them; empty: the world's generated corpus
    seed: int = 0
    batch_size: int = 16  # sequences per process per micro-step
    grad_accum: int = 1
    max_steps: int = 3000
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    log_interval: int = 20
    eval_interval: int = 250  # val loss and in-context scores every N steps
    eval_batches: int = 8
    icl_episodes: int = 100  # episodes per in-context score (0: skip them)
    ckpt_interval: int = 250
    tokenizer_chars: int = 3_000_000  # text the BPE is trained on
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | bfloat16 (autocast)
    compile: str = "auto"  # auto | true | false
    resume: bool = False


@dataclass
class PrefixConfig:
    """Stage prefix: freeze the GPT, train the vision encoder with the captioning loss. The
    defaults are the paper's recipe (Sec. 3.2 and App. A): Adam with beta2 0.95, constant lr 3e-4
    after warmup, no weight decay; Adaptive Gradient Clipping on the NF-ResNet (NFNets)."""
    out_dir: str = "out"
    lm_ckpt: str = ""  # empty: <out_dir>/lm.pt
    data: str = "world"  # world | a COCO .json | a .jsonl | a folder of name.jpg + name.txt
    image_dir: str = ""  # COCO only: the images' folder (default: the .json's folder)
    max_bad: float = 0.05  # the largest share of bad image-caption pairs skipped with a warning
    seed: int = 0
    batch_size: int = 32
    grad_accum: int = 1
    max_steps: int = 1500
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    agc_clip: float = 0.01  # AGC's lambda (NFNets, Sec. 4.1; their default)
    lm_lr: float = 1e-5  # with --finetune-lm or --lm-init scratch (paper Sec. 4, ablations)
    finetune_lm: bool = False  # ablation: train the LM too
    lm_init: str = "pretrained"  # pretrained | scratch (ablation: random LM, trained)
    blind: bool = False  # ablation: black images in training
    num_workers: int = 2
    log_interval: int = 20
    eval_interval: int = 250
    eval_batches: int = 4
    ckpt_interval: int = 250
    device: str = "auto"
    dtype: str = "auto"
    compile: str = "auto"
    resume: bool = False


@dataclass
class ClassifyConfig:
    """The LM-block comparison (Pang et al. 2024): classify the world's kinds from single-object
    images with the NF-ResNet, with or without a block of the stage-lm GPT inside it."""
    out_dir: str = "out/classify"
    lm_ckpt: str = "out/lm.pt"  # where the LM block comes from (--lm-block)
    seed: int = 0
    batch_size: int = 32
    grad_accum: int = 1
    max_steps: int = 600
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 50
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    agc_clip: float = 0.01
    num_workers: int = 2
    log_interval: int = 20
    eval_interval: int = 200
    eval_images: int = 1000  # test images scored at each evaluation
    ckpt_interval: int = 200
    device: str = "auto"
    dtype: str = "auto"
    compile: str = "auto"
    resume: bool = False


PRESETS = {
    "classify": {
        # 64 px, lr 3e-3: measured, the tiny encoder reached 0.50 on kinds in 400 steps this way
        "tiny": dict(model=dict(encoder="tiny", image_size=64), train=dict(lr=3e-3, min_lr=3e-4, max_steps=1000)),
        "small": dict(model=dict(encoder="nf_resnet26", image_size=64), train=dict(batch_size=128, max_steps=3000)),
    },
    "prefix": {
        # lr 3e-3, not the paper's 3e-4: a tiny encoder from scratch on 96k images; measured at
        # 64 px, test scenes (eval.py --task caption, 100 episodes): caption kind / colour
        # 0.08 / 0.35 after 1000 steps at 1e-3; at 3e-3 0.22 / 0.67 after 1500, 0.40 / 0.88 after 3000
        # n = 4 prefix vectors, not the paper's 2: measured (`make paper`, 3000 steps) caption kind
        # 0.72 vs 0.40 and 2-way binding 0.75 vs 0.38; the paper's n = 1, 2, 4 ablation stays in `make paper`
        "tiny": dict(model=dict(encoder="tiny", n_prefix=4, image_size=64),
                     train=dict(batch_size=32, max_steps=3000, lr=3e-3)),
        "small": dict(model=dict(encoder="nf_resnet26", n_prefix=2, image_size=128),
                      train=dict(batch_size=64, max_steps=4000, num_workers=8, eval_interval=500,
                                 ckpt_interval=500)),
    },
    "lm": {
        # 2 CPU cores, minutes
        # vocab 1024: the world's language is a few hundred words, and a bigger BPE spends its extra
        # tokens on pieces of made-up names that then hardly occur, so the LM cannot copy them
        # (README, "In-context learning"). Measured: copying appears near step 500, text binding
        # passes 0.95 (2-way) near step 1250; 2500 steps keep `make demo` near 11 minutes
        "tiny": dict(model=dict(vocab_size=1024, block_size=256, n_layer=4, n_head=4, n_embd=128,
                                smear_keys=True),
                     train=dict(batch_size=8, max_steps=2500)),
        # one GPU, well under an hour
        "small": dict(model=dict(vocab_size=8192, block_size=512, n_layer=12, n_head=12, n_embd=768),
                      train=dict(batch_size=32, grad_accum=2, max_steps=5000, lr=6e-4, min_lr=6e-5,
                                 warmup_steps=200, tokenizer_chars=20_000_000, eval_interval=500,
                                 ckpt_interval=500)),
    },
}


# ---------------------------------------------------------------------------------------------
# command line generated from the dataclasses


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
        elif isinstance(f.default, tuple):
            group.add_argument(flag, type=lambda s: tuple(int(v) for v in s.split(",")), default=None,
                               dest=f.name, help=f"comma-separated ints (default {','.join(map(str, f.default))})")
        else:
            group.add_argument(flag, type=type(f.default), default=None, dest=f.name,
                               help=f"(default {f.default})")


def build_config(cls, args, preset_values):
    """Dataclass defaults, then the preset's values, then the flags that were given."""
    values = dict(preset_values)
    values.update({f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None})
    return cls(**values)


# ---------------------------------------------------------------------------------------------
# runtime: device, precision, processes


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype  # autocast dtype, or float32 for none
    rank: int = 0
    world_size: int = 1

    @property
    def master(self):
        return self.rank == 0

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def setup_runtime(device="auto", dtype="auto"):
    """Pick the device and precision; join the process group when launched by torchrun."""
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


def resolve_compile(flag, device):
    return device.type == "cuda" if flag == "auto" else parse_bool(flag)


def lr_at(step, cfg, cosine=True):
    """Linear warmup, then cosine decay to min_lr (or constant when cosine is False)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if not cosine:
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def make_optimizer(param_groups, cfg, device):
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **extra)


def decay_groups(params, weight_decay):
    """Weight decay on matrices (linear and embedding weights), none on gains and biases."""
    params = [p for p in params if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------
# checkpoints and logs


def save_checkpoint(obj, path):
    """Write to a temp file and rename it into place: a killed run never leaves a broken file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, kind):
    """Load a checkpoint written by stage `kind` ('lm' or 'prefix'); a clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"{path}: not a readable checkpoint ({str(e).splitlines()[0]})") from None
    found = ckpt.get("kind") if isinstance(ckpt, dict) else None
    if found != kind:
        raise InputError(f"{path}: expected a stage-{kind} checkpoint, found {found or 'something else'}")
    return ckpt


def checkpoint_kind(path):
    """'lm', 'prefix' or 'classify'; None for a missing or unreadable file (loading it with
    load_checkpoint then says what is wrong)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return ckpt.get("kind") if isinstance(ckpt, dict) else None


def state_dict_of(model):
    """Weights without the wrappers torch.compile and DDP put around a model."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return model.state_dict()


class Log:
    """One fixed-format line per call, `key value | key value`, appended to a file a person can plot."""

    def __init__(self, path, enabled=True):
        self.path, self.enabled = Path(path), enabled

    def write(self, **values):
        if not self.enabled:
            return
        parts = []
        for k, v in values.items():
            if isinstance(v, float):
                v = f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"
            parts.append(f"{k} {v}")
        with open(self.path, "a") as f:
            f.write(" | ".join(parts) + "\n")


def read_log(path):
    """The log as a list of dicts, one per line (the inverse of Log.write)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        row = {}
        for part in line.split(" | "):
            key, _, value = part.partition(" ")
            try:
                row[key] = float(value)
            except ValueError:
                row[key] = value
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# the training loop shared by both stages


def train_loop(rt, cfg, model, optimizer, micro_loss, start_step, evaluate, checkpoint,
               after_backward=None, lr_fn=None, log=None, items_per_step=0, item_name="tok/s"):
    """Run steps start_step..cfg.max_steps-1.

    micro_loss(step, micro): the loss of this process's rows of one micro-batch.
    evaluate(step): a dict of metrics, logged. checkpoint(step): the dict to save at `step`.
    after_backward(): called on the summed gradients, before the optimizer step (clipping).
    """
    from tqdm import tqdm

    lr_fn = lr_fn or (lambda s: lr_at(s, cfg))
    bar = tqdm(range(start_step, cfg.max_steps), initial=start_step, total=cfg.max_steps,
               disable=not rt.master, dynamic_ncols=True)
    t0 = time.time()
    for step in bar:
        lr = lr_fn(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        for micro in range(cfg.grad_accum):
            last = micro == cfg.grad_accum - 1
            # DDP: all-reduce the gradients only once, after the last micro-batch (no_sync is a
            # one-use context manager, and must hold over the forward, so one `with` for both)
            sync = model.no_sync() if (isinstance(model, DDP) and not last) else contextlib.nullcontext()
            with sync:
                with rt.autocast():
                    loss = micro_loss(step, micro) / cfg.grad_accum
                loss.backward()
        if after_backward is not None:
            after_backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_done = step + 1
        if step_done % cfg.log_interval == 0 or step_done == cfg.max_steps:
            loss_value = loss.item() * cfg.grad_accum  # the only host-device sync of a step
            dt = (time.time() - t0) / cfg.log_interval
            t0 = time.time()
            rate = items_per_step / dt if dt > 0 else 0.0
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.1e}")
            if log:
                log.write(step=step_done, loss=loss_value, lr=lr, dt_ms=dt * 1000, **{item_name: rate})
        if step_done % cfg.eval_interval == 0 or step_done == cfg.max_steps:
            metrics = evaluate(step_done)
            if log and metrics:
                log.write(step=step_done, **metrics)
                bar.write(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in {"step": step_done, **metrics}.items()))
            t0 = time.time()
        if step_done % cfg.ckpt_interval == 0 or step_done == cfg.max_steps:
            if rt.master:
                save_checkpoint(checkpoint(step_done), Path(cfg.out_dir) / f"{stage_name(cfg)}.pt")
    bar.close()


def stage_name(cfg):
    return {LMConfig: "lm", PrefixConfig: "prefix", ClassifyConfig: "classify"}[type(cfg)]



# ---------------------------------------------------------------------------------------------
# stage lm


def text_source(cfg, tokenizer, block_size, split):
    if cfg.text:
        return FileText(cfg.text, tokenizer, block_size, cfg.seed, split)
    return WorldText(tokenizer, block_size, cfg.seed, split)


def prepare_tokenizer(cfg, model_cfg, rt):
    """Train the BPE on the corpus (rank 0), or reuse the one beside the checkpoint on resume."""
    path = Path(cfg.out_dir) / "tokenizer.json"
    if not (cfg.resume and path.exists()) and rt.master:
        source = text_source(cfg, None, model_cfg.block_size, "train")
        print(f"training a {model_cfg.vocab_size}-token BPE on {cfg.tokenizer_chars:,} chars of text")
        train_tokenizer(source.sample_texts(cfg.tokenizer_chars), model_cfg.vocab_size, path)
    if rt.world_size > 1:
        dist.barrier()
    tokenizer = Tokenizer(path)
    if tokenizer.vocab_size != model_cfg.vocab_size:
        print(f"note: the corpus gave a {tokenizer.vocab_size}-token vocabulary (asked {model_cfg.vocab_size})")
        model_cfg.vocab_size = tokenizer.vocab_size
    return tokenizer


def train_lm(cfg, model_cfg):
    rt = setup_runtime(cfg.device, cfg.dtype)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = prepare_tokenizer(cfg, model_cfg, rt)
    train_text = text_source(cfg, tokenizer, model_cfg.block_size, "train")
    val_text = text_source(cfg, tokenizer, model_cfg.block_size, "val")

    model = GPT(model_cfg).to(rt.device)
    optimizer = make_optimizer(decay_groups(model.parameters(), cfg.weight_decay), cfg, rt.device)
    start_step = 0
    ckpt_path = out / "lm.pt"
    if cfg.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, "lm")
        check_tokenizer(ckpt, tokenizer, ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_step = ckpt["step"]
        print(f"resuming from {ckpt_path} at step {start_step}")
    if rt.master:
        print(f"GPT: {model.num_params() / 1e6:.2f}M parameters, {model_cfg}")
    log = Log(out / "lm_log.txt", enabled=rt.master)
    train_model = torch.compile(model) if resolve_compile(cfg.compile, rt.device) else model
    if rt.world_size > 1:
        train_model = DDP(train_model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)

    def rows(micro):
        """This process's rows of a micro-batch, in the order one process would see them."""
        first = (micro * rt.world_size + rt.rank) * cfg.batch_size
        return range(first, first + cfg.batch_size)

    def micro_loss(step, micro):
        x, y = text_batch(train_text, step, rows(micro))
        _, loss = train_model(x.to(rt.device, non_blocking=True), targets=y.to(rt.device, non_blocking=True))
        return loss

    def evaluate(step):
        if not rt.master:
            return {}
        model.eval()
        losses = []
        with torch.no_grad(), rt.autocast():
            for k in range(cfg.eval_batches):
                x, y = text_batch(val_text, k, range(cfg.batch_size))
                losses.append(model(x.to(rt.device), targets=y.to(rt.device))[1].item())
        metrics = {"val_loss": sum(losses) / len(losses)}
        if cfg.icl_episodes and not cfg.text:
            from eval import text_icl_scores
            metrics.update(text_icl_scores(model, tokenizer, cfg.icl_episodes))
        model.train()
        return metrics

    def checkpoint(step):
        return {"kind": "lm", "model": state_dict_of(model), "optimizer": optimizer.state_dict(),
                "model_config": asdict(model_cfg), "train_config": asdict(cfg), "step": step,
                "tokenizer": str(out / "tokenizer.json"), "tokenizer_hash": tokenizer.hash}

    model.train()
    grad_clip = lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    tokens = cfg.batch_size * cfg.grad_accum * rt.world_size * model_cfg.block_size
    train_loop(rt, cfg, train_model, optimizer, micro_loss, start_step, evaluate, checkpoint,
               after_backward=grad_clip if cfg.grad_clip > 0 else None, log=log, items_per_step=tokens)
    if rt.master:
        print(f"saved {ckpt_path} and {out / 'tokenizer.json'}")
    return model, tokenizer


def check_tokenizer(ckpt, tokenizer, ckpt_path):
    if ckpt.get("tokenizer_hash") != tokenizer.hash:
        raise InputError(f"{tokenizer.path}: tokenizer does not match the checkpoint {ckpt_path} "
                         f"(hash {tokenizer.hash}, checkpoint expects {ckpt.get('tokenizer_hash')})")


def load_lm(path, device="cpu"):
    """The stage-lm GPT and its tokenizer, checked against each other."""
    ckpt = load_checkpoint(path, "lm")
    tok_path = Path(path).parent / "tokenizer.json"
    if not tok_path.exists():
        tok_path = Path(ckpt["tokenizer"])
    tokenizer = Tokenizer(tok_path)
    check_tokenizer(ckpt, tokenizer, path)
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device), tokenizer, ckpt


# ---------------------------------------------------------------------------------------------
# stage prefix


def build_frozen(cfg, frozen_cfg, device):
    """The frozen LM from stage lm (or a random one: --lm-init scratch) and a new vision encoder."""
    lm_path = Path(cfg.lm_ckpt or Path(cfg.out_dir) / "lm.pt")
    lm, tokenizer, _ = load_lm(lm_path)
    if cfg.lm_init == "scratch":
        lm = GPT(lm.config)
    elif cfg.lm_init != "pretrained":
        raise InputError(f"--lm-init must be pretrained or scratch, got {cfg.lm_init!r}")
    train_lm = cfg.finetune_lm or cfg.lm_init == "scratch"
    model = Frozen(lm, frozen_cfg, train_lm=train_lm).to(device)
    return model, tokenizer, lm_path


def prefix_param_groups(model, cfg):
    """The optimizer sees only what requires grad: the encoder at lr, the LM (ablations) at lm_lr."""
    vision = [p for p in model.vision.parameters() if p.requires_grad]
    groups = [{"params": vision, "weight_decay": cfg.weight_decay, "lr_scale": 1.0}]
    lm = [p for p in model.lm.parameters() if p.requires_grad]
    if lm:
        groups.append({"params": lm, "weight_decay": 0.0, "lr_scale": cfg.lm_lr / cfg.lr})
    return groups


def clip_prefix_gradients(model, cfg):
    """AGC on the NF-ResNet's weights, not on the final projection (as NFNets exempt their
    classifier); plain norm clipping on the LM when an ablation trains it."""
    adaptive_grad_clip(model.vision.features.encoder.parameters(), cfg.agc_clip)
    if model.train_lm:
        torch.nn.utils.clip_grad_norm_([p for p in model.lm.parameters() if p.requires_grad], 1.0)


def caption_loader(cfg, frozen_cfg, tokenizer, rt, split, start_step, max_steps, micro_batches):
    dataset = caption_dataset(cfg.data, frozen_cfg.image_size, cfg.seed, split, cfg.image_dir or None, cfg.max_bad)
    rank, world = (rt.rank, rt.world_size) if split == "train" else (0, 1)
    sampler = StepBatches(len(dataset), start_step, max_steps, micro_batches, cfg.batch_size, rank, world,
                          cfg.seed if split == "train" else cfg.seed + 1)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=CaptionCollate(tokenizer.path, frozen_cfg.n_prefix),
        num_workers=cfg.num_workers, pin_memory=rt.device.type == "cuda",
        persistent_workers=False, prefetch_factor=4 if cfg.num_workers else None)


def train_prefix(cfg, frozen_cfg):
    rt = setup_runtime(cfg.device, cfg.dtype)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer, lm_path = build_frozen(cfg, frozen_cfg, rt.device)
    lm_hash = file_hash(lm_path)
    if rt.device.type == "cuda":
        model.vision.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(prefix_param_groups(model, cfg), cfg, rt.device)
    start_step = 0
    ckpt_path = out / "prefix.pt"
    if cfg.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, "prefix")
        if ckpt["lm_hash"] != lm_hash:
            raise InputError(f"{ckpt_path}: was trained against another LM checkpoint than {lm_path}")
        model.load_state_dict(ckpt["model"], strict=False)
        optimizer.load_state_dict(ckpt["optimizer"])
        start_step = ckpt["step"]
        print(f"resuming from {ckpt_path} at step {start_step}")
    n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if rt.master:
        print(f"Frozen: {n_trained / 1e6:.2f}M trained parameters (vision encoder"
              f"{' and LM' if model.train_lm else ''}), LM {model.lm.num_params() / 1e6:.2f}M "
              f"{'trained' if model.train_lm else 'frozen'}; {frozen_cfg}")
    log = Log(out / "prefix_log.txt", enabled=rt.master)
    train_model = torch.compile(model) if resolve_compile(cfg.compile, rt.device) else model
    if rt.world_size > 1:
        train_model = DDP(train_model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    batches = iter(caption_loader(cfg, frozen_cfg, tokenizer, rt, "train", start_step, cfg.max_steps, cfg.grad_accum))
    memory_format = torch.channels_last if rt.device.type == "cuda" else torch.contiguous_format

    def to_device(images, inputs, targets):
        images = images.to(rt.device, non_blocking=True, memory_format=memory_format)
        return images, inputs.to(rt.device, non_blocking=True), targets.to(rt.device, non_blocking=True)

    current = {}  # this step's micro-batches, and the caption tokens of the whole global step

    def micro_loss(step, micro):
        if micro == 0:  # read all of the step's micro-batches first, to count their tokens
            current["batches"] = [to_device(*next(batches)) for _ in range(cfg.grad_accum)]
            current["total"] = sum((targets != -100).sum() for _, _, targets in current["batches"])
            if rt.world_size > 1:
                dist.all_reduce(current["total"])
        images, inputs, targets = current["batches"][micro]
        if cfg.blind:
            images = black_images(images)
        # every caption token counts the same, whatever the micro-batches and processes: the loss
        # is a sum over this micro-batch's tokens divided by the tokens of the whole global step
        # (x grad_accum and x world_size undo train_loop's division and DDP's gradient average)
        n_tokens = (targets != -100).sum()
        mean_loss = train_model(images, inputs, targets)
        return mean_loss * n_tokens / current["total"] * rt.world_size * cfg.grad_accum

    def evaluate(step):
        if not rt.master:
            return {}
        model.eval()
        losses = []
        loader = caption_loader(cfg, frozen_cfg, tokenizer, rt, "val", 0, cfg.eval_batches, 1)
        with torch.no_grad(), rt.autocast():
            for images, inputs, targets in loader:
                images, inputs, targets = to_device(images, inputs, targets)
                losses.append(model(black_images(images) if cfg.blind else images, inputs, targets).item())
        model.train()
        return {"val_loss": sum(losses) / len(losses)}

    def checkpoint(step):
        return {"kind": "prefix", "model": model.trainable_state_dict(), "optimizer": optimizer.state_dict(),
                "frozen_config": asdict(frozen_cfg), "train_config": asdict(cfg), "step": step,
                "lm_ckpt": str(lm_path), "lm_hash": lm_hash}

    model.train()
    pairs = cfg.batch_size * cfg.grad_accum * rt.world_size
    train_loop(rt, cfg, train_model, optimizer, micro_loss, start_step, evaluate, checkpoint,
               after_backward=lambda: clip_prefix_gradients(model, cfg),
               lr_fn=lambda s: lr_at(s, cfg, cosine=False), log=log,
               items_per_step=pairs, item_name="pairs/s")
    if rt.master:
        print(f"saved {ckpt_path}")
    return model, tokenizer


def load_frozen(path, device="cpu"):
    """A trained Frozen model: the stage-prefix weights and the LM checkpoint they were trained
    against (refused if that file has changed since)."""
    ckpt = load_checkpoint(path, "prefix")
    lm_path = Path(ckpt["lm_ckpt"])
    if not lm_path.exists():  # the run folder was moved: look beside the prefix checkpoint
        lm_path = Path(path).parent / lm_path.name
    if not lm_path.exists():
        raise InputError(f"{path}: its LM checkpoint {ckpt['lm_ckpt']} is missing")
    if file_hash(lm_path) != ckpt["lm_hash"]:
        raise InputError(f"{lm_path}: has changed since {path} was trained against it (hash mismatch)")
    lm, tokenizer, _ = load_lm(lm_path)
    train_cfg = ckpt["train_config"]
    model = Frozen(lm, FrozenConfig(**ckpt["frozen_config"]),
                   train_lm=train_cfg["finetune_lm"] or train_cfg["lm_init"] == "scratch")
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    assert not unexpected and all(k.startswith("lm.") for k in missing), (missing, unexpected)
    return model.to(device).eval(), tokenizer, ckpt


# ---------------------------------------------------------------------------------------------
# stage classify: the LM-block comparison


def classify_accuracy(model, cfg, frozen_cfg, rt):
    """Correct predictions on the world's test split (cfg.eval_images single-object images)."""
    dataset = WorldKinds(frozen_cfg.image_size, cfg.seed, "test", cfg.eval_images)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    model.eval()
    correct = []
    with torch.no_grad(), rt.autocast():
        for images, labels in loader:
            _, logits = model(images.to(rt.device), labels.to(rt.device))
            correct += (logits.argmax(-1).cpu() == labels).tolist()
    model.train()
    return correct


def train_classify(cfg, frozen_cfg):
    rt = setup_runtime(cfg.device, cfg.dtype)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lm = load_lm(cfg.lm_ckpt)[0] if frozen_cfg.lm_block != "none" else None
    model = KindClassifier(frozen_cfg, len(WorldKinds(frozen_cfg.image_size).kinds), lm).to(rt.device)
    optimizer = make_optimizer([{"params": [p for p in model.parameters() if p.requires_grad],
                                 "weight_decay": cfg.weight_decay}], cfg, rt.device)
    start_step, ckpt_path, results = 0, out / "classify.pt", {}
    if cfg.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, "classify")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_step = ckpt["step"]
        results = {k: ckpt[k] for k in ("correct", "n") if k in ckpt}  # a finished run keeps its score
    n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"classifier: {n_trained / 1e6:.3f}M trained parameters; {frozen_cfg}")
    dataset = WorldKinds(frozen_cfg.image_size, cfg.seed, "train")
    sampler = StepBatches(len(dataset), start_step, cfg.max_steps, cfg.grad_accum, cfg.batch_size, rt.rank,
                          rt.world_size, cfg.seed)
    batches = iter(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers))

    def micro_loss(step, micro):
        images, labels = next(batches)
        return model(images.to(rt.device), labels.to(rt.device))[0]

    def evaluate(step):
        correct = classify_accuracy(model, cfg, frozen_cfg, rt)
        results.update(correct=sum(correct), n=len(correct))
        return {"test_acc": sum(correct) / len(correct)}

    def checkpoint(step):
        return {"kind": "classify", "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "frozen_config": asdict(frozen_cfg), "train_config": asdict(cfg), "step": step, **results}

    clip = lambda: adaptive_grad_clip(model.features.encoder.parameters(), cfg.agc_clip)
    model.train()
    train_loop(rt, cfg, model, optimizer, micro_loss, start_step, evaluate, checkpoint, after_backward=clip,
               log=Log(out / "classify_log.txt"), items_per_step=cfg.batch_size * cfg.grad_accum,
               item_name="img/s")
    print(f"test accuracy {results['correct'] / results['n']:.3f} on {results['n']} images; saved {ckpt_path}")
    return model, results


# ---------------------------------------------------------------------------------------------
# entry point


STAGE_CONFIGS = {"lm": [(LMConfig, "stage lm"), (GPTConfig, "GPT")],
                 "prefix": [(PrefixConfig, "stage prefix"), (FrozenConfig, "Frozen")],
                 "classify": [(ClassifyConfig, "stage classify (LM-block comparison)"), (FrozenConfig, "vision")]}


def parse_args(argv):
    """--stage first, then the flags of that stage's configs."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--stage", choices=list(STAGE_CONFIGS))
    stage = first.parse_known_args(argv)[0].stage or "lm"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=list(STAGE_CONFIGS), required=True, help="which stage to train")
    parser.add_argument("--preset", choices=["tiny", "small"], default="tiny",
                        help="tiny: 2 CPU cores, minutes; small: one GPU, under an hour")
    for cls, title in STAGE_CONFIGS[stage]:
        add_dataclass_args(parser, cls, title)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    preset = PRESETS[args.stage][args.preset]
    try:
        if args.stage == "lm":
            cfg = build_config(LMConfig, args, preset["train"])
            model_cfg = build_config(GPTConfig, args, preset["model"])
            train_lm(cfg, model_cfg)
        elif args.stage == "prefix":
            cfg = build_config(PrefixConfig, args, preset["train"])
            frozen_cfg = build_config(FrozenConfig, args, preset["model"])
            train_prefix(cfg, frozen_cfg)
        else:
            cfg = build_config(ClassifyConfig, args, preset["train"])
            frozen_cfg = build_config(FrozenConfig, args, preset["model"])
            train_classify(cfg, frozen_cfg)
    except InputError as e:
        sys.exit(f"error: {e}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
