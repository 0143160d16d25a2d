"""data.py: the real image-caption formats (with a corrupt file), preprocessing, batches.
(Malformed files of every kind are in test_bad_inputs.py.)"""

import ast
import inspect
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import train
import world
from data import (CaptionCollate, InputError, StepBatches, WorldCaptionRows, WorldCaptions, black_images,
                  caption_dataset, image_to_tensor)
from frozen import IMAGE_SLOT

from conftest import write_pairs
from test_frozen import prefix_args


def add_corrupt(folder):
    (folder / "999.png").write_bytes(b"this is not a png")
    (folder / "999.txt").write_text("a broken one.")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    pairs = write_pairs(folder, 30)
    add_corrupt(folder)
    return folder, pairs + [("999.png", "a broken one.")]


def coco_json(folder, pairs, path):
    data = {"images": [{"id": i, "file_name": name} for i, (name, _) in enumerate(pairs)],
            "annotations": [{"image_id": i, "caption": cap} for i, (_, cap) in enumerate(pairs)]}
    path.write_text(json.dumps(data))
    return path


def jsonl(folder, pairs, path):
    path.write_text("\n".join(json.dumps({"image": f"images/{n}", "caption": c}) for n, c in pairs))
    return path


@pytest.mark.parametrize("fmt", ["folder", "coco", "jsonl"])
def test_each_real_format_trains_and_skips_the_corrupt_image(fmt, images, lm_dir, tmp_path):
    folder, pairs = images
    data = {"folder": lambda: folder,
            "coco": lambda: coco_json(folder, pairs, folder / "captions.json"),
            "jsonl": lambda: jsonl(folder, pairs, tmp_path / "pairs.jsonl")}[fmt]()
    image_dir = str(folder) if fmt == "coco" else None
    with pytest.warns(UserWarning, match="999.png: unreadable image"):
        dataset = caption_dataset(str(data), 32, image_dir=image_dir, max_bad=0.1)
    assert len(dataset) == 30 - 1 and "999.png" not in str(dataset.pairs)  # 1 pair validates
    extra = ["--image-dir", image_dir] if image_dir else []
    train.main(prefix_args(lm_dir, tmp_path / "out", 2, "--data", str(data), "--max-bad", "0.1", *extra))
    assert (tmp_path / "out" / "prefix.pt").exists()


