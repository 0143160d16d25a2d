"""
The follow-up study: a frozen block of the text-trained LM as a layer of the vision encoder
(Pang et al. 2024, "Frozen transformers in language models are effective visual encoder layers").

Their finding (ImageNet, ViT-S): putting a frozen LLaMA block between the ViT and its classifier,
with a trainable linear layer on each side, raises accuracy (80.1 -> 80.7), while an MLP of the
same size (80.4), the same block fine-tuned (78.9) or randomly initialised (76.9) does not. Here
the task is the world's kinds from single-object pictures, the encoder the NF-ResNet, the block
one of the stage-lm GPT's (vision.LMBlockLayer):

  python lmblock.py train --lm-ckpt out/lm.pt --lm-block last --out-dir out/lmblock/frozen
  python lmblock.py train --lm-block none --out-dir out/lmblock/none      # the encoder alone
  python lmblock.py table none=out/lmblock/none/classify.pt frozen-block=out/lmblock/frozen/classify.pt

`make lmblock` trains the five variants with three seeds each and writes the table; runs given
under one name are seeds of one variant, and the table shows their mean with a t-interval over
the seeds (the spread between seeds is the uncertainty that matters; a pooled interval over
their test images would hide it). Inside Frozen the same encoders are `train.py --stage prefix
--lm-block ...` (`make lmblock-prefix`).
"""

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

import world
from checkpoint import load_checkpoint, load_lm, save_checkpoint
from common import (RunConfig, StepLog, add_dataclass_args, build_config, is_due, lr_at, make_optimizer, open_log,
                    restore, resume_from, run_record, seed_step, set_lr, setup_runtime, usable_workers)
from data import InputError, StepBatches, image_to_tensor
from frozen import FrozenConfig
from nfresnet import adaptive_grad_clip
from scoring import seed_interval
from tables import header
from vision import VisualFeatures

# Pang et al. 2024, Table 1 (ImageNet top-1, ViT-S): the finding this study re-makes
PAPER = {"none": 80.1, "frozen-block": 80.7, "mlp": 80.4, "finetuned-block": 78.9, "random-block": 76.9}


@dataclass
class ClassifyConfig(RunConfig):
    """Classify the world's kinds from single-object images with the NF-ResNet, with or without
    a block of the stage-lm GPT inside it."""
    out_dir: str = "out/classify"
    lm_ckpt: str = "out/lm.pt"  # where the LM block comes from (--lm-block)
    max_steps: int = 600
    warmup_steps: int = 50
    min_lr: float = 1e-4
    agc_clip: float = 0.01
    num_workers: int = -1  # DataLoader processes; -1: none on a CPU, 4 beside a GPU
    eval_interval: int = 200
    eval_images: int = 1000  # test images scored at each evaluation
    ckpt_interval: int = 200


# measured: the tiny encoder reached 0.50 on kinds in 400 steps at 64 px and lr 3e-3
PRESETS = {"tiny": dict(model=dict(encoder="tiny", image_size=64), train=dict(lr=3e-3, min_lr=3e-4, max_steps=1000)),
           "small": dict(model=dict(encoder="nf_resnet26", image_size=64), train=dict(batch_size=128, max_steps=3000))}


class WorldKinds(torch.utils.data.Dataset):
    """One thing per image, labelled with its kind (indices into world.SEEN_KINDS): the world's
    image classification task, ImageNet's role in the study."""

    def __init__(self, image_size, seed=0, split="train", length=1_000_000):
        self.image_size, self.split, self.seed, self.length = image_size, split, seed, length
        self.kinds = world.SEEN_KINDS

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        rng = random.Random(f"kinds/{self.seed}/{self.split}/{i}")
        label = rng.randrange(len(self.kinds))
        scene = world.lone_scene(rng, self.kinds[label], position=rng.choice(world.POSITIONS))
        return image_to_tensor(world.render(scene, self.image_size, rng), self.image_size), label


class KindClassifier(nn.Module):
    """vision.VisualFeatures (the NF-ResNet, with the LM block when asked) and a linear head."""

    def __init__(self, config, n_classes, lm=None):
        super().__init__()
        self.features = VisualFeatures(config, lm)
        self.head = nn.Linear(self.features.num_features, n_classes)

    def forward(self, images, labels):
        logits = self.head(self.features(images))  # (B, n_classes)
        return nn.functional.cross_entropy(logits, labels), logits


@torch.no_grad()
def test_accuracy(model, cfg, frozen_cfg, rt):
    """Correct predictions on cfg.eval_images images of the world's test split."""
    dataset = WorldKinds(frozen_cfg.image_size, cfg.seed, "test", cfg.eval_images)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, num_workers=usable_workers(cfg.num_workers, rt))
    model.eval()
    correct = 0
    with rt.autocast():
        for images, labels in loader:
            _, logits = model(images.to(rt.device), labels.to(rt.device))
            correct += (logits.argmax(-1).cpu() == labels).sum().item()
    model.train()
    return correct


