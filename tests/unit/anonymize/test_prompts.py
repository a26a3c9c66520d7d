"""Algorithm 1's prompts (Piano et al.): the text written out by hand from the paper's rule, ages and
ethnicities as phrases, and the token limit counted by CLIP's own BPE (open_clip's tokenizer)."""
from __future__ import annotations

import numpy as np
import pytest

from facefd.anonymize.prompts import build_prompts
from facefd.data.attributes import CELEBA_ATTRIBUTES


def test_word_ages_get_no_year_old():
    from facefd.anonymize.prompts import age_phrase

    assert [age_phrase(a) for a in (34, 33.6, "20-29", "30 - 39", "more than 70", "elderly", "middle-aged")] == [
        "34 year old", "34 year old", "20-29 year old", "30 - 39 year old", "elderly", "elderly", "middle-aged"]
    assert build_prompts({"Male": 0.9, "age": "elderly", "ethnicity": "Asian"}).positive.startswith(
        "closeup portrait photo of a asian elderly man")


def test_prompt_text_follows_algorithm_1():
    attrs = {"Male": 0.8, "Young": 0.9, "age": 34, "ethnicity": "East Asian", "Smiling": 0.7, "No_Beard": 0.9,
             "Wearing_Hat": 0.2, "5_o_Clock_Shadow": 0.6}
    p = build_prompts(attrs)
    # certainty order: beard (|0.1-0.5|), hat (0.3), smiling (0.2), 5 o'clock (0.1); Young dropped (age known)
    assert p.positive == "closeup portrait photo of a east asian 34 year old man, smiling, 5 o'clock shadow"
    assert p.negative == "beard, wearing a hat"
    assert p.dropped == []
    p = build_prompts({"Male": 0.3, "Young": 0.6, "No_Beard": 0.2, "ethnicity": {"Black": 0.7, "White": 0.3},
                       "age": {"20-29": 0.6, "30-39": 0.4}})
    assert p.positive == "closeup portrait photo of a black 20-29 year old woman, beard"
    p = build_prompts({"Male": 0.9, "Young": 0.8, "Wearing_Necktie": 0.95})
    assert p.positive == "closeup portrait photo of a man, wearing a necktie, young"
    assert "no beard" not in build_prompts({"No_Beard": 0.99}).positive + build_prompts({"No_Beard": 0.01}).negative


def _clip_count():
    open_clip = pytest.importorskip("open_clip")
    tokenizer = open_clip.tokenizer.SimpleTokenizer()
    return lambda text: len(tokenizer.encode(text))  # CLIP's own BPE, content tokens


def test_token_limit_drops_the_least_certain_first():
    count = _clip_count()
    rng = np.random.default_rng(0)
    attrs = {n: float(rng.choice([0.05, 0.2, 0.35, 0.65, 0.8, 0.95])) for n in CELEBA_ATTRIBUTES}
    attrs.update(age=30, ethnicity="White")
    full = build_prompts(attrs, count, long_prompts="chunk")
    assert count(full.positive) + count(full.negative) > 110 and full.dropped == []  # all 40 need ~121
    assert (full.positive_tokens, full.negative_tokens) == (count(full.positive), count(full.negative))
    fitted = build_prompts(attrs, count, max_tokens=75, long_prompts="truncate")
    assert fitted.positive_tokens == count(fitted.positive) <= 75 and fitted.negative_tokens == count(fitted.negative) <= 75
    assert fitted.dropped
    certainty = {n: abs(attrs[n] - 0.5) for n in attrs if n in CELEBA_ATTRIBUTES}
    kept = [n for n in certainty if n not in fitted.dropped and n not in ("Male", "Young")]
    assert max(certainty[n] for n in fitted.dropped) <= min(certainty[n] for n in kept)  # least certain go first


def words(text: str) -> int:
    """A stand-in token count (one token per word) for budgets small enough to follow by hand."""
    return len(text.replace(",", " ").split())


def test_truncation_by_hand():
    """Subject "closeup portrait photo of a man" is 6 words. Certainty order: Eyeglasses |0.05-0.5|=0.45,
    Smiling 0.3, Bangs 0.15, Wavy_Hair 0.05; the least certain go first until both prompts fit."""
    attrs = {"Male": 0.9, "Smiling": 0.8, "Bangs": 0.65, "Wavy_Hair": 0.55, "Eyeglasses": 0.05}
    p = build_prompts(attrs, words, max_tokens=9)
    # all: "... man, smiling, bangs, wavy hair" = 6 + 1 + 1 + 2 = 10 > 9 -> drop Wavy_Hair -> 8 <= 9
    assert (p.positive, p.negative, p.dropped) == ("closeup portrait photo of a man, smiling, bangs", "eyeglasses",
                                                   ["Wavy_Hair"])
    assert (p.positive_tokens, p.negative_tokens) == (8, 1)
    p = build_prompts(attrs, words, max_tokens=7)
    assert (p.positive, p.dropped) == ("closeup portrait photo of a man, smiling", ["Wavy_Hair", "Bangs"])
    p = build_prompts(attrs, words, max_tokens=6)  # the subject alone; the negative prompt fits on its own
    assert (p.positive, p.negative, p.dropped) == ("closeup portrait photo of a man", "eyeglasses",
                                                   ["Wavy_Hair", "Bangs", "Smiling"])
    assert build_prompts(attrs, words, max_tokens=6, long_prompts="chunk").dropped == []  # chunk keeps all
    assert build_prompts(attrs).positive_tokens is None  # nothing counted without a counter
    with pytest.raises(ValueError, match="the prompt subject alone has more than 5 tokens: 'closeup portrait photo of a man'"):
        build_prompts(attrs, words, max_tokens=5)
    with pytest.raises(ValueError, match="long_prompts must be 'truncate' or 'chunk', got 'cut'"):
        build_prompts(attrs, long_prompts="cut")


def test_the_half_way_cases_and_the_subject():
    """Algorithm 1 puts p > 0.5 in the positive prompt, so 0.5 goes to the negative one; Male = 0.5 is a
    woman; no Male is a person; ethnicity and age under their other keys; FairFace's word groups."""
    p = build_prompts({"Male": 0.5, "Smiling": 0.5, "race": "Middle_Eastern", "Age": "3-9"})
    assert (p.positive, p.negative) == ("closeup portrait photo of a middle eastern child woman", "smiling")
    assert build_prompts({"Ethnic": "White", "age": None, "Young": 0.9}).positive == \
        "closeup portrait photo of a white person, young"  # no age known: Young stays
    from facefd.anonymize.prompts import age_phrase, attribute_phrase, ranked_attributes

    assert [age_phrase(a) for a in ("0-2", "10-19", {"0-2": 0.2, "3-9": 0.7})] == ["baby", "teenage", "child"]
    assert attribute_phrase("Some_New_Thing") == "some new thing"
    # most certain first, ties in the given order, No_Beard as p(beard), non-numbers skipped
    assert ranked_attributes({"A_b": 0.75, "C_d": 0.25, "No_Beard": 0.875, "label": "x"}) == [
        ("No_Beard", "beard", 0.125), ("A_b", "a b", 0.75), ("C_d", "c d", 0.25)]
