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
   representation ``pooled_residual(site=readout_site)`` (default: ``L3.resid_post``, mean over non-BOS
   tokens), trained on ``train``.
3. **Ranking**, over the SAE features of every site in ``sae_sites`` (default: the embedding
   ``L0.resid_pre``, 1024 features of the sparse k=4 SAE; block outputs can be added).
   :func:`rank_features` -- CircuitLasso's prediction-target fit on the per-prompt mean-pooled,
   standardised codes of all sites jointly: by default the Lasso of the probe's *logit* on ``train``
   (L1 least squares, the fast Gram solver); ``target="prediction"``/``"label"`` fit an L1 logistic
   regression of the predicted/true label instead. Dataset-level importance ``|A|``; per-prompt scores
   ``|A| * |z|``. :func:`shift_ranking` -- SHIFT-style attribution patching:
   ``mean_prompts |sum_pos z * d logit / d z|`` with real gradients, all sites in one backward pass.
4. **Selection.** Interactive: the features marked in a :class:`~circuitkit.viz.explorer.CircuitExplorer`
   (:func:`marked_features`). Automatic (:func:`select_features`) for unattended runs, **a proxy for
   human judgement**: among the ``n_candidates`` top-ranked features, those that fire in at least
   ``min_support`` balanced ``heldout`` bios, at least ``min_purity`` of them of one gender, and are more
   gender- than profession-specific (``rule="purity"``; ``rule="auroc"`` is a single-feature AUROC
   threshold, which misses the many rare features of single first names). A human would read the
   feature's contexts (names, pronouns); the rule uses gender labels of held-out bios instead.
   A sparse fit keeps one of several redundant carriers of the same signal, so CircuitLasso's selection is
   iterated (:func:`iterative_selection`): refit without the features selected so far, until a round adds
   nothing. SHIFT's attributions are dense and are used in one round, as published.
