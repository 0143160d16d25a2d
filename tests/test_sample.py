"""sample.py: task folders (written, read back, malformed), answers cut at a sentence's end."""

import pytest
from PIL import Image

import sample
import world
from data import InputError


def test_task_folder_round_trip(tmp_path):
    episode = world.episodes("binding", 1, seed=3, image_size=32, ways=2, inner_shots=1, layout="paper")[0]
    sample.write_task_folder(tmp_path / "t", episode.pieces, episode.answer, "about it")
    pieces, answer, about = sample.read_task_folder(tmp_path / "t")
    assert answer == episode.answer and about == "about it"
    assert len(pieces) == len(episode.pieces)
    for got, want in zip(pieces, episode.pieces):
        if isinstance(want, Image.Image):
            assert isinstance(got, Image.Image) and got.size == want.size
        else:
            assert got == want


def test_examples_folder_is_readable():
    folders = sample.task_folders("examples")
    assert sorted(f.name for f in folders) == sorted(sample.EXAMPLES)
    for folder in folders:
        pieces, answer, about = sample.read_task_folder(folder)
        assert answer and about
        files = [p for p in folder.iterdir() if p.suffix in (".png", ".txt") and p.name != "answer.txt"]
        assert len(pieces) == len(files)  # each image and text is one piece
        # the prompt ends with the query image, then the text of query.txt if there is one
        query_text = folder / "query.txt"
        tail = [query_text.read_text().strip()] if query_text.exists() else []
        assert isinstance(pieces[-1 - len(tail)], Image.Image) and pieces[len(pieces) - len(tail):] == tail


def test_a_folder_without_a_query_image_says_what_is_expected(tmp_path):
    (tmp_path / "01.txt").write_text("This is a dax.")
    with pytest.raises(InputError, match="no query image.*01.png \\+ 01.txt"):
        sample.read_task_folder(tmp_path)


def test_unexpected_files_and_empty_texts_are_named(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "query.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unexpected files \\['notes'\\]"):
        sample.read_task_folder(tmp_path)
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "01.txt").write_text("  \n")
    with pytest.raises(InputError, match="01.txt: empty text file"):
        sample.read_task_folder(tmp_path)


def test_a_corrupt_image_is_named(tmp_path):
    (tmp_path / "query.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="query.png: unreadable image"):
        sample.read_task_folder(tmp_path)


def test_a_folder_with_neither_query_nor_tasks(tmp_path):
    with pytest.raises(InputError, match="neither a query image nor task folders"):
        sample.task_folders(tmp_path)
    with pytest.raises(SystemExit):
        sample.main(["--shots", str(tmp_path / "missing"), "--ckpt", str(tmp_path / "none.pt")])
