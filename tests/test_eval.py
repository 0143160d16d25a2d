"""eval.py: the paper's scoring on hand-made answers, the episodes' fairness, and a tiny end-to-end
run of every image table (a 2-layer LM on world text, a 2-step stage prefix: structure, not skill)."""

import json
import random
import re

import pytest
import torch
from PIL import Image

import checkpoint
import eval
import plots
import train
import world
from data import InputError
from scoring import exact_match, wilson_interval

from conftest import lm_args



@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models here run thousands of small ops: one thread is faster than two, and does
    not slow down tenfold when another process holds a core (threads waiting on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- scoring the world's answers -----------------------------------------------------------


def test_caption_correct_scores_each_attribute():
    apples = world.Scene(world.scenes._group_objects(random.Random(0), "apple", "red", "small", "left", 2))
    right = eval.caption_correct("two small red apples on the left.", apples)
    assert right == {"kind": True, "colour": True, "count": True, "position": True}
    wrong = eval.caption_correct("a green car at the top. it is fast.", apples)
    assert wrong == {"kind": False, "colour": False, "count": False, "position": False}
    half = eval.caption_correct("a red car on the left.", apples)  # right colour and place, wrong kind and count
    assert half == {"kind": False, "colour": True, "count": False, "position": True}
    assert not any(eval.caption_correct("", apples).values())


def test_parse_model_spec():
    assert eval.parse_model_spec("out/paper/frozen/prefix.pt") == ("frozen", "out/paper/frozen/prefix.pt", False)
    assert eval.parse_model_spec("blind=out/a/prefix.pt:blind") == ("blind", "out/a/prefix.pt", True)
    assert eval.parse_model_spec("x/run.pt:blind") == ("run blind", "x/run.pt", True)


@pytest.mark.parametrize("ways", [2, 5])
@pytest.mark.parametrize("layout", ["direct", "paper"])
def test_an_answer_by_position_alone_is_at_chance(ways, layout):
    """The episodes leak nothing through order: always answering the first (or last) support name,
    which is all that a model blind to the images can do, scores about 1 / ways (within a 99.9%
    interval of 1000 episodes: 8 such checks at 95% would fail one time in three by chance)."""
    episodes = world.episodes("binding", 1000, seed=1, as_text=True, ways=ways, inner_shots=1,
                              task_induction=True, layout=layout)
    # the names in the order the support set shows them (pieces[0] is the task induction)
    shown = [[w for p in e.pieces[1:] for w in re.findall(r"[a-z]+", p) if w in e.info["names"].values()]
             for e in episodes]
    for pick in (0, -1):
        hits = sum(exact_match(names[pick], e.answer) for names, e in zip(shown, episodes))
        low, high = wilson_interval(hits, len(episodes), z=3.29)
        assert low <= 1 / ways <= high, (pick, hits)


# --- a tiny end-to-end run ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def world_lm(tmp_path_factory):
    """A 2-layer LM on world text (a world tokenizer: prompts tokenise as they will for real), block
    size 160 so that the longest episodes (paper layout, 300-token BPE) fit in its 640 positions."""
    text = tmp_path_factory.mktemp("world_text")
    (text / "world.txt").write_text(world.corpus_text(0, 40_000))
    lm = tmp_path_factory.mktemp("world_lm")
    train.main(lm_args(text, lm, 4, "--block-size", "160"))
    return lm / "lm.pt"


@pytest.fixture(scope="module")
def prefix_ckpt(world_lm, tmp_path_factory):
    """2 steps of stage prefix on world images: an untrained Frozen, for the tables' structure."""
    out = tmp_path_factory.mktemp("world_prefix")
    train.main(["--stage", "prefix", "--lm-ckpt", str(world_lm), "--out-dir", str(out), "--data", "world",
                "--image-size", "32", "--num-workers", "0", "--batch-size", "4", "--max-steps", "2",
                "--warmup-steps", "1", "--log-interval", "1", "--eval-interval", "2", "--eval-batches", "1"])
    return out / "prefix.pt"


def test_every_table_and_the_comparison(prefix_ckpt, tmp_path, capsys):
    n = 3
    result = eval.main(["--ckpt", f"frozen={prefix_ckpt}", "--compare", f"blind={prefix_ckpt}:blind",
                        "--episodes", str(n), "--json", str(tmp_path / "r.json"), "--md", str(tmp_path / "r.md"),
                        "--png", str(tmp_path / "r.png")])
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(result))
    assert list(result["models"]) == ["frozen", "blind"]
    frozen, blind = result["models"]["frozen"], result["models"]["blind"]
    assert not frozen["blind"] and blind["blind"] and "LM frozen" in frozen["about"]
    r = frozen["results"]
    assert set(r) == set(eval.IMAGE_TASKS)
    assert [c["kinds"] for c in r["caption"]] == ["seen", "heldout"]
    assert all(c[f]["n"] == n for c in r["caption"] for f in eval.CAPTION_FIELDS)
    assert all(c["perplexity"] > 1 for c in r["caption"])
    for task in ("vqa", "okvqa"):
        assert [c["shots"] for c in r[task]] == [0, 1, 4] and all(c["n"] == n for c in r[task])
    # the paper's Table 2 in full (2- and 5-way), then held-back names, held-back sentences, both,
    # seen kinds, real names and the other layout, each 2- and 5-way in the short columns
    rows = [(b["names"], b["templates"], b["kinds"], b["layout"], b["ways"], len(b["cells"])) for b in r["binding"]]
    full = [("nonsense", "paper", "heldout", "paper", w, len(eval.PAPER_COLUMNS)) for w in (2, 5)]
    short = [(names, templates, kinds, layout, w, 2) for names, templates, kinds, layout in (
        ("heldback", "paper", "heldout", "paper"), ("nonsense", "heldback", "heldout", "paper"),
        ("heldback", "heldback", "heldout", "paper"), ("nonsense", "paper", "seen", "paper"),
        ("real", "paper", "heldout", "paper"), ("nonsense", "paper", "heldout", "direct")) for w in (2, 5)]
    assert rows == full + short
    assert r["binding"][0]["cells"][3]["inner_shots"] == 5 and r["binding"][0]["chance"] == 0.5
    assert all(0.5 <= c["random_object"] <= 1 for f in r["fast_vqa"] for c in f["cells"])
    assert [row["kinds"] for row in r["ladder"]] == ["seen", "heldout"]
    assert all(row[rung]["n"] == n for row in r["ladder"]
               for rung in ("reference text", "own captions as text", "visual prefixes"))
    assert "ladder" not in blind["results"]  # a diagnostic, not a comparison cell
    assert [[c["inner_shots"] for c in f["cells"]] for f in r["fast_vqa"]] == [[0, 1, 3, 5]] * 2
    assert [s["kinds"] for s in r["separation"]] == ["held-out", "seen"]
    # the comparison model gets the comparison's cells only, and both are in its table
    assert set(eval.compare_cells(blind["results"], "paper")) == set(eval.compare_cells(r, "paper"))
    assert all(v is not None for v in eval.compare_cells(blind["results"], "paper").values())
    md = (tmp_path / "r.md").read_text()
    assert md.strip() in capsys.readouterr().out
    assert "## Comparison" in md and "| blind |" in md and "| frozen |" in md
    assert f"test episodes, {n} a cell" in md and "Re-make: `python eval.py --ckpt" in md
    assert "random object" in md and "The ladder" in md
    assert Image.open(tmp_path / "r.png").size[0] > 1000


