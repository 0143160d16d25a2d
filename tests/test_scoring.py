"""scoring.py: the paper's answer scoring on hand-made answers, and the intervals."""

import pytest

import scoring
from scoring import exact_match, fmt, normalize_answer, seed_interval, summarize, wilson_interval


@pytest.mark.parametrize("text, normal", [
    ("The Red.", "red"), ("an apple", "apple"), ("  On the LEFT! ", "on the left"), ("a", "a"),
    ("dax", "dax"), ("A dax.", "dax"), ("in the sea", "in the sea"), ("yes,", "yes"), ("", ""),
])
def test_normalize_answer(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match_is_exact_after_normalisation():
    assert exact_match("A dax.", "dax") and exact_match("On the left", "on the left.")
    assert not exact_match("daxes", "dax") and not exact_match("dax dax", "dax")
    assert not exact_match("", "dax") and not exact_match("the left", "on the left")


def test_wilson_interval_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.2 < high < 0.35  # never a zero-width interval at 0 of 10
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and 0.65 < low < 0.8
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    for k in range(0, 21):  # symmetric: k successes mirror n - k
        a, b = wilson_interval(k, 20), wilson_interval(20 - k, 20)
        assert a[0] == pytest.approx(1 - b[1]) and a[1] == pytest.approx(1 - b[0])
        assert a[0] <= k / 20 <= a[1]


def test_summarize_and_fmt():
    cell = summarize([True, False, True, True])
    assert cell["acc"] == 0.75 and cell["n"] == 4 and cell["ci"] == list(wilson_interval(3, 4))
    assert summarize([]) == {"acc": 0.0, "ci": [0.0, 1.0], "n": 0}
    assert fmt({"acc": 0.5, "ci": [0.4, 0.6], "n": 100}) == "0.50 [0.40, 0.60]"
    assert fmt({"acc": 0.5, "ci": None, "seeds": 1}) == "0.50"  # one seed: no interval to show


def test_seed_interval_on_a_hand_made_example():
    # three seeds 0.6, 0.7, 0.8: mean 0.7, sd 0.1, standard error 0.1 / sqrt(3); t(0.975, 2) = 4.303
    cell = seed_interval([0.6, 0.7, 0.8])
    half = 4.303 * 0.1 / 3 ** 0.5
    assert cell["acc"] == pytest.approx(0.7) and cell["seeds"] == 3
    assert cell["ci"] == pytest.approx([0.7 - half, 0.7 + half])
    assert seed_interval([0.9, 0.9])["ci"] == pytest.approx([0.9, 0.9])  # no spread, no width
    assert seed_interval([0.0, 1.0])["ci"] == [0.0, 1.0]  # clipped to what an accuracy can be
    assert seed_interval([0.4])["ci"] is None


def test_answer_text_cuts_at_the_first_sentence_end():
    class Decode:
        def decode(self, tokens):
            return "".join(tokens)

    assert scoring.answer_text(Decode(), [" red", ". the", " rest"]) == "red"
    assert scoring.answer_text(Decode(), [" on the left"]) == "on the left"