def test_too_many_bad_pairs_is_an_error_naming_them(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    write_pairs(folder, 3)
    add_corrupt(folder)
    (folder / "000.txt").write_text("   ")
    # all 4 pairs are checked, whichever split is built
    with pytest.raises(InputError, match="2 of 4 pairs are bad.*empty caption.*999.png: unreadable"):
        caption_dataset(str(folder), 32, split="train", max_bad=0.05)


def test_unknown_formats_and_missing_paths_are_named(tmp_path):
    with pytest.raises(InputError, match="nowhere: caption data not found"):
        caption_dataset(str(tmp_path / "nowhere"), 32)
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(InputError, match="x.csv: unknown caption format"):
        caption_dataset(str(tmp_path / "x.csv"), 32)
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png"}\n')
    with pytest.raises(InputError, match="bad.jsonl, line 1"):
        caption_dataset(str(tmp_path / "bad.jsonl"), 32)
    (tmp_path / "bad.json").write_text('{"images": []}')
    with pytest.raises(InputError, match="bad.json: not a COCO captions file"):
        caption_dataset(str(tmp_path / "bad.json"), 32)


def test_preprocessing_pads_to_a_square_and_scales_to_minus_one_one():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    x = image_to_tensor(image, 32)
    assert x.shape == (3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[:, 0, 16], torch.zeros(3), atol=0.01)  # grey padding above the image -> 0
    assert x[0, 16, 16] == pytest.approx(1.0) and x[1, 16, 16] == pytest.approx(-1.0)


def test_16_bit_greyscale_is_scaled_to_8_bits_not_clipped_to_white(tmp_path):
    grey = np.full((8, 8), 128 * 257, dtype=np.uint16)  # mid-grey in 16 bits
    grey[0, 0], grey[0, 1] = 0, 65535
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    for image in (Image.open(tmp_path / "grey16.png"), Image.fromarray(grey.astype(np.int32))):
        assert image.mode in ("I;16", "I")
        x = image_to_tensor(image, 8)
        assert torch.allclose(x[:, 4, 4], torch.full((3,), 128 / 127.5 - 1), atol=1e-6)
        assert x[:, 0, 0].tolist() == [-1, -1, -1] and x[:, 0, 1].tolist() == [1, 1, 1]


def test_transparent_images_are_composited_onto_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere: transparent on top, opaque below, half-transparent in row 4
    rgba[5:, :, 3], rgba[4, :, 3] = 255, 128
    x = image_to_tensor(Image.fromarray(rgba), 8)
    assert x[:, 0, 0].tolist() == [1, 1, 1] and x[:, 7, 0].tolist() == [1, -1, -1]
    assert torch.allclose(x[:, 4, 0], torch.tensor([1.0, 0.0, 0.0]), atol=0.02)  # half red on white
    la = np.zeros((8, 8, 2), dtype=np.uint8)  # black, its top half transparent
    la[4:, :, 1] = 255
    x = image_to_tensor(Image.fromarray(la, "LA"), 8)
    assert x[:, 0, 0].tolist() == [1, 1, 1] and x[:, 7, 0].tolist() == [-1, -1, -1]
    palette = Image.fromarray(np.array([[0, 1]] * 2, dtype=np.uint8), "P")  # black (transparent), red
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.save(tmp_path / "p.png", transparency=0)
    with Image.open(tmp_path / "p.png") as im:
        x = image_to_tensor(im, 2)
    assert x[:, 0, 0].tolist() == [1, 1, 1] and x[:, 0, 1].tolist() == [1, -1, -1]


def test_data_imports_at_the_top_only():
    """world and frozen do not import data, so data.py has no reason for imports inside functions."""
    tree = ast.parse(inspect.getsource(inspect.getmodule(caption_dataset)))
    inner = [node.lineno for scope in ast.walk(tree) if isinstance(scope, (ast.FunctionDef, ast.ClassDef))
             for node in ast.walk(scope) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert inner == []


def test_step_batches_split_rows_across_processes_like_one_process():
    one = list(StepBatches(100, 3, 5, 2, 4, rank=0, world_size=1, seed=0))
    two = [list(StepBatches(100, 3, 5, 1, 4, rank=r, world_size=2, seed=0)) for r in (0, 1)]
    # one process, 2 micro-batches of 4 == two processes, 1 micro-batch of 4 each
    assert one == [b for step in zip(two[0], two[1]) for b in step]
    assert one[0] != one[2]  # another step, other items


def test_blind_world_captions_are_the_same_captions_with_black_images():
    seen = WorldCaptions(32, seed=3)
    blind = WorldCaptions(32, seed=3, blind=True)
    for i in range(5):
        (image, caption), (black, blind_caption) = seen[i], blind[i]
        assert blind_caption == caption
        assert black.shape == image.shape and torch.equal(black, black_images(image))


def test_a_row_of_captions_is_two_seen_kinds_drawn_again_and_again(lm_dir):
    rows = WorldCaptionRows(32, per_row=4, seed=3)
    row = rows[7]
    assert len(row) == 4 and all(image.shape == (3, 32, 32) for image, _ in row)
    kinds = {k for _, caption in row for k in world.parse_caption(caption)["kinds"]}
    assert 1 <= len(kinds) <= 2 and kinds <= set(world.SEEN_KINDS)  # the row's two kinds at most
    assert [c for _, c in rows[7]] == [c for _, c in row]  # deterministic
    assert [c for _, c in rows[8]] != [c for _, c in row]
    collate = CaptionCollate(lm_dir / "tokenizer.json", n_prefix=2, max_tokens=15)
    images, inputs, targets = collate([rows[0], rows[1]])
    assert images.shape == (8, 3, 32, 32) and inputs.shape == targets.shape
    assert ((inputs == IMAGE_SLOT).sum(1) == 8).all()  # 4 images of 2 slots in each row
    assert inputs.shape[1] <= 16  # each caption cut to its share of the context


def test_auto_workers_leave_the_cpu_to_the_model_and_asked_ones_are_capped_at_the_cores():
    from types import SimpleNamespace
    from common import usable_workers
    cpu = SimpleNamespace(device=torch.device("cpu"), world_size=1, master=True)
    cuda = SimpleNamespace(device=torch.device("cuda"), world_size=1, master=True)
    cores = len(os.sched_getaffinity(0))
    assert usable_workers(-1, cpu) == 0
    assert usable_workers(-1, cuda) == min(4, cores)
    assert usable_workers(1, cpu) == 1
    assert usable_workers(cores + 5, cpu) == cores
