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


# ---------------------------------------------------------------------------------------------
# images and captions for stage prefix

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def image_to_tensor(image, size):
    """The paper's preprocessing (Sec. 3.2): pad to a square, resize; then scale to [-1, 1].
    Padding keeps the whole image and its aspect (a centre crop could cut off what the caption
    names); the pad is mid-grey, which becomes 0 after scaling."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    if w != h:
        side = max(w, h)
        square = Image.new("RGB", (side, side), (128, 128, 128))
        square.paste(image, ((side - w) // 2, (side - h) // 2))
        image = square
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, H, W)
    return x.float().div(127.5).sub(1.0)


def black_images(images):
    """The blind ablation's input (Sec. 4): black images, after the same scaling."""
    return torch.full_like(images, -1.0)


class WorldCaptions(torch.utils.data.Dataset):
    """The drawn world's (image, caption) pairs; item i is the world's scene i."""

    def __init__(self, image_size, seed=0, split="train", length=1_000_000):
        import world

        self.world = world.World(seed=seed, image_size=image_size, split=split, length=length)
        self.image_size = image_size

    def __len__(self):
        return len(self.world)

    def __getitem__(self, i):
        image, caption, _ = self.world[i]
        return image_to_tensor(image, self.image_size), caption


class CaptionFiles(torch.utils.data.Dataset):
    """Real image-caption pairs from a list of (image path, caption).

    Files are checked when the dataset is built: unreadable images and empty captions are
    counted and skipped with a warning naming them, and more than `max_bad` of them is an error.
    An image that still fails to decode later is skipped with a warning naming it.
    """

    def __init__(self, pairs, image_size, source, max_bad=0.05):
        from PIL import Image

        self.image_size, self.source = image_size, source
        good, bad = [], []
        for path, caption in pairs:
            problem = None
            if not caption or not caption.strip():
                problem = "empty caption"
            elif not Path(path).is_file():
                problem = "image not found"
            else:
                try:
                    with Image.open(path) as im:
                        im.verify()
                except Exception as e:
                    problem = f"unreadable image ({type(e).__name__})"
            if problem:
                bad.append(f"{path}: {problem}")
            else:
                good.append((str(path), caption.strip()))
        if not pairs:
            raise InputError(f"{source}: no image-caption pairs found")
        if bad:
            shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
            if len(bad) > max_bad * len(pairs):
                raise InputError(f"{source}: {len(bad)} of {len(pairs)} pairs are bad, more than the "
                                 f"allowed {max_bad:.0%}: {shown}")
            warnings.warn(f"{source}: skipping {len(bad)} of {len(pairs)} bad pairs: {shown}")
        self.pairs = good
        self.skipped = bad

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        from PIL import Image

        for attempt in range(len(self.pairs)):
            path, caption = self.pairs[(i + attempt) % len(self.pairs)]
            try:
                with Image.open(path) as im:
                    return image_to_tensor(im, self.image_size), caption
            except Exception as e:
                warnings.warn(f"{path}: skipped, image failed to decode ({e})")
        raise InputError(f"{self.source}: no image could be decoded")


def coco_pairs(json_path, image_dir=None):
    """COCO captions: {"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}."""
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
        files = {im["id"]: im["file_name"] for im in data["images"]}
        image_dir = Path(image_dir) if image_dir else json_path.parent
        return [(image_dir / files[a["image_id"]], a["caption"]) for a in data["annotations"]]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{json_path}: not a COCO captions file ({type(e).__name__}: {e})") from None


