"""
Checkpoints and training logs: the library every script imports (train, sample, eval, bench,
lmblock), so that no script imports another.

A checkpoint is a plain dict of tensors and Python values, loaded with
`torch.load(..., weights_only=True)` (no pickled code runs). Its "kind" says which stage wrote it
("lm", "prefix" or "classify"); a stage-prefix checkpoint names the LM checkpoint it was trained
against and that file's hash, so a changed LM is refused instead of silently mismatched.

Files are written atomically: a temporary file, flushed to disk, then renamed over the old one,
so a run killed at any moment leaves the previous checkpoint or the new one, never half of one.

The training log is one fixed-format line per interval (`step 20 | loss 3.1 | lr 0.003 | ...`),
appended to <out_dir>/<stage>_log.txt: easy to read, grep and plot (`eval.py --plot-log`).
"""

import dataclasses
import os
from pathlib import Path

import torch

from data import InputError, Tokenizer, file_hash
from frozen import Frozen, FrozenConfig
from gpt import GPT, GPTConfig

# ---------------------------------------------------------------------------------------------
# saving and loading


def save_checkpoint(obj, path):
    """Write to a temp file, fsync it, rename it into place, fsync the folder: after a crash the
    file is the old checkpoint or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # make the rename itself durable
    finally:
        os.close(folder)


def read_checkpoint(path):
    """The dict in a checkpoint file; a one-line error for a missing, empty or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes), not a checkpoint; delete it and train again")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's own message would advise weights_only=False: never for a file like this
        raise InputError(f"{path}: not a checkpoint written by train.py ({type(e).__name__}: truncated, "
                         f"or another kind of file)") from None
    if not isinstance(ckpt, dict) or "kind" not in ckpt:
        raise InputError(f"{path}: not a checkpoint written by train.py (no 'kind' entry)")
    return ckpt


def load_checkpoint(path, kind):
    """Load a checkpoint written by stage `kind` ('lm', 'prefix' or 'classify')."""
    ckpt = read_checkpoint(path)
    if ckpt["kind"] != kind:
        raise InputError(f"{path}: expected a stage-{kind} checkpoint, found a stage-{ckpt['kind']} one")
    return ckpt


def checkpoint_kind(path):
    """'lm', 'prefix' or 'classify'; None for a missing or unreadable file (loading it with
    load_checkpoint then says what is wrong)."""
    try:
        return read_checkpoint(path)["kind"]
    except InputError:
        return None


def state_dict_of(model):
    """Weights without the wrappers torch.compile and DDP put around a model."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return model.state_dict()


def config_differences(saved, current, free=(), cls=None):
    """'field: checkpoint X, now Y' for every field of two config dicts that differs, except
    the `free` ones (those a resumed run may change without changing what is trained). A field
    the checkpoint lacks (added to `cls` since it was written) counts as its default, as when
    the checkpoint is loaded (config_of): a new field's default is the behaviour before it."""
    saved = {**defaults_of(cls), **saved} if cls else saved
    return [f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}"
            for k in sorted(set(saved) | set(current))
            if k not in free and saved.get(k) != current.get(k)]


# ---------------------------------------------------------------------------------------------
# the models of each stage


def defaults_of(cls):
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def check_tokenizer(ckpt, tokenizer, ckpt_path):
    if ckpt.get("tokenizer_hash") != tokenizer.hash:
        raise InputError(f"{tokenizer.path}: tokenizer does not match the checkpoint {ckpt_path} "
                         f"(hash {tokenizer.hash}, checkpoint expects {ckpt.get('tokenizer_hash')})")


def config_of(cls, saved, path):
    """A model config from a checkpoint's dict; fields this code does not know (a checkpoint of
    another version of the repo) are refused by name instead of a TypeError."""
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise InputError(f"{path}: its {cls.__name__} has fields this code does not know ({', '.join(unknown)}): "
                         f"written by another version of this repository")
    return cls(**saved)


def load_lm(path, device="cpu"):
    """The stage-lm GPT and its tokenizer (beside the checkpoint, else where it was written),
    checked against each other."""
    ckpt = load_checkpoint(path, "lm")
    tok_path = Path(path).parent / "tokenizer.json"
    if not tok_path.exists():
        tok_path = Path(ckpt["tokenizer"])
    tokenizer = Tokenizer(tok_path)
    check_tokenizer(ckpt, tokenizer, path)
    model = GPT(config_of(GPTConfig, ckpt["model_config"], path))
    model.load_state_dict(ckpt["model"])
    return model.to(device), tokenizer, ckpt


def lm_path_of(prefix_ckpt, prefix_path):
    """The LM checkpoint a stage-prefix run was trained against, refused if it has changed."""
    lm_path = Path(prefix_ckpt["lm_ckpt"])
    if not lm_path.exists():  # the run folder was moved: look beside the prefix checkpoint
        lm_path = Path(prefix_path).parent / lm_path.name
    if not lm_path.exists():
        raise InputError(f"{prefix_path}: its LM checkpoint {prefix_ckpt['lm_ckpt']} is missing")
    if file_hash(lm_path) != prefix_ckpt["lm_hash"]:
        raise InputError(f"{lm_path}: has changed since {prefix_path} was trained against it (hash mismatch)")
    return lm_path


def trains_lm(train_config):
    """Whether stage prefix trained the LM too (the fine-tuned and from-scratch ablations)."""
    return train_config["finetune_lm"] or train_config["lm_init"] == "scratch"


def load_frozen(path, device="cpu"):
    """A trained Frozen model: the stage-prefix weights on top of the LM checkpoint they were
    trained against. Returns (model in eval mode, tokenizer, checkpoint dict)."""
    ckpt = load_checkpoint(path, "prefix")
    lm, tokenizer, _ = load_lm(lm_path_of(ckpt, path))
    model = Frozen(lm, config_of(FrozenConfig, ckpt["frozen_config"], path), train_lm=trains_lm(ckpt["train_config"]))
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if unexpected or any(not k.startswith("lm.") for k in missing):
        raise InputError(f"{path}: weights do not fit its own config (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return model.to(device).eval(), tokenizer, ckpt


def load_for_text(path, device="cpu"):
    """The LM of a stage-lm checkpoint, or the LM inside a stage-prefix one (for text prompts)."""
    if checkpoint_kind(path) == "prefix":
        model, tokenizer, _ = load_frozen(path, device)
        return model.lm, tokenizer
    model, tokenizer, _ = load_lm(path, device)
    return model.eval(), tokenizer


# ---------------------------------------------------------------------------------------------
# the training log


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

    def truncate_after(self, step):
        """Drop the lines logged after `step`: a resumed run starts again from its checkpoint, and
        the killed run's later lines would otherwise appear twice. Returns how many were dropped."""
        if not (self.enabled and self.path.exists()):
            return 0
        lines = self.path.read_text().splitlines(keepends=True)
        keep = [line for line in lines if parse_log_line(line).get("step", 0) <= step]
        if len(keep) < len(lines):
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(keep))
            os.replace(tmp, self.path)
        return len(lines) - len(keep)


def parse_log_line(line):
    row = {}
    for part in line.strip().split(" | "):
        key, _, value = part.partition(" ")
        try:
            row[key] = float(value)
        except ValueError:
            row[key] = value
    return row


def read_log(path):
    """The log as a list of dicts, one per line (the inverse of Log.write)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: log not found")
    return [parse_log_line(line) for line in path.read_text().splitlines() if line.strip()]