5. **Ablation and evaluation** (:func:`ablate`, :func:`evaluate`): zero-ablate the selected features inside
   the forward pass at their sites (:mod:`circuitkit.runtime.pooling`; reconstruction errors kept), recompute the
   representation, and on ``test`` report profession accuracy, worst-group accuracy over the
   (profession, gender) cells, ``gender_leakage`` (the accuracy on ``test`` of a fresh gender probe --
   the same logistic regression -- trained on the ``probe`` split's representation, ablated the same way;
   50% is the goal) and ``classifier_gender_acc`` (how often the profession classifier's output equals
   the gender-tied profession, SFC's "gender" column, for which the oracle scores ~50%).
   :func:`run_debias` runs everything with the baselines ``original``, ``oracle`` (trained on the balanced
   ``probe`` split) and ``shift`` / ``shift-retrain``.

Example::

    >>> from circuitkit.workflows.debias import run_debias                      # doctest: +SKIP
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

from ...sites import parse_site, sort_sites

logger = logging.getLogger(__name__)

__all__ = [
    "BiosData",
    "DebiasConfig",
    "DebiasResult",
    "FeatureRanking",
    "ProfessionProbe",
    "ablate",
    "evaluate",
    "feature_gender_stats",
    "iterative_selection",
    "load_bias_in_bios",
    "load_bios_splits",
    "load_debias_saes",
    "marked_features",
    "rank_features",
    "run_debias",
    "select_features",
    "shift_ranking",
]

METHODS = ("original", "oracle", "circuitlasso", "circuitlasso-retrain", "shift", "shift-retrain")
TARGETS = ("logit", "prediction", "label")
LOSSES = ("auto", "logistic", "squared")

from ...datasets.bios import (
    BiosData,
    _check_pos_int,
    load_bias_in_bios,
    load_bios_splits,
)

# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------

SELECTIONS = ("purity", "auroc")


@dataclass
class DebiasConfig:
    """Settings of :func:`run_debias` (all validated in ``__post_init__``).

    ``sae_sites``: the residual sites whose SAE features are ranked and ablated (``L0.resid_pre``, the
    embedding, or ``L{l}.resid_post``; the old int layers ``-1``/``l`` are accepted and converted). Default: the embedding, where gender
    enters the model (first names and pronouns), with the sparse (k=4) embedding SAE of ``sae_family``
    (:data:`circuitkit.models.toylm.SAE_FAMILIES`; sites that family lacks use the k=16 ``"toylm"`` SAEs).
    ``benchmarks/debias.md`` compares this with every residual site. ``readout_site``: the residual site
    whose mean-pooled value the classifier reads. ``n_candidates``: how many top-ranked features the automatic
    rule examines; ``selection``/``min_purity``/``min_support``/``min_gender_auc``: the rule
    (:func:`select_features`).
    """

    n_train: int = 1000
    n_test: int = 1000
    seed: int = 0
    professions: tuple[str, ...] = ("nurse", "professor")
    profession_signal: float = 0.8
    sae_sites: tuple[str, ...] = ("L0.resid_pre",)
    sae_family: str = "toylm-sparse"
    readout_site: str = "L3.resid_post"
    C: float = 1.0
    target: Literal["logit", "prediction", "label"] = "logit"
    n_alphas: int = 30
    alpha_min_ratio: float = 0.01
    n_candidates: int = 400
    selection: Literal["purity", "auroc"] = "purity"
    min_purity: float = 0.7
    min_support: int = 3
    min_gender_auc: float = 0.6
    max_rounds: int = 8
    batch_size: int = 128

    def __post_init__(self) -> None:
        _check_pos_int("max_rounds", self.max_rounds)
        _check_pos_int("n_train", self.n_train)
        _check_pos_int("n_test", self.n_test)
        _check_pos_int("n_alphas", self.n_alphas)
        _check_pos_int("n_candidates", self.n_candidates)
        _check_pos_int("min_support", self.min_support)
        _check_pos_int("batch_size", self.batch_size)
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; valid choices: {list(TARGETS)}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; valid choices: {list(SELECTIONS)}")
        if not (isinstance(self.C, (int, float)) and self.C > 0):
            raise ValueError(f"C must be > 0, got {self.C!r}")
        if not 0 < self.alpha_min_ratio < 1:
            raise ValueError(f"alpha_min_ratio must be in (0, 1), got {self.alpha_min_ratio!r}")
        if not 0.5 <= self.min_gender_auc < 1:
            raise ValueError(f"min_gender_auc must be in [0.5, 1), got {self.min_gender_auc!r}")
        from ...models.toylm import SAE_FAMILIES

        if self.sae_family not in SAE_FAMILIES:
            raise ValueError(f"unknown sae_family {self.sae_family!r}; valid choices: {list(SAE_FAMILIES)}")
        if not 0.5 < self.min_purity <= 1:
            raise ValueError(f"min_purity must be in (0.5, 1], got {self.min_purity!r}")
        from ...runtime.pooling import site_name

        self.readout_site = _residual_site("readout_site", self.readout_site)
        if isinstance(self.sae_sites, (str, int, np.integer)):
            self.sae_sites = (self.sae_sites,)
        sites = tuple(_residual_site("sae_sites", v) for v in self.sae_sites)
        if not sites or len(set(sites)) != len(sites):
            raise ValueError(f"sae_sites must be distinct residual sites, got {self.sae_sites!r}")
        bad = [v for v in sites if sort_sites([v, self.readout_site])[0] != v]
        if bad:
            raise ValueError(f"sae_sites {bad} come after readout_site={self.readout_site!r}; valid: "
                             f"'L0.resid_pre' .. {self.readout_site!r}")
        self.sae_sites = tuple(sort_sites(sites))
        self.professions = tuple(self.professions)
        del site_name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DebiasConfig:
        """From :meth:`to_dict`'s output; the old keys ``sae_layers``/``readout_layer`` (ints) are converted."""
        d = dict(d)
        if "sae_layers" in d:
            d["sae_sites"] = d.pop("sae_layers")
        if "readout_layer" in d:
            d["readout_site"] = d.pop("readout_layer")
        return cls(**d)


RESIDUAL_KINDS = ("embed", "resid_pre", "resid_post")


def _residual_site(name: str, v: Any) -> str:
    """A residual site name from a name or an old int layer; ``ValueError`` naming ``name`` otherwise."""
    from ...runtime.pooling import site_name

    try:
        s = site_name(v)
    except ValueError:
        raise ValueError(f"{name}: {v!r} is not a site; valid: 'L0.resid_pre' or 'L{{l}}.resid_post' "
                         "(or the old int layers -1 / l)") from None
    if parse_site(s).kind not in RESIDUAL_KINDS:
        raise ValueError(f"{name}: {s!r} is not a residual-stream site; valid kinds: 'L0.resid_pre', "
                         "'L{l}.resid_post'")
    return "L0.resid_pre" if s == "embed" else s


# --------------------------------------------------------------------------------------------------
# classifier
# --------------------------------------------------------------------------------------------------


class ProfessionProbe:
    """Standardise, then L2 logistic regression (sklearn ``lbfgs``): the classifier and the gender probe."""

    def __init__(self, *, C: float = 1.0, max_iter: int = 5000) -> None:
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: Any) -> ProfessionProbe:
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
    """SAE features of one or more sites ranked by dataset-level importance.

    Features are indexed globally: site ``sites[s]`` holds the ``widths[s]`` indices from ``offsets[s]``
    (the sites' columns concatenated in ``sites`` order). ``importance[g]``: ``|A_g|`` (CircuitLasso) or the
    mean absolute attribution (SHIFT); ``scores``: per-prompt scores ``[n_prompts, n_features]``
    (``|A| * |z|`` or ``|attribution|``); ``coef``: the signed coefficients / mean attributions;
    ``seconds``: wall time of the ranking (see ``meta['timed']``).
    """

    method: str
    sites: tuple[str, ...]
    importance: np.ndarray
    coef: np.ndarray
    scores: Any
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)
    widths: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.sites, str):
            self.sites = (self.sites,)
        self.sites = tuple(self.sites)
        if not self.widths:
            if len(self.sites) != 1:
                raise ValueError("widths are needed when a ranking covers several sites")
            self.widths = (len(self.importance),)
        self.widths = tuple(int(w) for w in self.widths)
        if sum(self.widths) != len(self.importance):
            raise ValueError(f"widths {self.widths} do not add up to the {len(self.importance)} features")

    @property
    def site(self) -> str:
        """The site, for a single-site ranking."""
        if len(self.sites) != 1:
            raise ValueError(f"this ranking covers several sites {list(self.sites)}; use .sites")
        return self.sites[0]

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.widths)[:-1]]).astype(np.int64)

    def locate(self, index: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(site position, local feature index)`` of global feature indices."""
        g = np.asarray(index, dtype=np.int64)
        if g.size and (g.min() < 0 or g.max() >= len(self.importance)):
            raise ValueError(f"feature indices out of range; valid: 0..{len(self.importance) - 1}")
        s = np.searchsorted(self.offsets, g, side="right") - 1
        return s, g - self.offsets[s]

    def nodes(self, index: Any) -> list[str]:
        from ...circuit import feature_node

        s, f = self.locate(index)
        return [feature_node(self.sites[int(a)], int(b)) for a, b in zip(np.atleast_1d(s), np.atleast_1d(f))]

    def by_site(self, index: Iterable[int]) -> dict[str, list[int]]:
        """Global indices grouped as ``{site: sorted local indices}`` (sites with none left out)."""
        s, f = self.locate(np.asarray(list(index), dtype=np.int64))
        out: dict[str, list[int]] = {}
        for a, b in zip(np.atleast_1d(s), np.atleast_1d(f)):
            out.setdefault(self.sites[int(a)], []).append(int(b))
        return {k: sorted(v) for k, v in out.items()}

    @property
    def order(self) -> np.ndarray:
        """Feature indices by decreasing importance (features with zero importance are left out)."""
        nz = np.flatnonzero(self.importance > 0)
        return nz[np.argsort(-self.importance[nz], kind="stable")]

    def top(self, k: int) -> list[int]:
        return [int(p) for p in self.order[:k]]

    def table(self, k: int | None = None) -> pd.DataFrame:
        order = self.order if k is None else self.order[:k]
        s, f = self.locate(order)
        return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "index": order,
                             "site": [self.sites[int(a)] for a in s], "feature": f.astype(int),
                             "node": self.nodes(order), "importance": self.importance[order],
                             "coef": self.coef[order]})

    def circuit(self, k: int | None = None) -> Any:
        """A :class:`~circuitkit.circuit.Circuit` with the ranked features and edges ``feature -> y`` (score
        = importance) for the explorer."""
        from ...circuit import Circuit

        t = self.table(k)
        n = len(t)
        nodes = pd.DataFrame({"node": t["node"].tolist() + ["y"], "site": t["site"].tolist() + [""],
                              "kind": ["feature"] * n + ["target"], "feature": t["feature"].tolist() + [-1],
                              "label": [""] * n + ["profession"]})
        edges = pd.DataFrame({"source": t["node"].to_numpy(), "target": "y",
                              "weight": t["coef"].astype(float).to_numpy(), "score": t["importance"].to_numpy()})
        return Circuit(nodes, edges, None, {"method": self.method, "seconds": self.seconds, **self.meta})


def _pool_features(feats: Any) -> tuple[sp.csr_matrix, tuple[str, ...], tuple[int, ...]]:
    """Pool a :class:`~circuitkit.sae.Features`' rows per prompt (mean), every site, concatenated."""
    prompts = feats.index["prompt"].to_numpy()
    uniq, inv = np.unique(prompts, return_inverse=True)
    counts = np.bincount(inv).astype(np.float64)
    P = sp.csr_matrix((1.0 / counts[inv], (inv, np.arange(len(inv)))), shape=(len(uniq), len(inv)))
    blocks = [sp.csr_matrix(P @ sp.csr_matrix(feats[s])) for s in feats.sites]
    return sp.hstack(blocks, format="csr"), tuple(feats.sites), tuple(b.shape[1] for b in blocks)


def _as_codes(codes: Any, site: str | None = None) -> sp.csr_matrix:
    return _codes_with_sites(codes, site)[0]


def _codes_with_sites(codes: Any, site: str | None) -> tuple[sp.csr_matrix, tuple[str, ...], tuple[int, ...]]:
    """``(CSR [prompts, features], sites, widths)`` from a matrix, ``{layer or site: matrix}`` or Features."""
    from ...runtime.pooling import site_name

    if hasattr(codes, "codes") and hasattr(codes, "index"):
        return _pool_features(codes)
    if isinstance(codes, dict):
        if not codes:
            raise ValueError("codes is an empty dict; give {layer or site: [prompts, features] matrix}")
        from ...sites import sort_sites

        named = {k if isinstance(k, str) else site_name(k): v for k, v in codes.items()}
        names = tuple(sort_sites(named))  # computation order, as the layer indices sort
        mats = [_as_codes(named[n]) for n in names]
        rows = {m.shape[0] for m in mats}
        if len(rows) != 1:
            raise ValueError(f"the sites' code matrices have different numbers of rows {sorted(rows)}")
        return sp.hstack(mats, format="csr"), names, tuple(m.shape[1] for m in mats)
    if sp.issparse(codes):
        X = sp.csr_matrix(codes, dtype=np.float64)
    else:
        a = np.asarray(codes, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"codes must be a 2-D [prompts, features] matrix or Features, got shape {a.shape}")
        X = sp.csr_matrix(a)
    return X, (site or "L1.resid_post",), (X.shape[1],)


def rank_features(
    codes: Any,
    y: Any,
    *,
    site: str = "L1.resid_post",
    alpha: float | None = None,
    n_alphas: int = 12,
    alpha_min_ratio: float = 0.02,
    max_features: int | None = None,
    loss: str = "auto",
    exclude: Iterable[int] | None = None,
    solver: str = "fast",
    tol: float = 1e-6,
) -> FeatureRanking:
    """CircuitLasso's prediction-target fit, as a ranking: ``CircuitLasso(targets="y", ...).fit(features, y)``.

    ``codes``: ``[n_prompts, d_sae]`` (dense or sparse; per-prompt pooled SAE codes of ``site``), a dict
    ``{site: [n_prompts, d_sae]}`` of several sites (one joint fit over their concatenated features), or
    :class:`~circuitkit.features.Features` (rows pooled per prompt by their mean, every site). The codes
    become a :class:`~circuitkit.features.Features` (``Features.from_csr``) and the estimator does the rest:
    each column scaled to unit variance (never-active columns get coefficient 0, so ``|A|`` compares
    features); a geometric path of ``n_alphas`` points from ``alpha_max`` down to ``alpha_max *
    alpha_min_ratio``; ``loss`` ``"logistic"`` (an L1 logistic regression of a two-class label, skglm),
    ``"squared"`` (the Lasso of a continuous target such as the classifier's logit; ``solver``: ``"fast"`` or
    ``"celer"``) or ``"auto"`` (logistic for two values, squared otherwise); and the choice of one point:
    ``alpha`` if given; else ``selection="min_edges"`` with ``n_edges=max_features`` (the sparsest point with
    at least that many features) if given; else per-target BIC. ``exclude``: feature indices (of the
    concatenated sites) left out of the fit, e.g. features removed in an earlier round.

    Returns a :class:`FeatureRanking`: importance ``|A|``, signed weights ``A``, per-prompt scores
    ``|A| * |z|`` (standardised ``z``), the path's entry point of each feature, and the wall time.
    """
    from ...features import Features
    from ...fit.lasso import CircuitLasso

    t0 = time.perf_counter()
    X, sites, widths = _codes_with_sites(codes, site)
    yv = np.asarray(y).ravel()
    if yv.shape[0] != X.shape[0]:
        raise ValueError(f"y has {yv.shape[0]} entries but codes have {X.shape[0]} rows (prompts)")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid choices: {list(LOSSES)}")
    classes = np.unique(yv)
    if classes.size < 2:
        raise ValueError(f"y holds a single class/value {classes[:3].tolist()}; nothing to predict")
    if loss == "auto":
        loss = "logistic" if classes.size == 2 else "squared"
    if loss == "logistic" and classes.size != 2:
        raise ValueError(f"y must hold exactly 2 classes for the logistic prediction target, got {classes.size} "
                         "distinct values; use loss='squared' for a continuous target")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"alpha must be > 0 or None, got {alpha!r}")
    if max_features is not None:
        _check_pos_int("max_features", max_features)
    n, d = X.shape
    offsets = np.concatenate([[0], np.cumsum(widths)])
    names = [f"{s}/f{p}" for s, w in zip(sites, widths) for p in range(w)]
    excluded: list[str] = []
    if exclude is not None:
        ex = np.asarray(list(exclude), dtype=np.int64)
        if ex.size and (ex.min() < 0 or ex.max() >= d):
            raise ValueError(f"exclude holds feature indices out of range; valid: 0..{d - 1}")
        excluded = [names[i] for i in np.unique(ex)]
    sd = np.sqrt(np.maximum(np.asarray(X.multiply(X).mean(axis=0)).ravel()
                            - np.asarray(X.mean(axis=0)).ravel() ** 2, 0.0))
    if not np.any((sd > 1e-10) & ~np.isin(np.arange(d), np.asarray(list(exclude or []), dtype=np.int64))):
        raise ValueError("no SAE feature varies across the prompts; nothing to rank")
    feats = Features.from_csr({s: X[:, offsets[i]:offsets[i + 1]] for i, s in enumerate(sites)})
    # CircuitLasso fits a least-squares target standardised (y / sd): the Lasso of y at alpha is the Lasso of
    # y / sd at alpha / sd with coefficients / sd, so the weights are rescaled to y's units below
    y_sd = float(yv.astype(np.float64).std()) if loss == "squared" else 1.0
    y_sd = y_sd if y_sd > 0 else 1.0
    est = CircuitLasso(
        targets="y", alpha=None if alpha is None else float(alpha) / y_sd, n_alphas=n_alphas, alpha_min_ratio=alpha_min_ratio,
        selection="min_edges" if (alpha is None and max_features is not None) else "bic",
        n_edges=max_features, y_kind="logistic" if loss == "logistic" else "linear",
        exclude=excluded or None, solver=solver, include_errors=False, tol=tol, progress=False,
    )
    est.fit(feats, yv if loss == "logistic" else yv.astype(np.float64))
    col_of = {nm: i for i, nm in enumerate(names)}
    w = np.zeros(d)
    coef = est.y_coef_.tocoo() if est.y_coef_ is not None else None
    if coef is not None and coef.nnz:
        w[coef.col] = coef.data * y_sd  # y_coef_ columns are design columns: the codes as given
    path = est.circuit_.path
    into_y = path[path["target"] == "y"]
    alphas = est.alphas_
    entry = np.full(d, np.inf)
    if len(into_y):
        k_of = {float(a): k for k, a in enumerate(alphas)}
        first = into_y.groupby("source")["alpha"].max()
        for src, a in first.items():
            entry[col_of[src]] = k_of[float(a)]
    nnz_path = [int((into_y["alpha"] == float(a)).sum()) for a in alphas]
    importance = np.abs(w)
    scores = sp.csr_matrix(X.multiply(1.0 / np.where(sd > 0, sd, 1.0)).multiply(importance[None, :]))
    seconds = time.perf_counter() - t0
    return FeatureRanking("circuitlasso", sites, importance, w, scores, seconds,
                          {"alpha": float(est.alpha_), "alphas": alphas.tolist(), "n_nonzero": int(np.count_nonzero(w)),
                           "path_nnz": nnz_path, "entry_index": entry, "loss": loss,
                           "classes": classes.tolist() if loss == "logistic" else None,
                           "timed": f"L1 {loss} path on pooled codes (CircuitLasso, targets='y')"}, widths)


