"""In-context learning in the text LM: the text-binding and copy scores, and their scoring."""

import pytest
import torch

import scoring
import world
from data import train_tokenizer
from gpt import GPT, GPTConfig


@pytest.fixture(scope="module")
def world_tokenizer(tmp_path_factory):
    text = world.corpus_text(0, 300_000).split("\n\n")
    return train_tokenizer(text, 1024, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def test_binding_scores_hand_made_answers():
    episodes = world.episodes("binding", 4, seed=0, as_text=True, ways=2, layout="direct")
    names = [e.info["names"] for e in episodes]
    wrong = [next(n for n in names[i].values() if n != e.answer) for i, e in enumerate(episodes)]
    answers = [episodes[0].answer.upper() + ".",  # right, after normalisation
               wrong[1],  # a support name, the wrong one
               "the " + episodes[2].answer,  # right: a leading article is dropped
               "a big red apple"]  # not a name at all
    cell = scoring.score_binding(answers, episodes)
    assert cell["acc"] == 0.5 and cell["n"] == 4 and cell["chance"] == 0.5
    assert cell["some_name"] == 0.75
    assert cell["ci"][0] < 0.5 < cell["ci"][1]


def test_text_binding_episodes_are_deterministic_and_in_both_layouts():
    a = world.episodes("binding", 3, seed=5, as_text=True, layout="paper", ways=5)
    b = world.episodes("binding", 3, seed=5, as_text=True, layout="paper", ways=5)
    assert [e.pieces for e in a] == [e.pieces for e in b]
    assert a[0].pieces[-1] == "This is a" or a[0].pieces[-1] == "This is an"
    direct = world.episodes("binding", 3, seed=5, as_text=True, layout="direct", ways=5)
    assert all(not e.pieces[-1].endswith(".") for e in direct)  # the name follows the thing directly
    assert all(e.answer in world.NONSENSE_NAMES for e in direct)


def test_an_untrained_lm_binds_at_or_below_chance(world_tokenizer):
    torch.manual_seed(0)
    lm = GPT(GPTConfig(vocab_size=world_tokenizer.vocab_size, block_size=256, n_layer=2, n_head=2,
                       n_embd=32)).eval()
    scores = scoring.text_icl_scores(lm, world_tokenizer, n=20)
    assert set(scores) == {"copy", "bind2_paper", "bind5_paper", "bind2_direct", "bind5_direct", "bind2_heldback"}
    assert scores["copy"] < 0.1
    assert scores["bind2_paper"] <= 0.5 and scores["bind2_direct"] <= 0.5
    assert scores["bind5_paper"] <= 0.2 and scores["bind5_direct"] <= 0.2


def test_copy_score_is_near_one_for_an_ideal_induction_head(world_tokenizer):
    """A stand-in LM that does what an induction head does (find the last earlier occurrence of
    the current token, predict the token that followed it) scores ~1 on the copy task."""
    class InductionHead(torch.nn.Module):
        wte = torch.nn.Embedding(1, 1)

        def forward(self, ids):
            logits = torch.zeros(*ids.shape, world_tokenizer.vocab_size)
            for row, seq in enumerate(ids.tolist()):
                for t, token in enumerate(seq):
                    earlier = [j for j in range(t) if seq[j] == token]
                    if earlier:
                        logits[row, t, seq[earlier[-1] + 1]] = 1.0
            return logits, None

    # not 1: a token that occurs twice in a random sequence sends "the last occurrence" astray
    score = scoring.copy_score(InductionHead(), world_tokenizer, n=10)
    assert score > 0.8
    # rows of different lengths batched, right-padded: the same score as one row at a time
    assert scoring.copy_score(InductionHead(), world_tokenizer, n=10, batch_size=3) == score
    assert scoring.copy_score(InductionHead(), world_tokenizer, n=10, batch_size=1) == score
