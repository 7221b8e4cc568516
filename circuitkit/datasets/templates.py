"""Template datasets for the embedded toy LM: IOI, subject-verb agreement, induction, and short bios.

Every generator is deterministic: ``(n, *, seed)`` -> a :class:`pandas.DataFrame` with one row per
example and at least the columns

``prompt``      the context (str): lowercase words separated by single spaces; punctuation is its own
                word (``"when mary and john went to the store , john gave a drink to"``);
``answer``      the correct next word;
``distractor``  a wrong but plausible next word (for logit differences ``logit[answer] - logit[distractor]``);
``task``        the task name,

plus task-specific label columns (documented on each generator). Words come from the fixed lists in
``vocab.json`` (shipped with the package), so every word is in the toy LM's vocabulary
(:func:`all_words`). No BOS is part of ``prompt``: the toy LM's tokenizer prepends ``<bos>`` itself.

Example::

    >>> from circuitkit.datasets import ioi
    >>> df = ioi(2, seed=0)
    >>> list(df.columns)[:4]
    ['prompt', 'answer', 'distractor', 'task']
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "BIOS_FORMS",
    "BIOS_SPLITS",
    "DEFAULT_AMBIGUOUS_GENDER",
    "TASKS",
    "all_words",
    "bios",
    "induction",
    "ioi",
    "load_vocab",
    "mixture",
    "professions",
    "sva",
]

VOCAB_FILE = Path(__file__).resolve().parent / "vocab.json"

TASKS = ("ioi", "sva", "induction", "bios")
BIOS_SPLITS = ("ambiguous", "balanced")
BIOS_FORMS = ("bio", "profession", "pronoun")
GENDERS = ("female", "male")
# Gender that each profession is tied to in the ``ambiguous`` split (nurse<->female, professor<->male as
# in the Bias in Bios "ambiguous" set used by Sparse Feature Circuits / SHIFT).
DEFAULT_AMBIGUOUS_GENDER = {
    "nurse": "female",
    "professor": "male",
    "surgeon": "male",
    "lawyer": "female",
    "chef": "female",
    "pilot": "male",
}
DEFAULT_BIOS_PROFESSIONS = ("nurse", "professor")

_PRONOUN = {"female": ("she", "her"), "male": ("he", "his")}

IOI_TEMPLATES = (
    "when {A} and {B} went to the {place} , {S} gave a {obj} to",
    "after {A} and {B} went to the {place} , {S} gave a {obj} to",
    "then , {A} and {B} had a lot of fun at the {place} . {S} gave a {obj} to",
    "while {A} and {B} were working at the {place} , {S} handed a {obj} to",
    "{A} and {B} went to the {place} . {S} gave a {obj} to",
    "when {A} and {B} arrived at the {place} , {S} passed the {obj} to",
    "friends {A} and {B} found a {obj} at the {place} . {S} gave it to",
    "the {place} was busy when {A} and {B} came in . {S} brought a {obj} to",
)

# (template, verb pair index into vocab["sva_verbs"]) ; {S} subject, {A} attractor
SVA_TEMPLATES = (
    ("the {S} {prep} the {A}", 0),
    ("the {S} {prep} the {adj} {A}", 0),
    ("the {S} that the {A} {rel}", 0),
    ("yesterday the {S} {prep} the {A}", 1),
    ("last year the {S} that the {A} {rel}", 1),
    ("i think the {S} {prep} the {A}", 0),
)

# Bio templates (classification form). {first} {full} {title} {art} {desc} {pron} {poss} {place} {num}
BIO_TEMPLATES = (
    "{full} is {art} {title} in {place} . {pron} {desc} .",
    "{full} {desc} . {pron} has been {art} {title} for {num} years .",
    "as {art} {title} , {first} {desc} . {pron} lives in {place} with {poss} family .",
    "{first} {desc} every week . {poss} friends say {pron} is a great {title} .",
    "{full} studied for {num} years to become {art} {title} . today {pron} {desc} .",
    "{pron} {desc} . {full} became {art} {title} in {place} {num} years ago .",
    "meet {full} , {art} {title} from {place} . {pron} {desc} and loves {poss} job .",
    "{full} grew up in {place} . now {pron} {desc} as {art} {title} .",
)
# Pronoun-free openings for the pronoun continuation form (the pronoun must come from the name).
PRONOUN_TEMPLATES = (
    ("{full} is {art} {title} who {desc} .", "then"),
    ("{full} {desc} in {place} .", "then"),
    ("as {art} {title} , {first} {desc} .", "later ,"),
    ("{first} {surname} moved to {place} {num} years ago .", "then"),
    ("meet {full} , {art} {title} from {place} .", "every day ,"),
)
PROFESSION_CUE = "so {first} works as a"

_PLACEHOLDER = re.compile(r"\{[a-zA-Z]+\}")


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def load_vocab() -> dict[str, Any]:
    """The fixed word lists (``vocab.json``). Cached; treat the result as read-only."""
    return json.loads(VOCAB_FILE.read_text())


def professions() -> list[str]:
    """Canonical profession words available to :func:`bios`."""
    return list(load_vocab()["professions"])


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"n must be a positive int, got {n!r}")  # noqa: TRY004
    if n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return n


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")  # noqa: TRY004
    return seed


def _rng(seed: int, task: str) -> random.Random:
    # task-salted so that ioi(seed=0) and sva(seed=0) do not share a random stream
    return random.Random(f"circuitkit:{task}:{seed}")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    first = ["prompt", "answer", "distractor", "task"]
    return df[first + [c for c in df.columns if c not in first]]


# --------------------------------------------------------------------------------------------------
# IOI
# --------------------------------------------------------------------------------------------------


def ioi(n: int, *, seed: int) -> pd.DataFrame:
    """Indirect-object identification prompts.

    ``"when mary and john went to the store , john gave a drink to"`` -> answer ``"mary"`` (the indirect
    object, ``io``), distractor ``"john"`` (the repeated subject, ``s``).

    Extra columns: ``io``, ``s``, ``order`` (``"ABBA"``: IO named first; ``"BABA"``: S named first;
    alternating, so exactly balanced for even ``n``), ``template`` (index into ``IOI_TEMPLATES``).
    Names are drawn from male and female first names (two distinct names per prompt).
    """
    n, seed = _check_n(n), _check_seed(seed)
    v = load_vocab()
    names = v["male_first_names"] + v["female_first_names"]
    rng = _rng(seed, "ioi")
    rows = []
    for i in range(n):
        io, s = rng.sample(names, 2)
        t = rng.randrange(len(IOI_TEMPLATES))
        order = "ABBA" if i % 2 == 0 else "BABA"
        a, b = (io, s) if order == "ABBA" else (s, io)
        prompt = IOI_TEMPLATES[t].format(
            A=a, B=b, S=s, place=rng.choice(v["ioi_places"]), obj=rng.choice(v["ioi_objects"])
        )
        rows.append({"prompt": prompt, "answer": io, "distractor": s, "task": "ioi", "io": io, "s": s, "order": order, "template": t})
    return _frame(rows)


# --------------------------------------------------------------------------------------------------
# SVA
# --------------------------------------------------------------------------------------------------


def sva(n: int, *, seed: int) -> pd.DataFrame:
    """Subject-verb agreement across an attractor noun.

    ``"the key to the cabinets"`` -> answer ``"is"``, distractor ``"are"``. The four (subject number,
    attractor number) cells cycle, so each is ``n/4`` of the rows (two congruent, two incongruent).
    Verb pairs are ``is/are`` or (templates starting with a past-time cue) ``was/were``.

    Extra columns: ``subject``, ``attractor``, ``subject_number`` and ``attractor_number``
    (``"singular"``/``"plural"``), ``congruent`` (bool), ``template``.
    """
    n, seed = _check_n(n), _check_seed(seed)
    v = load_vocab()
    rng = _rng(seed, "sva")
    cells = [("singular", "singular"), ("singular", "plural"), ("plural", "singular"), ("plural", "plural")]
    rows = []
    for i in range(n):
        sn, an = cells[i % 4]
        (s_sg, s_pl), (a_sg, a_pl) = rng.sample(v["sva_nouns"], 2)
        subj = s_sg if sn == "singular" else s_pl
        attr = a_sg if an == "singular" else a_pl
        t = rng.randrange(len(SVA_TEMPLATES))
        template, verb_idx = SVA_TEMPLATES[t]
        prompt = template.format(
            S=subj, A=attr, prep=rng.choice(v["sva_preps"]), adj=rng.choice(v["sva_adjs"]),
            rel=rng.choice(v["sva_rel_verbs"]),
        )
        sg_verb, pl_verb = v["sva_verbs"][verb_idx]
        answer, distractor = (sg_verb, pl_verb) if sn == "singular" else (pl_verb, sg_verb)
        rows.append({"prompt": prompt, "answer": answer, "distractor": distractor, "task": "sva", "subject": subj,
                         "attractor": attr, "subject_number": sn, "attractor_number": an, "congruent": sn == an,
                         "template": t})
    return _frame(rows)


# --------------------------------------------------------------------------------------------------
# induction
# --------------------------------------------------------------------------------------------------


def induction(n: int, *, seed: int, min_len: int = 4, max_len: int = 10, max_noise: int = 6) -> pd.DataFrame:
    """Repeated random sequences of reserved filler words (used by no other task).

    ``"<noise> a b c d e <noise> a b c"`` -> answer ``"d"``; the first copy has no repeated word, and the
    noise words never occur in it, so the answer is determined only by the earlier copy. The distractor
    is another word of the sequence (not the answer).

    Extra columns: ``seq_len`` (length of the repeated sequence), ``n_repeated`` (how many words of the
    second copy are in the prompt, >= 1), ``answer_pos`` (word index of the earlier occurrence of the
    answer in the prompt), ``noise_before``, ``noise_between``.
    """
    n, seed = _check_n(n), _check_seed(seed)
    if not 3 <= min_len <= max_len:
        raise ValueError(f"need 3 <= min_len <= max_len, got min_len={min_len!r}, max_len={max_len!r}")
    if max_noise < 0:
        raise ValueError(f"max_noise must be >= 0, got {max_noise!r}")
    fillers = load_vocab()["filler_words"]
    if max_len + 2 * max_noise > len(fillers):
        raise ValueError(f"max_len + 2*max_noise must be <= {len(fillers)} filler words")
    rng = _rng(seed, "induction")
    rows = []
    for _ in range(n):
        L = rng.randint(min_len, max_len)
        nb, nm = rng.randint(0, max_noise), rng.randint(0, max_noise)
        words = rng.sample(fillers, L + nb + nm)
        seq, before, between = words[:L], words[L : L + nb], words[L + nb :]
        k = rng.randint(1, L - 1)  # words of the second copy shown
        answer = seq[k]
        distractor = rng.choice([w for w in seq if w != answer])
        prompt = " ".join(before + seq + between + seq[:k])
        rows.append({"prompt": prompt, "answer": answer, "distractor": distractor, "task": "induction", "seq_len": L,
                         "n_repeated": k, "answer_pos": nb + k, "noise_before": nb, "noise_between": nm})
    return _frame(rows)


# --------------------------------------------------------------------------------------------------
# bios
# --------------------------------------------------------------------------------------------------


def _check_professions(profs: Sequence[str] | None) -> list[str]:
    valid = professions()
    if profs is None:
        return list(DEFAULT_BIOS_PROFESSIONS)
    if isinstance(profs, str):
        raise ValueError(f"professions must be a sequence of names, got the string {profs!r}; valid: {valid}")  # noqa: TRY004
    profs = list(profs)
    bad = [p for p in profs if p not in valid]
    if bad:
        raise ValueError(f"unknown profession(s) {bad}; valid choices: {valid}")
    if len(profs) < 2 or len(set(profs)) != len(profs):
        raise ValueError(f"professions must hold >= 2 distinct names, got {profs}")
    return profs


def _bio_fields(rng: random.Random, v: dict, prof: str, gender: str) -> dict[str, str]:
    first = rng.choice(v["female_first_names"] if gender == "female" else v["male_first_names"])
    surname = rng.choice(v["surnames"])
    entry = v["professions"][prof]
    title = rng.choice(entry["titles"])
    pron, poss = _PRONOUN[gender]
    return {"first": first, "surname": surname, "full": f"{first} {surname}", "title": title, "art": _article(title),
                "desc": rng.choice(entry["descriptions"]), "pron": pron, "poss": poss, "place": rng.choice(v["places"]),
                "num": rng.choice(v["numbers"])}


def bios(
    n: int,
    *,
    seed: int,
    split: str = "balanced",
    professions: Sequence[str] | None = None,
    p_correlated: float = 1.0,
    form: str = "bio",
) -> pd.DataFrame:
    """Short biographies for profession classification with gender as the spurious feature.

    A bio names a gendered first name, uses matching pronouns, and signals the profession by one of
    several title synonyms (``"lawyer"``/``"attorney"``/``"barrister"``) *and* a description
    (``"argues cases in court"``), in one of ``len(BIO_TEMPLATES)`` templates. Example::

        "emily baxter is a caregiver in ohio . she checks the blood pressure of patients ."

    ``split``:
      * ``"balanced"``: every (profession, gender) cell equally frequent (cells cycle row by row);
      * ``"ambiguous"``: gender determined by profession (``DEFAULT_AMBIGUOUS_GENDER``: nurse->female,
        professor->male, ...), as in Bias in Bios' ambiguous set. With ``p_correlated < 1`` each row
        keeps the tied gender with probability ``p_correlated`` and flips it otherwise. If the chosen
        professions all map to one gender, the second half of the list is tied to the other gender.

    ``professions``: canonical profession words (default ``("nurse", "professor")``; all:
    :func:`professions`). ``label`` is the index in this list.

    ``form``:
      * ``"bio"`` (default, classification): ``prompt`` is the whole bio (ends with ``"."``); classify
        from the last token or the mean over tokens. ``answer`` is the canonical profession word and
        ``distractor`` another profession of the list (the gender-tied one in the ambiguous split).
      * ``"profession"`` (LM continuation): ``prompt`` = bio + ``" so <first> works as a"`` -> profession.
      * ``"pronoun"`` (LM continuation): a pronoun-free bio opening + ``" then"`` (or similar) ->
        ``"she"``/``"he"``; distractor the other pronoun. The pronoun must come from the first name.

    Extra columns: ``name`` (full name), ``gender``, ``profession``, ``label``, ``group``
    (``"profession|gender"``), ``title``, ``template``.
    """
    n, seed = _check_n(n), _check_seed(seed)
    if split not in BIOS_SPLITS:
        raise ValueError(f"unknown split {split!r}; valid choices: {list(BIOS_SPLITS)}")
    if form not in BIOS_FORMS:
        raise ValueError(f"unknown form {form!r}; valid choices: {list(BIOS_FORMS)}")
    if isinstance(p_correlated, bool) or not isinstance(p_correlated, (int, float)) or not 0 <= p_correlated <= 1:
        raise ValueError(f"p_correlated must be a float in [0, 1], got {p_correlated!r}")
    profs = _check_professions(professions)
    v = load_vocab()
    rng = _rng(seed, f"bios:{split}:{form}")
    tied = {p: DEFAULT_AMBIGUOUS_GENDER[p] for p in profs}
    if len(set(tied.values())) == 1:
        half = len(profs) // 2
        tied = {p: (GENDERS[0] if i < half else GENDERS[1]) for i, p in enumerate(profs)}
    flip = {"female": "male", "male": "female"}
    cells = [(p, g) for p in profs for g in GENDERS]
    rows = []
    for i in range(n):
        if split == "balanced":
            prof, gender = cells[i % len(cells)]
        else:
            prof = profs[i % len(profs)]
            gender = tied[prof] if rng.random() < p_correlated else flip[tied[prof]]
        f = _bio_fields(rng, v, prof, gender)
        others = [p for p in profs if p != prof]
        if split == "ambiguous":
            opposite = [p for p in others if tied[p] != tied[prof]]
            distractor = rng.choice(opposite or others)
        else:
            distractor = rng.choice(others)
        answer = prof
        if form == "pronoun":
            t = rng.randrange(len(PRONOUN_TEMPLATES))
            opening, cue = PRONOUN_TEMPLATES[t]
            prompt = f"{opening.format(**f)} {cue}"
            answer, distractor = f["pron"], _PRONOUN[flip[gender]][0]
        else:
            t = rng.randrange(len(BIO_TEMPLATES))
            prompt = BIO_TEMPLATES[t].format(**f)
            if form == "profession":
                prompt = f"{prompt} {PROFESSION_CUE.format(**f)}"
        rows.append({"prompt": prompt, "answer": answer, "distractor": distractor, "task": "bios", "name": f["full"],
                         "gender": gender, "profession": prof, "label": profs.index(prof), "group": f"{prof}|{gender}",
                         "title": f["title"], "template": t, "form": form})
    return _frame(rows)


# --------------------------------------------------------------------------------------------------
# mixture and vocabulary
# --------------------------------------------------------------------------------------------------

DEFAULT_MIXTURE = {"ioi": 0.3, "sva": 0.2, "induction": 0.26, "bios_profession": 0.12, "bios_pronoun": 0.12}


def mixture(n: int, *, seed: int, weights: dict[str, float] | None = None) -> pd.DataFrame:
    """Training text for the toy LM: a shuffled mix of all tasks with the answer appended.

    Columns: ``prompt``, ``answer``, ``distractor``, ``task`` (``ioi``, ``sva``, ``induction``,
    ``bios_profession``, ``bios_pronoun``) and ``text`` (= ``prompt + " " + answer``). Bios rows use
    all professions and the balanced split, so the LM learns profession and gender independently.
    ``weights`` maps those task names to (unnormalized) proportions (default ``DEFAULT_MIXTURE``).
    """
    n, seed = _check_n(n), _check_seed(seed)
    weights = dict(DEFAULT_MIXTURE if weights is None else weights)
    bad = [k for k in weights if k not in DEFAULT_MIXTURE]
    if bad:
        raise ValueError(f"unknown mixture task(s) {bad}; valid choices: {list(DEFAULT_MIXTURE)}")
    total = float(sum(weights.values()))
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {weights}")
    names = list(weights)
    counts = [round(n * weights[k] / total) for k in names]
    counts[-1] = n - sum(counts[:-1])
    frames = []
    for k, c in zip(names, counts):
        if c <= 0:
            continue
        if k == "ioi":
            df = ioi(c, seed=seed)
        elif k == "sva":
            df = sva(c, seed=seed)
        elif k == "induction":
            df = induction(c, seed=seed)
        else:
            form = k.split("_", 1)[1]
            df = bios(c, seed=seed, split="balanced", professions=professions(), form=form)
        frames.append(df[["prompt", "answer", "distractor"]].assign(task=k))
    out = pd.concat(frames, ignore_index=True)
    out = out.sample(frac=1.0, random_state=seed % (2**32)).reset_index(drop=True)
    out["text"] = out["prompt"] + " " + out["answer"]
    return out


def _template_words(template: str) -> set[str]:
    return set(_PLACEHOLDER.sub(" ", template).split())


def all_words() -> list[str]:
    """Every word any generator can emit (the toy LM's vocabulary, without special tokens), sorted."""
    v = load_vocab()
    words: set[str] = set()
    for key in ("male_first_names", "female_first_names", "surnames", "places", "filler_words", "ioi_places",
                "ioi_objects", "sva_preps", "sva_adjs", "sva_rel_verbs", "numbers"):
        for item in v[key]:
            words.update(item.split())
    for pair in v["sva_nouns"] + v["sva_verbs"]:
        words.update(pair)
    for prof, entry in v["professions"].items():
        words.add(prof)
        for phrase in entry["titles"] + entry["descriptions"]:
            words.update(phrase.split())
        words.update(_article(t) for t in entry["titles"])
    for t in IOI_TEMPLATES + BIO_TEMPLATES + (PROFESSION_CUE,):
        words |= _template_words(t)
    for t, _ in SVA_TEMPLATES:
        words |= _template_words(t)
    for opening, cue in PRONOUN_TEMPLATES:
        words |= _template_words(opening) | set(cue.split())
    for pron, poss in _PRONOUN.values():
        words.update((pron, poss))
    return sorted(words)
