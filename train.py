"""
Training, in the paper's two stages (Frozen, Sec. 3):

  python train.py --stage lm       # tokenizer + GPT on text alone            -> out/lm.pt
  python train.py --stage prefix   # frozen GPT, train the vision encoder     -> out/prefix.pt

Each stage has a dataclass config; a preset (`--preset tiny|small`) fills it and every field can
be set from the command line (`--lr 1e-3`, `--n-layer 6`, `--resume`). Checkpoints are written
atomically (checkpoint.py); `--resume` continues from the last one exactly: batch k and every
random draw of step k are functions of the seed and k, and a resume that asks for another run
than the checkpoint holds is refused with the fields that differ. One log line per interval goes
to out/<stage>_log.txt.

Each stage's loop is written out in its own function, top to bottom. On CUDA: bf16 autocast,
torch.compile, fused AdamW. Several GPUs: `torchrun --nproc_per_node=N train.py --stage lm`,
DistributedDataParallel, each process taking its own rows of every batch; only rank 0 writes.
"""

import argparse
import contextlib
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from checkpoint import (check_tokenizer, config_differences, load_checkpoint, load_lm, save_checkpoint, state_dict_of,
                        trains_lm)
from common import (RunConfig, StepLog, add_dataclass_args, build_config, choose_precision, decay_groups,
                    is_due, lr_at, make_optimizer, open_log, resolve_compile, restore, resume_from, run_record,
                    seed_step, set_lr, setup_runtime, usable_workers, warn_if_gpu_preset_on_cpu)
from data import (CaptionCollate, FileText, InputError, StepBatches, Tokenizer, WorldCaptionRows, WorldText,
                  black_images, caption_dataset, file_hash, text_batch, train_tokenizer)
from frozen import Frozen, FrozenConfig, caption_targets
from gpt import GPT, GPTConfig
from nfresnet import adaptive_grad_clip
from prefix_levers import LeverPrefix, frame_ids
from scoring import text_icl_scores
from vector_things import ThingDraw, VectorThings, embed_with_vectors, vector_batch, vector_binding_score
from world import TextMix

# ---------------------------------------------------------------------------------------------
# configs and presets


@dataclass
class LMConfig(RunConfig):
    """Stage lm: train the tokenizer and the GPT on text."""
    text: str = ""  # a .txt file or folder of them; empty: the world's generated corpus
    batch_size: int = 16
    max_steps: int = 3000
    lr: float = 3e-3
    min_lr: float = 3e-4
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_batches: int = 8
    icl_episodes: int = 100  # episodes per in-context score logged at each evaluation (0: none)
    tokenizer_chars: int = 3_000_000  # text the BPE is trained on
    # a lever, off by default (the paper's LM reads text only): this share of each batch's rows
    # are binding passages whose things are n_vectors input vectors each (vector_things.py)
    vector_things: float = 0.0
    n_vectors: int = 4  # the tiny preset's visual prefix length
    # a lever, off by default: the weight, beside TextMix's others (1.05 in all), of paper-layout
    # binding passages whose things are random word phrases (world/text.py: passage_binding_words)
    word_things: float = 0.0
    # binding passages whose things drop their article or full stop (world/text.py: passage_binding_shapes)
    shape_things: float = 0.0
    vector_hardness: float = 1.0  # scales the kinds' overlap and the examples' noise (vector_things.py)
    # noun and prefix forms: copies of a kind are alike at least this share of the way from the
    # kinds' shared part to identical (vector_things.noun_vectors); lower, the LM meets nearer kinds
    vector_within: float = 0.5
    # unframed: a vector thing is n_vectors vectors; noun: 'a small red <v>.', one vector, most of it
    # shared by the passage's things (README, "What the LM can match"); prefix: n_vectors vectors,
    # all but one the same for the passage's things, as a visual prefix's slots are
    vector_form: str = "unframed"
    vector_slot: int = -1  # prefix form: the kind's slot, the same in every passage (-1: drawn per passage)
    # a stage-lm checkpoint whose weights and tokenizer this run starts from, with its own mix and
    # schedule: a curriculum (the corpus first, then a lever's passages; README's levers)
    init_lm: str = ""

    def __post_init__(self):
        if self.vector_form not in ("unframed", "noun", "prefix"):
            raise ValueError(f"--vector-form must be unframed, noun or prefix, got {self.vector_form!r}")
        if not 0 <= self.vector_within < 1:
            raise ValueError(f"--vector-within must be in [0, 1), got {self.vector_within}")
        if not -1 <= self.vector_slot < self.n_vectors:
            raise ValueError(f"--vector-slot must be -1 (drawn) or a slot below --n-vectors {self.n_vectors}, "
                             f"got {self.vector_slot}")

    @property
    def thing_draw(self):
        """How the vector things are drawn, in training and in their in-training scores alike (the
        prefix form's kind slot: None, drawn per passage, or fixed)."""
        return ThingDraw(self.vector_form, self.vector_hardness, self.vector_within,
                         None if self.vector_slot < 0 else self.vector_slot)


