"""Domain generalisation: find the spurious (gender) SAE features a profession classifier uses, remove
them, and re-evaluate on balanced data -- CircuitLasso's prediction-target ranking against SHIFT.

The workflow (``../shared/docs/method.md`` sections 2-5; Marks et al.'s SHIFT setting):

1. **Data** (:func:`load_bios_splits`). Synthetic bios from :func:`circuitkit.datasets.templates.bios`:
   ``train`` is *ambiguous* (nurse <-> female, professor <-> male: gender predicts the label perfectly);
   ``heldout``, ``probe`` and ``test`` are *balanced* (every (profession, gender) cell equally frequent),
   each with its own seed. Harder variant (on by default): the generator's bios name the profession by a
   title *and* a description, which makes the task trivially separable; with ``profession_signal=q`` each
   bio keeps its own text with probability ``q`` and is otherwise replaced by a bio of the *same gender
   and name-gender* but another profession (the label is unchanged). The text then predicts the label
   only ``q`` of the time while gender predicts it always on ``train``, so a classifier trained there leans
   on gender -- as in real Bias in Bios, where many bios barely say what the person does. Real data:
   :func:`load_bias_in_bios` (needs internet and ``datasets``).
2. **Classifier** (:class:`ProfessionProbe`): an L2 logistic regression on the standardised
   representation ``pooled_residual(layer=readout_layer)`` (default: block 3's output, mean over non-BOS
   tokens), trained on ``train``.
3. **Ranking.** :func:`rank_features` -- CircuitLasso's prediction-target fit: L1 logistic regression of
   the probe's prediction on ``train`` (or the label) on the standardised, per-prompt mean-pooled SAE codes
   of block ``sae_layer`` (default 1). Dataset-level importance ``|A|``; per-prompt scores ``|A| * |z|``.
   :func:`shift_ranking` -- SHIFT-style attribution patching: ``mean_prompts |sum_pos z * d logit / d z|``
   with real gradients through blocks ``sae_layer+1 .. readout_layer``.
4. **Selection.** Interactive: the features marked in a :class:`~circuitkit.viz.explorer.CircuitExplorer`
   (:func:`marked_features`). Automatic (:func:`select_features`) for unattended runs, **a proxy for
   human judgement**: among the ``n_candidates`` top-ranked features, those whose activation separates
   gender on the balanced ``heldout`` split (single-feature AUROC, folded to >= 0.5, at least
   ``min_gender_auc``) better than it separates profession. A human would read the feature's contexts
   (names, pronouns); the rule uses gender labels of held-out bios instead.
5. **Ablation and evaluation** (:func:`ablate`, :func:`evaluate`): zero-ablate the selected features inside
   the forward pass (:mod:`circuitkit.ablate`), recompute the representation, and on ``test`` report
   profession accuracy, worst-group accuracy over the (profession, gender) cells, ``gender_leakage`` (the
   accuracy on ``test`` of a fresh gender probe -- the same logistic regression -- trained on the ``probe``
   split's representation, ablated the same way; 50% is the goal) and ``classifier_gender_acc`` (how often
   the profession classifier's output equals the gender-tied profession, SFC's "gender" column).
   :func:`run_debias` runs everything with the baselines ``original``, ``oracle`` (trained on the balanced
   ``probe`` split) and ``shift`` / ``shift-retrain``.

Example::

    >>> from circuitkit.debias import run_debias                      # doctest: +SKIP
    >>> result = run_debias(quick=True)                              # doctest: +SKIP
    >>> result.table()[["method", "profession_acc", "worst_group_acc"]]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

__all__ = [
    "BiosData",
    "DebiasConfig",
    "DebiasResult",
    "FeatureRanking",
    "ProfessionProbe",
    "ablate",
    "evaluate",
    "load_bias_in_bios",
    "load_bios_splits",
    "marked_features",
    "rank_features",
    "run_debias",
    "select_features",
    "shift_ranking",
]

METHODS = ("original", "oracle", "circuitlasso", "circuitlasso-retrain", "shift", "shift-retrain")
TARGETS = ("prediction", "label")

# LabHC/bias_in_bios profession ids (its `profession` column)
BIAS_IN_BIOS_PROFESSIONS = (
    "accountant", "architect", "attorney", "chiropractor", "comedian", "composer", "dentist", "dietitian", "dj",
    "filmmaker", "interior_designer", "journalist", "model", "nurse", "painter", "paralegal", "pastor",
    "personal_trainer", "photographer", "physician", "poet", "professor", "psychologist", "rapper",
    "software_engineer", "surgeon", "teacher", "yoga_teacher",
)


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


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
    from .datasets.templates import bios

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
    from .datasets.templates import _check_professions, bios

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


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


@dataclass
class DebiasConfig:
    """Settings of :func:`run_debias` (all validated in ``__post_init__``)."""

    n_train: int = 1000
    n_test: int = 1000
    seed: int = 0
    professions: tuple[str, ...] = ("nurse", "professor")
    profession_signal: float = 0.8
    sae_layer: int = 1
    readout_layer: int = 3
    C: float = 1.0
    target: Literal["prediction", "label"] = "prediction"
    n_alphas: int = 12
    n_candidates: int = 20
    min_gender_auc: float = 0.6
    batch_size: int = 128

    def __post_init__(self) -> None:
        _check_pos_int("n_train", self.n_train)
        _check_pos_int("n_test", self.n_test)
        _check_pos_int("n_alphas", self.n_alphas)
        _check_pos_int("n_candidates", self.n_candidates)
        _check_pos_int("batch_size", self.batch_size)
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; valid choices: {list(TARGETS)}")
        if not (isinstance(self.C, (int, float)) and self.C > 0):
            raise ValueError(f"C must be > 0, got {self.C!r}")
        if not 0.5 <= self.min_gender_auc < 1:
            raise ValueError(f"min_gender_auc must be in [0.5, 1), got {self.min_gender_auc!r}")
        if not (0 <= self.sae_layer <= self.readout_layer):
            raise ValueError(f"need 0 <= sae_layer <= readout_layer, got {self.sae_layer}, {self.readout_layer}")
        self.professions = tuple(self.professions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DebiasConfig":
        return cls(**d)


# --------------------------------------------------------------------------------------------------
# classifier
# --------------------------------------------------------------------------------------------------


class ProfessionProbe:
    """Standardise, then L2 logistic regression (sklearn ``lbfgs``): the classifier and the gender probe."""

    def __init__(self, *, C: float = 1.0, max_iter: int = 5000) -> None:
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: Any) -> "ProfessionProbe":
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        classes = np.unique(y)
        if classes.size < 2:
            raise ValueError(f"the labels hold a single class {classes.tolist()}; a probe needs >= 2 classes")
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        self.mean_ = X.mean(0)
        sd = X.std(0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        self.clf_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit((X - self.mean_) / self.scale_, y)
        self.classes_ = self.clf_.classes_
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.clf_.decision_function((np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.clf_.predict((np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_)

    def score(self, X: np.ndarray, y: Any) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def torch_readout(self) -> Any:
        """The binary logit as a differentiable function of the representation ``[batch, d] -> [batch]``."""
        import torch

        if len(self.classes_) != 2:
            raise ValueError("torch_readout needs a binary probe (SHIFT attributes one logit)")
        w = torch.as_tensor(self.clf_.coef_[0] / self.scale_, dtype=torch.float32)
        b = float(self.clf_.intercept_[0] - (self.mean_ / self.scale_) @ self.clf_.coef_[0])
        return lambda h: h.float() @ w + b


# --------------------------------------------------------------------------------------------------
# ranking
# --------------------------------------------------------------------------------------------------


@dataclass
class FeatureRanking:
    """Features of one SAE site ranked by dataset-level importance.

    ``importance[p]``: ``|A_p|`` (CircuitLasso) or the mean absolute attribution (SHIFT); ``scores``:
    per-prompt scores ``[n_prompts, d_sae]`` (``|A| * |z|`` or ``|attribution|``); ``coef``: the signed
    coefficients / mean attributions; ``seconds``: wall time of the ranking (see ``meta['timed']``).
    """

    method: str
    site: str
    importance: np.ndarray
    coef: np.ndarray
    scores: Any
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def order(self) -> np.ndarray:
        """Feature indices by decreasing importance (features with zero importance are left out)."""
        nz = np.flatnonzero(self.importance > 0)
        return nz[np.argsort(-self.importance[nz], kind="stable")]

    def top(self, k: int) -> list[int]:
        return [int(p) for p in self.order[:k]]

    def table(self, k: int | None = None) -> pd.DataFrame:
        from .circuit import feature_node

        order = self.order if k is None else self.order[:k]
        return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "feature": order,
                             "node": [feature_node(self.site, p) for p in order],
                             "importance": self.importance[order], "coef": self.coef[order]})

    def circuit(self, k: int | None = None) -> Any:
        """A :class:`~circuitkit.circuit.Circuit` with the ranked features and edges ``feature -> y`` (score
        = importance) for the explorer."""
        from .circuit import Circuit, feature_node

        order = self.order if k is None else self.order[:k]
        nodes = pd.DataFrame({"node": [feature_node(self.site, p) for p in order] + ["y"],
                              "site": [self.site] * len(order) + [""],
                              "kind": ["feature"] * len(order) + ["target"],
                              "feature": [int(p) for p in order] + [-1], "label": [""] * len(order) + ["profession"]})
        edges = pd.DataFrame({"source": nodes["node"].iloc[: len(order)].to_numpy(), "target": "y",
                              "weight": self.coef[order].astype(float), "score": self.importance[order]})
        return Circuit(nodes, edges, None, {"method": self.method, "seconds": self.seconds, **self.meta})


def _as_codes(codes: Any) -> sp.csr_matrix:
    if hasattr(codes, "codes") and hasattr(codes, "index"):  # Features: pool rows per prompt
        feats = codes
        if len(feats.sites) != 1:
            raise ValueError(f"rank_features ranks one site at a time; these Features hold {feats.sites}")
        c = sp.csr_matrix(feats[feats.sites[0]])
        prompts = feats.index["prompt"].to_numpy()
        uniq, inv = np.unique(prompts, return_inverse=True)
        counts = np.bincount(inv).astype(np.float64)
        P = sp.csr_matrix((1.0 / counts[inv], (inv, np.arange(len(inv)))), shape=(len(uniq), len(inv)))
        return sp.csr_matrix(P @ c)
    if sp.issparse(codes):
        return sp.csr_matrix(codes, dtype=np.float64)
    a = np.asarray(codes, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"codes must be a 2-D [prompts, features] matrix or Features, got shape {a.shape}")
    return sp.csr_matrix(a)


def rank_features(
    codes: Any,
    y: Any,
    *,
    site: str = "L1.resid_post",
    alpha: float | None = None,
    n_alphas: int = 12,
    alpha_min_ratio: float = 0.02,
    max_features: int | None = None,
    tol: float = 1e-6,
) -> FeatureRanking:
    """CircuitLasso's prediction-target fit: L1 logistic regression of binary ``y`` on standardised codes.

    ``codes``: ``[n_prompts, d_sae]`` (dense or sparse; per-prompt pooled SAE codes) or single-site
    :class:`~circuitkit.sae.Features` (rows pooled per prompt by their mean). Each column is scaled to unit
    variance (never-active columns get coefficient 0), so ``|A|`` compares features. The path runs from
    ``alpha_max`` (empty model) down ``n_alphas`` geometric steps to ``alpha_max * alpha_min_ratio``
    (warm starts, skglm prox-Newton: :func:`circuitkit.fit.lasso.logistic_path`, the solver
    ``CircuitLasso.fit(features, y)`` uses) and one point is kept: ``alpha`` if given; else the sparsest
    point with at least ``max_features`` nonzeros if given; else the BIC minimiser
    (deviance + df log n), as CircuitLasso selects. Returns a :class:`FeatureRanking`: importance
    ``|A|``, per-prompt scores ``|A| * |z|`` (standardised ``z``), and the wall time.
    """
    from .fit.lasso import logistic_path

    t0 = time.perf_counter()
    X = _as_codes(codes)
    yv = np.asarray(y).ravel()
    if yv.shape[0] != X.shape[0]:
        raise ValueError(f"y has {yv.shape[0]} entries but codes have {X.shape[0]} rows (prompts)")
    classes = np.unique(yv)
    if classes.size != 2:
        raise ValueError(f"y must hold exactly 2 classes for the logistic prediction target, got {classes.tolist()}")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"alpha must be > 0 or None, got {alpha!r}")
    ys = np.where(yv == classes[1], 1.0, -1.0)
    n, d = X.shape
    mean = np.asarray(X.mean(axis=0)).ravel()
    var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean**2
    sd = np.sqrt(np.maximum(var, 0.0))
    alive = np.flatnonzero(sd > 1e-10)
    if alive.size == 0:
        raise ValueError("no SAE feature varies across the prompts; nothing to rank")
    Xs = sp.csc_matrix(X[:, alive] @ sp.diags(1.0 / sd[alive]))
    if alpha is not None:
        alphas = np.array([float(alpha)])
    else:
        p1 = (ys + 1) / 2
        grad = np.abs(Xs.T @ (p1 - p1.mean()) - 0.0) / n
        amax = float(grad.max()) if grad.size else 1.0
        alphas = amax * np.geomspace(1.0, alpha_min_ratio, n_alphas)
    coefs, devs = logistic_path(Xs, ys, alphas, tol=tol)
    nnz = np.array([np.count_nonzero(c) for c in coefs])
    if alpha is not None:
        k = 0
    elif max_features is not None:
        ok = np.flatnonzero(nnz >= max_features)
        k = int(ok[0]) if ok.size else len(alphas) - 1
    else:
        k = int(np.argmin(np.asarray(devs) + nnz * np.log(n)))
    w = np.zeros(d)
    w[alive] = coefs[k]
    # first alpha at which each feature enters the path: breaks ties among features kept at alpha_k
    entry = np.full(d, np.inf)
    for j in range(len(alphas) - 1, -1, -1):
        entry[alive[np.flatnonzero(coefs[j])]] = j
    importance = np.abs(w)
    scores = sp.csr_matrix(X.multiply(1.0 / np.where(sd > 0, sd, 1.0)).multiply(importance[None, :]))
    seconds = time.perf_counter() - t0
    return FeatureRanking("circuitlasso", site, importance, w, scores, seconds,
                          {"alpha": float(alphas[k]), "alphas": alphas.tolist(), "n_nonzero": int(nnz[k]),
                           "path_nnz": nnz.tolist(), "entry_index": entry, "classes": classes.tolist(),
                           "timed": "L1-logistic path on pooled codes"})


def shift_ranking(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    sae: Any,
    sae_layer: int,
    readout_layer: int,
    probe: ProfessionProbe,
    site: str | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> FeatureRanking:
    """SHIFT-style ranking: attribution patching of every feature to the probe's logit (real gradients).

    Importance of feature ``f`` = mean over prompts of ``|sum_pos z_f * d logit / d z_f|``
    (:func:`circuitkit.ablate.feature_attributions`); ``seconds`` covers the forward and backward passes.
    """
    from .ablate import feature_attributions

    t0 = time.perf_counter()
    attr = feature_attributions(model, tok, list(prompts), sae=sae, layer=sae_layer, readout_layer=readout_layer,
                                readout=probe.torch_readout(), batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    return FeatureRanking("shift", site or f"L{sae_layer}.resid_post", np.abs(attr).mean(0), attr.mean(0),
                          np.abs(attr), seconds, {"timed": "forward + backward passes over the prompts"})


# --------------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------------


def _auc(x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if np.unique(y).size < 2 or np.ptp(x) == 0:
        return 0.5
    a = float(roc_auc_score(y, x))
    return max(a, 1 - a)


def select_features(
    ranking: FeatureRanking,
    heldout_codes: Any,
    heldout: pd.DataFrame,
    *,
    n_candidates: int = 20,
    min_gender_auc: float = 0.6,
) -> pd.DataFrame:
    """Automatic selection (a proxy for a human reading the features' contexts; module docstring).

    For each of the ``n_candidates`` top-ranked features: its single-feature AUROC (folded to >= 0.5) for
    gender and for profession on the balanced ``heldout`` split. Selected: ``gender_auc >= min_gender_auc``
    and ``gender_auc > profession_auc``. Returns the candidate table with a ``selected`` column.
    """
    _check_pos_int("n_candidates", n_candidates)
    X = _as_codes(heldout_codes)
    if X.shape[0] != len(heldout):
        raise ValueError(f"heldout_codes have {X.shape[0]} rows but heldout has {len(heldout)}")
    g = (heldout["gender"].to_numpy() == "female").astype(int)
    lab = heldout["label"].to_numpy()
    cand = ranking.table(n_candidates)
    Xc = sp.csc_matrix(X)
    ga, pa = [], []
    for p in cand["feature"]:
        col = Xc[:, int(p)].toarray().ravel()
        ga.append(_auc(col, g))
        pa.append(max(_auc(col, (lab == c).astype(int)) for c in np.unique(lab)))
    cand["gender_auc"] = ga
    cand["profession_auc"] = pa
    cand["selected"] = (cand["gender_auc"] >= min_gender_auc) & (cand["gender_auc"] > cand["profession_auc"])
    if not cand["selected"].any():
        logger.warning("select_features: none of the top %d features passes gender AUROC >= %.2f", n_candidates,
                       min_gender_auc)
    return cand


def marked_features(explorer: Any, *, site: str | None = None) -> list[int]:
    """Feature indices of the SAE-feature nodes marked in a ``CircuitExplorer`` (``explorer.marked``).

    Only nodes of ``site`` (default: the site of the marked features, which must be one) are allowed.
    """
    marked = sorted(getattr(explorer, "marked", set()))
    if not marked:
        raise ValueError("no features are marked; call explorer.mark('L1.resid_post/f12') (or click nodes) first")
    sites, feats = set(), []
    for n in marked:
        s, _, f = str(n).rpartition("/f")
        if not s or not f.isdigit():
            raise ValueError(f"marked node {n!r} is not an SAE feature node ('site/f<index>')")
        sites.add(s)
        feats.append(int(f))
    want = site or (sites.pop() if len(sites) == 1 else None)
    if want is None or any(not str(n).startswith(want + "/f") for n in marked):
        raise ValueError(f"marked features come from several sites {sorted(sites | {want} - {None})}; "
                         "ablate one site at a time")
    return sorted(feats)


# --------------------------------------------------------------------------------------------------
# ablation and evaluation
# --------------------------------------------------------------------------------------------------


def ablate(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    features: Iterable[int],
    *,
    sae: Any,
    sae_layer: int,
    readout_layer: int,
    batch_size: int = 128,
) -> np.ndarray:
    """The pooled representation at ``readout_layer`` with SAE ``features`` zero-ablated at ``sae_layer``.

    ``features`` must be a non-empty collection of indices in ``0 .. d_sae - 1`` (else ``ValueError``).
    """
    from .ablate import FeatureAblation, pooled_residual

    feats = list(features)
    if not feats:
        raise ValueError("empty selection: give at least one feature index to ablate")
    spec = FeatureAblation(sae=sae, layer=sae_layer, features=feats)
    return pooled_residual(model, tok, list(prompts), layer=readout_layer, ablate=spec, batch_size=batch_size)


def worst_group_accuracy(pred: np.ndarray, df: pd.DataFrame) -> float:
    correct = np.asarray(pred) == df["label"].to_numpy()
    return float(min(correct[df["group"].to_numpy() == g].mean() for g in np.unique(df["group"])))


def evaluate(
    classifier: ProfessionProbe,
    X_test: np.ndarray,
    test: pd.DataFrame,
    *,
    X_probe: np.ndarray,
    probe: pd.DataFrame,
    C: float = 1.0,
) -> dict[str, float]:
    """Metrics on the balanced ``test`` split (module docstring): profession accuracy, worst-group accuracy,
    gender leakage (a :class:`ProfessionProbe` for gender trained on ``X_probe``/``probe``, scored on
    ``X_test``), and the classifier's agreement with the gender-tied profession."""
    pred = classifier.predict(X_test)
    y = test["label"].to_numpy()
    gender_probe = ProfessionProbe(C=C).fit(X_probe, probe["gender"].to_numpy())
    tied = test["gender"].map({"female": 0, "male": 1}).to_numpy()  # nurse(0)<->female, professor(1)<->male
    return {
        "profession_acc": float(np.mean(pred == y)),
        "gender_leakage": gender_probe.score(X_test, test["gender"].to_numpy()),
        "worst_group_acc": worst_group_accuracy(pred, test),
        "classifier_gender_acc": float(np.mean(pred == tied)),
    }


@dataclass
class DebiasResult:
    """What :func:`run_debias` returns: the records (one per method), the rankings and selections."""

    records: list[dict[str, Any]]
    rankings: dict[str, FeatureRanking]
    selections: dict[str, pd.DataFrame]
    config: DebiasConfig
    data: BiosData | None = None
    features: Any = None

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.records)


