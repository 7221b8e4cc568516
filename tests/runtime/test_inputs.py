"""Input handling: clear errors for empty prompts, a warning for out-of-vocabulary words, padding rules."""

from __future__ import annotations

import pytest

import circuitkit as ck
from circuitkit.runtime.inputs import batches, real_mask, tokenize


@pytest.fixture(scope="module")
def lm():
    return ck.load_model("toylm")


def test_empty_prompt_is_an_error(lm):
    with pytest.raises(ValueError, match=r"prompt\(s\) \[1\] are empty"):
        tokenize(lm, ["mary went to the store", "  "])
    with pytest.raises(ValueError, match="empty inputs"):
        tokenize(lm, [])


def test_out_of_vocabulary_words_warn_naming_them(lm):
    with pytest.warns(UserWarning, match=r"outside the tokenizer's vocabulary.*'zyzzyva'"):
        tokenize(lm, ["mary went to the zyzzyva"])


def test_right_padding_and_the_bos_mask(lm):
    ids, _ = tokenize(lm, ["mary went to the store", "john"])
    (b,) = batches(lm, ids, 8)
    assert b.input_ids.shape == (2, len(ids[0])) and b.attention_mask[1].sum() == len(ids[1])
    m = real_mask(b)
    assert not m[:, 0].any() and m[0, 1:].all() and m[1].sum() == len(ids[1]) - 1