@dataclass
class PrefixConfig(RunConfig):
    """Stage prefix: freeze the GPT, train the vision encoder with the captioning loss. The
    defaults are the paper's recipe (Sec. 3.2 and App. A): Adam with beta2 0.95, constant lr 3e-4
    after warmup, no weight decay; Adaptive Gradient Clipping on the NF-ResNet (NFNets)."""
    lm_ckpt: str = ""  # empty: <out_dir>/lm.pt
    data: str = "world"  # world | a COCO .json | a .jsonl | a folder of name.jpg + name.txt
    image_dir: str = ""  # COCO only: the images' folder (default: the .json's folder)
    max_bad: float = 0.05  # the largest share of bad image-caption pairs skipped with a warning
    max_steps: int = 1500
    lr: float = 3e-4
    agc_clip: float = 0.01  # AGC's lambda (NFNets, Sec. 4.1; their default)
    lm_lr: float = 0.0  # the LM's lr when an ablation trains it; 0: 1e-5 to fine-tune, stage lm's lr from scratch
    finetune_lm: bool = False  # ablation: train the LM too
    lm_init: str = "pretrained"  # pretrained | scratch (ablation: random LM, trained)
    blind: bool = False  # ablation: black images in training
    naming_captions: float = 0.0  # the world's lone things captioned 'This is an apple.' this share of the time
    # a lever, off by default (the paper captions one image at a time): K image-caption pairs in
    # one sequence, a batch of batch_size pairs in batch_size / K rows (data.WorldCaptionRows;
    # README's lever table: worse, the kind is copied from the row instead of seen)
    captions_in_row: int = 1
    # a stage-prefix checkpoint (trained against the same LM) whose encoder this run starts from,
    # its own flags free to differ (a slot made a word after captioning is learnt: README's levers)
    init_encoder: str = ""
    num_workers: int = -1  # DataLoader processes; -1: none on a CPU, 4 beside a GPU (common.usable_workers)
    eval_batches: int = 4


# Recipes chosen by measurement; README "Results" tells how each was chosen.
PRESETS = {
    "lm": {
        # 2 CPU cores, minutes. A 1024-token BPE: the world's language is a few hundred words, and a
        # bigger one spends its tokens on pieces of made-up names that hardly occur (README)
        "tiny": dict(model=dict(vocab_size=1024, block_size=256, n_layer=4, n_head=4, n_embd=128,
                                smear_keys=True),
                     train=dict(batch_size=8, max_steps=2500)),
        # one GPU, well under an hour
        "small": dict(model=dict(vocab_size=8192, block_size=512, n_layer=12, n_head=12, n_embd=768),
                      train=dict(batch_size=32, grad_accum=2, max_steps=5000, lr=6e-4, min_lr=6e-5,
                                 warmup_steps=200, tokenizer_chars=20_000_000, eval_interval=500,
                                 ckpt_interval=500)),
    },
    "prefix": {
        # lr 3e-3 (not the paper's 3e-4) for a tiny encoder trained from scratch, n = 4 prefix
        # vectors (the paper: 2; `make paper` ablates n = 1, 2, 4), each at the token embeddings'
        # rms (the paper's map is linear; on 3 seeds' val episodes token scale bound images better
        # in every seed, README "Why binding through images is hard"), strided shortcuts (deepmind's;
        # on the same 3 seeds' val episodes captions were better in every seed, README's lever table)
        "tiny": dict(model=dict(encoder="tiny", encoder_shortcut="strided", n_prefix=4, image_size=64,
                                prefix_scale="token"),
                     train=dict(batch_size=32, max_steps=3000, lr=3e-3)),
        "small": dict(model=dict(encoder="nf_resnet26", n_prefix=2, image_size=128),
                      train=dict(batch_size=64, max_steps=4000, num_workers=8, eval_interval=500,
                                 ckpt_interval=500)),
    },
}


