"""train.py --stage lm: checkpoints, resume, the command line, and bad input."""

import dataclasses

import pytest
import torch

import checkpoint
import common
import train
import world
from data import InputError

from conftest import lm_args as tiny_args, timed_as


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
    assert all(r["eval_s"] > 0 for r in rows if "val_loss" in r)  # each evaluation's seconds
    summary, = [r for r in rows if "eval_share" in r]  # and their share of the loop, at the end
    assert summary["step"] == 8 and 0 < summary["eval_share"] < 1
    assert summary["eval_total_s"] <= summary["loop_s"]
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


# --- resuming: exact, and refused when it would change the run ---------------------------------


def logged(path, key="loss"):
    return [int(r["step"]) for r in checkpoint.read_log(path) if key in r]


def test_resume_is_exact_with_dropout_and_logs_each_step_once(corpus, tmp_path, monkeypatch):
    """Dropout draws from torch's generator: seeded from (seed, step) at every step, a resumed run
    draws what the unbroken one drew. Lines the killed run logged after its checkpoint go."""
    dropout = ("--dropout", "0.1")
    train.main(tiny_args(corpus, tmp_path / "unbroken", 8, *dropout))
    real_save, saves = train.save_checkpoint, []

    def die_at_the_second_save(obj, path):  # step 8: logged, then killed before it was saved
        saves.append(obj["step"])
        if len(saves) == 2:
            raise KeyboardInterrupt
        real_save(obj, path)

    monkeypatch.setattr(train, "save_checkpoint", die_at_the_second_save)
    with pytest.raises(KeyboardInterrupt):
        train.main(tiny_args(corpus, tmp_path / "broken", 8, *dropout))
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    assert logged(tmp_path / "broken" / "lm_log.txt") == [2, 4, 6, 8]
    train.main(tiny_args(corpus, tmp_path / "broken", 8, *dropout, "--resume"))

    assert logged(tmp_path / "broken" / "lm_log.txt") == [2, 4, 6, 8]  # not 2, 4, 6, 8, 6, 8
    assert logged(tmp_path / "broken" / "lm_log.txt", "val_loss") == [4, 8]
    a = torch.load(tmp_path / "unbroken" / "lm.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "broken" / "lm.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same machine: bit for bit


@pytest.mark.parametrize("change", [("--n-layer", "3"), ("--lr", "1e-3"), ("--seed", "1"), ("--batch-size", "2")])
def test_resume_with_another_run_is_refused_naming_the_fields(corpus, tmp_path, change):
    train.main(tiny_args(corpus, tmp_path, 2))
    with pytest.raises(SystemExit) as e:
        train.main(tiny_args(corpus, tmp_path, 4, *change, "--resume"))
    message = str(e.value)
    field = {"--batch-size": "global batch"}.get(change[0], change[0][2:].replace("-", "_"))
    assert "lm.pt: --resume asks for another run" in message and field in message and "\n" not in message


def test_resume_of_a_checkpoint_written_before_a_config_field_existed(corpus, tmp_path):
    """A field added since the checkpoint was written counts as its default (the old behaviour):
    the run resumes at the default and is refused, naming the field, at another value."""
    train.main(tiny_args(corpus, tmp_path, 2))
    ckpt = torch.load(tmp_path / "lm.pt", weights_only=True)
    del ckpt["train_config"]["word_things"], ckpt["train_config"]["vector_hardness"]
    checkpoint.save_checkpoint(ckpt, tmp_path / "lm.pt")
    with pytest.raises(SystemExit) as e:
        train.main(tiny_args(corpus, tmp_path, 4, "--word-things", "0.15", "--resume"))
    assert "word_things: checkpoint 0.0, now 0.15" in str(e.value)
    train.main(tiny_args(corpus, tmp_path, 4, "--resume"))
    assert torch.load(tmp_path / "lm.pt", weights_only=True)["step"] == 4


def test_resume_may_regroup_the_global_batch_and_watch_it_differently(corpus, tmp_path):
    train.main(tiny_args(corpus, tmp_path, 2))
    train.main(tiny_args(corpus, tmp_path, 4, "--batch-size", "2", "--grad-accum", "2", "--log-interval", "1",
                         "--resume"))
    assert torch.load(tmp_path / "lm.pt", weights_only=True)["step"] == 4


def test_max_steps_at_or_below_the_checkpoint(corpus, tmp_path, capsys):
    train.main(tiny_args(corpus, tmp_path, 4))
    capsys.readouterr()
    train.main(tiny_args(corpus, tmp_path, 4, "--resume"))  # finished: nothing to do, nothing saved
    printed = capsys.readouterr().out
    assert "already trained to step 4" in printed and "saved" not in printed
    with pytest.raises(SystemExit, match="at step 4, past --max-steps 2; nothing to train"):
        train.main(tiny_args(corpus, tmp_path, 2, "--resume"))


def test_an_empty_or_foreign_checkpoint_is_one_line(corpus, tmp_path):
    import sample

    train.main(tiny_args(corpus, tmp_path, 2))
    for content, reason in ((b"", "empty file"), (b"\x80\x02random bytes", "not a checkpoint written by train.py")):
        (tmp_path / "lm.pt").write_bytes(content)
        for run in (lambda: train.main(tiny_args(corpus, tmp_path, 4, "--resume")),
                    lambda: sample.main(["--ckpt", str(tmp_path / "lm.pt"), "--prompt", "a"]),
                    lambda: sample.main(["--ckpt", str(tmp_path / "lm.pt"), "--image", "x.png"])):
            with pytest.raises(SystemExit) as e:
                run()
            message = str(e.value)
            assert "lm.pt" in message and reason in message and "weights_only" not in message
            assert "\n" not in message


def test_the_last_log_line_times_the_steps_it_covers(monkeypatch):
    import common

    clock = iter(range(0, 1000, 10))  # every reading 10 s later
    monkeypatch.setattr(common.time, "time", lambda: next(clock))
    lines = []
    log = common.StepLog(type("L", (), {"write": lambda self, **v: lines.append(v)})(), 0, 100, "tok/s")
    log.write(step=4, loss=1.0, lr=1e-3)  # 4 steps in 10 s
    log.write(step=5, loss=1.0, lr=1e-3)  # the last, 1 step in 10 s (not 10 / log_interval)
    assert [line["dt_ms"] for line in lines] == [2500, 10000]
    assert [line["tok/s"] for line in lines] == [40, 10]


def test_word_things_flag_weights_the_word_phrase_passages_of_the_corpus():
    cfg = train.LMConfig(word_things=0.15)
    assert train.text_source(cfg, None, 64, "train").mix.binding_words == 0.15
    assert train.text_source(train.LMConfig(), None, 64, "train").mix == world.TextMix()  # off by default


def test_shape_things_flag_weights_the_shaped_passages_of_the_corpus():
    assert train.text_source(train.LMConfig(shape_things=0.15), None, 64, "train").mix.binding_shapes == 0.15


def test_init_lm_starts_from_another_runs_weights_and_tokenizer(corpus, lm_dir, tmp_path, capsys):
    """--init-lm (a curriculum): a fresh run starts from the given LM's weights and tokenizer, on
    its own schedule."""
    first = checkpoint.load_checkpoint(lm_dir / "lm.pt", "lm")
    train.main(tiny_args(corpus, tmp_path / "b", 2, "--init-lm", str(lm_dir / "lm.pt")))
    assert f"LM weights from {lm_dir / 'lm.pt'} (step 8)" in capsys.readouterr().out
    assert (tmp_path / "b" / "tokenizer.json").read_bytes() == (lm_dir / "tokenizer.json").read_bytes()
    second = checkpoint.load_checkpoint(tmp_path / "b" / "lm.pt", "lm")
    assert second["step"] == 2 and second["tokenizer_hash"] == first["tokenizer_hash"]
    moved = [k for k in first["model"] if not torch.equal(first["model"][k], second["model"][k])]
    assert moved  # it trained on from there
    fresh_loss = checkpoint.read_log(lm_dir / "lm_log.txt")[0]["loss"]
    assert checkpoint.read_log(tmp_path / "b" / "lm_log.txt")[0]["loss"] < fresh_loss


def test_init_lm_refuses_another_shape_or_a_missing_tokenizer(corpus, lm_dir, tmp_path):
    with pytest.raises(SystemExit, match=r"--init-lm is another model than this run's \(n_layer: checkpoint 2, now 3\)"):
        train.main(tiny_args(corpus, tmp_path / "a", 2, "--init-lm", str(lm_dir / "lm.pt"), "--n-layer", "3"))
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "lm.pt").write_bytes((lm_dir / "lm.pt").read_bytes())
    with pytest.raises(SystemExit, match="--init-lm has no tokenizer.json beside it"):
        train.main(tiny_args(corpus, tmp_path / "b", 2, "--init-lm", str(lone / "lm.pt")))