def test_seeds_of_one_model_merge_into_one_row_with_an_interval_across_them(prefix_ckpt):
    """The same checkpoint given twice under one name: two 'seeds' that agree, so every cell is
    their common accuracy with a zero-width interval, twice the episodes, and both seeds kept."""
    one = eval.main(["--ckpt", f"m={prefix_ckpt}", "--task", "vqa", "--episodes", "4"])["models"]["m"]
    two = eval.main(["--ckpt", f"m={prefix_ckpt}", f"m={prefix_ckpt}", "--task", "vqa", "--episodes", "4"])
    merged = two["models"]["m"]
    assert merged["seeds"] == 2 and len(merged["ckpts"]) == 2
    for a, b in zip(one["results"]["vqa"], merged["results"]["vqa"]):
        assert b["acc"] == pytest.approx(a["acc"]) and b["n"] == 2 * a["n"] and b["per_seed"] == [a["acc"]] * 2
        assert b["ci"] == pytest.approx([a["acc"]] * 2) and b["seeds"] == 2


def test_merge_seeds_on_hand_made_cells():
    runs = [{"t": [{"shots": 0, "acc": a, "ci": [0, 1], "n": 10, "some_name": s}]} for a, s in ((0.6, 0.8), (0.8, 1.0))]
    (cell,) = eval.merge_seeds(runs)["t"]
    assert cell["acc"] == pytest.approx(0.7) and cell["n"] == 20 and cell["per_seed"] == [0.6, 0.8]
    assert cell["some_name"] == pytest.approx(0.9) and cell["shots"] == 0
    half = 12.706 * (0.2 ** 2 / 2) ** 0.5 / 2 ** 0.5  # t(0.975, 1) x sd / sqrt(2)
    assert cell["ci"] == pytest.approx([max(0.0, 0.7 - half), min(1.0, 0.7 + half)])


