"""Profession bios with a spurious gender signal: the data of the debias workflow.

:func:`load_bios_splits` builds the four splits of :mod:`circuitkit.workflows.debias` from the synthetic bios
of :func:`circuitkit.datasets.templates.bios` (``train`` ambiguous, ``heldout``/``probe``/``test``
balanced; ``profession_signal`` degrades the text so that gender predicts the label better than the text
does); :func:`load_bias_in_bios` loads the real Bias in Bios (needs internet and ``datasets``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

# LabHC/bias_in_bios profession ids (its `profession` column)
BIAS_IN_BIOS_PROFESSIONS = (
    "accountant", "architect", "attorney", "chiropractor", "comedian", "composer", "dentist", "dietitian", "dj",
    "filmmaker", "interior_designer", "journalist", "model", "nurse", "painter", "paralegal", "pastor",
    "personal_trainer", "photographer", "physician", "poet", "professor", "psychologist", "rapper",
    "software_engineer", "surgeon", "teacher", "yoga_teacher",
)


@dataclass
class BiosData:
    """The four splits (DataFrames with ``prompt``, ``label``, ``profession``, ``gender``, ``group``)."""

    train: pd.DataFrame     # ambiguous: classifier training and ranking
    heldout: pd.DataFrame   # balanced: automatic feature selection (gender labels)
    probe: pd.DataFrame     # balanced: oracle classifier and the gender-leakage probe
    test: pd.DataFrame      # balanced: every reported metric
    professions: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def splits(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "heldout": self.heldout, "probe": self.probe, "test": self.test}


def _check_pos_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def _degrade(df: pd.DataFrame, *, q: float, seed: int, professions: list[str]) -> pd.DataFrame:
    """Keep each bio's text with probability ``q``; otherwise use a same-gender bio of another profession."""
    from .templates import bios

    df = df.reset_index(drop=True).copy()
    df["text_profession"] = df["profession"]
    if q >= 1.0:
        return df
    rng = np.random.default_rng(seed)
    swap = np.flatnonzero(rng.random(len(df)) >= q)
    if swap.size == 0:
        return df
    pool = bios(max(4 * swap.size, 8 * len(professions)), seed=seed + 7919, split="balanced",
                professions=professions)
    by_cell = {k: g["prompt"].to_numpy() for k, g in pool.groupby(["profession", "gender"])}
    prompts = df["prompt"].to_numpy(dtype=object).copy()
    text_prof = df["text_profession"].to_numpy(dtype=object).copy()
    for i in swap:
        others = [p for p in professions if p != df.at[i, "profession"]]
        p = others[rng.integers(len(others))]
        cell = by_cell[(p, df.at[i, "gender"])]
        prompts[i] = cell[rng.integers(len(cell))]
        text_prof[i] = p
    df["prompt"] = prompts
    df["text_profession"] = text_prof
    return df


def load_bios_splits(
    n_train: int,
    n_test: int,
    *,
    seed: int = 0,
    professions: Sequence[str] | None = None,
    profession_signal: float = 0.8,
) -> BiosData:
    """Synthetic bios: ambiguous ``train`` (``n_train``), balanced ``heldout``/``probe``/``test`` (``n_test`` each).

    ``profession_signal`` in ``(0, 1]``: the probability that a bio's text is its own (module docstring);
    ``1.0`` gives the generator's bios unchanged (an easy task: the text names the profession).
    Split seeds are ``seed``, ``seed + 1``, ``seed + 2``, ``seed + 3``.
    """
    from .templates import _check_professions, bios

    n_train, n_test = _check_pos_int("n_train", n_train), _check_pos_int("n_test", n_test)
    if isinstance(profession_signal, bool) or not isinstance(profession_signal, (int, float)) \
            or not 0 < profession_signal <= 1:
        raise ValueError(f"profession_signal must be a float in (0, 1], got {profession_signal!r}")
    profs = _check_professions(professions)
    q = float(profession_signal)
    make = {
        "train": (n_train, "ambiguous", seed),
        "heldout": (n_test, "balanced", seed + 1),
        "probe": (n_test, "balanced", seed + 2),
        "test": (n_test, "balanced", seed + 3),
    }
    out = {}
    for name, (n, split, s) in make.items():
        df = bios(n, seed=s, split=split, professions=profs)
        out[name] = _degrade(df, q=q, seed=s, professions=profs)
    meta = {"source": "circuitkit.datasets.templates.bios", "seed": seed, "profession_signal": q,
            "n_train": n_train, "n_test": n_test}
    return BiosData(**out, professions=profs, meta=meta)


