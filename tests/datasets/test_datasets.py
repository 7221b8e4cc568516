"""Template datasets: determinism, label structure, vocabulary coverage, argument validation."""

from __future__ import annotations

import pandas as pd
import pytest

from circuitkit.datasets import all_words, bios, induction, ioi, mixture, professions, sva

GENERATORS = {
    "ioi": ioi,
    "sva": sva,
    "induction": induction,
    "bios": bios,
    "mixture": mixture,
}
REQUIRED = ["prompt", "answer", "distractor", "task"]


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_deterministic_and_columns(name):
    gen = GENERATORS[name]
    a, b = gen(64, seed=3), gen(64, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns[:4]) == REQUIRED
    assert len(a) == 64
    assert not a.equals(gen(64, seed=4))
    assert (a["answer"] != a["distractor"]).all()


def test_ioi_labels():
    df = ioi(200, seed=0)
    assert set(df["order"]) == {"ABBA", "BABA"}
    assert (df["answer"] == df["io"]).all() and (df["distractor"] == df["s"]).all()
    for row in df.itertuples():
        words = row.prompt.split()
        assert words.count(row.io) == 1 and words.count(row.s) == 2
        assert words[-1] == "to"


def test_sva_cells_and_answers():
    df = sva(400, seed=0)
    counts = df.groupby(["subject_number", "attractor_number"]).size()
    assert len(counts) == 4 and counts.nunique() == 1
    singular = df["subject_number"] == "singular"
    assert df.loc[singular, "answer"].isin(["is", "was"]).all()
    assert df.loc[~singular, "answer"].isin(["are", "were"]).all()


def test_induction_answer_from_first_copy():
    df = induction(200, seed=0)
    for row in df.itertuples():
        words = row.prompt.split()
        assert words[row.answer_pos] == row.answer
        assert words[row.answer_pos - 1] == words[-1]
        assert words.count(row.answer) == 1


def test_bios_ambiguous_is_perfectly_correlated():
    df = bios(300, seed=0, split="ambiguous")
    assert set(df["profession"]) == {"nurse", "professor"}
    assert df.groupby("profession")["gender"].nunique().max() == 1
    assert df.groupby("gender")["profession"].nunique().max() == 1
    assert set(df["group"]) == {"nurse|female", "professor|male"}


def test_bios_balanced_cells_equal():
    profs = professions()
    assert len(profs) >= 4
    df = bios(240, seed=0, split="balanced", professions=profs)
    counts = df.groupby(["profession", "gender"]).size()
    assert len(counts) == 2 * len(profs) and counts.nunique() == 1
    assert (df["label"] == df["profession"].map(profs.index)).all()
    assert df["template"].nunique() >= 6


def test_bios_forms():
    prof = bios(50, seed=1, form="profession")
    assert prof["prompt"].str.endswith("works as a").all()
    assert (prof["answer"] == prof["profession"]).all()
    pron = bios(50, seed=1, form="pronoun")
    expected = pron["gender"].map({"female": "she", "male": "he"})
    assert (pron["answer"] == expected).all()
    # the pronoun prompt must not give the pronoun away
    for p in pron["prompt"]:
        assert not {"she", "he", "her", "his"} & set(p.split())


def test_bios_p_correlated():
    df = bios(400, seed=0, split="ambiguous", p_correlated=0.5)
    assert df.groupby("profession")["gender"].nunique().min() == 2


def test_every_word_in_tokenizer_vocab():
    words = set(all_words())
    frames = [ioi(300, seed=9), sva(300, seed=9), induction(300, seed=9), mixture(500, seed=9)]
    for form in ("bio", "profession", "pronoun"):
        frames.append(bios(300, seed=9, professions=professions(), form=form))
    for df in frames:
        for col in ("prompt", "answer", "distractor"):
            for text in df[col]:
                missing = set(text.split()) - words
                assert not missing, missing


def test_every_word_in_saved_tokenizer():
    from circuitkit.models.toylm import TOYLM_DIR

    if not (TOYLM_DIR / "tokenizer.json").is_file():
        pytest.skip("data/toylm not built (run scripts/build_toylm.py)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TOYLM_DIR), local_files_only=True)
    vocab = tok.get_vocab()
    assert not [w for w in all_words() if w not in vocab]
    text = mixture(200, seed=11)["text"].tolist()
    ids = tok(text)["input_ids"]
    assert all(seq[0] == tok.bos_token_id for seq in ids)
    assert not any(tok.unk_token_id in seq for seq in ids)


@pytest.mark.parametrize("gen", [ioi, sva, induction, bios, mixture])
@pytest.mark.parametrize("n", [0, -3])
def test_bad_n(gen, n):
    with pytest.raises(ValueError, match=str(n)):
        gen(n, seed=0)


def test_bad_split_and_professions():
    with pytest.raises(ValueError, match=r"'random'.*ambiguous.*balanced"):
        bios(10, seed=0, split="random")
    with pytest.raises(ValueError, match=r"astronaut.*nurse"):
        bios(10, seed=0, professions=["nurse", "astronaut"])
    with pytest.raises(ValueError, match="form"):
        bios(10, seed=0, form="essay")
    with pytest.raises(ValueError, match="p_correlated"):
        bios(10, seed=0, split="ambiguous", p_correlated=1.5)
    with pytest.raises(ValueError, match=r"bogus.*ioi"):
        mixture(10, seed=0, weights={"bogus": 1.0})