def test_val_and_test_episodes_share_nothing():
    """No val episode equals a test one: other scenes, other renders (an episode's pixels), and for
    text binding, other texts."""
    def key(e):
        return tuple(p.tobytes() if isinstance(p, Image.Image) else p for p in e.pieces) + (e.answer,)

    for task, options in (("binding", dict(ways=2, inner_shots=3)), ("vqa", dict(shots=1)), ("caption", {}),
                          ("fast_vqa", dict(inner_shots=1)), ("okvqa", dict(shots=1))):
        val, test = (world.episodes(task, 20, split=s, image_size=32, **options) for s in ("val", "test"))
        assert not {key(e) for e in val} & {key(e) for e in test}, task
        images = [{p.tobytes() for e in eps for p in e.pieces if isinstance(p, Image.Image)} for eps in (val, test)]
        assert not images[0] & images[1], task
    val, test = (world.episodes("binding", 300, split=s, as_text=True, ways=5) for s in ("val", "test"))
    assert not {world.episode_text(e) for e in val} & {world.episode_text(e) for e in test}


def test_a_blind_subject_sees_only_black_images(prefix_ckpt):
    """Blind: every image of a prompt black, so its answers cannot depend on what was shown, and
    every visual prefix is the same (the separation scores collapse), where the same model with
    its images sees different prefixes."""
    subject, _ = eval.load_subject(str(prefix_ckpt), "cpu", blind=True)
    episodes = eval.image_episodes(subject, eval.Protocol(6, 0), "binding", ways=2, layout="direct")
    for prompt in eval.prompts_of(subject, episodes):
        images = [p for p in prompt if torch.is_tensor(p)]
        assert len(images) == 3 and all(bool((x == -1).all()) for x in images)
    other = eval.image_episodes(subject, eval.Protocol(6, 1), "binding", ways=2, layout="direct")  # other pictures
    swapped = [world.Episode([o if isinstance(o, Image.Image) else p for p, o in zip(e.pieces, f.pieces)],
                             e.answer, e.task, e.info) for e, f in zip(episodes, other)]
    assert eval.generate_answers(subject, episodes) == eval.generate_answers(subject, swapped)
    (blind,) = eval.separation_table(subject, eval.Protocol(8, 0), full=False)
    assert blind["within"] == pytest.approx(1.0) and blind["across"] == pytest.approx(1.0)
    n = subject.model.config.n_prefix
    assert blind["slot_within"] == pytest.approx([1.0] * n) and blind["slot_across"] == pytest.approx([1.0] * n)
    subject.blind = False
    (seeing,) = eval.separation_table(subject, eval.Protocol(8, 0), full=False)
    assert seeing["across"] < 1 - 1e-4 and seeing["within"] < 1 - 1e-4
    assert len(seeing["slot_across"]) == n and max(seeing["slot_across"]) < 1 - 1e-4


def test_too_long_prompts_and_bad_tasks_fail_clearly(prefix_ckpt, capsys):
    subject, _ = eval.load_subject(str(prefix_ckpt), "cpu")
    with pytest.raises(InputError, match="positions"):
        eval.check_length(subject, [[list(range(700))]], 12, "vqa")
    with pytest.raises(SystemExit, match="--task"):
        eval.main(["--ckpt", str(prefix_ckpt), "--task", "vqa,nope"])
    with pytest.raises(SystemExit, match="not found"):
        eval.main(["--ckpt", str(prefix_ckpt.parent.parent / "nothing.pt"), "--task", "vqa"])


def test_an_lm_checkpoint_gets_the_text_binding_table(world_lm, capsys):
    result = eval.main(["--ckpt", str(world_lm), "--episodes", "2"])
    assert result["task"] == "text-binding" and len(result["rows"]) == 4 * len(eval.TEXT_ROWS)
    assert [(r["kinds"], r["form"]) for r in result["forms"]] == [(k, f) for k in ("seen", "heldout")
                                                                   for f in eval.THING_FORMS]
    printed = capsys.readouterr().out
    assert "Text binding: test episodes, 2 a cell" in printed and "| a small red apple | seen |" in printed


def test_thing_forms_write_what_their_labels_say():
    thing = world.Obj("apple", "red", "small", "middle")
    written = [write(thing) for write in eval.THING_FORMS.values()]
    assert written == ["a small red apple.", "a small red apple", "small red apple", "apple.", "an apple.",
                       "a big thing."]
    assert [label.split(" (")[0] for label in eval.THING_FORMS][:5] == written[:5]
    assert world.describe(thing) == written[0]  # the corpus's form is the reference text's


def test_plot_log_draws_a_training_log(tmp_path):
    log = checkpoint.Log(tmp_path / "lm_log.txt")
    for step in range(10, 101, 10):
        log.write(step=step, loss=5.0 / step ** 0.5, lr=1e-3)
        if step % 50 == 0:
            log.write(step=step, val_loss=5.5 / step ** 0.5, copy=step / 100, bind2_direct=0.5)
    png = plots.plot_log(tmp_path / "lm_log.txt", tmp_path / "plot.png")
    assert Image.open(png).size == (900, 380)
    with pytest.raises(InputError, match="no nothing values"):
        plots.plot_log(tmp_path / "lm_log.txt", tmp_path / "none.png", keys=("nothing",))
