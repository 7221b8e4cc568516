"""Template tasks for real BPE language models (SmolLM2, GPT-2, Pythia, Llama...).

Unlike :mod:`circuitkit.datasets.templates` (lowercase words of the toy LM's word-level vocabulary), these
prompts are ordinary English, and every answer is checked to be **one token of the given tokenizer**,
written with its leading space (``" Mary"``, ``" are"``). Every generator is deterministic:
``(tokenizer, n, *, seed, split)`` -> a :class:`pandas.DataFrame` with one row per example and at least

``prompt``         the context (str), no trailing space, no BOS (add one yourself if your model wants it);
``answer``         the correct next token's text, leading space included;
``distractor``     a wrong but plausible next token's text;
``answer_id``      ``answer``'s token id in ``tokenizer``;
``distractor_id``  ``distractor``'s token id;
``task``, ``split``

plus task-specific label columns (documented on each generator). The metric is the logit difference
``logit[answer_id] - logit[distractor_id]`` at the last prompt token (accuracy: the fraction > 0, chance 0.5).

Held-out splits: every word pool (names, nouns, objects, places, professions' descriptions, induction
words) is partitioned once into a ``"train"`` part and a disjoint ``"test"`` part (every fourth item of the
fixed list, before filtering by the tokenizer), so ``split="test"`` prompts use words never seen in
``split="train"`` prompts. The random stream is salted with the task, split and seed.

Example::

    >>> from transformers import AutoTokenizer                       # doctest: +SKIP
    >>> from circuitkit.datasets.real import ioi
    >>> tok = AutoTokenizer.from_pretrained(circuitkit.models.smollm2.smollm2_dir())  # doctest: +SKIP
    >>> ioi(tok, 2, seed=0).loc[0, ["prompt", "answer", "distractor"]].tolist()  # doctest: +SKIP
    ['When Mary and John went to the store, John gave a drink to', ' Mary', ' John']
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

__all__ = [
    "REAL_TASKS",
    "SPLITS",
    "TaskExamples",
    "bios",
    "induction",
    "ioi",
    "make_task",
    "single_token_id",
    "single_token_words",
    "sva",
]

SPLITS = ("train", "test")
REAL_TASKS = ("ioi", "sva", "bios", "bios-pronoun", "induction")
BIOS_FORMS = ("profession", "pronoun")
BIOS_CORRELATIONS = ("balanced", "ambiguous")

# -- word pools (fixed; the held-out part is every fourth item) -------------------------------------------
FEMALE_NAMES = (
    "Mary", "Anna", "Sarah", "Emma", "Laura", "Lisa", "Kate", "Alice", "Rachel", "Susan", "Jessica", "Linda",
    "Amy", "Helen", "Karen", "Julia", "Grace", "Sophie", "Emily", "Nancy", "Ruth", "Diana", "Claire", "Rose",
    "Jane", "Maria", "Sara", "Kelly", "Heather", "Olivia", "Hannah", "Amanda", "Anne", "Lucy", "Ellen", "Megan",
)
MALE_NAMES = (
    "John", "James", "Michael", "David", "Robert", "Daniel", "Paul", "Mark", "Peter", "Tom", "Steve", "Kevin",
    "Brian", "Jack", "Eric", "Adam", "Ryan", "Chris", "Jason", "Frank", "George", "Henry", "Martin", "Simon",
    "Oliver", "Luke", "Ben", "Carl", "Sam", "Tim", "Alex", "Matt", "Nick", "Joe", "Dan", "Ian",
)
SURNAMES = (
    "Smith", "Johnson", "Brown", "Miller", "Davis", "Wilson", "Taylor", "Anderson", "Thomas", "Moore",
    "Martin", "Clark", "Lewis", "Walker", "Hall", "Young", "King", "Wright", "Scott", "Green", "Baker",
    "Adams", "Nelson", "Hill",
)
IOI_PLACES = ("store", "park", "school", "hospital", "station", "restaurant", "office", "beach", "library",
              "garden", "market", "museum", "airport", "church", "cafe", "theater")
IOI_OBJECTS = ("drink", "book", "ring", "kiss", "bone", "basketball", "computer", "necklace", "letter", "bag",
               "pen", "ticket", "flower", "key", "phone", "cake")
IOI_TEMPLATES = (
    "When{A} and{B} went to the {place},{S} gave a {obj} to",
    "After{A} and{B} went to the {place},{S} gave a {obj} to",
    "While{A} and{B} were working at the {place},{S} handed a {obj} to",
    "Then,{A} and{B} had a long day at the {place}.{S} decided to give a {obj} to",
    "{A0} and{B} went to the {place}.{S} gave a {obj} to",
)

# (singular, plural) subjects and attractors: the subject need not be one token, only the verb is.
SVA_NOUNS = (
    ("key", "keys"), ("author", "authors"), ("dog", "dogs"), ("teacher", "teachers"), ("book", "books"),
    ("painting", "paintings"), ("student", "students"), ("car", "cars"), ("manager", "managers"),
    ("report", "reports"), ("doctor", "doctors"), ("bottle", "bottles"), ("friend", "friends"),
    ("picture", "pictures"), ("farmer", "farmers"), ("window", "windows"), ("pilot", "pilots"),
    ("letter", "letters"), ("singer", "singers"), ("table", "tables"), ("lawyer", "lawyers"),
    ("box", "boxes"), ("officer", "officers"), ("house", "houses"),
)
SVA_ATTRACTORS = (
    ("cabinet", "cabinets"), ("child", "children"), ("building", "buildings"), ("city", "cities"),
    ("company", "companies"), ("river", "rivers"), ("village", "villages"), ("museum", "museums"),
    ("family", "families"), ("tower", "towers"), ("school", "schools"), ("machine", "machines"),
    ("island", "islands"), ("garden", "gardens"), ("church", "churches"), ("hotel", "hotels"),
)
SVA_PREPS = ("to", "near", "behind", "next to", "of", "beside", "from", "above")
# (template, verb pair) ; {S} subject, {A} attractor
SVA_TEMPLATES = (
    ("The {S} {prep} the {A}", (" is", " are")),
    ("The {S} {prep} the old {A}", (" is", " are")),
    ("Yesterday the {S} {prep} the {A}", (" was", " were")),
    ("I think that the {S} {prep} the {A}", (" is", " are")),
    ("Last year, the {S} {prep} the {A}", (" was", " were")),
)

# profession -> (descriptions of the work, never naming the profession)
PROFESSIONS = {
    "nurse": ("checks the blood pressure of patients", "cares for patients on the night shift",
              "gives injections and changes bandages", "helps patients recover after surgery"),
    "professor": ("teaches courses at the university", "publishes research papers every year",
                  "supervises graduate students", "gives lectures to large classes"),
    "lawyer": ("argues cases in court", "drafts contracts for clients", "gives legal advice to companies",
               "represents clients before the judge"),
    "engineer": ("designs bridges and roads", "builds software systems", "tests new machines in the lab",
                 "works on electrical circuits"),
    "chef": ("cooks dinner in a busy kitchen", "creates new recipes every week", "runs the kitchen of a restaurant",
             "prepares sauces and desserts"),
    "pilot": ("flies planes across the country", "lands at busy airports", "checks the engines before takeoff",
              "flies passengers to distant cities"),
    "teacher": ("grades homework every evening", "teaches children to read", "plans lessons for the class",
                "helps pupils with their math"),
    "dentist": ("cleans and repairs teeth", "treats patients with toothaches", "fills cavities every day",
                "checks the teeth of children"),
}
DEFAULT_AMBIGUOUS_GENDER = {"nurse": "female", "professor": "male", "lawyer": "female", "engineer": "male",
                            "chef": "female", "pilot": "male", "teacher": "female", "dentist": "male"}
DEFAULT_BIOS_PROFESSIONS = ("nurse", "professor")
BIO_TEMPLATES = (
    "{full} {desc}. {Pron} lives in {city} with {poss} family.",
    "{full} has worked for {num} years. Every day, {pron} {desc}.",
    "{first} {desc}. {Poss} friends say {pron} loves {poss} job.",
    "Born in {city}, {full} {desc}. {Pron} enjoys the work.",
)
PROFESSION_CUE = " So {first} works as a"
PRONOUN_TEMPLATES = (  # pronoun-free openings: the pronoun must come from the first name
    "{full} {desc} in {city}. Every morning,",
    "{full} moved to {city} {num} years ago. Since then,",
    "{first} {desc}. After work,",
)
CITIES = ("Boston", "Chicago", "London", "Paris", "Dublin", "Seattle", "Denver", "Toronto", "Sydney", "Madrid",
          "Berlin", "Houston")
NUMBERS = ("two", "three", "five", "seven", "ten", "twelve")
_PRONOUNS = {"female": ("she", "her"), "male": ("he", "his")}
GENDERS = ("female", "male")

# common words for induction (one token each with a leading space in most BPE vocabularies)
INDUCTION_WORDS = (
    "apple", "river", "green", "table", "music", "stone", "cloud", "paper", "horse", "light", "chair", "bread",
    "water", "glass", "tiger", "money", "sugar", "plant", "train", "dream", "metal", "ocean", "phone", "smile",
    "storm", "sheep", "forest", "window", "market", "silver", "garden", "doctor", "planet", "rocket", "winter",
    "summer", "camera", "pencil", "dragon", "castle", "island", "bridge", "candle", "mirror", "butter", "coffee",
    "monkey", "rabbit", "orange", "purple", "yellow", "circle", "engine", "finger", "guitar", "jacket", "ladder",
    "needle", "pepper", "salmon", "soccer", "ticket", "violin", "wallet",
)


# -- helpers ----------------------------------------------------------------------------------------------


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return n


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return seed


def _check_split(split: Any) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid choices: {list(SPLITS)}")
    return split


def _check_tokenizer(tokenizer: Any) -> Any:
    if tokenizer is None or not callable(getattr(tokenizer, "encode", None)):
        raise ValueError(f"tokenizer must be a Hugging Face tokenizer (with .encode), got {type(tokenizer).__name__}")
    return tokenizer


def _rng(task: str, split: str, seed: int) -> random.Random:
    return random.Random(f"circuitkit:real:{task}:{split}:{seed}")


def _part(pool: Sequence[Any], split: str) -> list[Any]:
    """The ``split`` part of a fixed pool: test = every fourth item, train = the rest (disjoint)."""
    return [x for i, x in enumerate(pool) if (i % 4 == 3) == (split == "test")]


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def single_token_id(tokenizer: Any, text: str) -> int:
    """The id of ``text`` (e.g. ``" Mary"``) if the tokenizer writes it as exactly one token, else ``ValueError``."""
    ids = _encode(_check_tokenizer(tokenizer), text)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens in this tokenizer, not one: {ids}")
    return int(ids[0])


def single_token_words(tokenizer: Any, words: Sequence[str], *, prefix: str = " ") -> list[str]:
    """The words of ``words`` that are one token with ``prefix`` (a leading space by default), in order."""
    _check_tokenizer(tokenizer)
    return [w for w in words if len(_encode(tokenizer, prefix + w)) == 1]


def _pool(tokenizer: Any, words: Sequence[str], split: str, need: int, what: str) -> list[str]:
    part = single_token_words(tokenizer, _part(words, split))
    if len(part) < need:
        raise ValueError(f"only {len(part)} {what} of the {split!r} split are single tokens in this tokenizer "
                         f"(need >= {need}): {part}")
    return part


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    first = ["prompt", "answer", "distractor", "answer_id", "distractor_id", "task", "split"]
    return df[first + [c for c in df.columns if c not in first]]


def _row(tok: Any, prompt: str, answer: str, distractor: str, task: str, split: str, **extra: Any) -> dict[str, Any]:
    a, d = single_token_id(tok, answer), single_token_id(tok, distractor)
    if a == d:
        raise ValueError(f"answer and distractor are the same token {answer!r}")
    return {"prompt": prompt, "answer": answer, "distractor": distractor, "answer_id": a, "distractor_id": d,
            "task": task, "split": split, **extra}


# -- IOI --------------------------------------------------------------------------------------------------


def ioi(tokenizer: Any, n: int, *, seed: int, split: str = "train") -> pd.DataFrame:
    """Indirect-object identification.

    ``"When Mary and John went to the store, John gave a drink to"`` -> ``" Mary"`` (the indirect object,
    ``io``), distractor ``" John"`` (the repeated subject, ``s``). Orders alternate row by row: ``"ABBA"``
    (IO named first) and ``"BABA"`` (S named first), so they are exactly balanced for even ``n``.
    ``len(IOI_TEMPLATES)`` = 5 templates. Names (male and female) are single tokens with a leading space.

    Extra columns: ``io``, ``s`` (names without the space), ``order``, ``template``.
    """
    tok, n, seed, split = _check_tokenizer(tokenizer), _check_n(n), _check_seed(seed), _check_split(split)
    names = _pool(tok, FEMALE_NAMES + MALE_NAMES, split, 4, "names")
    places, objs = _part(IOI_PLACES, split), _part(IOI_OBJECTS, split)
    rng = _rng("ioi", split, seed)
    rows = []
    for i in range(n):
        io, s = rng.sample(names, 2)
        t = rng.randrange(len(IOI_TEMPLATES))
        order = "ABBA" if i % 2 == 0 else "BABA"
        a, b = (io, s) if order == "ABBA" else (s, io)
        prompt = IOI_TEMPLATES[t].format(A=" " + a, A0=a, B=" " + b, S=" " + s, place=rng.choice(places),
                                         obj=rng.choice(objs))
        rows.append(_row(tok, prompt, " " + io, " " + s, "ioi", split, io=io, s=s, order=order, template=t))
    return _frame(rows)


# -- SVA --------------------------------------------------------------------------------------------------


def sva(tokenizer: Any, n: int, *, seed: int, split: str = "train") -> pd.DataFrame:
    """Subject-verb agreement across an attractor: ``"The keys to the cabinet"`` -> ``" are"`` vs ``" is"``.

    The four (subject number, attractor number) cells cycle row by row (two congruent, two incongruent,
    each ``n/4``). Verb pairs are ``" is"/" are"`` or, after a past-time cue, ``" was"/" were"``.

    Extra columns: ``subject``, ``attractor``, ``subject_number``, ``attractor_number``
    (``"singular"``/``"plural"``), ``congruent`` (bool), ``template``.
    """
    tok, n, seed, split = _check_tokenizer(tokenizer), _check_n(n), _check_seed(seed), _check_split(split)
    subjects, attractors = _part(SVA_NOUNS, split), _part(SVA_ATTRACTORS, split)
    rng = _rng("sva", split, seed)
    cells = [("singular", "singular"), ("singular", "plural"), ("plural", "singular"), ("plural", "plural")]
    rows = []
    for i in range(n):
        sn, an = cells[i % 4]
        s_pair, a_pair = rng.choice(subjects), rng.choice(attractors)
        subj = s_pair[0] if sn == "singular" else s_pair[1]
        attr = a_pair[0] if an == "singular" else a_pair[1]
        t = rng.randrange(len(SVA_TEMPLATES))
        template, (sg, pl) = SVA_TEMPLATES[t]
        prompt = template.format(S=subj, A=attr, prep=rng.choice(SVA_PREPS))
        answer, distractor = (sg, pl) if sn == "singular" else (pl, sg)
        rows.append(_row(tok, prompt, answer, distractor, "sva", split, subject=subj, attractor=attr,
                         subject_number=sn, attractor_number=an, congruent=sn == an, template=t))
    return _frame(rows)


# -- bios -------------------------------------------------------------------------------------------------


def _check_professions(tok: Any, profs: Sequence[str] | None) -> list[str]:
    valid = list(PROFESSIONS)
    if profs is None:
        profs = DEFAULT_BIOS_PROFESSIONS
    if isinstance(profs, str):
        raise ValueError(f"professions must be a sequence of names, got the string {profs!r}; valid: {valid}")
    profs = list(profs)
    bad = [p for p in profs if p not in valid]
    if bad:
        raise ValueError(f"unknown profession(s) {bad}; valid choices: {valid}")
    if len(profs) < 2 or len(set(profs)) != len(profs):
        raise ValueError(f"professions must hold >= 2 distinct names, got {profs}")
    multi = [p for p in profs if p not in single_token_words(tok, [p])]
    if multi:
        raise ValueError(f"profession(s) {multi} are not single tokens (with a leading space) in this tokenizer")
    return profs


def bios(
    tokenizer: Any,
    n: int,
    *,
    seed: int,
    split: str = "train",
    form: str = "profession",
    professions: Sequence[str] | None = None,
    correlation: str = "balanced",
    p_correlated: float = 1.0,
) -> pd.DataFrame:
    """Short gendered biographies: profession is the label, gender the annotated (spurious) attribute.

    A bio names a gendered first name and surname, uses matching pronouns, and describes the work
    without naming the profession (``"Mary Smith checks the blood pressure of patients. She lives in
    Boston with her family."``).

    ``form``:
      * ``"profession"``: bio + ``" So <first> works as a"`` -> the profession (``" nurse"``), distractor
        another profession of the list (in the ambiguous correlation: one tied to the other gender when
        there is one);
      * ``"pronoun"``: a pronoun-free opening (``"Mary Smith cares for patients ... in Boston. Every
        morning,"``) -> ``" she"``/``" he"``, distractor the other pronoun.

    ``correlation`` (named so as not to clash with the held-out ``split``):
      * ``"balanced"``: every (profession, gender) cell equally frequent (cells cycle row by row);
      * ``"ambiguous"``: gender tied to profession by ``DEFAULT_AMBIGUOUS_GENDER`` (nurse->female,
        professor->male, ...), kept with probability ``p_correlated`` and flipped otherwise -- the
        spurious correlation a debiasing workflow removes.

    Extra columns: ``name``, ``first``, ``gender``, ``profession``, ``label`` (index in ``professions``),
    ``group`` (``"profession|gender"``), ``template``, ``bio`` (the bio without the cue).
    """
    tok, n, seed, split = _check_tokenizer(tokenizer), _check_n(n), _check_seed(seed), _check_split(split)
    if form not in BIOS_FORMS:
        raise ValueError(f"unknown form {form!r}; valid choices: {list(BIOS_FORMS)}")
    if correlation not in BIOS_CORRELATIONS:
        raise ValueError(f"unknown correlation {correlation!r}; valid choices: {list(BIOS_CORRELATIONS)}")
    if isinstance(p_correlated, bool) or not isinstance(p_correlated, (int, float)) or not 0 <= p_correlated <= 1:
        raise ValueError(f"p_correlated must be a float in [0, 1], got {p_correlated!r}")
    profs = _check_professions(tok, professions)
    female = _pool(tok, FEMALE_NAMES, split, 2, "female names")
    male = _pool(tok, MALE_NAMES, split, 2, "male names")
    surnames = _part(SURNAMES, split)
    rng = _rng(f"bios-{form}-{correlation}", split, seed)
    cells = [(p, g) for p in profs for g in GENDERS]
    rows = []
    for i in range(n):
        if correlation == "balanced":
            prof, gender = cells[i % len(cells)]
        else:
            prof = profs[i % len(profs)]
            tied = DEFAULT_AMBIGUOUS_GENDER[prof]
            gender = tied if rng.random() < p_correlated else ("male" if tied == "female" else "female")
        first = rng.choice(female if gender == "female" else male)
        full = f"{first} {rng.choice(surnames)}"
        pron, poss = _PRONOUNS[gender]
        descs = _part(PROFESSIONS[prof], split)
        fields = {"first": first, "full": full, "desc": rng.choice(descs), "pron": pron, "Pron": pron.capitalize(),
                  "poss": poss, "Poss": poss.capitalize(), "city": rng.choice(CITIES), "num": rng.choice(NUMBERS)}
        if form == "profession":
            t = rng.randrange(len(BIO_TEMPLATES))
            bio = BIO_TEMPLATES[t].format(**fields)
            prompt = bio + PROFESSION_CUE.format(first=first)
            others = [p for p in profs if p != prof]
            other_gender = [p for p in others if DEFAULT_AMBIGUOUS_GENDER[p] != DEFAULT_AMBIGUOUS_GENDER[prof]]
            distractor = rng.choice(other_gender if correlation == "ambiguous" and other_gender else others)
            answer, wrong = " " + prof, " " + distractor
        else:
            t = rng.randrange(len(PRONOUN_TEMPLATES))
            bio = prompt = PRONOUN_TEMPLATES[t].format(**fields)
            answer, wrong = " " + pron, " " + _PRONOUNS["male" if gender == "female" else "female"][0]
        rows.append(_row(tok, prompt, answer, wrong, f"bios-{form}", split, name=full, first=first, gender=gender,
                         profession=prof, label=profs.index(prof), group=f"{prof}|{gender}", template=t, bio=bio))
    return _frame(rows)


# -- induction --------------------------------------------------------------------------------------------


def induction(tokenizer: Any, n: int, *, seed: int, split: str = "train", min_len: int = 4,
              max_len: int = 8) -> pd.DataFrame:
    """Repeated random word sequences: ``"apple river green table music apple river green"`` -> ``" table"``.

    A sequence of ``L`` distinct single-token words (``min_len <= L <= max_len``) is followed by its first
    ``k`` words (``1 <= k < L``); the answer is word ``k``, determined only by the earlier copy. The
    distractor is another word of the sequence.

    Extra columns: ``seq_len``, ``n_repeated`` (``k``).
    """
    tok, n, seed, split = _check_tokenizer(tokenizer), _check_n(n), _check_seed(seed), _check_split(split)
    if isinstance(min_len, bool) or not isinstance(min_len, int) or not 3 <= min_len <= max_len:
        raise ValueError(f"need 3 <= min_len <= max_len, got min_len={min_len!r}, max_len={max_len!r}")
    words = _pool(tok, INDUCTION_WORDS, split, max_len, "induction words")
    rng = _rng("induction", split, seed)
    rows = []
    for _ in range(n):
        L = rng.randint(min_len, max_len)
        seq = rng.sample(words, L)
        k = rng.randint(max(1, L // 2), L - 1)  # at least half the sequence repeated
        answer = seq[k]
        distractor = rng.choice([w for w in seq if w != answer])
        prompt = " ".join(seq + seq[:k])
        rows.append(_row(tok, prompt, " " + answer, " " + distractor, "induction", split, seq_len=L, n_repeated=k))
    return _frame(rows)


# -- registry ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskExamples:
    """Token-level view of a task frame: what an evaluation loop needs."""

    task: str
    prompts: list[str]
    answer_ids: list[int]
    distractor_ids: list[int]
    frame: pd.DataFrame

    def __post_init__(self) -> None:
        if not (len(self.prompts) == len(self.answer_ids) == len(self.distractor_ids) == len(self.frame)):
            raise ValueError("prompts, answer_ids, distractor_ids and frame must have the same length")

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> TaskExamples:
        missing = [c for c in ("prompt", "answer_id", "distractor_id", "task") if c not in df.columns]
        if missing:
            raise ValueError(f"task frame lacks column(s) {missing}")
        return cls(str(df["task"].iloc[0]), df["prompt"].tolist(), [int(x) for x in df["answer_id"]],
                   [int(x) for x in df["distractor_id"]], df)


_GENERATORS: dict[str, Callable[..., pd.DataFrame]] = {
    "ioi": ioi,
    "sva": sva,
    "bios": bios,
    "bios-pronoun": lambda tok, n, **kw: bios(tok, n, form="pronoun", **kw),
    "induction": induction,
}


def make_task(name: str, tokenizer: Any, n: int, *, seed: int, split: str = "train", **kwargs: Any) -> TaskExamples:
    """``make_task("ioi", tok, 64, seed=0, split="test")``: any generator of this module by name."""
    if name not in _GENERATORS:
        raise ValueError(f"unknown real task {name!r}; valid choices: {list(_GENERATORS)}")
    return TaskExamples.from_frame(_GENERATORS[name](tokenizer, n, seed=seed, split=split, **kwargs))
