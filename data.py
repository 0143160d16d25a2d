"""
Data: the tokenizer, text batches for stage lm, image-caption batches for stage prefix.

Text (stage lm, Frozen Sec. 3.1 trains its LM on a large text corpus):
- the embedded default is world.py's generated English about the drawn world; real text is a
  `.txt` file or a folder of them (`--text PATH`);
- a byte-level BPE tokenizer (as GPT-2's) is trained on it with `tokenizers`, with two special
  tokens: end-of-text, which separates documents and ends every caption, and padding, which
  never reuses a real token id and never receives a loss;
- batch `k` is a pure function of (seed, k): resuming at step k, or splitting a batch's rows
  across processes, sees exactly the data an unbroken single-process run would have seen.

Images and captions (stage prefix, Frozen Sec. 3.2 trains on Conceptual Captions) are below.
"""

import hashlib
import json
import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch

class InputError(ValueError):
    """Bad input from the user (a file missing, empty, corrupt or of the wrong kind). The message
    names the file and the problem; entry points print it as one line instead of a traceback."""


EOT = "<|endoftext|>"
PAD = "<|pad|>"


# ---------------------------------------------------------------------------------------------
# tokenizer


class Tokenizer:
    """A byte-level BPE tokenizer from `tokenizers`, with end-of-text and padding ids."""

    def __init__(self, path):
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: tokenizer file not found (stage lm writes it beside lm.pt)")
        try:
            self._tok = HFTokenizer.from_file(str(path))
        except Exception as e:
            raise InputError(f"{path}: not a tokenizer file ({e})") from None
        self.path = path
        self.eot_id = self._tok.token_to_id(EOT)
        self.pad_id = self._tok.token_to_id(PAD)
        if self.eot_id is None or self.pad_id is None:
            raise InputError(f"{path}: tokenizer has no {EOT} / {PAD} special tokens")
        self.vocab_size = self._tok.get_vocab_size()
        self.hash = file_hash(path)

    def encode(self, text):
        return self._tok.encode(text).ids

    def encode_batch(self, texts):
        return [e.ids for e in self._tok.encode_batch(texts)]

    def decode(self, ids):
        return self._tok.decode([i for i in ids if i != self.pad_id], skip_special_tokens=True)


def train_tokenizer(texts, vocab_size, path):
    """Train a byte-level BPE on an iterable of strings, save it to `path`, return a Tokenizer."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tok.save(str(tmp))
    os.replace(tmp, path)
    return Tokenizer(path)


def file_hash(path):
    """sha256 of a file, hex, first 16 chars: names a tokenizer or checkpoint exactly."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def row_seed(*parts):
    """A 64-bit seed from a tuple of ints, stable across runs and processes (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


# ---------------------------------------------------------------------------------------------
# text for stage lm


def read_text_files(path):
    """The documents of a .txt file or a folder of .txt files (one document per file)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: text path not found (give a .txt file or a folder of .txt files)")
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise InputError(f"{path}: folder holds no .txt files")
    docs = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{f}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if text.strip():
            docs.append(text)
    if not docs:
        raise InputError(f"{path}: the text corpus is empty")
    return docs


class WorldText:
    """The embedded default corpus: world.py's documents, generated on demand.

    Row r of batch k is packed from the documents of its own seed (seed, split, k, r), each row
    starting at a document boundary, so in-context passages are never cut at the front."""

    def __init__(self, tokenizer, block_size, seed=0, split="train", mix=None):
        import world

        self.tokenizer, self.block_size, self.split = tokenizer, block_size, split
        self.seed = seed if split == "train" else seed + 1_000_003  # val text: other documents
        self.mix = mix if mix is not None else world.TextMix()
        self._documents = world.text_documents

    def row(self, k, r):
        docs = self._documents(seed=row_seed(self.seed, k, r), mix=self.mix)
        tokens = []
        while len(tokens) < self.block_size + 1:
            tokens += self.tokenizer.encode(next(docs)) + [self.tokenizer.eot_id]
        return tokens[: self.block_size + 1]

    def sample_texts(self, n_chars):
        """About n_chars of text to train the tokenizer on."""
        import world

        return world.corpus_text(self.seed, n_chars, self.mix).split("\n\n")


class FileText:
    """Real text: all documents tokenised once; 90% of the tokens train, the last 10% validate.
    Row r of batch k is a window at an offset drawn from its own seed."""

    def __init__(self, path, tokenizer, block_size, seed=0, split="train"):
        self.docs = read_text_files(path)
        self.tokenizer, self.block_size, self.seed = tokenizer, block_size, seed
        if tokenizer is None:  # only sample_texts() is usable until the tokenizer exists
            return
        ids = []
        for doc_ids in tokenizer.encode_batch(self.docs):
            ids += doc_ids + [tokenizer.eot_id]
        n_val = max(len(ids) // 10, block_size + 1)
        ids = ids[:-n_val] if split == "train" else ids[-n_val:]
        if len(ids) < block_size + 1:
            raise InputError(f"{path}: corpus of {len(ids)} tokens in its {split} split is too short "
                             f"for sequences of {block_size} (it needs at least {block_size + 1})")
        self.ids = torch.tensor(ids, dtype=torch.long)
        self.seed = seed if split == "train" else seed + 1_000_003

    def row(self, k, r):
        rng = random.Random(row_seed(self.seed, k, r))
        start = rng.randrange(len(self.ids) - self.block_size)
        return self.ids[start: start + self.block_size + 1].tolist()

    def sample_texts(self, n_chars):
        texts, total = [], 0
        for d in self.docs:
            texts.append(d[: n_chars - total])
            total += len(texts[-1])
            if total >= n_chars:
                break
        return texts


def text_batch(source, k, rows):
    """Inputs and next-token targets (len(rows), block_size) of batch k, for the given row numbers."""
    data = torch.tensor([source.row(k, r) for r in rows], dtype=torch.long)
    return data[:, :-1], data[:, 1:]