# ---------------------------------------------------------------------------------------------
# what both stages do around their loop


def wrap_for_training(model, cfg, rt):
    """torch.compile where it pays (CUDA by default), then DDP across processes under torchrun."""
    train_model = torch.compile(model) if resolve_compile(cfg.compile, rt.device) else model
    if rt.world_size > 1:
        train_model = DDP(train_model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    return train_model


def trial_step(model, loss):
    """One forward and backward of loss() (the stage's loss on fixed random data), its gradients
    dropped, so the weights stay as they are: what --dtype auto times (common.choose_precision)."""
    def step():
        loss().backward()
        model.zero_grad(set_to_none=True)
    return step


def sync_unless_last(train_model, micro, grad_accum):
    """DDP all-reduces gradients on every backward unless told not to: skip it on all but the
    last micro-batch of a step (no_sync must cover the forward too, so it wraps both)."""
    if isinstance(train_model, DDP) and micro < grad_accum - 1:
        return train_model.no_sync()
    return contextlib.nullcontext()


def progress(start_step, cfg, rt):
    return tqdm(range(start_step, cfg.max_steps), initial=start_step, total=cfg.max_steps,
                disable=not rt.master, dynamic_ncols=True)


def report(bar, log, step, metrics):
    log.write(step=step, **metrics)
    bar.write(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in {"step": step, **metrics}.items()))


def evaluate_and_report(evaluate, bar, log, step_log, step):
    """Run evaluate() (-> metrics), log its metrics and seconds (eval_s); return the seconds.
    The step timer restarts after it: an evaluation is not a training step's time."""
    t0 = time.time()
    metrics = evaluate()
    metrics["eval_s"] = time.time() - t0
    report(bar, log, step, metrics)
    step_log.restart(step)
    return metrics["eval_s"]


def report_eval_share(log, step, eval_s, started):
    """How much of the training loop's wall time (this run's, since a resume) the in-training
    evaluations took."""
    total = time.time() - started
    print(f"in-training evaluation: {eval_s:.0f} s of the loop's {total:.0f} s ({eval_s / total:.1%})")
    log.write(step=step, eval_total_s=eval_s, loop_s=total, eval_share=eval_s / total)


def already_done(start_step, cfg, path):
    if start_step == cfg.max_steps:
        print(f"{path}: already trained to step {start_step} (--max-steps {cfg.max_steps}); nothing to do")
        return True
    return False


# ---------------------------------------------------------------------------------------------
# stage lm: the tokenizer and the GPT, on text alone (Sec. 3.1)


def text_source(cfg, tokenizer, block_size, split):
    if cfg.text:
        return FileText(cfg.text, tokenizer, block_size, cfg.seed, split)
    return WorldText(tokenizer, block_size, cfg.seed, split, TextMix(binding_words=cfg.word_things,
                                                                     binding_shapes=cfg.shape_things))


def prepare_tokenizer(cfg, model_cfg, rt):
    """Train the BPE on the corpus (rank 0), or reuse the one beside the checkpoint on resume, or
    copy --init-lm's."""
    path = Path(cfg.out_dir) / "tokenizer.json"
    fresh = not (cfg.resume and path.exists()) and rt.master
    if fresh and cfg.init_lm:
        source = Path(cfg.init_lm).parent / "tokenizer.json"
        if not source.exists():
            raise InputError(f"{cfg.init_lm}: --init-lm has no tokenizer.json beside it")
        shutil.copyfile(source, path)
    elif fresh:
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


