"""data.py: the real image-caption formats (with a corrupt file), preprocessing, batches."""

import json

import pytest
import torch
from PIL import Image

import train
from data import InputError, StepBatches, caption_dataset, image_to_tensor

from conftest import shape_image, write_pairs
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
    with pytest.warns(UserWarning, match="999.png: unreadable image"):
        dataset = caption_dataset(str(data), 32, max_bad=0.1)
    assert len(dataset) == 30 - 1 and "999.png" not in str(dataset.pairs)  # 1 pair validates
    extra = ["--image-dir", str(folder)] if fmt == "coco" else []
    with pytest.warns(UserWarning):
        train.main(prefix_args(lm_dir, tmp_path / "out", 2, "--data", str(data), "--max-bad", "0.1", *extra))
    assert (tmp_path / "out" / "prefix.pt").exists()


def test_too_many_bad_pairs_is_an_error_naming_them(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    write_pairs(folder, 3)
    add_corrupt(folder)
    (folder / "000.txt").write_text("   ")
    # 4 pairs, 1 held out for validation: the 3 training pairs hold both bad ones
    with pytest.raises(InputError, match="2 of 3 pairs are bad.*empty caption.*999.png: unreadable"):
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


def test_step_batches_split_rows_across_processes_like_one_process():
    one = list(StepBatches(100, 3, 5, 2, 4, rank=0, world_size=1, seed=0))
    two = [list(StepBatches(100, 3, 5, 1, 4, rank=r, world_size=2, seed=0)) for r in (0, 1)]
    # one process, 2 micro-batches of 4 == two processes, 1 micro-batch of 4 each
    assert one == [b for step in zip(two[0], two[1]) for b in step]
    assert one[0] != one[2]  # another step, other items