@pytest.mark.parametrize("speedup, kept", [(1.5, torch.bfloat16), (1.05, torch.float32)])
def test_auto_precision_keeps_bf16_only_where_it_measures_clearly_faster(bf16_cpu, monkeypatch, speedup, kept):
    calls = timed_as(monkeypatch, speedup)
    rt = common.choose_precision(common.setup_runtime("cpu", "auto"), "auto", "the step", (), "prefix")
    assert rt.dtype == kept and calls == ["the step"]


def test_auto_precision_measures_nothing_where_it_need_not(bf16_cpu, monkeypatch):
    calls = timed_as(monkeypatch, 1.5)
    rt = common.setup_runtime("cpu", "auto")
    assert common.choose_precision(rt, "float32", "the step", (), "prefix").dtype == torch.float32  # asked
    assert common.choose_precision(rt, "auto", "the step", (), "prefix", "bfloat16").dtype == torch.bfloat16
    several = dataclasses.replace(rt, world_size=2)  # each process would measure its own
    assert common.choose_precision(several, "auto", "the step", (), "prefix").dtype == torch.float32
    monkeypatch.setattr(common, "cpu_bf16_flags", lambda: dict.fromkeys(common.CPU_BF16_FLAGS, False))
    assert common.choose_precision(rt, "auto", "the step", (), "prefix").dtype == torch.float32  # emulated bf16
    assert calls == []


def test_stage_lm_stays_float32_under_auto_however_fast_bf16_is_and_takes_bf16_when_asked(corpus, tmp_path, bf16_cpu,
                                                                                          monkeypatch):
    calls = timed_as(monkeypatch, 2.0)
    train.main(tiny_args(corpus, tmp_path / "auto", 2))
    assert torch.load(tmp_path / "auto" / "lm.pt", weights_only=True)["precision"] == "float32" and calls == []
    train.main(tiny_args(corpus, tmp_path / "asked", 2, "--dtype", "bfloat16"))
    assert torch.load(tmp_path / "asked" / "lm.pt", weights_only=True)["precision"] == "bfloat16"