@torch.no_grad()
def evaluate_lm(model, tokenizer, val_text, cfg, rt):
    """Validation loss, and on the world's corpus the in-context scores (copy, text binding)
    that say whether few-shot learning can appear at all (scoring.text_icl_scores)."""
    model.eval()
    losses = []
    with rt.autocast():
        for k in range(cfg.eval_batches):
            x, y = text_batch(val_text, k, range(cfg.batch_size))
            losses.append(model(x.to(rt.device), targets=y.to(rt.device))[1].item())
    metrics = {"val_loss": sum(losses) / len(losses)}
    if cfg.icl_episodes and not cfg.text:
        metrics.update(text_icl_scores(model, tokenizer, cfg.icl_episodes))
    if cfg.icl_episodes and cfg.vector_things:
        for ways in (2, 5):
            cell = vector_binding_score(model, tokenizer, cfg.icl_episodes, cfg.n_vectors, draw=cfg.thing_draw,
                                        ways=ways, inner_shots=1)
            metrics[f"vec{ways}"] = cell["acc"]
    model.train()
    return metrics


def start_lm_from(model, model_cfg, tokenizer, path):
    """Load another stage-lm run's weights (--init-lm) into a fresh model of the same shape."""
    try:
        ckpt = load_checkpoint(path, "lm")
    except InputError as e:
        raise InputError(f"--init-lm {e}") from None
    check_tokenizer(ckpt, tokenizer, path)
    diffs = config_differences(ckpt["model_config"], asdict(model_cfg), cls=GPTConfig)
    if diffs:
        raise InputError(f"{path}: --init-lm is another model than this run's ({'; '.join(diffs)})")
    model.load_state_dict(ckpt["model"])
    print(f"LM weights from {path} (step {ckpt['step']})")


def lm_inputs(model, text, things, step, rows, n_things, device):
    """A micro-batch of stage lm: the model's inputs and the targets. With --vector-things its
    first n_things rows are binding passages with vector things, given as input embeddings."""
    x, y = text_batch(text, step, rows[n_things:])
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if not n_things:
        return {"idx": x}, y
    vx, vy, vectors, is_slot = vector_batch(things, step, rows[:n_things])
    vx = vx.to(device)
    embeds = torch.cat([embed_with_vectors(model, vx, vectors, is_slot), model.embed(x)])
    return {"embeds": embeds}, torch.cat([vy.to(device), y])


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
    ckpt_path = out / "lm.pt"
    ckpt = resume_from(ckpt_path, "lm", cfg, model_cfg, rt)
    tokens = torch.randint(model_cfg.vocab_size, (cfg.batch_size, model_cfg.block_size),
                           generator=torch.Generator().manual_seed(0)).to(rt.device)
    rt = choose_precision(rt, cfg.dtype, trial_step(model, lambda: model(tokens, targets=tokens)[1]),
                          (cfg.batch_size, model_cfg, model_cfg.block_size), "lm", ckpt and ckpt.get("precision"))
    if ckpt:
        check_tokenizer(ckpt, tokenizer, ckpt_path)
    start_step = restore(ckpt, model, optimizer, ckpt_path)
    if already_done(start_step, cfg, ckpt_path):
        return model, tokenizer
    if cfg.init_lm and not start_step:
        start_lm_from(model, model_cfg, tokenizer, Path(cfg.init_lm))
    if rt.master:
        print(f"GPT: {model.num_params() / 1e6:.2f}M parameters, {model_cfg}")
    log = open_log(out / "lm_log.txt", start_step, rt)
    train_model = wrap_for_training(model, cfg, rt)
    things, n_things = None, 0
    if cfg.vector_things:
        things = VectorThings(tokenizer, model_cfg.block_size, cfg.n_vectors, model_cfg.n_embd, cfg.seed,
                              draw=cfg.thing_draw)
        n_things = round(cfg.vector_things * cfg.batch_size)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * rt.world_size * model_cfg.block_size
    step_log = StepLog(log, start_step, tokens_per_step, "tok/s")

    model.train()
    bar, eval_s, started = progress(start_step, cfg, rt), 0.0, time.time()
    for step in bar:
        lr = lr_at(step, cfg)
        set_lr(optimizer, lr)
        seed_step(cfg.seed, step, rt.rank)
        for micro in range(cfg.grad_accum):
            # this process's rows of the micro-batch: together, the rows one process would see
            first = (micro * rt.world_size + rt.rank) * cfg.batch_size
            rows = range(first, first + cfg.batch_size)
            with sync_unless_last(train_model, micro, cfg.grad_accum):
                with rt.autocast():
                    inputs, y = lm_inputs(model, train_text, things, step, rows, n_things, rt.device)
                    _, loss = train_model(**inputs, targets=y)
                (loss / cfg.grad_accum).backward()  # the step's gradient: the mean over its micro-batches
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        done = step + 1
        if is_due(done, cfg.log_interval, cfg.max_steps):
            step_log.write(done, loss.item(), lr)  # .item(): the only host-device sync of a step
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}")
        if is_due(done, cfg.eval_interval, cfg.max_steps) and rt.master:
            evaluate = partial(evaluate_lm, model, tokenizer, val_text, cfg, rt)
            eval_s += evaluate_and_report(evaluate, bar, log, step_log, done)
        if is_due(done, cfg.ckpt_interval, cfg.max_steps) and rt.master:
            save_checkpoint({"kind": "lm", "model": state_dict_of(model), "optimizer": optimizer.state_dict(),
                             **run_record(cfg, model_cfg, rt), "step": done,
                             "tokenizer": str(out / "tokenizer.json"), "tokenizer_hash": tokenizer.hash}, ckpt_path)
    bar.close()
    if rt.master:
        report_eval_share(log, cfg.max_steps, eval_s, started)
        print(f"saved {ckpt_path} and {out / 'tokenizer.json'}")
    return model, tokenizer


