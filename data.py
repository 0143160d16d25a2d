"""
Data: the tokenizer, text batches for stage lm, image-caption batches for stage prefix.

Text (stage lm, Frozen Sec. 3.1 trains its LM on a large text corpus):
- the embedded default is world/'s generated English about the drawn world; real text is a
  `.txt` file or a folder of them (`--text PATH`);
- a byte-level BPE tokenizer (as GPT-2's) is trained on it with `tokenizers`, with two special
  tokens: end-of-text, which separates documents and ends every caption, and padding, which
  never reuses a real token id and never receives a loss;
- batch `k` is a pure function of (seed, k): resuming at step k, or splitting a batch's rows
  across processes, sees exactly the data an unbroken single-process run would have seen.

Images and captions (stage prefix, Frozen Sec. 3.2 trains on Conceptual Captions) are below.
"""

import functools
import hashlib
import json
import os
import random
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tokenizers
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

import world
from frozen import caption_rows, caption_targets


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
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: tokenizer file not found (stage lm writes it beside lm.pt)")
        try:
            self._tok = tokenizers.Tokenizer.from_file(str(path))
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
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT, PAD],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
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


def read_utf8(path):
    """A text file's contents. A file in another encoding is refused, not decoded into mojibake."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")  # -sig: a leading byte-order mark is dropped
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror})") from None


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
    docs = [text for text in map(read_utf8, files) if text.strip()]
    if not docs:
        raise InputError(f"{path}: the text corpus is empty")
    return docs


class WorldText:
    """The embedded default corpus: world/'s documents, generated on demand.

    Row r of batch k is packed from the documents of its own seed (seed, split, k, r), each row
    starting at a document boundary, so in-context passages are never cut at the front."""

    def __init__(self, tokenizer, block_size, seed=0, split="train", mix=None):
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
        return world.corpus_text(self.seed, n_chars, self.mix).split("\n\n")


class FileText:
    """Real text: all documents tokenised once; 90% of the tokens train, the last 10% validate.
    Row r of batch k is a window at an offset drawn from its own seed.

    A corpus too small for one train and one val sequence is refused before the tokenizer is
    trained on it (no byte-level BPE token is shorter than a byte), and again once tokenised."""

    def __init__(self, path, tokenizer, block_size, seed=0, split="train"):
        self.docs = read_text_files(path)
        n_bytes, needed = sum(len(d.encode()) for d in self.docs), 2 * (block_size + 1)
        if n_bytes < needed:
            raise InputError(f"{path}: {n_bytes} bytes of text are too few for one train and one val "
                             f"sequence of {block_size} tokens (it needs at least {needed} bytes): give "
                             f"more text or a smaller --block-size")
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
    names); the pad is mid-grey, which becomes 0 after scaling.

    Any image mode becomes 8-bit RGB first. 16-bit greyscale (PNG's "I;16", or "I") is divided
    by 257, the exact inverse of 8 -> 16 bits; a plain convert clips it to almost all white.
    Transparent images (RGBA, LA, a palette or colour key with transparency) are composited onto
    white, a deliberate choice: it is how a viewer shows them, where dropping alpha would show
    whatever colour hides under the transparent pixels (often black)."""
    image = to_rgb(image)
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