def _warm_up(model: Any, tok: Any, prompts: list[str], *, sae: Any, cfg: DebiasConfig,
             probe: ProfessionProbe) -> None:
    """Run both rankings once on a few prompts so first-call costs (numba JIT of skglm, autograd set-up)
    are not timed."""
    from .ablate import feature_attributions

    rng = np.random.default_rng(0)
    X = sp.random(16, 8, density=0.5, random_state=0, format="csr")
    rank_features(X, rng.integers(0, 2, 16) * 0 + np.arange(16) % 2, n_alphas=2)
    feature_attributions(model, tok, prompts, sae=sae, layer=cfg.sae_layer, readout_layer=cfg.readout_layer,
                         readout=probe.torch_readout(), batch_size=len(prompts))


def run_debias(
    config: DebiasConfig | None = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    sae: Any = None,
    quick: bool = False,
    methods: Sequence[str] = METHODS,
    progress: bool = False,
) -> DebiasResult:
    """The whole comparison on the synthetic task (toy LM and its SAE unless given). ``quick`` shrinks the
    splits to 400 bios. ``seconds``: ranking time for ``circuitlasso`` (the pooled-code forward pass,
    no gradients, + the L1-logistic path) and ``shift`` (forward + backward passes); classifier training
    time for ``original``/``oracle``; ``*-retrain`` adds retraining to its ranking time."""
    import torch

    from .ablate import pooled_codes, pooled_residual

    cfg = config or DebiasConfig(**({"n_train": 400, "n_test": 400} if quick else {}))
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; valid choices: {list(METHODS)}")
    torch.manual_seed(cfg.seed)
    if model is None:
        from .models.toylm import load_toy_lm

        model, tokenizer = load_toy_lm()
    if sae is None:
        from .models.toylm import load_toy_saes

        hook = f"blocks.{cfg.sae_layer}.hook_resid_post"
        sae = load_toy_saes([hook])[hook]
    site = f"L{cfg.sae_layer}.resid_post"
    data = load_bios_splits(cfg.n_train, cfg.n_test, seed=cfg.seed, professions=cfg.professions,
                            profession_signal=cfg.profession_signal)
    kw = {"layer": cfg.readout_layer, "batch_size": cfg.batch_size}
    reps = {k: pooled_residual(model, tokenizer, df["prompt"].tolist(), **kw) for k, df in data.splits().items()}

    def row(method: str, clf: ProfessionProbe, X_test, X_probe, n_feat: int, seconds: float) -> dict[str, Any]:
        r = {"method": method, **evaluate(clf, X_test, data.test, X_probe=X_probe, probe=data.probe, C=cfg.C)}
        r.update({"n_features": int(n_feat), "seconds": float(seconds)})
        return r

    records: list[dict[str, Any]] = []
    t = time.perf_counter()
    original = ProfessionProbe(C=cfg.C).fit(reps["train"], data.train["label"])
    t_orig = time.perf_counter() - t
    if "original" in methods:
        records.append(row("original", original, reps["test"], reps["probe"], 0, t_orig))
    if "oracle" in methods:
        t = time.perf_counter()
        oracle = ProfessionProbe(C=cfg.C).fit(reps["probe"], data.probe["label"])
        records.append(row("oracle", oracle, reps["test"], reps["probe"], 0, time.perf_counter() - t))

    prompts = {k: df["prompt"].tolist() for k, df in data.splits().items()}
    heldout_codes = pooled_codes(model, tokenizer, prompts["heldout"], sae=sae, layer=cfg.sae_layer,
                                 batch_size=cfg.batch_size)
    rankings: dict[str, FeatureRanking] = {}
    selections: dict[str, pd.DataFrame] = {}
    train_codes = None
    _warm_up(model, tokenizer, prompts["train"][:8], sae=sae, cfg=cfg, probe=original)
    for name in ("circuitlasso", "shift"):
        if name not in methods and f"{name}-retrain" not in methods:
            continue
        if name == "circuitlasso":
            t = time.perf_counter()
            train_codes = pooled_codes(model, tokenizer, prompts["train"], sae=sae, layer=cfg.sae_layer,
                                       batch_size=cfg.batch_size)
            y = original.predict(reps["train"]) if cfg.target == "prediction" else data.train["label"].to_numpy()
            ranking = rank_features(train_codes, y, site=site, n_alphas=cfg.n_alphas)
            ranking.seconds = time.perf_counter() - t
            ranking.meta["timed"] = "forward pass for the pooled SAE codes + L1-logistic path"
        else:
            ranking = shift_ranking(model, tokenizer, prompts["train"], sae=sae, sae_layer=cfg.sae_layer,
                                    readout_layer=cfg.readout_layer, probe=original, site=site,
                                    batch_size=cfg.batch_size, progress=progress)
        rankings[name] = ranking
        sel = select_features(ranking, heldout_codes, data.heldout, n_candidates=cfg.n_candidates,
                              min_gender_auc=cfg.min_gender_auc)
        selections[name] = sel
        chosen = sel.loc[sel["selected"], "feature"].astype(int).tolist()
        if chosen:
            abl = {k: ablate(model, tokenizer, prompts[k], chosen, sae=sae, sae_layer=cfg.sae_layer,
                             readout_layer=cfg.readout_layer, batch_size=cfg.batch_size)
                   for k in ("train", "probe", "test")}
        else:
            abl = {k: reps[k] for k in ("train", "probe", "test")}
        if name in methods:
            records.append(row(name, original, abl["test"], abl["probe"], len(chosen), ranking.seconds))
        if f"{name}-retrain" in methods:
            t = time.perf_counter()
            retrained = ProfessionProbe(C=cfg.C).fit(abl["train"], data.train["label"])
            records.append(row(f"{name}-retrain", retrained, abl["test"], abl["probe"], len(chosen),
                               ranking.seconds + time.perf_counter() - t))
    feats = None
    if train_codes is not None:
        feats = train_codes
    return DebiasResult(records, rankings, selections, cfg, data, feats)