# ---------------------------------------------------------------------------------------------
# stage prefix: the LM frozen, the vision encoder trained to caption (Sec. 3.2)


FINETUNE_LR = 1e-5  # the fine-tuned-LM ablation's lr: a small step from the pretrained weights


def build_frozen(cfg, frozen_cfg, device):
    """The frozen LM from stage lm (or a random one: --lm-init scratch) and a new vision encoder.
    Returns the model, the tokenizer, the LM's path and the LM's lr when an ablation trains it."""
    lm_path = Path(cfg.lm_ckpt or Path(cfg.out_dir) / "lm.pt")
    lm, tokenizer, lm_ckpt = load_lm(lm_path)
    lm_lr = cfg.lm_lr or FINETUNE_LR
    if cfg.lm_init == "scratch":
        # the paper's "LM from scratch" (Sec. 4): the whole model trained on captions alone, so its
        # LM gets a rate that trains a GPT from random weights: stage lm's, unless --lm-lr says
        lm, lm_lr = GPT(lm.config), cfg.lm_lr or lm_ckpt["train_config"]["lr"]
    elif cfg.lm_init != "pretrained":
        raise InputError(f"--lm-init must be pretrained or scratch, got {cfg.lm_init!r}")
    train_lm = cfg.finetune_lm or cfg.lm_init == "scratch"
    model = Frozen(lm, frozen_cfg, train_lm=train_lm).to(device)
    if isinstance(model.vision, LeverPrefix):
        set_lever_words(model.vision, frozen_cfg, tokenizer, lm)
    return model, tokenizer, lm_path, lm_lr


def set_lever_words(vision, frozen_cfg, tokenizer, lm):
    """What prefix_levers.py's levers read of the LM's words: --prefix-words' start, the visual
    word's frame, the words a word slot may not be."""
    if frozen_cfg.prefix_words:
        ids = tokenizer.encode(" " + frozen_cfg.prefix_words)
        if len(ids) < frozen_cfg.n_prefix:
            raise InputError(f"--prefix-words {frozen_cfg.prefix_words!r} is {len(ids)} token(s), fewer than "
                             f"--n-prefix {frozen_cfg.n_prefix}")
        vision.start_at_words(ids, lm.wte.weight)
    if frozen_cfg.visual_word:
        vision.frame_visual_word(*frame_ids(tokenizer), lm.wte.weight)
    if vision.words is not None:  # --prefix-scale vocab or words: only words the LM has read
        vision.exclude_words([tokenizer.eot_id, tokenizer.pad_id, *range(tokenizer.vocab_size, lm.config.vocab_size)])