def to_rgb(image):
    """An 8-bit RGB copy of a PIL image (see image_to_tensor)."""
    if image.mode.startswith("I"):
        grey = np.asarray(image, dtype=np.float64) / 257
        image = Image.fromarray(grey.round().clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    return image.convert("RGB")


def black_images(images):
    """The blind ablation's input (Sec. 4): black images, after the same scaling."""
    return torch.full_like(images, -1.0)


class WorldCaptions(torch.utils.data.Dataset):
    """The drawn world's (image, caption) pairs; item i is the world's scene i. blind: the blind
    ablation's black images, without drawing the scenes (a third of a CPU step)."""

    def __init__(self, image_size, seed=0, split="train", length=1_000_000, blind=False, naming_captions=0.0):
        self.world = world.World(seed=seed, image_size=image_size, split=split, length=length,
                                 naming_captions=naming_captions)
        self.image_size = image_size
        self.blind = blind

    def __len__(self):
        return len(self.world)

    def __getitem__(self, i):
        if self.blind:
            _, caption, _ = self.world.scene_and_caption(i)
            return black_images(torch.empty(3, self.image_size, self.image_size)), caption
        image, caption, _ = self.world[i]
        return image_to_tensor(image, self.image_size), caption


class WorldCaptionRows(torch.utils.data.Dataset):
    """Rows of the drawn world's (image, caption) pairs for captions in a row (a lever,
    `--captions-in-row K`): item i is K scenes of two kinds drawn for the row, so that a kind
    recurs within the row. The frozen LM reads each caption with the row's earlier images and
    captions in its context, so the caption loss also asks that an image be told apart from the
    others of its row, and matched to the earlier ones of its kind, by what the LM attends to:
    what binding through images needs (README, "Why binding through images is hard")."""

    def __init__(self, image_size, per_row, seed=0, split="train", length=1_000_000):
        self.image_size, self.per_row, self.seed, self.split, self.length = image_size, per_row, seed, split, length
        self.kinds = world.SPLITS[split]

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        rng = random.Random(f"rows/{self.seed}/{self.split}/{i}")
        pair = rng.sample(list(self.kinds), 2)
        row = []
        for _ in range(self.per_row):
            scene = world.sample_scene(rng, pair)
            text = world.caption(scene, rng)
            row.append((image_to_tensor(world.render(scene, self.image_size, rng), self.image_size), text))
        return row


def caption_dataset(data, image_size, seed=0, split="train", image_dir=None, max_bad=0.05, blind=False,
                    naming_captions=0.0):
    """'world' or a path: a COCO .json, a .jsonl, or a folder of image + .txt pairs (blind: the
    world's scenes are not drawn; see WorldCaptions).

    Real data: every pair, of both splits, is checked when the first split is built (so a bad
    pair never waits for the first evaluation), then a fixed 2% of the good pairs (at least one)
    validates and the rest trains: which pairs is a function of the seed alone."""
    if data == "world":
        return WorldCaptions(image_size, seed, split, blind=blind, naming_captions=naming_captions)
    if naming_captions:
        raise InputError(f"{data}: --naming-captions rewrites the drawn world's captions; real data keeps its own")
    path = Path(data)
    if not path.exists():
        raise InputError(f"{path}: caption data not found (give 'world', a COCO .json, a .jsonl, "
                         f"or a folder of name.jpg + name.txt pairs)")
    good = good_pairs(path, image_dir, image_size, max_bad, path.stat().st_mtime_ns)
    if len(good) < 2:
        raise InputError(f"{path}: {len(good)} good image-caption pair(s), too few for a train and "
                         f"a validation split")
    order = list(range(len(good)))
    random.Random(seed).shuffle(order)
    n_val = max(1, len(good) // 50)
    chosen = order[:n_val] if split != "train" else order[n_val:]
    return CaptionFiles([good[i] for i in chosen], image_size, path)


CHECK_BAR_ABOVE = 2000  # pairs: checking more shows a progress bar


@functools.lru_cache(maxsize=4)
def good_pairs(path, image_dir, image_size, max_bad, mtime):
    """The good (image path, caption) pairs of caption data, read and checked once per process:
    the train and val splits (and every evaluation's loader) share one check, and its warning
    counts each bad pair once. `mtime` only keys the cache: an edited .json or .jsonl, or a
    folder with files added or removed, is read anew.

    Bad pairs are counted and skipped with a warning naming them; more than `max_bad` of all
    pairs being bad is an error."""
    pairs, bad = read_pairs(path, image_dir)
    n = len(pairs) + len(bad)
    if not n:
        raise InputError(f"{path}: no image-caption pairs found")
    problems = pair_problems(pairs, image_size, f"checking {path}")
    bad += [f"{image}: {problem}" for (image, _), problem in zip(pairs, problems) if problem]
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        if len(bad) > max_bad * n:
            raise InputError(f"{path}: {len(bad)} of {n} pairs are bad, more than the allowed {max_bad:.0%} "
                             f"(fix or remove them, or raise --max-bad): {shown}")
        warnings.warn(f"{path}: skipping {len(bad)} of {n} bad pairs: {shown}")
    return [(str(image), caption.strip()) for (image, caption), problem in zip(pairs, problems) if not problem]


def pair_problems(pairs, image_size, desc):
    """pair_problem of each pair, in threads (PIL decodes without the GIL), with a progress bar
    when there are many."""
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        problems = pool.map(lambda pair: pair_problem(*pair, image_size), pairs)
        return list(tqdm(problems, total=len(pairs), desc=desc, disable=len(pairs) <= CHECK_BAR_ABOVE))


def pair_problem(image, caption, image_size):
    """What is wrong with a pair, or None. The image is really decoded (a JPEG at reduced scale,
    which is fast): a truncated file passes PIL's verify() and would fail only in a worker."""
    if not caption.strip():
        return "empty caption"
    if not Path(image).is_file():
        return "image not found"
    try:
        with Image.open(image) as im:
            im.draft("RGB", (image_size, image_size))
            im.load()
    except UnidentifiedImageError:
        return "unreadable image (not an image format PIL knows)"
    except Exception as e:
        return f"unreadable image ({type(e).__name__}: {e})"
    return None


def read_pairs(path, image_dir=None):
    """The (image path, caption) pairs of a COCO .json, a .jsonl or a folder, and the bad pairs
    found while reading them ("path: problem")."""
    if path.is_dir():
        return folder_pairs(path)
    if path.suffix.lower() == ".jsonl":
        return jsonl_pairs(path), []
    if path.suffix.lower() == ".json":
        return coco_pairs(path, image_dir), []
    raise InputError(f"{path}: unknown caption format (expected .json, .jsonl or a folder)")


def coco_pairs(json_path, image_dir=None):
    """COCO captions: {"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}."""
    json_path = Path(json_path)
    image_dir = Path(image_dir) if image_dir else json_path.parent
    try:
        data = json.loads(read_utf8(json_path))
        files = {im["id"]: string_field(im, "file_name", f"{json_path}, image {n}")
                 for n, im in enumerate(data["images"])}
        return [(image_dir / files[a["image_id"]], string_field(a, "caption", f"{json_path}, annotation {n}"))
                for n, a in enumerate(data["annotations"])]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{json_path}: not a COCO captions file ({type(e).__name__}: {e})") from None


def jsonl_pairs(path):
    """One {"image": path, "caption": text} per line; image paths relative to the file's folder."""
    path = Path(path)
    pairs = []
    for n, line in enumerate(read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            where = f"{path}, line {n}"
            pairs.append((path.parent / string_field(row, "image", where), string_field(row, "caption", where)))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{path}, line {n}: expected {{\"image\": ..., \"caption\": ...}} ({e})") from None
    return pairs


def string_field(row, name, where):
    """row[name], refused unless it is a string (a caption of 7 is a mistake, not a caption)."""
    value = row[name]
    if not isinstance(value, str):
        raise InputError(f"{where}: {name} must be a string, not {json.dumps(value)}")
    return value


def folder_pairs(folder):
    """img2dataset's files layout: name.jpg beside name.txt, in a folder and its subfolders.
    Returns the pairs and the bad ones already found: a caption file missing or not UTF-8."""
    pairs, bad = [], []
    for image in sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
        caption_file = image.with_suffix(".txt")
        if not caption_file.is_file():
            bad.append(f"{image}: no caption file {caption_file.name}")
            continue
        try:
            pairs.append((image, caption_file.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            bad.append(f"{caption_file}: caption file is not UTF-8")
    return pairs, bad


class CaptionFiles(torch.utils.data.Dataset):
    """Real image-caption pairs, (image path, caption), checked already (see good_pairs). An
    image that still fails to decode (changed since) is replaced by the next pair, with a warning
    that counts such skips in this process (a DataLoader worker counts its own)."""

    def __init__(self, pairs, image_size, source):
        self.pairs, self.image_size, self.source = pairs, image_size, source
        self.n_skipped = 0

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        for attempt in range(len(self.pairs)):
            path, caption = self.pairs[(i + attempt) % len(self.pairs)]
            try:
                with Image.open(path) as im:
                    return image_to_tensor(im, self.image_size), caption
            except Exception as e:
                self.n_skipped += 1
                warnings.warn(f"{path}: skipped, image failed to decode ({e}); "
                              f"{self.n_skipped} skipped so far in this process")
        raise InputError(f"{self.source}: no image could be decoded")


class CaptionCollate:
    """Tokenise captions in the DataLoader's workers; stack images.

    max_tokens: the caption tokens that fit the LM's context beside the visual prefix, with the
    end-of-text after them (block_size - n_prefix - 1). A longer caption is cut to it, with a
    warning once per process; None: no limit."""

    def __init__(self, tokenizer_path, n_prefix, max_tokens=None):
        self.tokenizer_path, self.n_prefix, self.max_tokens = tokenizer_path, n_prefix, max_tokens
        self._tokenizer, self._warned = None, False

    def __call__(self, items):
        if self._tokenizer is None:  # built lazily, once per worker process
            self._tokenizer = Tokenizer(self.tokenizer_path)
        if isinstance(items[0], list):  # rows of pairs: captions in a row
            return self.rows(items)
        images = torch.stack([image for image, _ in items])
        captions = self._tokenizer.encode_batch([" " + caption for _, caption in items])
        captions = [self.cut(c) for c in captions]
        inputs, targets = caption_targets(captions, self.n_prefix, self._tokenizer.eot_id, self._tokenizer.pad_id)
        return images, inputs, targets

    def rows(self, rows):
        """A batch of rows (WorldCaptionRows) -> images (R * K, 3, H, W) and caption_rows' inputs
        and targets (R, T); each caption cut to its share of the LM's context."""
        images = torch.stack([image for row in rows for image, _ in row])
        per_row = len(rows[0])
        share = None if self.max_tokens is None else (self.max_tokens + 1) // per_row - self.n_prefix - 1
        captions = self._tokenizer.encode_batch([" " + caption for row in rows for _, caption in row])
        captions = [self.cut(c, share) for c in captions]
        grouped = [captions[r * per_row: (r + 1) * per_row] for r in range(len(rows))]
        return (images, *caption_rows(grouped, self.n_prefix, self._tokenizer.eot_id, self._tokenizer.pad_id))

    def cut(self, caption, max_tokens=None):
        """The caption cut to max_tokens (default: self.max_tokens), with a warning once."""
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        if max_tokens is None or len(caption) <= max_tokens:
            return caption
        if not self._warned:
            warnings.warn(f"a caption of {len(caption)} tokens was cut to {max_tokens} tokens, what fits "
                          f"the LM's context beside the visual prefix (later cuts are not reported)")
            self._warned = True
        return caption[: max_tokens]


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


# ---------------------------------------------------------------------------------------------
# prompts: interleaved images and text


def encode_pieces(pieces, tokenizer, image_size):
    """Prompt pieces (PIL images and strings) -> model pieces (image tensors and token-id lists),
    what Frozen.embed_sequences reads (Sec. 3.3, "Interface at inference time").

    Consecutive pieces are joined by one space, as in the text the LM was trained on: a text
    piece after anything is tokenised with a leading space."""
    encoded = []
    for i, piece in enumerate(pieces):
        if isinstance(piece, Image.Image):
            encoded.append(image_to_tensor(piece, image_size))
        else:
            encoded.append(tokenizer.encode((" " if i > 0 else "") + piece))
    return encoded
