"""
Sampling: text from the LM, captions of images, and few-shot prompts of interleaved images and
text (Frozen Sec. 3.3, "Interface at inference time").

  python sample.py --prompt "Question: Can you eat an apple? Answer:"   # text, from out/lm.pt
  python sample.py --image photo.png                                    # a caption
  python sample.py --shots examples/                                    # every task folder in it
  python sample.py --shots examples/bind_nonsense_names                 # one task folder

A task folder holds numbered pieces and a query, read in number order (2 before 10):

  01.png 01.txt    an image and the text that follows it (either may stand alone)
  02.png 02.txt
  03.txt           e.g. "Question: What is this? Answer:"
  query.png        the image to answer about, last
  query.txt        optional: text after the query image, e.g. "This is a"
  answer.txt       optional: the expected answer, printed beside the completion
  README.md        optional: one line on what the task shows

Decoding is greedy by default (as the paper's evaluation); --temperature, --top-k and --top-p sample.
"""

import argparse
import sys
import warnings
from pathlib import Path

import torch
from PIL import Image

import world
from checkpoint import load_for_text, load_frozen
from data import IMAGE_EXTENSIONS, InputError, encode_pieces, image_to_tensor, read_utf8, to_rgb
from frozen import is_image
from scoring import answer_text, stop_ids


# ---------------------------------------------------------------------------------------------
# few-shot task folders


def read_task_folder(folder):
    """The pieces of a task folder (PIL images and strings, in order), its answer and description.
    Pieces go by number (2 before 10); suffixes match in any case (01.PNG, 01.TXT)."""
    folder = Path(folder)
    images, texts = piece_files(folder)
    answer_file = texts.pop("answer", None)
    if "query" not in images:
        raise InputError(f"{folder}: no query image; a task folder holds 01.png + 01.txt, 02.png + 02.txt, "
                         f"..., query.png and optionally query.txt and answer.txt")
    unknown = [s for s in sorted(set(images) | set(texts)) if s != "query" and not s.isdecimal()]
    if unknown:
        raise InputError(f"{folder}: unexpected files {unknown}; pieces are named 01, 02, ... and query")
    numbered = sorted((s for s in set(images) | set(texts) if s != "query"), key=lambda s: (int(s), s))
    pieces = []
    for stem in numbered + ["query"]:
        if stem in images:
            pieces.append(read_image(images[stem]))
        if stem in texts:
            text = read_utf8(texts[stem]).strip()
            if not text:
                raise InputError(f"{texts[stem]}: empty text file")
            pieces.append(text)
    answer = read_utf8(answer_file).strip() if answer_file else None
    readme = folder / "README.md"
    lines = read_utf8(readme).strip().splitlines() if readme.exists() else []
    return pieces, answer, lines[0] if lines else ""


def piece_files(folder):
    """{stem: path} of a task folder's images and of its .txt files. Each piece is one regular
    file: a folder, a broken link or two images for one number is refused, not silently dropped."""
    files = {"image": {}, "text": {}}
    for p in sorted(folder.iterdir()):
        kind = "image" if p.suffix.lower() in IMAGE_EXTENSIONS else "text" if p.suffix.lower() == ".txt" else None
        if kind is None:
            continue
        if not p.is_file():
            what = ("a broken symbolic link" if p.is_symlink() and not p.exists() else
                    "a folder" if p.is_dir() else "a special file")
            raise InputError(f"{p}: is {what}, not a file; each piece of a task folder is an image or a .txt file")
        if p.stem in files[kind]:
            raise InputError(f"{folder}: two {kind}s for piece {p.stem}: {files[kind][p.stem].name}, {p.name}")
        files[kind][p.stem] = p
    return files["image"], files["text"]


def read_image(path):
    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except Exception as e:
        raise InputError(f"{path}: unreadable image ({type(e).__name__})") from None


def task_folders(path):
    """A task folder itself, or the task folders inside a folder of them."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder (give a task folder or a folder of task folders)")
    if any(p.stem == "query" for p in path.iterdir()):
        return [path]
    folders = sorted(p for p in path.iterdir() if p.is_dir())
    if not folders:
        raise InputError(f"{path}: holds neither a query image nor task folders")
    return folders


def describe_pieces(pieces):
    return " ".join("<image>" if isinstance(p, Image.Image) else p for p in pieces)


def run_shots(model, tokenizer, path, decoding, out=print):
    """Complete every task folder under `path`; print prompt, completion, and expected answer."""
    results = []
    for folder in task_folders(path):
        pieces, answer, about = read_task_folder(folder)
        prompt = encode_pieces(pieces, tokenizer, model.config.image_size)
        check_length(model, prompt, decoding.get("max_new_tokens", 32), folder)  # 32: GPT.generate's default
        with torch.autocast(model_device(model).type, dtype=torch.bfloat16, enabled=model_device(model).type == "cuda"):
            tokens = model.generate([prompt], stop_tokens=stop_ids(tokenizer), **decoding)[0]
        completion = answer_text(tokenizer, tokens)
        results.append((folder.name, completion, answer))
        out(f"== {folder.name}{': ' + about if about else ''}")
        out(f"prompt:     {describe_pieces(pieces)}")
        out(f"completion: {completion}" + (f"    (expected: {answer})" if answer else ""))
    return results


def check_length(model, prompt, max_new_tokens, folder):
    """Refuse a prompt past the LM's rotary tables (4 x its context); warn past the context it
    was trained on, where it extrapolates its rotary positions and answers get unreliable."""
    n = sum(model.config.n_prefix if is_image(p) else len(p) for p in prompt) + max_new_tokens
    limit, trained = model.lm.rope_cos.size(0), model.lm.config.block_size
    if n > limit:
        raise InputError(f"{folder}: the prompt and {max_new_tokens} new tokens take {n} positions, more than "
                         f"the {limit} this model has; use fewer pieces")
    if n > trained:
        warnings.warn(f"{folder}: the prompt and {max_new_tokens} new tokens take {n} positions, more than the "
                      f"LM's trained context of {trained}: it extrapolates its rotary positions and answers "
                      f"get unreliable")


def write_task_folder(folder, pieces, answer=None, about=""):
    """The inverse of read_task_folder: an episode's pieces as a task folder. Each image starts a
    piece (the last image is the query), the text right after an image shares its number."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    query = max(i for i, p in enumerate(pieces) if isinstance(p, Image.Image))
    stems = []  # [name, image or None, text or None]
    for i, piece in enumerate(pieces):
        if isinstance(piece, Image.Image):
            stems.append(["query" if i == query else f"{len(stems) + 1:02d}", piece, None])
        elif stems and stems[-1][1] is not None and stems[-1][2] is None:
            stems[-1][2] = piece
        else:
            stems.append([f"{len(stems) + 1:02d}", None, piece])
    for name, image, text in stems:
        if image is not None:
            image.save(folder / f"{name}.png")
        if text is not None:
            (folder / f"{name}.txt").write_text(text + "\n")
    if answer is not None:
        (folder / "answer.txt").write_text(answer + "\n")
    if about:
        (folder / "README.md").write_text(about + "\n")