def train_classify(cfg, frozen_cfg):
    rt = setup_runtime(cfg.device, cfg.dtype)
    if rt.world_size > 1:  # each process would train its own model: refuse rather than drift
        raise InputError("lmblock.py train runs in one process; start it with python, not torchrun")
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lm = load_lm(cfg.lm_ckpt)[0] if frozen_cfg.lm_block != "none" else None
    model = KindClassifier(frozen_cfg, len(world.SEEN_KINDS), lm).to(rt.device)
    optimizer = make_optimizer([{"params": [p for p in model.parameters() if p.requires_grad],
                                 "weight_decay": cfg.weight_decay}], cfg, rt.device)
    ckpt_path = out / "classify.pt"
    ckpt = resume_from(ckpt_path, "classify", cfg, frozen_cfg, rt, model_key="frozen_config")
    start_step = restore(ckpt, model, optimizer, ckpt_path)
    score = {k: ckpt[k] for k in ("correct", "n") if k in ckpt} if ckpt else {}  # a finished run keeps its score
    print(f"classifier: {sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.3f}M trained "
          f"parameters; {frozen_cfg}")
    dataset = WorldKinds(frozen_cfg.image_size, cfg.seed, "train")
    sampler = StepBatches(len(dataset), start_step, cfg.max_steps, cfg.grad_accum, cfg.batch_size, 0, 1, cfg.seed)
    batches = iter(torch.utils.data.DataLoader(dataset, batch_sampler=sampler,
                                               num_workers=usable_workers(cfg.num_workers, rt)))
    log = open_log(out / "classify_log.txt", start_step, rt)
    step_log = StepLog(log, start_step, cfg.batch_size * cfg.grad_accum, "img/s")

    model.train()
    for step in range(start_step, cfg.max_steps):
        lr = lr_at(step, cfg)
        set_lr(optimizer, lr)
        seed_step(cfg.seed, step, 0)
        for _ in range(cfg.grad_accum):
            images, labels = next(batches)
            with rt.autocast():
                loss, _ = model(images.to(rt.device), labels.to(rt.device))
            (loss / cfg.grad_accum).backward()
        adaptive_grad_clip(model.features.encoder.parameters(), cfg.agc_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if is_due(done, cfg.log_interval, cfg.max_steps):
            step_log.write(done, loss.item(), lr)
        if is_due(done, cfg.eval_interval, cfg.max_steps):
            score = {"correct": test_accuracy(model, cfg, frozen_cfg, rt), "n": cfg.eval_images}
            log.write(step=done, test_acc=score["correct"] / score["n"])
            print(f"step {done} | test_acc {score['correct'] / score['n']:.3f}")
            step_log.restart(done)
        if is_due(done, cfg.ckpt_interval, cfg.max_steps):
            save_checkpoint({"kind": "classify", "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             **run_record(cfg, frozen_cfg, rt, model_key="frozen_config"), "step": done, **score},
                            ckpt_path)
    print(f"test accuracy {score['correct'] / score['n']:.3f} on {score['n']} images; {ckpt_path}")
    return model, score


# ---------------------------------------------------------------------------------------------
# the table


def variant_of(frozen_config):
    f = frozen_config
    return "none" if f["lm_block"] == "none" else f"block {f['lm_block']}, {f['lm_block_mode']}"


def classify_table(specs, out=print):
    """One row per variant: specs are NAME=PATH; runs under one name are its seeds."""
    runs = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        ckpt = load_checkpoint(path, "classify")
        if "correct" not in ckpt:
            raise InputError(f"{path}: the run was never scored (it stopped before its first evaluation)")
        runs.setdefault(name or Path(path).parent.name, []).append(ckpt)
    out("Kinds accuracy on the world's test split, mean over seeds with a 95% t-interval across them; "
        "beside it Pang et al. 2024's ImageNet top-1 (ViT-S) for the same variant.\n")
    header(out, "vision encoder", "seeds", "accuracy (test)", "95% interval over seeds", "each seed", "paper (ImageNet)")
    rows = {}
    for name, ckpts in runs.items():
        accs = [c["correct"] / c["n"] for c in ckpts]
        cell = seed_interval(accs)
        paper = f"{PAPER[name]:.1f}" if name in PAPER else "–"
        interval = f"[{cell['ci'][0]:.3f}, {cell['ci'][1]:.3f}]" if cell["ci"] else "– (one seed)"
        out(f"| {name} ({variant_of(ckpts[0]['frozen_config'])}) | {len(accs)} | {cell['acc']:.3f} | {interval} | "
            f"{', '.join(f'{a:.3f}' for a in accs)} | {paper} |")
        rows[name] = dict(cell, runs=accs, test_images=[c["n"] for c in ckpts])
    return {"task": "classify", "rows": rows}


# ---------------------------------------------------------------------------------------------
# entry point


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one classifier")
    train.add_argument("--preset", choices=list(PRESETS), default="tiny")
    add_dataclass_args(train, ClassifyConfig, "stage classify")
    add_dataclass_args(train, FrozenConfig, "vision encoder")
    table = commands.add_parser("table", help="the comparison table of trained classifiers")
    table.add_argument("ckpt", nargs="+", metavar="NAME=PATH", help="classify.pt files; one name per variant")
    table.add_argument("--md", default=None, help="also write the table (Markdown) here")
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            cfg = build_config(ClassifyConfig, args, PRESETS[args.preset]["train"])
            return train_classify(cfg, build_config(FrozenConfig, args, PRESETS[args.preset]["model"]))
        lines = []
        result = classify_table(args.ckpt, out=lambda line="": (print(line), lines.append(line)))
        if args.md:
            Path(args.md).parent.mkdir(parents=True, exist_ok=True)
            Path(args.md).write_text("\n".join(lines) + "\n")
        return result
    except InputError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