def shift_ranking(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    saes: dict[str, Any],
    readout_site: str,
    probe: ProfessionProbe,
    batch_size: int = 64,
    progress: bool = False,
) -> FeatureRanking:
    """SHIFT-style ranking: attribution patching of every feature of every site in ``saes`` (``{site: sae}``)
    to the probe's logit, with real gradients, all sites in one backward pass.

    Importance of feature ``f`` = mean over prompts of ``|sum_pos z_f * d logit / d z_f|``
    (:func:`circuitkit.runtime.pooling.feature_attributions`); ``seconds`` covers the forward and backward
    passes.
    """
    from ...runtime.pooling import feature_attributions

    t0 = time.perf_counter()
    attr = feature_attributions(model, tok, list(prompts), saes=saes, readout_site=readout_site,
                                readout=probe.torch_readout(), batch_size=batch_size, progress=progress)
    names = sort_sites(attr)
    A = np.hstack([attr[k] for k in names])
    seconds = time.perf_counter() - t0
    return FeatureRanking("shift", tuple(names), np.abs(A).mean(0), A.mean(0),
                          np.abs(A), seconds, {"timed": "forward + backward passes over the prompts"},
                          tuple(attr[k].shape[1] for k in names))


# --------------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------------


def _aucs(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Folded single-feature AUROCs of every column of ``X`` for binary ``y`` (Mann-Whitney, ties averaged)."""
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0 or X.shape[1] == 0:
        return np.full(X.shape[1], 0.5)
    ranks = rankdata(X, axis=0)
    a = (ranks[y].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.maximum(a, 1 - a)


def feature_gender_stats(codes: Any, df: pd.DataFrame, features: Sequence[int]) -> pd.DataFrame:
    """How gender-specific each feature is on (balanced) bios ``df``: ``support`` (bios in which it fires),
    ``female_frac`` (share of female bios among them), ``gender_purity`` = max(female_frac, 1 - female_frac),
    ``profession_purity`` (the largest share of one profession among them), and single-feature AUROCs
    ``gender_auc``/``profession_auc`` (folded to >= 0.5)."""
    X = sp.csc_matrix(_as_codes(codes))
    if X.shape[0] != len(df):
        raise ValueError(f"codes have {X.shape[0]} rows but the bios frame has {len(df)}")
    feats = np.asarray(list(features), dtype=np.int64)
    if feats.size and (feats.min() < 0 or feats.max() >= X.shape[1]):
        raise ValueError(f"feature indices out of range; valid: 0..{X.shape[1] - 1}")
    fem = (df["gender"].to_numpy() == "female")
    lab = df["label"].to_numpy()
    labs = np.unique(lab)
    Z = X[:, feats].toarray()
    act = (Z > 0).astype(np.float64)
    n = act.sum(0)
    safe = np.maximum(n, 1)
    ff = np.where(n > 0, fem.astype(np.float64) @ act / safe, 0.5)
    pp = np.where(n > 0, np.max([(lab == c).astype(np.float64) @ act / safe for c in labs], axis=0), 1.0 / len(labs))
    return pd.DataFrame({"support": n.astype(int), "female_frac": ff, "gender_purity": np.maximum(ff, 1 - ff),
                         "profession_purity": pp, "gender_auc": _aucs(Z, fem),
                         "profession_auc": np.max([_aucs(Z, lab == c) for c in labs], axis=0)}, index=feats)


def select_features(
    ranking: FeatureRanking,
    heldout_codes: Any,
    heldout: pd.DataFrame,
    *,
    n_candidates: int = 400,
    rule: str = "purity",
    min_purity: float = 0.7,
    min_support: int = 3,
    min_gender_auc: float = 0.6,
    warn_if_empty: bool = True,
) -> pd.DataFrame:
    """Automatic selection of spurious (gender) features -- **a proxy for human judgement** (a person would
    read each feature's top contexts and mark those about names and pronouns).

    The ``n_candidates`` top-ranked features are scored on the balanced ``heldout`` bios
    (:func:`feature_gender_stats`; ``heldout_codes`` in the ranking's feature order: a matrix, or a dict of
    sites). ``rule="purity"`` (default): selected if the feature fires in at least ``min_support`` bios, at
    least ``min_purity`` of them of one gender, and it is more gender- than profession-specific
    (``gender_purity - 1/2 > profession_purity - 1/n_professions``). This catches the many rare features of
    single names, which no single-feature AUROC can. ``rule="auroc"``: ``gender_auc >= min_gender_auc`` and
    ``gender_auc > profession_auc``. Returns the candidate table with the statistics and ``selected``.
    """
    _check_pos_int("n_candidates", n_candidates)
    if rule not in SELECTIONS:
        raise ValueError(f"unknown rule {rule!r}; valid choices: {list(SELECTIONS)}")
    X = _as_codes(heldout_codes)
    if X.shape[0] != len(heldout):
        raise ValueError(f"heldout_codes have {X.shape[0]} rows but heldout has {len(heldout)}")
    if X.shape[1] != len(ranking.importance):
        raise ValueError(f"heldout_codes have {X.shape[1]} features but the ranking has {len(ranking.importance)}")
    cand = ranking.table(n_candidates)
    stats = feature_gender_stats(X, heldout, cand["index"].to_numpy())
    for c in stats.columns:
        cand[c] = stats[c].to_numpy()
    n_prof = max(heldout["label"].nunique(), 2)
    if rule == "purity":
        cand["selected"] = ((cand["support"] >= min_support) & (cand["gender_purity"] >= min_purity)
                            & (cand["gender_purity"] - 0.5 > cand["profession_purity"] - 1.0 / n_prof))
    else:
        cand["selected"] = (cand["gender_auc"] >= min_gender_auc) & (cand["gender_auc"] > cand["profession_auc"])
    if warn_if_empty and not cand["selected"].any():
        logger.warning("select_features: none of the top %d features passes the %s rule", n_candidates, rule)
    return cand


def iterative_selection(
    codes: Any,
    y: Any,
    heldout_codes: Any,
    heldout: pd.DataFrame,
    *,
    rounds: int = 8,
    n_candidates: int = 400,
    n_alphas: int = 30,
    alpha_min_ratio: float = 0.01,
    loss: str = "auto",
    **rule: Any,
) -> tuple[FeatureRanking, pd.DataFrame]:
    """CircuitLasso ranking and automatic selection, repeated on what is left.

    A sparse fit keeps one of several redundant carriers of the same signal (one pronoun feature stands in
    for every name feature), so one round finds only part of the spurious features. Each round fits
    :func:`rank_features` (path down to ``n_candidates`` nonzeros) with the features selected so far
    excluded, and applies :func:`select_features` (``rule``) to its top ``n_candidates``; it stops when a
    round selects nothing new, or after ``rounds``. Returns the first round's ranking (``meta['rounds']``,
    ``meta['selected_per_round']``) and all rounds' candidate tables stacked, with a ``round`` column.
    """
    _check_pos_int("rounds", rounds)
    chosen: list[int] = []
    tables = []
    first = None
    per_round = []
    for r in range(rounds):
        ranking = rank_features(codes, y, n_alphas=n_alphas, alpha_min_ratio=alpha_min_ratio,
                                max_features=n_candidates, loss=loss, exclude=chosen)
        first = first or ranking
        sel = select_features(ranking, heldout_codes, heldout, n_candidates=n_candidates, warn_if_empty=r == 0,
                              **rule)
        sel.insert(0, "round", r)
        tables.append(sel)
        new = sel.loc[sel["selected"], "index"].astype(int).tolist()
        per_round.append(len(new))
        if not new:
            break
        chosen.extend(new)
    assert first is not None
    first.meta.update(rounds=len(per_round), selected_per_round=per_round)
    return first, pd.concat(tables, ignore_index=True)


def marked_features(explorer: Any) -> dict[str, list[int]]:
    """The SAE-feature nodes marked in a ``CircuitExplorer`` (``explorer.marked``), as ``{site: [features]}``."""
    marked = sorted(getattr(explorer, "marked", set()))
    if not marked:
        raise ValueError("no features are marked; call explorer.mark('L1.resid_post/f12') (or click nodes) first")
    out: dict[str, list[int]] = {}
    for n in marked:
        s, _, f = str(n).rpartition("/f")
        if not s or not f.isdigit():
            raise ValueError(f"marked node {n!r} is not an SAE feature node ('site/f<index>')")
        out.setdefault(s, []).append(int(f))
    return {k: sorted(v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------------
# ablation and evaluation
# --------------------------------------------------------------------------------------------------


def ablate(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    features: dict[str, Sequence[int]] | Sequence[int],
    *,
    saes: dict[str, Any] | None = None,
    sae: Any = None,
    sae_site: str | None = None,
    readout_site: str,
    batch_size: int = 128,
) -> np.ndarray:
    """The pooled representation at ``readout_site`` with SAE features zero-ablated inside the forward pass.

    ``features``: ``{site: [indices]}`` (SAEs from ``saes={site: sae}``) -- what :func:`marked_features` and
    ``FeatureRanking.by_site`` return -- or a list of indices of the single SAE ``sae`` at ``sae_site``. An
    empty selection, an unknown site, a site without an SAE or an index outside ``0 .. d_sae - 1`` raise
    ``ValueError``.
    """
    from ...runtime.pooling import FeatureAblation, pooled_residual, site_name

    if isinstance(features, dict):
        if saes is None:
            raise ValueError("give saes={site: sae} for a {site: features} selection")
        by_name = {site_name(k): v for k, v in saes.items()}
        abls = []
        for s, feats in features.items():
            if s not in by_name:
                raise ValueError(f"no SAE for site {s!r}; sites with an SAE: {sorted(by_name)}")
            if len(list(feats)):
                abls.append(FeatureAblation(sae=by_name[s], site=s, features=list(feats)))
    else:
        if sae is None or sae_site is None:
            raise ValueError("give sae= and sae_site= for a list of feature indices")
        feats = list(features)
        abls = [FeatureAblation(sae=sae, site=sae_site, features=feats)] if feats else []
    if not abls:
        raise ValueError("empty selection: give at least one feature index to ablate")
    return pooled_residual(model, tok, list(prompts), site=readout_site, ablate=abls, batch_size=batch_size)


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
    budgets: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.records)

    def budget_table(self) -> pd.DataFrame:
        """The inspection-budget sweep (``run_debias(budgets=...)``), one row per (method, budget)."""
        return pd.DataFrame(self.budgets)

    def features_matrix(self) -> sp.csr_matrix:
        """The ``train`` split's pooled SAE codes of every site, concatenated in the rankings' feature order."""
        if self.features is None:
            raise ValueError("no codes were kept (CircuitLasso was not run)")
        return _as_codes(self.features)


def _warm_up(model: Any, tok: Any, prompts: list[str], *, saes: dict[str, Any], cfg: DebiasConfig,
             probe: ProfessionProbe) -> None:
    """Run both rankings once on a few prompts so first-call costs (numba JIT of skglm, autograd set-up)
    are not timed."""
    from ...runtime.pooling import feature_attributions

    X = sp.random(16, 8, density=0.5, random_state=0, format="csr")
    rank_features(X, np.arange(16) % 2, n_alphas=2)  # logistic (skglm)
    rank_features(X, np.arange(16) * 0.5, n_alphas=2)  # squared (the fast solver's numba kernels)
    feature_attributions(model, tok, prompts, saes=saes, readout_site=cfg.readout_site,
                         readout=probe.torch_readout(), batch_size=len(prompts))


def load_debias_saes(config: DebiasConfig | None = None) -> dict[str, Any]:
    """The toy LM's SAEs for ``config.sae_sites``, as ``{site: sae}``: from ``config.sae_family`` where it
    has the site, else from the k=16 ``"toylm"`` family."""
    from ...models.toylm import list_toy_saes, load_toy_saes
    from ...sae import site_to_hook

    cfg = config or DebiasConfig()
    have = set(list_toy_saes(family=cfg.sae_family))
    out = {}
    for s in cfg.sae_sites:
        hook = site_to_hook(s)
        fam = cfg.sae_family if hook in have else "toylm"
        out[s] = load_toy_saes([hook], family=fam)[hook]
    return out


def run_debias(
    config: DebiasConfig | None = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    saes: dict[str, Any] | None = None,
    quick: bool = False,
    methods: Sequence[str] = METHODS,
    budgets: Sequence[int] = (),
    progress: bool = False,
    data: BiosData | None = None,
) -> DebiasResult:
    """The whole comparison on the synthetic task (toy LM and its SAEs unless given). ``quick`` shrinks the
    splits to 400 bios. ``saes``: ``{site: sae}`` for ``config.sae_sites`` (default: the toy LM's).
    ``seconds``: ranking time for ``circuitlasso`` (the pooled-code forward pass, no gradients, + its L1
    paths and the selection rule) and ``shift`` (forward + backward passes); classifier training time for
    ``original``/``oracle``; ``*-retrain`` adds retraining to its ranking time.

    ``budgets``: inspection budgets ``k`` for a sweep that compares the two *rankings* rather than the
    whole pipeline: for each method and ``k``, a person inspects only the top ``k`` features (CircuitLasso:
    its first-round ranking, no iteration) and marks the gender ones by the same rule; the records
    (``DebiasResult.budgets``) give how many of the top ``k`` are gender features and the retrained
    classifier's metrics after ablating them. ``data``: the splits to use (default: the synthetic bios of
    ``config``; e.g. :func:`circuitkit.datasets.bios.load_real_bios_splits` for a real model's tokenizer)."""
    import torch

    from ...runtime.pooling import pooled_codes, pooled_residual, site_name

    cfg = config or DebiasConfig(**({"n_train": 400, "n_test": 400} if quick else {}))
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; valid choices: {list(METHODS)}")
    torch.manual_seed(cfg.seed)
    if model is None:
        from ...models.toylm import load_toy_lm

        model, tokenizer = load_toy_lm()
    if saes is None:
        saes = load_debias_saes(cfg)
    saes = {site_name(k): v for k, v in saes.items()}
    missing = [k for k in cfg.sae_sites if k not in saes]
    if missing:
        raise ValueError(f"no SAE given for sae_sites {missing}; saes has sites {sort_sites(saes)}")
    saes = {k: saes[k] for k in cfg.sae_sites}
    if data is None:
        data = load_bios_splits(cfg.n_train, cfg.n_test, seed=cfg.seed, professions=cfg.professions,
                                profession_signal=cfg.profession_signal)
    kw = {"site": cfg.readout_site, "batch_size": cfg.batch_size}
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
    heldout_codes = pooled_codes(model, tokenizer, prompts["heldout"], saes=saes, batch_size=cfg.batch_size)
    rankings: dict[str, FeatureRanking] = {}
    selections: dict[str, pd.DataFrame] = {}
    train_codes = None
    rule = {"rule": cfg.selection, "min_purity": cfg.min_purity, "min_support": cfg.min_support,
            "min_gender_auc": cfg.min_gender_auc}

    def ablated(ranking: FeatureRanking, sel: pd.DataFrame) -> tuple[int, dict[str, np.ndarray]]:
        """The number of selected features and the train/probe/test representations without them."""
        chosen = ranking.by_site(sel.loc[sel["selected"], "index"].astype(int).tolist())
        n = sum(len(v) for v in chosen.values())
        if not n:
            return 0, {k: reps[k] for k in ("train", "probe", "test")}
        return n, {k: ablate(model, tokenizer, prompts[k], chosen, saes=saes, readout_site=cfg.readout_site,
                             batch_size=cfg.batch_size) for k in ("train", "probe", "test")}

    _warm_up(model, tokenizer, prompts["train"][:8], saes=saes, cfg=cfg, probe=original)
    for name in ("circuitlasso", "shift"):
        if name not in methods and f"{name}-retrain" not in methods:
            continue
        if name == "circuitlasso":
            t = time.perf_counter()
            train_codes = pooled_codes(model, tokenizer, prompts["train"], saes=saes, batch_size=cfg.batch_size)
            y = {"logit": original.decision_function, "prediction": original.predict}[cfg.target](reps["train"]) \
                if cfg.target != "label" else data.train["label"].to_numpy()
            ranking, sel = iterative_selection(train_codes, y, heldout_codes, data.heldout, rounds=cfg.max_rounds,
                                               n_candidates=cfg.n_candidates, n_alphas=cfg.n_alphas,
                                               alpha_min_ratio=cfg.alpha_min_ratio, **rule)
            ranking.seconds = time.perf_counter() - t
            ranking.meta["timed"] = (f"forward pass for the pooled SAE codes + {ranking.meta['rounds']} L1 "
                                     f"{ranking.meta['loss']} path(s) + selection rule")
        else:
            ranking = shift_ranking(model, tokenizer, prompts["train"], saes=saes, readout_site=cfg.readout_site,
                                    probe=original, batch_size=cfg.batch_size, progress=progress)
            sel = select_features(ranking, heldout_codes, data.heldout, n_candidates=cfg.n_candidates, **rule)
        rankings[name] = ranking
        selections[name] = sel
        n_chosen, abl = ablated(ranking, sel)
        if name in methods:
            records.append(row(name, original, abl["test"], abl["probe"], n_chosen, ranking.seconds))
        if f"{name}-retrain" in methods:
            t = time.perf_counter()
            retrained = ProfessionProbe(C=cfg.C).fit(abl["train"], data.train["label"])
            records.append(row(f"{name}-retrain", retrained, abl["test"], abl["probe"], n_chosen,
                               ranking.seconds + time.perf_counter() - t))
    sweep: list[dict[str, Any]] = []
    for k in budgets:
        _check_pos_int("budget", k)
        for name, ranking in rankings.items():
            sel = select_features(ranking, heldout_codes, data.heldout, n_candidates=int(k), warn_if_empty=False,
                                  **rule)
            n_chosen, abl = ablated(ranking, sel)
            # with nothing selected, the original classifier stands (nothing to ablate, nothing to retrain)
            clf = ProfessionProbe(C=cfg.C).fit(abl["train"], data.train["label"]) if n_chosen else original
            sweep.append({"method": name, "budget": int(k), "n_inspected": len(sel), "n_features": n_chosen,
                          **evaluate(clf, abl["test"], data.test, X_probe=abl["probe"], probe=data.probe, C=cfg.C)})
    return DebiasResult(records, rankings, selections, cfg, data, train_codes, sweep)