def load_bias_in_bios(
    *,
    split: str = "train",
    professions: Sequence[str] = ("nurse", "professor"),
    ambiguous: bool = False,
    n: int | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
) -> pd.DataFrame:
    """The real Bias in Bios (``LabHC/bias_in_bios`` on the HF hub; needs internet and ``datasets``).

    Returns the same columns as the synthetic splits: ``prompt`` (the bio's ``hard_text``), ``profession``,
    ``gender`` (``"female"``/``"male"``), ``label`` (index into ``professions``), ``group``. With
    ``ambiguous=True`` only the cells of the SHIFT ambiguous set are kept (the first profession with
    female bios, the second with male ones); otherwise, with ``n``, an equal number of rows is drawn from
    every (profession, gender) cell (balanced). ``n`` caps the number of rows (seeded sample).
    """
    if split not in ("train", "dev", "test"):
        raise ValueError(f"unknown split {split!r}; valid choices: ['train', 'dev', 'test']")
    profs = list(professions)
    bad = [p for p in profs if p not in BIAS_IN_BIOS_PROFESSIONS]
    if bad or len(profs) < 2:
        raise ValueError(f"professions must be >= 2 of {list(BIAS_IN_BIOS_PROFESSIONS)}, got {profs}")
    if n is not None:
        n = _check_pos_int("n", n)
    from datasets import load_dataset  # lazy: optional dependency, needs the hub

    ds = load_dataset("LabHC/bias_in_bios", split=split, cache_dir=cache_dir)
    raw = ds.to_pandas() if hasattr(ds, "to_pandas") else pd.DataFrame(ds)
    ids = {BIAS_IN_BIOS_PROFESSIONS.index(p): p for p in profs}
    raw = raw[raw["profession"].isin(list(ids))]
    df = pd.DataFrame({
        "prompt": raw["hard_text"].astype(str).to_numpy(),
        "profession": raw["profession"].map(ids).to_numpy(),
        "gender": np.where(raw["gender"].to_numpy() == 1, "female", "male"),
    })
    df["label"] = df["profession"].map({p: i for i, p in enumerate(profs)}).astype(int)
    df["group"] = df["profession"] + "|" + df["gender"]
    if ambiguous:
        keep = {f"{profs[0]}|female", f"{profs[1]}|male"}
        df = df[df["group"].isin(keep)]
    rng = np.random.default_rng(seed)
    if n is not None and not ambiguous:
        cells = df.groupby("group")
        per = max(1, n // max(cells.ngroups, 1))
        parts = [g.iloc[rng.permutation(len(g))[:per]] for _, g in cells]
        df = pd.concat(parts) if parts else df.iloc[:0]
    elif n is not None:
        df = df.iloc[rng.permutation(len(df))[:n]]
    return df.reset_index(drop=True)


def load_real_bios_splits(
    tokenizer: Any,
    n_train: int,
    n_test: int,
    *,
    seed: int = 0,
    professions: Sequence[str] = ("nurse", "professor"),
    profession_signal: float = 0.8,
) -> BiosData:
    """The four debias splits for a real (BPE) tokenizer, from :func:`circuitkit.datasets.real.bios`.

    Same design as :func:`load_bios_splits`: ``train`` ambiguous (gender tied to profession), ``heldout`` /
    ``probe`` / ``test`` balanced, each from its own seed; the held-out splits use the real-task ``"test"``
    word pools (names, surnames, descriptions never seen in ``train``). The prompt is the bio without its cue
    (``bio`` column). With ``profession_signal=q`` each bio keeps its text with probability ``q`` and is
    otherwise replaced by a same-gender bio of another profession (label unchanged), so gender predicts
    ``train``'s label better than the text does.
    """
    from .real import bios as real_bios

    n_train, n_test = _check_pos_int("n_train", n_train), _check_pos_int("n_test", n_test)
    if isinstance(profession_signal, bool) or not isinstance(profession_signal, (int, float)) \
            or not 0 < profession_signal <= 1:
        raise ValueError(f"profession_signal must be a float in (0, 1], got {profession_signal!r}")
    profs = list(professions)
    q = float(profession_signal)
    make = {"train": (n_train, "ambiguous", "train", seed), "heldout": (n_test, "balanced", "test", seed + 1),
            "probe": (n_test, "balanced", "test", seed + 2), "test": (n_test, "balanced", "test", seed + 3)}
    out = {}
    for name, (n, corr, words, s) in make.items():
        df = real_bios(tokenizer, n, seed=s, split=words, professions=profs, correlation=corr)
        df = df.assign(prompt=df["bio"]).reset_index(drop=True)
        df["text_profession"] = df["profession"]
        if q < 1.0:
            pool = real_bios(tokenizer, max(4 * n, 8 * len(profs)), seed=s + 7919, split=words, professions=profs,
                             correlation="balanced")
            by_cell = {k: g["bio"].to_numpy() for k, g in pool.groupby(["profession", "gender"])}
            rng = np.random.default_rng(s)
            prompts = df["prompt"].to_numpy(dtype=object).copy()
            text_prof = df["text_profession"].to_numpy(dtype=object).copy()
            for i in np.flatnonzero(rng.random(len(df)) >= q):
                others = [p for p in profs if p != df.at[i, "profession"]]
                p = others[rng.integers(len(others))]
                cell = by_cell[(p, df.at[i, "gender"])]
                prompts[i], text_prof[i] = cell[rng.integers(len(cell))], p
            df["prompt"], df["text_profession"] = prompts, text_prof
        out[name] = df
    meta = {"source": "circuitkit.datasets.real.bios", "seed": seed, "profession_signal": q, "n_train": n_train,
            "n_test": n_test, "tokenizer": getattr(tokenizer, "name_or_path", type(tokenizer).__name__)}
    return BiosData(**out, professions=profs, meta=meta)


__all__ = ["BIAS_IN_BIOS_PROFESSIONS", "BiosData", "load_bias_in_bios", "load_bios_splits", "load_real_bios_splits"]