def start_encoder_from(model, path, lm_hash):
    """Load another stage-prefix run's trained weights (--init-encoder) into a fresh model: every
    one that this model has too; what only this model has (a word slot's readable words, say)
    keeps its start. Refused if that run read another LM."""
    try:
        ckpt = load_checkpoint(path, "prefix")
    except InputError as e:
        raise InputError(f"--init-encoder {e}") from None
    if ckpt["lm_hash"] != lm_hash:
        raise InputError(f"{path}: --init-encoder was trained against another LM checkpoint than this run's")
    if trains_lm(ckpt["train_config"]):
        raise InputError(f"{path}: --init-encoder takes an encoder trained with the LM frozen; this run trained its LM")
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as e:  # a weight of another shape: another --n-prefix, --encoder, ...
        raise InputError(f"{path}: --init-encoder's weights do not fit this run's model: "
                         f"{str(e).splitlines()[1].strip()}") from None
    if unexpected:
        raise InputError(f"{path}: --init-encoder has weights this model lacks: {', '.join(unexpected)}")
    kept = [k for k in missing if not k.startswith("lm.")]
    print(f"encoder from {path} (step {ckpt['step']}){'; new here: ' + ', '.join(kept) if kept else ''}")


def prefix_param_groups(model, cfg, lm_lr=FINETUNE_LR):
    """The optimizer sees only what requires grad: the encoder at lr, the LM (ablations) at lm_lr."""
    vision = [p for p in model.vision.parameters() if p.requires_grad]
    groups = [{"params": vision, "weight_decay": cfg.weight_decay, "lr_scale": 1.0}]
    lm = [p for p in model.lm.parameters() if p.requires_grad]
    if lm:
        groups.append({"params": lm, "weight_decay": 0.0, "lr_scale": lm_lr / cfg.lr})
    return groups


def clip_prefix_gradients(model, cfg):
    """AGC on the NF-ResNet's weights, not on the final projection (as NFNets exempt their
    classifier); plain norm clipping on the LM when an ablation trains it."""
    adaptive_grad_clip(model.vision.features.encoder.parameters(), cfg.agc_clip)
    if model.train_lm:
        torch.nn.utils.clip_grad_norm_([p for p in model.lm.parameters() if p.requires_grad], 1.0)


def caption_batches(dataset, collate, cfg, rt, split, start_step, max_steps, micro_batches, per_item=1):
    """Batches start_step..max_steps-1 of a split; training batches are sharded over processes.
    per_item: pairs in one item of the dataset (a row of captions), so a batch holds batch_size pairs."""
    rank, world = (rt.rank, rt.world_size) if split == "train" else (0, 1)
    sampler = StepBatches(len(dataset), start_step, max_steps, micro_batches, cfg.batch_size // per_item, rank,
                          world, cfg.seed if split == "train" else cfg.seed + 1)
    workers = usable_workers(cfg.num_workers, rt)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
        pin_memory=rt.device.type == "cuda", prefetch_factor=4 if workers else None)


def caption_rows_dataset(cfg, frozen_cfg):
    """The drawn world's pairs in rows of --captions-in-row (data.WorldCaptionRows)."""
    k = cfg.captions_in_row
    if cfg.data != "world" or cfg.blind:
        raise InputError(f"--captions-in-row rows the drawn world's scenes by kind; not with "
                         f"{'--blind' if cfg.blind else cfg.data}")
    if cfg.batch_size % k:
        raise InputError(f"--batch-size {cfg.batch_size} is not a whole number of rows of --captions-in-row {k}")
    return WorldCaptionRows(frozen_cfg.image_size, k, cfg.seed, "train")


def to_device(batch, rt):
    images, inputs, targets = batch
    images = images.to(rt.device, non_blocking=True, memory_format=torch.channels_last)
    return images, inputs.to(rt.device, non_blocking=True), targets.to(rt.device, non_blocking=True)