def caption_sheet(model, tokenizer, path, decoding, n_seen=12, n_heldout=6, seed=0):
    """Generated captions of world test images (seen kinds) and of held-out kinds, as a PNG grid."""
    images = [world.World(seed, model.config.image_size, "test")[i][0] for i in range(n_seen)]
    images += [world.World(seed, model.config.image_size, "heldout")[i][0] for i in range(n_heldout)]
    prompts = [[image_to_tensor(im, model.config.image_size)] for im in images]
    rows = model.generate(prompts, stop_tokens={tokenizer.eot_id}, **decoding)
    labels = [("held-out: " if i >= n_seen else "") + tokenizer.decode(r).strip() for i, r in enumerate(rows)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return world.draw_sheet(list(zip(images, labels)), path)


EXAMPLES = {
    # folder: (world task, options, one line on what it shows)
    "bind_nonsense_names": ("binding", dict(ways=2, inner_shots=3, layout="paper", query="different"),
                            "Binding: two held-out kinds get made-up names from the prompt; name a new picture."),
    "bind_5_way": ("binding", dict(ways=5, inner_shots=1, layout="paper", query="different"),
                   "Binding, 5-way: five held-out kinds, one named example each."),
    "visual_qa": ("vqa", dict(shots=4, question="colour"),
                  "Visual QA, 4 shots: answer a question about what the picture shows."),
    "outside_knowledge": ("okvqa", dict(shots=4),
                          "Outside knowledge, 4 shots: the answer is only in the LM's text, never in a caption."),
}


def write_examples(folder, image_size=64, seed=0):
    """Re-make examples/ from the world's episodes (what `make examples` runs)."""
    for name, (task, options, about) in EXAMPLES.items():
        episode = world.episodes(task, 1, seed=seed, image_size=image_size, **options)[0]
        write_task_folder(Path(folder) / name, episode.pieces, episode.answer, about)
    return sorted(EXAMPLES)


# ---------------------------------------------------------------------------------------------
# entry point


def model_device(model):
    return next(model.parameters()).device


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="continue this text with the LM")
    what.add_argument("--image", help="caption this image")
    what.add_argument("--shots", help="a few-shot task folder, or a folder of them")
    what.add_argument("--write-examples", metavar="DIR", help="write the example task folders from the world's episodes")
    what.add_argument("--caption-sheet", metavar="PNG",
                      help="caption world test images (seen kinds) and held-out kinds; draw them in a grid")
    p.add_argument("--ckpt", default=None,
                   help="checkpoint (default: out/lm.pt for --prompt, out/prefix.pt otherwise)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--num-samples", type=int, default=1, help="--prompt: how many continuations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.manual_seed(args.seed)
    decoding = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p)
    try:
        if args.write_examples:
            print(f"wrote {', '.join(write_examples(args.write_examples))} in {args.write_examples}")
            return
        if args.prompt is not None:
            lm, tokenizer = load_for_text(args.ckpt or "out/lm.pt", args.device)
            ids = torch.tensor([tokenizer.encode(args.prompt)] * args.num_samples, device=args.device)
            for row in lm.generate(ids, stop_tokens={tokenizer.eot_id}, **decoding):
                print(args.prompt + tokenizer.decode(row))
                print("---")
            return
        model, tokenizer, _ = load_frozen(args.ckpt or "out/prefix.pt", args.device)
        if args.image is not None:
            try:
                with Image.open(args.image) as im:
                    image = image_to_tensor(im, model.config.image_size)
            except (FileNotFoundError, OSError) as e:
                raise InputError(f"{args.image}: cannot read image ({type(e).__name__})") from None
            tokens = model.generate([[image]], stop_tokens={tokenizer.eot_id}, **decoding)[0]
            print(tokenizer.decode(tokens).strip())
            return
        if args.caption_sheet:
            print(f"wrote {caption_sheet(model, tokenizer, args.caption_sheet, decoding)}")
            return
        run_shots(model, tokenizer, args.shots, decoding)
    except InputError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
