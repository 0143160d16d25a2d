"""train.py --stage lm: checkpoints, resume, the command line, and bad input."""

import pytest
import torch

import checkpoint
import train
from data import InputError

from conftest import lm_args as tiny_args


def test_stage_lm_writes_a_loadable_checkpoint_and_log(corpus, tmp_path):
    train.main(tiny_args(corpus, tmp_path, 8))
    ckpt = torch.load(tmp_path / "lm.pt", weights_only=True)
    assert ckpt["kind"] == "lm" and ckpt["step"] == 8
    assert ckpt["model_config"]["n_layer"] == 2
    model, tokenizer, _ = checkpoint.load_lm(tmp_path / "lm.pt")
    assert model.config.vocab_size == tokenizer.vocab_size
    rows = checkpoint.read_log(tmp_path / "lm_log.txt")
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6, 8]
    assert [r["step"] for r in rows if "val_loss" in r] == [4, 8]
    assert not (tmp_path / "lm.pt.tmp").exists()


def test_resume_reaches_the_same_weights_as_an_unbroken_run(corpus, tmp_path, monkeypatch):
    train.main(tiny_args(corpus, tmp_path / "unbroken", 8))

    real_save = train.save_checkpoint

    def save_then_die(obj, path):  # killed right after the step-4 checkpoint was written
        real_save(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.main(tiny_args(corpus, tmp_path / "broken", 8))
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    assert torch.load(tmp_path / "broken" / "lm.pt", weights_only=True)["step"] == 4
    train.main(tiny_args(corpus, tmp_path / "broken", 8, "--resume"))

    a = torch.load(tmp_path / "unbroken" / "lm.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "broken" / "lm.pt", weights_only=True)["model"]
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_flags_override_preset_and_bools_parse_for_real():
    args = train.parse_args(["--stage", "lm", "--lr", "1e-4", "--resume", "false"])
    cfg = train.build_config(train.LMConfig, args, train.PRESETS["lm"]["tiny"]["train"])
    assert cfg.lr == 1e-4 and cfg.resume is False
    assert cfg.batch_size == train.PRESETS["lm"]["tiny"]["train"]["batch_size"]
    assert train.parse_args(["--stage", "lm", "--resume"]).resume is True
    with pytest.raises(SystemExit):
        train.parse_args(["--stage", "lm", "--resume", "maybe"])


def test_missing_text_path_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(SystemExit) as e:
        train.main(tiny_args(missing, tmp_path / "out", 2))
    assert str(missing) in str(e.value) and "not found" in str(e.value)
    assert "\n" not in str(e.value)


def test_empty_corpus_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n ")
    with pytest.raises(SystemExit) as e:
        train.main(tiny_args(tmp_path / "empty.txt", tmp_path / "out", 2))
    assert "empty.txt" in str(e.value) and "empty" in str(e.value)


def test_checkpoint_of_the_wrong_kind_is_refused(tmp_path):
    path = tmp_path / "prefix.pt"
    torch.save({"kind": "prefix"}, path)
    with pytest.raises(InputError, match="expected a stage-lm checkpoint"):
        checkpoint.load_checkpoint(path, "lm")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="garbage.pt: not a checkpoint written by train.py"):
        checkpoint.load_checkpoint(tmp_path / "garbage.pt", "lm")


def test_tokenizer_that_does_not_match_the_checkpoint_is_refused(corpus, tmp_path):
    train.main(tiny_args(corpus, tmp_path, 2))
    other = tmp_path / "other"
    train.main(tiny_args(corpus, other, 2, "--vocab-size", "280"))
    (tmp_path / "tokenizer.json").write_bytes((other / "tokenizer.json").read_bytes())
    with pytest.raises(InputError, match="tokenizer does not match"):
        checkpoint.load_lm(tmp_path / "lm.pt")