@torch.no_grad()
def evaluate_prefix(model, val_set, collate, cfg, rt):
    """Mean captioning loss on the first cfg.eval_batches validation batches."""
    model.eval()
    losses = []
    with rt.autocast():
        for batch in caption_batches(val_set, collate, cfg, rt, "val", 0, cfg.eval_batches, 1):
            images, inputs, targets = to_device(batch, rt)
            losses.append(model(black_images(images) if cfg.blind else images, inputs, targets).item())
    model.train()
    return {"val_loss": sum(losses) / len(losses)}


CAPTION_TOKENS = 16  # about a world caption's length, for the shapes stage prefix's precision is measured at


def prefix_trial_loss(model, batch, frozen_cfg, device, caption_len):
    """The captioning loss on fixed random images and captions, for --dtype auto's trial steps."""
    gen = torch.Generator().manual_seed(0)
    S = frozen_cfg.image_size
    images = torch.randn(batch, 3, S, S, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    captions = torch.randint(2, model.lm.config.vocab_size, (batch, caption_len), generator=gen).tolist()
    inputs, targets = (t.to(device) for t in caption_targets(captions, frozen_cfg.n_prefix, eot_id=0, pad_id=1))
    return lambda: model(images, inputs, targets)


def train_prefix(cfg, frozen_cfg):
    rt = setup_runtime(cfg.device, cfg.dtype)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer, lm_path, lm_lr = build_frozen(cfg, frozen_cfg, rt.device)
    lm_hash = file_hash(lm_path)
    # channels-last convolutions: faster on GPUs and on CPUs alike (oneDNN; 1.2-1.4x on the tiny
    # encoder's forward and backward on a 2-core AMD EPYC)
    model.vision.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(prefix_param_groups(model, cfg, lm_lr), cfg, rt.device)
    ckpt_path = out / "prefix.pt"
    ckpt = resume_from(ckpt_path, "prefix", cfg, frozen_cfg, rt, model_key="frozen_config")
    trial = prefix_trial_loss(model, cfg.batch_size, frozen_cfg, rt.device, CAPTION_TOKENS)
    # attention over the prefix and a caption
    rt = choose_precision(rt, cfg.dtype, trial_step(model, trial),
                          (cfg.batch_size, model.lm.config, frozen_cfg.n_prefix + CAPTION_TOKENS), "prefix",
                          ckpt and ckpt.get("precision"))
    if ckpt and ckpt["lm_hash"] != lm_hash:
        raise InputError(f"{ckpt_path}: was trained against another LM checkpoint than {lm_path}")
    start_step = restore(ckpt, model, optimizer, ckpt_path, strict=False)  # the frozen LM is not in it
    if cfg.init_encoder and not start_step:
        start_encoder_from(model, Path(cfg.init_encoder), lm_hash)
    if already_done(start_step, cfg, ckpt_path):
        return model, tokenizer
    if rt.master:
        n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"Frozen: {n_trained / 1e6:.2f}M trained parameters (vision encoder"
              f"{' and LM' if model.train_lm else ''}), LM {model.lm.num_params() / 1e6:.2f}M "
              f"{f'trained at lr {lm_lr:g}' if model.train_lm else 'frozen'}; {frozen_cfg}")
    log = open_log(out / "prefix_log.txt", start_step, rt)
    # both splits are built (and every real image-caption pair checked) before step 0
    # (captions in a row train on rows of the world; the val loss stays one caption at a time)
    captions = partial(caption_dataset, cfg.data, frozen_cfg.image_size, cfg.seed, image_dir=cfg.image_dir or None,
                       max_bad=cfg.max_bad, blind=cfg.blind, naming_captions=cfg.naming_captions)
    train_set = caption_rows_dataset(cfg, frozen_cfg) if cfg.captions_in_row > 1 else captions(split="train")
    val_set = captions(split="val")
    # a caption longer than the LM's trained context is cut to fit (CaptionCollate says so once)
    collate = CaptionCollate(tokenizer.path, frozen_cfg.n_prefix,
                             max_tokens=model.lm.config.block_size - frozen_cfg.n_prefix - 1)
    batches = iter(caption_batches(train_set, collate, cfg, rt, "train", start_step, cfg.max_steps, cfg.grad_accum,
                                   per_item=cfg.captions_in_row))
    train_model = wrap_for_training(model, cfg, rt)
    step_log = StepLog(log, start_step, cfg.batch_size * cfg.grad_accum * rt.world_size, "pairs/s")

    model.train()  # the vision encoder trains; Frozen.train keeps the frozen LM in eval mode
    bar, eval_s, started = progress(start_step, cfg, rt), 0.0, time.time()
    for step in bar:
        lr = lr_at(step, cfg, cosine=False)
        set_lr(optimizer, lr)
        seed_step(cfg.seed, step, rt.rank)
        # The captioning loss is a sum over caption tokens (Sec. 3.2); every token must weigh the
        # same however a step is split into micro-batches and processes, so each micro-batch's
        # mean is scaled by its share of the whole step's tokens (x world_size undoes DDP's mean
        # over processes). So read all of the step's micro-batches first, to count its tokens.
        micro_batches = [to_device(next(batches), rt) for _ in range(cfg.grad_accum)]
        step_tokens = sum((targets != -100).sum() for _, _, targets in micro_batches)
        if rt.world_size > 1:
            dist.all_reduce(step_tokens)
        for micro, (images, inputs, targets) in enumerate(micro_batches):
            if cfg.blind:
                images = black_images(images)
            with sync_unless_last(train_model, micro, cfg.grad_accum):
                with rt.autocast():
                    loss = train_model(images, inputs, targets)  # mean over this micro-batch's tokens
                (loss * (targets != -100).sum() / step_tokens * rt.world_size).backward()
        clip_prefix_gradients(model, cfg)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        done = step + 1
        if is_due(done, cfg.log_interval, cfg.max_steps):
            step_log.write(done, loss.item(), lr)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}")
        if is_due(done, cfg.eval_interval, cfg.max_steps) and rt.master:
            evaluate = partial(evaluate_prefix, model, val_set, collate, cfg, rt)
            eval_s += evaluate_and_report(evaluate, bar, log, step_log, done)
        if is_due(done, cfg.ckpt_interval, cfg.max_steps) and rt.master:
            save_checkpoint({"kind": "prefix", "model": model.trainable_state_dict(),
                             "optimizer": optimizer.state_dict(),
                             **run_record(cfg, frozen_cfg, rt, model_key="frozen_config"), "step": done,
                             "lm_ckpt": str(lm_path), "lm_hash": lm_hash}, ckpt_path)
    bar.close()
    if rt.master:
        report_eval_share(log, cfg.max_steps, eval_s, started)
        print(f"saved {ckpt_path}")
    return model, tokenizer


# ---------------------------------------------------------------------------------------------
# entry point


STAGES = {"lm": (LMConfig, GPTConfig, train_lm), "prefix": (PrefixConfig, FrozenConfig, train_prefix)}


def parse_args(argv):
    """--stage first, then the flags of that stage's configs."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--stage", choices=list(STAGES))
    stage = first.parse_known_args(argv)[0].stage or "lm"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=list(STAGES), required=True, help="which stage to train")
    parser.add_argument("--preset", choices=["tiny", "small"], default="tiny",
                        help="tiny: 2 CPU cores, minutes; small: one GPU, under an hour")
    run_cls, model_cls, _ = STAGES[stage]
    add_dataclass_args(parser, run_cls, f"stage {stage}")
    add_dataclass_args(parser, model_cls, model_cls.__name__.removesuffix("Config"))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    run_cls, model_cls, train_stage = STAGES[args.stage]
    preset = PRESETS[args.stage][args.preset]
    try:
        cfg = build_config(run_cls, args, preset["train"])
        model_cfg = build_config(model_cls, args, preset["model"])
        warn_if_gpu_preset_on_cpu(args.preset, cfg.device)
        train_stage(cfg, model_cfg)
    except InputError as e:
        sys.exit(f"error: {e}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