def jsonl_pairs(path):
    """One {"image": path, "caption": text} per line; image paths relative to the file's folder."""
    path = Path(path)
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((path.parent / row["image"], row["caption"]))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{path}, line {n}: expected {{\"image\": ..., \"caption\": ...}} ({e})") from None
    return pairs


def folder_pairs(folder):
    """img2dataset's files layout: name.jpg beside name.txt, in a folder and its subfolders."""
    folder = Path(folder)
    pairs = []
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
        caption_file = image.with_suffix(".txt")
        caption = caption_file.read_text(encoding="utf-8", errors="replace") if caption_file.exists() else ""
        pairs.append((image, caption))
    return pairs


def caption_dataset(data, image_size, seed=0, split="train", image_dir=None, max_bad=0.05):
    """'world' or a path: a COCO .json, a .jsonl, or a folder of image + .txt pairs."""
    if data == "world":
        return WorldCaptions(image_size, seed, split)
    path = Path(data)
    if not path.exists():
        raise InputError(f"{path}: caption data not found (give 'world', a COCO .json, a .jsonl, "
                         f"or a folder of name.jpg + name.txt pairs)")
    if path.is_dir():
        pairs = folder_pairs(path)
    elif path.suffix == ".jsonl":
        pairs = jsonl_pairs(path)
    elif path.suffix == ".json":
        pairs = coco_pairs(path, image_dir)
    else:
        raise InputError(f"{path}: unknown caption format (expected .json, .jsonl or a folder)")
    # real data: a fixed 2% (at least one pair) validates, the rest trains
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, len(pairs) // 50) if len(pairs) > 1 else 0
    chosen = order[:n_val] if split != "train" else order[n_val:]
    return CaptionFiles([pairs[i] for i in chosen], image_size, path, max_bad)


class CaptionCollate:
    """Tokenise captions in the DataLoader's workers; stack images."""

    def __init__(self, tokenizer_path, n_prefix):
        self.tokenizer_path, self.n_prefix = tokenizer_path, n_prefix
        self._tokenizer = None

    def __call__(self, items):
        from frozen import caption_targets

        if self._tokenizer is None:  # built lazily, once per worker process
            self._tokenizer = Tokenizer(self.tokenizer_path)
        images = torch.stack([image for image, _ in items])
        captions = self._tokenizer.encode_batch([" " + caption for _, caption in items])
        inputs, targets = caption_targets(captions, self.n_prefix, self._tokenizer.eot_id, self._tokenizer.pad_id)
        return images, inputs, targets


class StepBatches(torch.utils.data.Sampler):
    """The indices of batches start_step..max_steps-1, this process's rows of each micro-batch.

    Batch k is a pure function of (seed, k): row r of the global batch is item
    perm_e[(k * G + r) mod N] of epoch e's permutation, G the global batch size."""

    def __init__(self, n_items, start_step, max_steps, micro_batches, batch_size, rank, world_size, seed):
        self.n, self.start, self.stop = n_items, start_step, max_steps
        self.micro, self.batch_size, self.rank, self.world_size, self.seed = micro_batches, batch_size, rank, world_size, seed
        self._perms = {}

    def _perm(self, epoch):
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))}
        return self._perms[epoch]

    def __len__(self):
        return (self.stop - self.start) * self.micro

    def __iter__(self):
        G = self.micro * self.world_size * self.batch_size
        for k in range(self.start, self.stop):
            for m in range(self.micro):
                first = k * G + (m * self.world_size + self.rank) * self.batch_size
                yield [self._perm(j // self.n)[j % self.n].item() for j in range(first, first + self.batch_size)]


class WorldKinds(torch.utils.data.Dataset):
    """One thing per image, labelled with its kind: the world's image classification task (the
    ImageNet stand-in for the LM-block comparison). Labels index world.SEEN_KINDS."""

    def __init__(self, image_size, seed=0, split="train", length=1_000_000):
        import world

        self.world, self.image_size, self.split, self.seed, self.length = world, image_size, split, seed, length
        self.kinds = world.SEEN_KINDS

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        rng = random.Random(f"kinds/{self.seed}/{self.split}/{i}")
        label = rng.randrange(len(self.kinds))
        scene = self.world.lone_scene(rng, self.kinds[label], position=rng.choice(self.world.POSITIONS))
        image = self.world.render(scene, self.image_size, rng)
        return image_to_tensor(image, self.image_size), label


# ---------------------------------------------------------------------------------------------
# prompts: interleaved images and text


def encode_pieces(pieces, tokenizer, image_size):
    """Prompt pieces (PIL images and strings) -> model pieces (image tensors and token-id lists),
    what Frozen.embed_sequences reads (Sec. 3.3, "Interface at inference time").

    Consecutive pieces are joined by one space, as in the text the LM was trained on: a text
    piece after anything is tokenised with a leading space."""
    from PIL import Image

    encoded = []
    for i, piece in enumerate(pieces):
        if isinstance(piece, Image.Image):
            encoded.append(image_to_tensor(piece, image_size))
        else:
            encoded.append(tokenizer.encode((" " if i > 0 else "") + piece))
    return encoded
