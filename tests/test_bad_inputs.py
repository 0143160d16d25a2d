"""Bad input, file by file: each gets a one-line InputError naming the file (and line) and what is
wrong, or is counted and skipped where a user wants that; never a traceback, never a silently
wrong result. Every bad file is built here, small."""

import io
import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import data
import sample
from data import CaptionCollate, CaptionFiles, FileText, InputError, caption_dataset, train_tokenizer
from frozen import Frozen, FrozenConfig
from gpt import GPT, GPTConfig

from conftest import write_pairs

LATIN_1 = "un café.".encode("latin-1")  # é is one byte, not UTF-8


def recorded(fn, *args, **kwargs):
    """fn's result and every warning it gives (none deduplicated)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    text = "one two three four five six seven eight nine ten. a red apple sits on a tree."
    return train_tokenizer([text] * 20, 300, tmp_path_factory.mktemp("tok") / "tokenizer.json")


# ---------------------------------------------------------------------------------------------
# captions and image-caption data (data.py)


def test_a_caption_longer_than_the_context_is_cut_with_one_warning(tokenizer):
    items = [(torch.zeros(3, 8, 8), "a red apple " * 200), (torch.zeros(3, 8, 8), "a tree.")]
    collate = CaptionCollate(tokenizer.path, n_prefix=2, max_tokens=10)
    (_, inputs, targets), messages = recorded(collate, items)
    assert inputs.shape == (2, 10) and targets.shape == (2, 2 + 10)
    assert targets[0, -1] == tokenizer.eot_id  # the cut caption still ends with end-of-text
    assert len(messages) == 1 and "was cut to 10 tokens" in messages[0]
    assert recorded(collate, items)[1] == []  # once per process
    _, inputs, _ = CaptionCollate(tokenizer.path, 2)(items)  # no max_tokens: no limit
    assert inputs.shape[1] == len(tokenizer.encode(" " + items[0][1])) > 10


@pytest.mark.parametrize("row, field", [({"image": "a.png", "caption": 7}, "caption"),
                                        ({"image": 7, "caption": "a dog."}, "image")])
def test_jsonl_fields_must_be_strings(tmp_path, row, field):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"image": "b.png", "caption": "a cat."}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError, match=f"pairs.jsonl, line 2: {field} must be a string, not 7"):
        caption_dataset(str(path), 32)


def test_coco_captions_must_be_strings(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}],
                                "annotations": [{"image_id": 1, "caption": 7}]}))
    with pytest.raises(InputError, match="captions.json, annotation 0: caption must be a string, not 7"):
        caption_dataset(str(path), 32)


@pytest.mark.parametrize("name", ["pairs.jsonl", "captions.json"])
def test_caption_files_not_in_utf8_name_the_file_and_byte(tmp_path, name):
    row = {"image": "a.png", "caption": "un café."}
    text = json.dumps(row if name.endswith("jsonl") else {"images": [], "annotations": [row]}, ensure_ascii=False)
    (tmp_path / name).write_bytes(text.encode("latin-1"))
    with pytest.raises(InputError, match=rf"{name}: not UTF-8 text \(.* at byte {text.index('é')}\)"):
        caption_dataset(str(tmp_path / name), 32)


def test_folder_pairs_need_a_utf8_caption_file(tmp_path):
    write_pairs(tmp_path, 40)
    (tmp_path / "005.txt").write_bytes(LATIN_1)
    (tmp_path / "007.txt").unlink()
    with pytest.warns(UserWarning, match="skipping 2 of 40 bad pairs: .*005.txt: caption file is not UTF-8; "
                                         ".*007.png: no caption file 007.txt"):
        train = caption_dataset(str(tmp_path), 32, max_bad=0.1)
    val = caption_dataset(str(tmp_path), 32, split="val", max_bad=0.1)
    images = [os.path.basename(image) for image, _ in train.pairs + val.pairs]
    assert len(images) == 38 and "005.png" not in images and "007.png" not in images


def test_a_bad_pair_is_found_whichever_split_it_lands_in(tmp_path):
    write_pairs(tmp_path, 2)
    (tmp_path / "999.png").write_bytes(b"not a png")
    (tmp_path / "999.txt").write_text("a broken one.")
    for seed in range(6):  # 1 pair of 3 validates: some seeds put the bad one there
        with pytest.raises(InputError, match="1 of 3 pairs are bad"):
            caption_dataset(str(tmp_path), 32, seed=seed, split="train")


def test_both_splits_share_one_check_and_one_warning(tmp_path):
    write_pairs(tmp_path, 60)
    (tmp_path / "999.png").write_bytes(b"not a png")
    (tmp_path / "999.txt").write_text("a broken one.")
    train, first = recorded(caption_dataset, str(tmp_path), 32, seed=1, split="train")
    val, second = recorded(caption_dataset, str(tmp_path), 32, seed=1, split="val")
    assert len(first) == 1 and "skipping 1 of 61 bad pairs" in first[0] and second == []
    assert len(val) == 1 and not set(val.pairs) & set(train.pairs)
    assert sorted(os.path.basename(image) for image, _ in train.pairs + val.pairs) == [f"{i:03d}.png" for i in range(60)]


def truncated_jpeg(path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def test_a_truncated_jpeg_is_a_bad_pair_when_the_data_is_built(tmp_path):
    write_pairs(tmp_path, 30)
    truncated_jpeg(tmp_path / "999.jpg")
    (tmp_path / "999.txt").write_text("noise.")
    with Image.open(tmp_path / "999.jpg") as im:
        im.verify()  # passes: a check by verify() alone lets it through
    with pytest.warns(UserWarning, match="skipping 1 of 31 bad pairs: .*999.jpg: unreadable image .*truncated"):
        dataset = caption_dataset(str(tmp_path), 32)
    assert "999.jpg" not in str(dataset.pairs)


def test_many_pairs_are_checked_with_a_progress_bar(tmp_path, monkeypatch, capsys):
    write_pairs(tmp_path, 8)
    monkeypatch.setattr(data, "CHECK_BAR_ABOVE", 5)
    caption_dataset(str(tmp_path), 32)
    assert f"checking {tmp_path}" in capsys.readouterr().err


def test_an_image_that_fails_to_decode_later_is_skipped_and_counted(tmp_path):
    write_pairs(tmp_path, 3)
    dataset = CaptionFiles([(str(tmp_path / f"00{i}.png"), f"caption {i}") for i in range(3)], 32, tmp_path)
    (tmp_path / "000.png").write_bytes(b"gone bad")
    (tmp_path / "001.png").write_bytes(b"gone bad")
    (image, caption), messages = recorded(dataset.__getitem__, 0)
    assert caption == "caption 2" and image.shape == (3, 32, 32)
    assert len(messages) == 2 and "000.png: skipped" in messages[0] and "1 skipped so far" in messages[0]
    assert "001.png: skipped" in messages[1] and "2 skipped so far" in messages[1]


def test_a_corpus_too_small_for_two_sequences_is_refused_before_the_tokenizer(tmp_path):
    (tmp_path / "tiny.txt").write_text("a very short text file")  # 22 bytes
    with pytest.raises(InputError, match=r"tiny.txt: 22 bytes of text are too few for one train and one val "
                                         r"sequence of 256 tokens \(it needs at least 514 bytes\)"):
        FileText(tmp_path / "tiny.txt", None, 256)  # what stage lm calls before training its tokenizer


def test_a_text_corpus_not_in_utf8_names_the_file(tmp_path):
    (tmp_path / "good.txt").write_text("fine text. " * 20)
    (tmp_path / "old.txt").write_bytes(LATIN_1)
    with pytest.raises(InputError, match="old.txt: not UTF-8 text"):
        FileText(tmp_path, None, 8)


# ---------------------------------------------------------------------------------------------
# few-shot task folders (sample.py)


def task_folder(folder, files):
    """A task folder with a query image and `files` ({name: text, or None for an image})."""
    folder.mkdir(exist_ok=True)
    for name, text in {"query.png": None, **files}.items():
        if text is None:
            Image.new("RGB", (8, 8), (200, 0, 0)).save(folder / name)
        else:
            (folder / name).write_text(text)
    return folder


def test_pieces_are_ordered_by_number(tmp_path):
    folder = task_folder(tmp_path / "t", {"1.txt": "one", "10.txt": "ten", "2.txt": "two", "03.txt": "three"})
    pieces, _, _ = sample.read_task_folder(folder)
    assert pieces[:4] == ["one", "two", "three", "ten"] and isinstance(pieces[4], Image.Image)


def test_text_suffixes_match_in_any_case(tmp_path):
    folder = task_folder(tmp_path / "t", {"01.PNG": None, "01.TXT": "This is a dax."})
    pieces, _, _ = sample.read_task_folder(folder)
    assert len(pieces) == 3 and pieces[1] == "This is a dax."


def test_two_images_for_one_piece_are_refused(tmp_path):
    folder = task_folder(tmp_path / "t", {"01.png": None, "01.jpg": None})
    with pytest.raises(InputError, match="t: two images for piece 01: 01.jpg, 01.png"):
        sample.read_task_folder(folder)


@pytest.mark.parametrize("what", ["a folder", "a broken symbolic link"])
def test_a_piece_that_is_not_a_file_is_refused(tmp_path, what):
    folder = task_folder(tmp_path / "t", {"01.txt": "This is a dax."})
    if what == "a folder":
        (folder / "02.txt").mkdir()
    else:
        (folder / "02.txt").symlink_to(tmp_path / "missing.txt")
    with pytest.raises(InputError, match=f"02.txt: is {what}, not a file"):
        sample.read_task_folder(folder)


@pytest.mark.parametrize("name", ["01.txt", "answer.txt", "README.md"])
def test_task_texts_not_in_utf8_name_the_file(tmp_path, name):
    folder = task_folder(tmp_path / "t", {"01.txt": "This is a dax."})
    (folder / name).write_bytes(LATIN_1)
    with pytest.raises(InputError, match=f"{name}: not UTF-8 text"):
        sample.read_task_folder(folder)


@pytest.fixture(scope="module")
def tiny_model():
    """An untrained Frozen with a 16-token context: rotary tables for 64 positions."""
    torch.manual_seed(0)
    lm = GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16))
    return Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=2, image_size=32)).eval()


DECODING = dict(max_new_tokens=4, temperature=0.0, top_k=None, top_p=None)


def positions(tokenizer, text):
    return 2 + len(tokenizer.encode(" " + text)) + DECODING["max_new_tokens"]  # query image: 2 positions


def test_a_prompt_past_the_models_positions_is_refused(tmp_path, tiny_model, tokenizer):
    text = " ".join(["one two three four five six seven eight nine ten."] * 8)
    n = positions(tokenizer, text)
    assert n > 64
    folder = task_folder(tmp_path / "long", {"query.txt": text})
    with pytest.raises(InputError, match=f"long: the prompt and 4 new tokens take {n} positions, more than the 64"):
        sample.run_shots(tiny_model, tokenizer, folder, DECODING, out=lambda line: None)


def test_a_prompt_past_the_trained_context_warns(tmp_path, tiny_model, tokenizer):
    text = "one two three four five six seven eight nine ten."
    n = positions(tokenizer, text)
    assert 16 < n <= 64
    folder = task_folder(tmp_path / "longish", {"query.txt": text})
    _, messages = recorded(sample.run_shots, tiny_model, tokenizer, folder, DECODING, out=lambda line: None)
    assert len(messages) == 1 and f"longish: the prompt and 4 new tokens take {n} positions" in messages[0]
    assert "trained context of 16" in messages[0]
    short = task_folder(tmp_path / "short", {"query.txt": "one"})
    assert recorded(sample.run_shots, tiny_model, tokenizer, short, DECODING, out=lambda line: None)[1] == []
