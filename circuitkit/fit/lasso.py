"""`CircuitLasso`: a scikit-learn-style estimator that learns a circuit by sparse regression.

Every node's columns are regressed on the columns of the nodes before it (block upper-triangular map),
so the problem splits into one Lasso per target column (see ``../shared/docs/method.md``):

* **component level** -- ``fit(activations)``: nodes are sites (``embed``, heads, MLPs, ``out``), each a
  block of ``d`` columns; by default every site is regressed on *all* earlier sites.
* **SAE-feature level** -- ``fit(features)``: nodes are SAE features (one column each) plus one error
  node per site (``d_in`` columns, used as a source only); by default each site's features are regressed
  on the features of the *previous* encoded site (``predecessors="adjacent"``).
* **prediction level** -- ``fit(data, y)``: ``y`` (a label or a continuous target such as a logit
  difference) is one more target node regressed on every node, with L1 least squares (continuous) or L1
  logistic regression (binary/multiclass, one-vs-rest).

Edge scores. For nodes that are single columns the edge weight is the signed coefficient; for blocks it
is the Frobenius norm of the coefficient block (``edge_score="fro"``) or its max-abs entry
(``edge_score="maxabs"``). Coefficients are on standardised data (each column centred and scaled to unit
variance) unless ``standardize=False``, so weights *rank* dependencies; they are not causal effects.

Choosing ``alpha``. Give ``alpha`` for one fit, or leave it ``None`` to fit a geometric grid of
``n_alphas`` values from ``alpha_max`` (the smallest alpha with an empty graph) down to
``alpha_max * alpha_min_ratio``, warm-started along the grid, and pick one by ``selection``:

* ``"stability"`` (default): complementary-pairs stability selection (:mod:`circuitkit.fit.stability`):
  ``stability_b`` pairs of disjoint half-samples, the first ``stability_q`` sources to enter each half's path
  per target (``stability_q_y`` for a prediction target), edges kept when selected in at least
  ``stability_pi`` of the halves; ``circuit_.edges["probability"]`` holds the selection probability and
  ``circuit_.meta["expected_false_edges_bound"]`` the bound on the expected number of false edges. Sources
  active in fewer than ``min_source_rows`` (5) rows are not candidates, so single-row coincidences cannot
  become edges. Each half's path stops once more than ``q`` sources have entered, so the ``2 * stability_b``
  half fits cost a small multiple of one full fit on SAE features (``benchmarks/scale.md``: 1.4-2.6x eBIC
  at D = 4,096-24,576); on the Tracr tasks, whose every half-sample solver ``"gram"`` fits in one call, about 2x. With
  ``fit(data, y)`` the prediction target is one more target per half (its edges carry probabilities too,
  and the bound counts it). The regularisation path (``circuit_.path``, the edge ranking) is the same as
  with any other rule.
* ``"ebic"``: per target, minimise the extended BIC
  ``n log(RSS/n) + df (log(n) + 2 * ebic_gamma * log(p))`` (p = candidate predictors of that target), which
  keeps false edges rare when there are many candidate sources;
* ``"bic"``: the same without the ``log(p)`` term;
* ``"n_edges"``: the alpha whose circuit has the number of edges closest to ``n_edges``;
* ``"min_edges"``: the sparsest alpha whose circuit has at least ``n_edges`` edges (the last grid point if
  none has that many) -- e.g. "the top 400 features that predict ``y``";

With a fixed ``alpha`` there is nothing to select: ``circuit_.meta["selection"]`` is ``"fixed"``
(``selection`` is not used, whatever its value). The rule lives in :mod:`circuitkit.fit.select` and is
the same for every solver.

Inhibitory parents. ``target_rows="reachable"`` refits every nonnegative (ReLU-like, SAE-feature) target on
the rows where it can move -- its active rows plus the rows where a source with a positive stage-1
coefficient is active (:mod:`circuitkit.fit.reachable`) -- so parents that switch the target *off* are
found; over all rows their effect is diluted by the rows where the target is off anyway.

The whole path is kept in ``circuit_.path`` so a sparser or denser graph is read without refitting.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ..activations import Activations, check_finite
from ..circuit import Circuit, error_node, feature_node, read_node
from ..features import Features
from ..sites import COMPONENT_KINDS, parse_site
from . import select
from .collinear import collinear_blocks
from .design import Layout, SparseTargets, column_stats, ymax
from .duplicates import expand_selection, find_duplicates, reduce_problems
from .solvers import DenseCoefs, PathResult, choose_solver, get_solver

logger = logging.getLogger(__name__)

SELECTIONS = ("bic", "ebic", "n_edges", "min_edges", "stability")
TARGETS = ("all", "y")
TARGET_ROWS = ("all", "reachable")
EDGE_SCORES = ("fro", "maxabs")
PREDECESSORS = ("auto", "all", "adjacent")
Y_KINDS = ("auto", "linear", "logistic")
#: component level: a source site is reported in ``collinear_sites_`` when a direction of its output has R^2
#: above this in a least-squares fit on the sites before it
COLLINEAR_R2 = 1 - 1e-6
#: skip that check when rows x live columns^2 exceeds this (its cost is about that many flops)
COLLINEAR_MAX_WORK = 2e10
#: solvers ``"dense"`` and ``"gram"``: the Gram of the standardised design's source columns is computed once and
#: shared by the blocks when it takes at most this many bytes (SmolLM2-135M's compressed component design, 8,974 columns: 644 MB)
GRAM_MAX_BYTES = 2 * 1024**3


def _in_order(items, fn, workers: int):
    """``(item, fn(item))`` for each of ``items``, in order; with ``workers > 1`` the calls run in that many
    threads, at most ``2 * workers`` ahead of the consumer (so only a few blocks' inputs are alive at once)."""
    if workers <= 1:
        for item in items:
            yield item, fn(item)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= 2 * workers:
                head, fut = pending.popleft()
                yield head, fut.result()
        while pending:
            head, fut = pending.popleft()
            yield head, fut.result()


class CircuitLasso(BaseEstimator):
    """Learn a circuit with one Lasso per target column (module docstring has the details).

    Parameters
    ----------
    alpha: regularisation strength for a single fit; ``None`` fits a path and selects by ``selection``.
    alphas: an explicit descending grid (overrides ``n_alphas``/``alpha_min_ratio``).
    n_alphas, alpha_min_ratio: the automatic grid.
    selection: ``"stability"`` (default), ``"ebic"``, ``"bic"``, ``"n_edges"`` or ``"min_edges"`` (then give
        ``n_edges``); see the module docstring. Not used with a fixed ``alpha``. RSS in (E)BIC is
        the residual of an OLS refit on each Lasso support (relaxed Lasso), so shrinkage does not bias the
        choice towards small alphas.
    edge_score: ``"fro"`` or ``"maxabs"`` for block nodes.
    standardize: centre and scale every column to unit variance before fitting.
    predecessors: ``"all"`` earlier nodes, or only the ``"adjacent"`` (immediately preceding) site;
        ``"auto"`` is ``"all"`` at component level and ``"adjacent"`` at feature level.
    sites: restrict the nodes to these sites (default: component sites at component level, every encoded
        site at feature level).
    include_errors: add the SAE error node of each site as a source (feature level).
    min_target_freq: skip feature targets active in fewer than this fraction of rows (reported in
        ``skipped_targets_``).
    y_kind: ``"auto"``, ``"linear"`` (L1 least squares) or ``"logistic"`` (L1 logistic) for ``fit(data, y)``.
    targets: ``"all"`` (default: every site's nodes and ``y``) or ``"y"`` (only the prediction target: a
        ranking of the nodes that predict ``y``; needs ``fit(data, y)``).
    exclude: node names left out of the fit (neither sources nor targets; coefficient 0), e.g. features
        already removed in an earlier round.
    solver: ``"auto"`` (default) or a registered solver name (:func:`circuitkit.fit.solvers.available_solvers`):
        ``"celer"`` (reference, per-target celer path), ``"fast"`` (sparse covariance coordinate descent with
        screening, for SAE features), ``"dense"`` (batched gradients and working-set Gram solves, for dense
        component-level designs; :mod:`circuitkit.fit.dense`), ``"gram"`` (Gram-form coordinate descent, one numba
        call per block, for small dense designs; :mod:`circuitkit.fit.gram`), ``"torch"`` (batched proximal
        gradient, for GPUs). ``"auto"`` picks ``"fast"`` for a sparse (SAE) design, ``"torch"`` for a large dense
        design when CUDA is present, ``"dense"`` for a dense design with at least 2,000 columns and no more rows than
        columns (:data:`circuitkit.fit.solvers.DENSE_MIN_COLUMNS`; compressed component sites of a real model),
        ``"gram"`` for a dense design with fewer columns (Tracr, toy-LM component sites) and ``"celer"`` otherwise;
        the choice is stored in ``solver_`` and ``circuit_.meta["solver"]``.
    backend: ``"local"`` (this machine, ``n_jobs`` workers) or ``"dask"`` (the current dask.distributed
        client; see :mod:`circuitkit.fit.distributed`).
    rows_per_edge: (E)BIC only considers supports with at most ``active_rows / rows_per_edge`` predictors,
        where ``active_rows`` counts the rows in which the target is nonzero: a feature active in 30 rows
        can have at most 3 parents. Without it a rare feature is fitted exactly by chance co-activations.
    stability_pi, stability_b, stability_q, random_state: ``selection="stability"``: threshold in (0.5, 1],
        number of complementary pairs, sources per target per half, seed of the subsamples.
    stability_q_y: sources per half of the prediction target ``y``; ``None`` (default): the largest ``q_y`` whose
        share of the E[V] bound is at most 1 (``floor(sqrt((2 pi - 1) p))`` for ``p`` candidates, at least
        ``stability_q``; :func:`circuitkit.fit.stability.default_q_y`).
    stability_floor: each half's path counts entrants only while ``alpha >= stability_floor * sigma *
        sqrt(2 log p / n_half)`` (``sigma`` the half fit's residual scale at that alpha, ``p`` the target's
        candidates; the scaled-Lasso level): below it sources enter by noise alone. Only for targets whose
        term of the E[V] bound exceeds 1 (few candidates, as at component level; :mod:`circuitkit.fit.stability`,
        step 3). ``0`` follows the whole grid.
    min_source_rows: a source column nonzero in fewer rows than this is not a candidate parent. ``None``
        (default): 5 with ``selection="stability"`` (and no fixed ``alpha``), 0 (off) otherwise.
    target_rows: ``"all"`` (default): every target is fitted on all rows; ``"reachable"``: a nonnegative target
        (values ``>= 0``, some zero) is refitted on its reachable rows (module docstring,
        :mod:`circuitkit.fit.reachable`), so inhibitory parents are found. Needs ``selection`` in
        ``("bic", "ebic")`` (not the default ``"stability"``) or a fixed ``alpha``; the refitted targets are in ``reachable_rows_``.
    tol, max_iter: solver tolerance and maximum outer iterations.
    n_jobs: parallel workers (``-1``: all cores). With ``solver="dense"`` on a dense design whose Gram fits in
        :data:`GRAM_MAX_BYTES`, threads that fit whole target blocks side by side, sharing that Gram; otherwise
        joblib processes over each block's targets.
    progress: show a tqdm bar over target blocks.

    Fitted attributes
    -----------------
    circuit_: the :class:`~circuitkit.circuit.Circuit` at ``alpha_`` (with the full path).
    alphas_: the grid.
    target_alpha_: ``[n_columns]`` the alpha at which each target column's coefficients were read (NaN for
        columns not fitted as targets).
    alpha_: one number summarising the regularisation of ``circuit_``: the median of ``target_alpha_`` over the
        targets that kept at least one edge (over all fitted targets if none did; the selected grid alpha when
        no site column is a target, e.g. ``targets="y"``). With a fixed ``alpha`` or a global selection
        (``"n_edges"``, ``"min_edges"``) every target shares one alpha, so ``alpha_`` is that alpha.
    n_edges_path_: number of node edges at each grid point.
    coef_: CSR ``[n_columns, n_columns]`` coefficients of ``circuit_`` (rows targets, columns sources).
    coef_path_: the same at every grid point (``coef_path_[k]`` at ``alphas_[k]``); :meth:`path_arrays` gives
        the path as flat numeric arrays.
    y_coef_path_: with ``fit(data, y)``, the prediction target's CSR ``[n_y, n_columns]`` coefficients at every
        grid point (``None`` without ``y``); ``y_nodes_`` their node names. :mod:`circuitkit.fit.influence`
        reads both to score edges by their influence on ``y``.
    columns_: DataFrame describing each column (node, site).
    skipped_targets_: nodes that were not fitted as targets, with the reason.
    collinear_sources_: groups of feature nodes whose standardised columns are identical (a warning names
        them): the Lasso's choice of parent among them is arbitrary, and solvers may pick differently.
    duplicate_columns_: component level, a DataFrame (group, column, node, sign) of source columns that are exact
        affine copies of one another after standardisation (``|correlation| >= 1 - 1e-9``, from the Gram of the
        source columns; ``None`` when that Gram is not computed: other solvers above ``COLLINEAR_MAX_WORK``). In
        every block each group is fitted as one column and its coefficient is split equally among the block's
        copies with their signs, so the copies enter the path together and stability selection keeps all or none
        (:mod:`circuitkit.fit.duplicates`). The split is an optimal Lasso solution of the unmerged problem.
    collinear_sites_: component level, a DataFrame (site, r2, n_dims, n_columns, sources) of source sites whose
        output has a direction that is a (near) linear function of the sites before it in node order on these
        rows: largest squared canonical correlation ``r2`` with them above ``COLLINEAR_R2`` (``1 - 1e-6``), i.e.
        that direction's R^2 in a least-squares fit on the earlier sites' columns; ``n_dims`` such directions
        of its ``n_columns`` (rank); ``sources`` the earlier sites that direction lies in
        (:func:`circuitkit.fit.collinear.collinear_blocks`). A warning names them, and
        ``circuit_.meta["collinear_sites"]`` lists them. Edges from such a site and from its ``sources`` cannot
        be told apart from observations: which of them the Lasso picks is not evidence. The fit is unchanged.
        ``None`` at feature level (see ``collinear_sources_``) or when ``rows x live columns^2`` exceeds
        ``COLLINEAR_MAX_WORK`` (``2e10``; the check would cost about that many flops).
    timing_: seconds spent in each stage.
    stability_: with ``selection="stability"``, the :class:`~circuitkit.fit.stability.StabilityResult`
        (column-level probabilities, the half-samples, the bound).
    reachable_rows_: with ``target_rows="reachable"``, ``{target column: number of reachable rows}`` of the
        targets that were refitted (empty dict otherwise).
    """

    def __init__(
        self,
        *,
        alpha: float | None = None,
        alphas: Sequence[float] | None = None,
        n_alphas: int = 16,
        alpha_min_ratio: float = 1e-2,
        selection: Literal["stability", "ebic", "bic", "n_edges", "min_edges"] = "stability",
        n_edges: int | None = None,
        ebic_gamma: float = 0.5,
        edge_score: Literal["fro", "maxabs"] = "fro",
        standardize: bool = True,
        predecessors: Literal["auto", "all", "adjacent"] = "auto",
        sites: Sequence[str] | None = None,
        include_errors: bool = True,
        min_target_freq: float = 0.0,
        y_kind: Literal["auto", "linear", "logistic"] = "auto",
        targets: Literal["all", "y"] = "all",
        exclude: Sequence[str] | None = None,
        solver: str = "auto",
        backend: Literal["local", "dask"] = "local",
        rows_per_edge: int = 10,
        stability_pi: float = 0.6,
        stability_b: int = 10,
        stability_q: int = 5,
        stability_q_y: int | None = None,
        stability_floor: float = 1.0,
        random_state: int | None = 0,
        min_source_rows: int | None = None,
        target_rows: Literal["all", "reachable"] = "all",
        tol: float = 1e-6,
        max_iter: int = 50,
        n_jobs: int = 1,
        progress: bool = True,
    ) -> None:
        self.alpha = alpha
        self.alphas = alphas
        self.n_alphas = n_alphas
        self.alpha_min_ratio = alpha_min_ratio
        self.selection = selection
        self.n_edges = n_edges
        self.ebic_gamma = ebic_gamma
        self.edge_score = edge_score
        self.standardize = standardize
        self.predecessors = predecessors
        self.sites = sites
        self.include_errors = include_errors
        self.min_target_freq = min_target_freq
        self.y_kind = y_kind
        self.targets = targets
        self.exclude = exclude
        self.solver = solver
        self.backend = backend
        self.rows_per_edge = rows_per_edge
        self.stability_pi = stability_pi
        self.stability_b = stability_b
        self.stability_q = stability_q
        self.stability_q_y = stability_q_y
        self.stability_floor = stability_floor
        self.random_state = random_state
        self.min_source_rows = min_source_rows
        self.target_rows = target_rows
        self.tol = tol
        self.max_iter = max_iter
        self.n_jobs = n_jobs
        self.progress = progress

    # ------------------------------------------------------------------------------------------------
    def _validate_params(self) -> None:
        def number(name: str, v: Any, *, lo: float, hi: float | None = None, inclusive: bool = False) -> float:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number, got {v!r} ({type(v).__name__})")
            f = float(v)
            ok = math.isfinite(f) and (f >= lo if inclusive else f > lo) and (hi is None or f < hi)
            if not ok:
                rng = f"{'>=' if inclusive else '>'} {lo}" + (f" and < {hi}" if hi is not None else "")
                raise ValueError(f"{name} must be a finite number {rng}, got {v!r}")
            return f

        def integer(name: str, v: Any, *, lo: int) -> int:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int >= {lo}, got {v!r} ({type(v).__name__})")
            if v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
            return int(v)

        if self.alpha is not None:
            number("alpha", self.alpha, lo=0.0)
        if self.alphas is not None:
            if isinstance(self.alphas, (str, bytes)) or not hasattr(self.alphas, "__len__"):
                raise TypeError(f"alphas must be a list of numbers > 0, got {self.alphas!r}")
            for v in self.alphas:
                number("every entry of alphas", v, lo=0.0)
            if len(self.alphas) == 0:
                raise ValueError("alphas must be a non-empty list of numbers > 0 (or None for the automatic grid)")
        integer("n_alphas", self.n_alphas, lo=1)
        number("alpha_min_ratio", self.alpha_min_ratio, lo=0.0, hi=1.0)
        if self.n_edges is not None:
            integer("n_edges", self.n_edges, lo=0)
        if isinstance(self.n_jobs, (bool, np.bool_)) or not isinstance(self.n_jobs, (int, np.integer)) \
                or not (self.n_jobs >= 1 or self.n_jobs == -1):
            raise ValueError(f"n_jobs must be a positive int or -1 (all cores), got {self.n_jobs!r}")
        number("ebic_gamma", self.ebic_gamma, lo=0.0, inclusive=True)
        number("tol", self.tol, lo=0.0)
        integer("max_iter", self.max_iter, lo=1)
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; valid choices: {SELECTIONS}")
        if self.selection in select.GLOBAL and self.n_edges is None:
            raise ValueError(f"selection={self.selection!r} needs n_edges (an int >= 0), got None")
        if self.targets not in TARGETS:
            raise ValueError(f"unknown targets {self.targets!r}; valid: {TARGETS}")
        if self.exclude is not None and (isinstance(self.exclude, str)
                                         or not all(isinstance(n, str) for n in self.exclude)):
            raise TypeError(f"exclude must be a list of node names (e.g. ['L1.resid_post/f12']), got {self.exclude!r}")
        if self.edge_score not in EDGE_SCORES:
            raise ValueError(f"unknown edge_score {self.edge_score!r}; valid: {EDGE_SCORES}")
        if self.predecessors not in PREDECESSORS:
            raise ValueError(f"unknown predecessors {self.predecessors!r}; valid: {PREDECESSORS}")
        if self.y_kind not in Y_KINDS:
            raise ValueError(f"unknown y_kind {self.y_kind!r}; valid: {Y_KINDS}")
        if self.backend not in ("local", "dask"):
            raise ValueError(f"unknown backend {self.backend!r}; valid: ('local', 'dask')")
        if not (isinstance(self.rows_per_edge, int) and self.rows_per_edge >= 1):
            raise ValueError(f"rows_per_edge must be an int >= 1, got {self.rows_per_edge!r}")
        if not (0 <= self.min_target_freq < 1):
            raise ValueError(f"min_target_freq must be in [0, 1), got {self.min_target_freq!r}")
        if self.solver != "auto":
            get_solver(self.solver)
        if self.min_source_rows is not None:
            integer("min_source_rows", self.min_source_rows, lo=0)
        if not isinstance(self.target_rows, str) or self.target_rows not in TARGET_ROWS:
            raise ValueError(f"unknown target_rows {self.target_rows!r}; valid choices: {TARGET_ROWS}")
        if self.target_rows == "reachable" and self.alpha is None and self.selection not in ("bic", "ebic"):
            raise ValueError(f"target_rows='reachable' needs selection in ('bic', 'ebic') or a fixed alpha "
                             f"(it refits each target around its selected drivers), got selection={self.selection!r}; "
                             f"pass selection='ebic' with target_rows='reachable'")
        if self.selection == "stability":
            pi = number("stability_pi", self.stability_pi, lo=-math.inf)
            if not 0.5 < pi <= 1.0:
                raise ValueError(f"stability_pi must be in (0.5, 1] (the E[V] bound needs pi > 1/2), "
                                 f"got {self.stability_pi!r}")
            integer("stability_b", self.stability_b, lo=1)
            integer("stability_q", self.stability_q, lo=1)
            if self.stability_q_y is not None:
                integer("stability_q_y", self.stability_q_y, lo=1)
            number("stability_floor", self.stability_floor, lo=0.0, inclusive=True)

    # -- design ----------------------------------------------------------------------------------------
    def _layout_components(self, acts: Activations, *, has_y: bool = False,
                           reads: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[Layout, Any]:
        if self.sites is not None:
            sites = [s for s in acts.sites if s in set(self.sites)]
            missing = set(self.sites) - set(acts.sites)
            if missing:
                raise ValueError(f"sites {sorted(missing)} were not captured; captured sites are {acts.sites}")
        else:
            sites = [s for s in acts.sites if parse_site(s).kind in COMPONENT_KINDS]
            if len(sites) < 2:
                sites = acts.sites
        if len(sites) < (1 if has_y else 2):
            raise ValueError(f"component-level fitting needs at least 2 sites (1 with a prediction target y), "
                             f"got {sites}")
        names, node_site, kinds = list(sites), list(sites), ["site"] * len(sites)
        arrays = [acts[s] for s in sites]
        for head, block in _read_blocks(reads, sites, acts.n_rows):
            for via, a in block:
                names.append(read_node(head, via))
                node_site.append(head)
                kinds.append("read")
                arrays.append(a)
        blocks, col_node, node_cols, start = [], [], [], 0
        for i, (name, a) in enumerate(zip(names, arrays)):
            check_finite(name, a)
            blocks.append(a.astype(np.float64))
            node_cols.append(np.arange(start, start + a.shape[1]))
            col_node.append(np.full(a.shape[1], i))
            start += a.shape[1]
        nodes = pd.DataFrame({"node": names, "site": node_site, "kind": kinds, "feature": -1, "label": ""})
        is_read = np.array([k == "read" for k in kinds])
        layout = Layout(nodes, np.concatenate(col_node), node_cols, [parse_site(s).rank for s in node_site],
                        node_site, np.array([parse_site(s).kind != "embed" for s in node_site]), "component",
                        ~is_read)
        return layout, np.hstack(blocks)

    def _layout_features(self, feats: Features, *, has_y: bool = False) -> tuple[Layout, Any]:
        sites = feats.sites
        if self.sites is not None:
            missing = set(self.sites) - set(sites)
            if missing:
                raise ValueError(f"sites {sorted(missing)} were not encoded; encoded sites are {sites}")
            sites = [s for s in sites if s in set(self.sites)]
        if len(sites) < (1 if has_y else 2):
            raise ValueError(f"feature-level fitting needs SAE codes for at least 2 sites (1 with a prediction "
                             f"target y), got {sites}")
        names, node_site, kinds, featidx, blocks, col_node, node_cols = [], [], [], [], [], [], []
        start = 0
        for s in sites:
            c = feats[s]
            check_finite(s, c)
            for p in range(c.shape[1]):
                names.append(feature_node(s, p))
                node_site.append(s)
                kinds.append("feature")
                featidx.append(p)
                node_cols.append(np.array([start + p]))
            blocks.append(sp.csc_matrix(c, dtype=np.float64))
            start += c.shape[1]
            if self.include_errors and s in feats.errors:
                e = feats.errors[s]
                check_finite(s, e)
                names.append(error_node(s))
                node_site.append(s)
                kinds.append("error")
                featidx.append(-1)
                node_cols.append(np.arange(start, start + e.shape[1]))
                blocks.append(sp.csc_matrix(e.astype(np.float64)))
                start += e.shape[1]
        col_node = np.empty(start, dtype=np.int64)
        for i, cols in enumerate(node_cols):
            col_node[cols] = i
        nodes = pd.DataFrame({"node": names, "site": node_site, "kind": kinds, "feature": featidx, "label": ""})
        ranks = [parse_site(s).rank for s in node_site]
        layout = Layout(nodes, col_node, node_cols, ranks, node_site, np.array([k == "feature" for k in kinds]),
                         "feature")
        return layout, sp.hstack(blocks, format="csc")

    def _sources_for(self, layout: Layout, target_rank: tuple) -> np.ndarray:
        src = layout.is_source
        ranks = sorted({r for i, r in enumerate(layout.node_rank) if r < target_rank and (src is None or src[i])})
        if not ranks:
            return np.array([], dtype=np.int64)
        mode = self.predecessors
        if mode == "auto":
            mode = "all" if layout.kind == "component" else "adjacent"
        keep = set(ranks) if mode == "all" else {ranks[-1]}
        return np.array([i for i, r in enumerate(layout.node_rank) if r in keep and (src is None or src[i])],
                        dtype=np.int64)

    # -- fitting -----------------------------------------------------------------------------------------
    def fit(self, X: Activations | Features, y: Any = None, *,
            reads: Mapping[str, Mapping[str, Any]] | None = None) -> CircuitLasso:
        """Fit on captured activations (component level) or SAE features (feature level); with ``y``,
        also fit the prediction target(s). Returns ``self``; the result is ``self.circuit_``.

        ``reads`` (component level): ``{head site: {pathway: [rows, d] array}}``, what a head *reads* besides the
        output it writes, e.g. its queries and keys (:func:`circuitkit.fit.qk.capture_qk`). Each array is one more
        target node ``"L1.H0<q>"`` (kind ``"read"``, :func:`circuitkit.circuit.read_node`), regressed on the sites
        before its head like the head's own output, and never a source. The alpha grid comes from the site
        targets alone, so the sites' path and circuit are those of a fit without ``reads``."""
        self._validate_params()
        t0 = time.perf_counter()
        if isinstance(X, Features):
            if reads:
                raise ValueError("reads= are head inputs of a component-level fit; pass Activations, not Features")
            layout, design = self._layout_features(X, has_y=y is not None)
            n_rows = X.n_rows
        elif isinstance(X, Activations):
            layout, design = self._layout_components(X, has_y=y is not None, reads=reads)
            n_rows = X.n_rows
        else:
            raise ValueError(f"fit expects Activations or Features, got {type(X).__name__}")
        if n_rows < 2:
            raise ValueError(f"need at least 2 rows (samples) to fit, got {n_rows}")
        mean, std = column_stats(design)
        scale_ref = np.zeros_like(std)
        for cols in layout.node_cols:  # a column is constant if tiny relative to its node's largest column
            scale_ref[cols] = std[cols].max() if len(cols) else 0.0
        alive = std > np.maximum(1e-7 * scale_ref, 1e-12)
        if self.exclude:
            index = {n: i for i, n in enumerate(layout.nodes["node"])}
            unknown = [n for n in self.exclude if n not in index]
            if unknown:
                raise ValueError(f"exclude names nodes this fit does not have: {unknown[:5]}; nodes look like "
                                 f"{layout.nodes['node'].iloc[:3].tolist()}")
            for n in self.exclude:  # excluded nodes are neither sources nor targets (coefficient 0)
                alive[layout.node_cols[index[n]]] = False
        if self.targets == "y" and y is None:
            raise ValueError("targets='y' fits only the prediction target: pass y to fit(X, y)")
        if layout.kind == "feature" and self.min_target_freq > 0:
            nnz_frac = np.asarray((design != 0).sum(axis=0)).ravel() / n_rows
        else:
            nnz_frac = None

        # targets: group columns by target node-site so they share one predictor set
        groups: dict[tuple, list[int]] = {}
        skipped: dict[str, str] = {}
        kinds = layout.nodes["kind"].to_numpy()
        for i, cols in enumerate(layout.node_cols):
            if not layout.is_target[i] or self.targets == "y":
                continue
            live = cols[alive[cols]]
            name = layout.nodes["node"].iat[i]
            if live.size == 0:
                skipped[name] = "constant (never active or zero variance)"
                continue
            if nnz_frac is not None and nnz_frac[live].max() < self.min_target_freq:
                skipped[name] = f"active in < {self.min_target_freq:.2%} of rows"
                continue
            read = name if kinds[i] == "read" else ""   # a read node is a target block of its own
            groups.setdefault((layout.node_rank[i], layout.node_site[i], read), []).extend(live.tolist())

        y_info = self._prepare_y(y, n_rows) if y is not None else None
        self.collinear_sources_ = _collinear_groups(layout, design, std, alive)
        if self.collinear_sources_:
            shown = "; ".join(" = ".join(g[:4]) + (" ..." if len(g) > 4 else "") for g in self.collinear_sources_[:5])
            warnings.warn(f"{len(self.collinear_sources_)} group(s) of sources are exactly collinear after "
                          f"standardisation (e.g. {shown}); which of them a Lasso picks as the parent is arbitrary "
                          "(solvers may disagree). All groups are in collinear_sources_.", UserWarning, stacklevel=2)
        stab_rule = self.selection == "stability" and self.alpha is None
        msr = self.min_source_rows if self.min_source_rows is not None else (5 if stab_rule else 0)
        if msr > 0:
            src_ok = np.asarray((design != 0).sum(axis=0)).ravel() >= msr
        else:
            src_ok = np.ones(design.shape[1], dtype=bool)
        t_design = time.perf_counter()

        # standardised design
        Xs, offset = self._standardise(design, mean, std, alive)
        problems = []
        read_problem = []   # problems whose targets are read nodes (they do not set the alpha grid)
        for (rank, _site, read), tcols in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2])):
            src_nodes = self._sources_for(layout, rank)
            if src_nodes.size == 0:
                continue
            scols = np.concatenate([layout.node_cols[i] for i in src_nodes])
            scols = scols[alive[scols] & src_ok[scols]]
            if scols.size == 0:
                continue
            problems.append((np.asarray(tcols), scols))
            read_problem.append(bool(read))
        t_coll = time.perf_counter()
        self.collinear_sites_ = _collinear_sites(layout, design, mean, alive, problems)
        if self.collinear_sites_ is not None and len(self.collinear_sites_):
            shown = ", ".join(f"{r.site} (R^2 = 1 - {max(1 - r.r2, 0):.1e}; in the span of {' + '.join(r.sources)})"
                              for r in self.collinear_sites_.head(5).itertuples())
            warnings.warn(f"{len(self.collinear_sites_)} source site(s) are (near) linear functions of earlier sites "
                          f"on these data: {shown}; edges from them versus those earlier sites are not identifiable "
                          "from observations (see collinear_sites_)", UserWarning, stacklevel=2)
        t_design += time.perf_counter() - t_coll  # the check is part of the design stage in timing_
        solver_name = self.solver
        if solver_name == "auto":
            solver_name = choose_solver(Xs, max((len(t) for t, _ in problems), default=1))
        gram = self._source_gram(solver_name, Xs, offset, problems, layout.kind)
        # component level: exact copies among the candidate sources are fitted once (circuitkit.fit.duplicates)
        fit_problems, reductions = problems, [None] * len(problems)
        self.duplicate_columns_ = None
        if layout.kind == "component" and gram is not None:
            dups = find_duplicates(gram[0], np.flatnonzero(gram[1] >= 0))
            fit_problems, reductions = reduce_problems(problems, dups)
            names = layout.nodes["node"].to_numpy()
            self.duplicate_columns_ = pd.DataFrame(
                [{"group": g, "column": int(c), "node": names[layout.col_node[c]], "sign": float(sg)}
                 for g, (cols, signs) in enumerate(zip(dups.groups, dups.signs)) for c, sg in zip(cols, signs)],
                columns=["group", "column", "node", "sign"])
        if solver_name not in ("dense", "gram"):
            gram = None  # only those two solvers read it
        grid_problems = [p for p, r in zip(fit_problems, read_problem) if not r] or fit_problems
        alphas = self._grid(Xs, offset, grid_problems, y_info, n_rows, design, mean, std)

        if self.backend == "dask":
            from .distributed import DaskSolver

            solver = DaskSolver(inner=solver_name)
        else:
            solver = get_solver(solver_name)
        n_cols = design.shape[1]
        n_alpha = len(alphas)
        fixed = self.alpha is not None or n_alpha == 1
        per_target = not fixed and self.selection in ("bic", "ebic")
        coef_parts: list[list[tuple]] = [[] for _ in range(n_alpha)]  # (rows, cols, values) per problem
        chosen_parts: list[tuple] = []
        target_alpha = np.full(n_cols, np.nan)
        n_targets_fit = 0
        reachable: dict[int, int] = {}
        design_csc = design_csr = design
        if sp.issparse(design) and self.target_rows == "reachable":
            design_csc, design_csr = sp.csc_matrix(design), sp.csr_matrix(design)
        # with a shared Gram, n_jobs threads fit whole blocks side by side (the dense kernels release the GIL);
        # otherwise the solver spreads each block's targets over n_jobs processes
        if gram is None:
            workers = 1
        else:
            from .dense import _n_workers

            workers = _n_workers(self.n_jobs)

        def block_path(item):
            _b, (tcols, scols) = item
            Xp = Xs[:, scols]
            Yp = self._target_block(design, tcols, mean, std)
            off = None if offset is None else offset[scols]
            extra = {} if gram is None else {"gram": (gram[0], gram[1][scols])}
            res = solver.path(Xp, Yp, alphas, offset=off, tol=self.tol, max_iter=self.max_iter,
                              n_jobs=self.n_jobs if gram is None else 1, **extra)
            return Xp, Yp, off, res

        bar = tqdm(_in_order(list(enumerate(fit_problems)), block_path, workers), total=len(fit_problems),
                   desc="CircuitLasso", unit="block", disable=not self.progress or len(fit_problems) < 2)
        for (b, (tcols, scols)), (Xp, Yp, off, res) in bar:
            k_sel = self._select_per_target(Xp, off, Yp, res, n_rows) if per_target else None
            if reductions[b] is not None:  # credit every copy of a merged source (circuitkit.fit.duplicates)
                red = reductions[b]
                res = replace(res, coefs=red.expand_path(res.coefs),
                              info={k: v for k, v in res.info.items() if k != "entry"})
                scols = red.full
            if self.target_rows == "reachable":
                from .reachable import refit_reachable

                k1 = k_sel if per_target else np.zeros(len(tcols), dtype=np.int64)
                res, k2, done = refit_reachable(self, design_csc, design_csr, tcols, scols, res, k1, alphas,
                                                get_solver(solver_name), per_target=per_target)
                k_sel = k2 if per_target else None
                reachable.update(done)
            if isinstance(res.coefs, DenseCoefs):  # every grid point's triplets at once
                kk, r, c, v = res.coefs.triplets()
                cut = np.searchsorted(kk, np.arange(n_alpha + 1))
                for k in range(n_alpha):
                    sl = slice(cut[k], cut[k + 1])
                    coef_parts[k].append((tcols[r[sl]], scols[c[sl]], v[sl]))
            else:
                for k in range(n_alpha):
                    r, c, v = _triplets(res.coefs[k])
                    coef_parts[k].append((tcols[r], scols[c], v))
            if res.skipped is not None and np.any(res.skipped):
                for j in np.flatnonzero(res.skipped):
                    skipped[f"column {int(tcols[j])} of {layout.nodes['node'].iat[layout.col_node[tcols[j]]]}"] = (
                        "skipped by the solver (constant or active in too few rows)")
            if per_target:
                r, c, v = _triplets(select.pick_rows(res.coefs, k_sel))
                chosen_parts.append((tcols[r], scols[c], v))
                target_alpha[tcols] = alphas[k_sel]
            n_targets_fit += len(tcols)
        t_fit = time.perf_counter()

        coefs = [_assemble(parts, n_cols) for parts in coef_parts]
        y_nodes, y_coefs, y_sel = [], None, None
        if y_info is not None:
            y_nodes, y_coefs, y_sel = self._fit_y(Xs, offset, alive, y_info, alphas, n_rows, per_target,
                                                  solver_name)

        # node-level edges along the path
        nodes = layout.nodes
        if y_nodes:
            extra = pd.DataFrame({"node": y_nodes, "site": "", "kind": "target", "feature": -1, "label": y_nodes})
            nodes = pd.concat([nodes, extra], ignore_index=True)
        path, n_edges_path = self._path_edges(layout, coefs, y_nodes, y_coefs, alphas)

        if fixed:
            k_best = 0
        elif self.selection == "n_edges":
            k_best = select.closest_count(n_edges_path, self.n_edges)
        elif self.selection == "min_edges":
            k_best = select.min_count(n_edges_path, self.n_edges)
        else:
            k_best = None
        stab = None
        if self.selection == "stability" and not fixed:
            from .stability import stability_probabilities

            t_stab = time.perf_counter()
            y_problem = None
            if y_info is not None:
                y_problem = {"kind": y_info["kind"], "cols": np.flatnonzero(alive & src_ok)}
                y_problem.update({"Y": y_info["Y"]} if y_info["kind"] == "linear" else {"Ys": y_info["Ys"]})
            stab = stability_probabilities(self, design, fit_problems, alphas, solver_name=solver_name,
                                           q=self.stability_q, n_pairs=self.stability_b, pi_thr=self.stability_pi,
                                           random_state=self.random_state, n_jobs=self.n_jobs, y_problem=y_problem,
                                           q_y=self.stability_q_y, floor=self.stability_floor)
            stab.probability = expand_selection(stab.probability, fit_problems, reductions)
            self.stability_ = stab
            t_fit += time.perf_counter() - t_stab
        self.alphas_ = np.asarray(alphas)
        self.coef_path_ = coefs
        self.y_coef_path_ = y_coefs
        self.y_nodes_ = list(y_nodes)
        self.n_edges_path_ = n_edges_path
        if stab is not None:
            # kept pairs; weight = the full-data coefficient at the last grid point where it is nonzero
            keep = _kept(stab.probability, self.stability_pi)
            self.coef_ = _stable_coef(coefs, keep)
            self.y_coef_ = ykeep = None
            if stab.y_probability is not None and y_coefs is not None:
                ykeep = _kept(stab.y_probability, self.stability_pi)
                self.y_coef_ = _stable_coef(y_coefs, ykeep)
            for tcols, _ in problems:
                target_alpha[tcols] = alphas[-1]
            edges = self._node_edges(layout, self.coef_, y_nodes, self.y_coef_)
            # node-level probability: the largest column-pair probability of the block; kept pairs whose
            # full-data coefficient is 0 along the whole path get weight 0 but are kept
            pk = stab.probability.multiply(keep).tocoo()
            names = layout.nodes["node"].to_numpy()
            src, tgt, pr = names[layout.col_node[pk.col]], names[layout.col_node[pk.row]], pk.data
            if ykeep is not None:
                yk = stab.y_probability.multiply(ykeep).tocoo()
                src = np.concatenate([src, names[layout.col_node[yk.col]]])
                tgt = np.concatenate([tgt, np.asarray(y_nodes, dtype=object)[yk.row]])
                pr = np.concatenate([pr, yk.data])
            pdf = pd.DataFrame({"source": src, "target": tgt,
                                "probability": pr}).groupby(["source", "target"], as_index=False).max()
            edges = pdf.merge(edges, on=["source", "target"], how="left")
            edges["weight"] = edges["weight"].fillna(0.0)
            edges["score"] = edges["score"].fillna(0.0)
            edges = edges[["source", "target", "weight", "score", "probability"]]
        elif k_best is not None:
            for tcols, _ in problems:
                target_alpha[tcols] = alphas[k_best]
            self.coef_ = coefs[k_best]
            self.y_coef_ = None if y_coefs is None else y_coefs[k_best]
            edges = path[path["alpha"] == float(alphas[k_best])].drop(columns="alpha")
        else:
            self.coef_ = _assemble(chosen_parts, n_cols)
            self.y_coef_ = y_sel
            edges = self._node_edges(layout, self.coef_, y_nodes, y_sel)
        # alpha_: one meaning whatever the selection (class docstring)
        has_edges = np.asarray(self.coef_.getnnz(axis=1) > 0)
        fitted = np.isfinite(target_alpha)
        vals = target_alpha[fitted & has_edges] if (fitted & has_edges).any() else target_alpha[fitted]
        if vals.size:
            self.alpha_ = float(np.median(vals))
        else:
            self.alpha_ = float(alphas[k_best if k_best is not None else -1])
        self.target_alpha_ = target_alpha
        if y_nodes and y_coefs is not None:
            path_max = max((int(c.nnz) for c in y_coefs), default=0)
            chosen = 0 if self.y_coef_ is None else int(self.y_coef_.nnz)
            if chosen == 0 and path_max > 0:
                warnings.warn(f"the selected circuit has no edge into the prediction target although its path has "
                              f"up to {path_max}; read the path (circuit_.path, circuit_.at(alpha)) or choose the "
                              "sparsity yourself (alpha=..., or selection='min_edges' with n_edges=...)",
                              UserWarning, stacklevel=2)
        self.columns_ = pd.DataFrame({"node": nodes["node"].to_numpy()[layout.col_node],
                                      "site": np.asarray(layout.node_site)[layout.col_node], "alive": alive})
        self.skipped_targets_ = pd.DataFrame({"node": list(skipped), "reason": list(skipped.values())})
        self.n_targets_ = n_targets_fit
        self.reachable_rows_ = reachable
        self.solver_ = solver_name
        self.timing_ = {"design": t_design - t0, "fit": t_fit - t_design, "total": time.perf_counter() - t0}
        if len(skipped):
            logger.info("CircuitLasso skipped %d target nodes (see skipped_targets_)", len(skipped))
        meta = {
            "method": "circuitlasso",
            "level": layout.kind,
            "alpha": self.alpha_,
            "selection": "fixed" if fixed else self.selection,
            "edge_score": self.edge_score,
            "standardize": self.standardize,
            "predecessors": self.predecessors,
            "solver": solver_name,
            "backend": self.backend,
            "n_rows": int(n_rows),
            "seconds": self.timing_["total"],
            "skipped_targets": len(skipped),
            "collinear_sites": (None if self.collinear_sites_ is None
                                else self.collinear_sites_["site"].tolist()),
            "path_alphas": [float(a) for a in alphas],
            "provenance": {k: v for k, v in X.meta.items() if k in ("model", "input_hash", "positions", "aggregate",
                                                                    "sae_ids", "sae_releases", "neuronpedia_ids")},
        }
        if self.target_rows != "all":
            meta.update({"target_rows": self.target_rows, "n_targets_reachable": len(reachable)})
        if stab is not None:
            meta.update({"pi_thr": float(self.stability_pi), "q": int(self.stability_q), "q_y": stab.q_y,
                         "n_subsamples": len(stab.halves), "n_pairs": int(self.stability_b),
                         "stability_floor": float(self.stability_floor),
                         "expected_false_edges_bound": stab.bound,
                         "random_state": self.random_state})
        self.circuit_ = Circuit(nodes, edges, path, meta)
        return self

    def path_arrays(self) -> dict[str, np.ndarray]:
        """The regularisation path as numeric arrays, one entry per (target column, source column) pair that
        is ever nonzero: ``target`` and ``source`` (column indices; ``columns_`` names them), ``entry_alpha``
        (the largest grid alpha at which the coefficient is nonzero), ``entry_index`` (its grid index) and
        ``coef`` (the coefficient in ``coef_``, 0 when the selected circuit dropped it). Site-to-site
        coefficients only (the prediction target's are in ``y_coef_``)."""
        check_is_fitted(self, "coef_path_")
        entry = None
        for k in range(len(self.alphas_) - 1, -1, -1):  # later (larger) alphas overwrite
            nz = sp.csr_matrix(self.coef_path_[k] != 0, dtype=np.float64)
            lvl = nz * float(k + 1)
            entry = lvl if entry is None else entry - entry.multiply(nz) + lvl
        if entry is None or entry.nnz == 0:
            empty = np.empty(0)
            return {"target": empty.astype(np.int64), "source": empty.astype(np.int64), "entry_alpha": empty,
                    "entry_index": empty.astype(np.int64), "coef": empty}
        e = entry.tocoo()
        idx = e.data.astype(np.int64) - 1
        coef = np.asarray(self.coef_[e.row, e.col]).ravel()
        return {"target": e.row.astype(np.int64), "source": e.col.astype(np.int64),
                "entry_alpha": self.alphas_[idx].astype(np.float64), "entry_index": idx, "coef": coef}

    # -- helpers -------------------------------------------------------------------------------------------
    def _source_gram(self, solver_name: str, Xs, offset, problems, kind: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The Gram of the standardised design's source columns (every column some block reads), computed once:
        the ``"dense"`` and ``"gram"`` solvers share it across blocks (:func:`circuitkit.fit.dense.parent_gram`) and
        at component level it finds duplicate sources (:mod:`circuitkit.fit.duplicates`). Computed for those
        solvers when it fits in :data:`GRAM_MAX_BYTES`, and for any other solver at component level when it costs
        at most ``COLLINEAR_MAX_WORK`` flops; else ``None``. Returns ``(G, pos)``: ``pos[col]`` is the row of
        ``G`` of design column ``col`` (-1 for columns no block reads)."""
        if self.backend != "local" or sp.issparse(Xs) or not problems:
            return None
        cols = np.unique(np.concatenate([scols for _, scols in problems]))
        if solver_name in ("dense", "gram"):
            if cols.size ** 2 * 8 > GRAM_MAX_BYTES:
                return None
        elif kind != "component" or Xs.shape[0] * cols.size ** 2 > COLLINEAR_MAX_WORK:
            return None
        from .dense import parent_gram

        pos = np.full(Xs.shape[1], -1, dtype=np.int64)
        pos[cols] = np.arange(cols.size)
        return parent_gram(Xs[:, cols], None if offset is None else offset[cols]), pos

    def _select_per_target(self, Xp, offset, Yp, res: PathResult, n_rows: int,
                           penalty_rows: int | None = None) -> np.ndarray:
        """Per-target (E)BIC on *relaxed* residuals (:mod:`circuitkit.fit.select`), with supports larger
        than ``active_rows / rows_per_edge`` not eligible. Returns the chosen grid index per target."""
        n_t = Yp.shape[1]
        active = np.diff(Yp.raw.indptr) if isinstance(Yp, SparseTargets) else np.full(n_t, n_rows)
        max_df = np.maximum(active // self.rows_per_edge, 1)
        if "relaxed_rss" in res.info:
            return select.select_per_target(res, n_rows=n_rows, n_features=Xp.shape[1], selection=self.selection,
                                            ebic_gamma=self.ebic_gamma, max_df=max_df, penalty_rows=penalty_rows)
        return select.select_sequential(Xp, offset, Yp, res, n_rows=n_rows, selection=self.selection,
                                        ebic_gamma=self.ebic_gamma, max_df=max_df, penalty_rows=penalty_rows)

    def _standardise(self, design, mean, std, alive):
        scale = np.where(alive, std, 1.0) if self.standardize else np.ones_like(std)
        if sp.issparse(design):
            Xs = sp.csc_matrix(design @ sp.diags(1.0 / scale))
            offset = mean / scale
            return Xs, offset
        Xs = (design - mean) / scale
        return Xs, None

    def _target_block(self, design, tcols, mean, std):
        """Standardised targets: dense for a dense design; a :class:`~circuitkit.fit.design.SparseTargets`
        (never densified as a whole block) for a sparse SAE design."""
        if sp.issparse(design):
            return SparseTargets.from_design(design, tcols, mean, std if self.standardize else None)
        Y = design[:, tcols]
        Y = Y.toarray() if sp.issparse(Y) else np.asarray(Y)
        Y = Y - mean[tcols]
        if self.standardize:
            Y = Y / std[tcols]
        return np.asfortranarray(Y)

    def _grid(self, Xs, offset, problems, y_info, n_rows, design, mean, std) -> np.ndarray:
        if self.alpha is not None:
            return np.array([float(self.alpha)])
        if self.alphas is not None:
            return np.sort(np.asarray(self.alphas, dtype=float))[::-1]
        amax = 0.0
        for tcols, scols in problems:
            Xp = Xs[:, scols]
            Y = self._target_block(design, tcols, mean, std)
            if hasattr(Y, "alpha_max"):
                amax = max(amax, Y.alpha_max(Xp, None if offset is None else offset[scols]))
                continue
            corr = Xp.T @ Y
            if offset is not None:
                corr = corr - np.outer(offset[scols], Y.sum(axis=0))
            amax = max(amax, float(np.abs(corr).max()) / n_rows)
        if y_info is not None:
            amax = max(amax, y_info["alpha_max"](Xs, offset))
        if amax <= 0:
            amax = 1.0
        return amax * np.geomspace(1.0, self.alpha_min_ratio, self.n_alphas)

    def _edge_arrays(self, layout: Layout, coef: sp.spmatrix, y_coef: sp.spmatrix | None,
                     width: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(target, source, weight)`` node indices and weights of one coefficient matrix (y nodes follow the
        layout's nodes): single-column pairs keep their coefficient, block pairs get the Frobenius norm or
        max-abs entry of their block. Single pairs come first, in coefficient order, then block pairs in order
        of their first coefficient. Plain numpy: this runs at every grid point."""
        n_nodes = len(layout.node_cols)
        ts, ss, vs = [], [], []
        if coef.nnz:
            r, c, v = _triplets(coef)
            ts.append(layout.col_node[r])
            ss.append(layout.col_node[c])
            vs.append(v)
        if y_coef is not None and y_coef.nnz:
            r, c, v = _triplets(y_coef)
            ts.append(n_nodes + r)
            ss.append(layout.col_node[c])
            vs.append(v)
        if not ts:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, np.empty(0)
        t_all = np.concatenate(ts).astype(np.int64, copy=False)
        s_all = np.concatenate(ss).astype(np.int64, copy=False)
        v_all = np.concatenate(vs)
        single_rows = (width[t_all] == 1) & (width[s_all] == 1)  # feature -> feature: one coefficient each
        if single_rows.all():
            return t_all, s_all, v_all
        block = ~single_rows
        n_all = len(width)
        uniq, first, inv = np.unique(t_all[block] * n_all + s_all[block], return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # block pairs in order of first appearance
        bv = v_all[block]
        if self.edge_score == "fro":
            agg = np.sqrt(np.bincount(inv.ravel(), weights=bv * bv, minlength=uniq.size))
        else:
            agg = np.zeros(uniq.size)
            np.maximum.at(agg, inv.ravel(), np.abs(bv))
        pairs = uniq[order]
        return (np.concatenate([t_all[single_rows], pairs // n_all]),
                np.concatenate([s_all[single_rows], pairs % n_all]),
                np.concatenate([v_all[single_rows], agg[order]]))

    def _names_widths(self, layout: Layout, y_nodes) -> tuple[np.ndarray, np.ndarray]:
        names = layout.nodes["node"].to_numpy()
        all_names = np.concatenate([names, np.asarray(y_nodes, dtype=object)]) if y_nodes else names
        width = np.concatenate([np.fromiter(map(len, layout.node_cols), dtype=np.int64, count=len(names)),
                                np.ones(len(y_nodes), dtype=np.int64)])
        return all_names, width

    def _node_edges(self, layout: Layout, coef: sp.spmatrix, y_nodes, y_coef) -> pd.DataFrame:
        """Node edges of one coefficient matrix (:meth:`_edge_arrays`) as an edge table."""
        all_names, width = self._names_widths(layout, y_nodes)
        t, s, w = self._edge_arrays(layout, coef, y_coef, width)
        return pd.DataFrame({"source": all_names[s], "target": all_names[t], "weight": w, "score": np.abs(w)})

    def _path_edges(self, layout: Layout, coefs, y_nodes, y_coefs, alphas) -> tuple[pd.DataFrame, np.ndarray]:
        """The edge table at every grid point (column ``alpha`` first; grid order, then :meth:`_edge_arrays`'
        order) in one frame, and the number of edges at each grid point."""
        all_names, width = self._names_widths(layout, y_nodes)
        parts = [self._edge_arrays(layout, coefs[k], None if y_coefs is None else y_coefs[k], width)
                 for k in range(len(alphas))]
        counts = np.array([len(w) for _, _, w in parts], dtype=np.int64)
        t, s, w = (np.concatenate(x) for x in zip(*parts))
        path = pd.DataFrame({"alpha": np.repeat(np.asarray(alphas, dtype=np.float64), counts),
                             "source": all_names[s], "target": all_names[t], "weight": w, "score": np.abs(w)})
        return path, counts

    # -- prediction targets ----------------------------------------------------------------------------------
    def _prepare_y(self, y: Any, n_rows: int) -> dict:
        names: list[str]
        if isinstance(y, pd.Series):
            names, Y = [f"y:{y.name}" if y.name is not None else "y"], y.to_numpy()[:, None]
        elif isinstance(y, pd.DataFrame):
            names, Y = [f"y:{c}" for c in y.columns], y.to_numpy()
        else:
            Y = np.asarray(y)
            if Y.ndim == 1:
                names, Y = ["y"], Y[:, None]
            elif Y.ndim == 2:
                names = ["y"] if Y.shape[1] == 1 else [f"y:{j}" for j in range(Y.shape[1])]
            else:
                raise ValueError(f"y must be 1-D or 2-D, got shape {Y.shape}")
        if Y.shape[0] != n_rows:
            raise ValueError(f"y has {Y.shape[0]} rows but the data have {n_rows}")
        kind = self.y_kind
        if kind == "auto":
            kind = "logistic" if (Y.dtype.kind in "biuOUS" or Y.dtype == bool) else "linear"
        if kind == "linear":
            if Y.dtype.kind in "USO":
                raise TypeError(f"y_kind='linear' needs numeric y, got values like {Y.ravel()[:3].tolist()}; "
                                "use y_kind='logistic' (or 'auto') for class labels")
            Yf = Y.astype(np.float64)
            const = np.flatnonzero(Yf.std(0) == 0)
            if const.size:
                warnings.warn(f"prediction target(s) {[names[j] for j in const]} are constant "
                              f"({Yf[0, const].tolist()}); nothing can predict them, they get no edges",
                              UserWarning, stacklevel=3)
            if not np.all(np.isfinite(Yf)):
                raise ValueError("y holds NaN or inf")
            return {"kind": "linear", "names": names, "Y": Yf, "alpha_max": lambda Xs, off: ymax(Xs, off, Yf)}
        if Y.shape[1] != 1:
            raise ValueError("logistic prediction targets must be a single label column")
        classes = np.unique(Y[:, 0])
        if classes.size < 2:
            raise ValueError(f"y has a single class {classes.tolist()}; a classifier target needs >= 2 classes")
        if classes.size == 2:
            Ys = [np.where(Y[:, 0] == classes[1], 1.0, -1.0)]
            ynames = names
        else:
            Ys = [np.where(Y[:, 0] == c, 1.0, -1.0) for c in classes]
            ynames = [f"{names[0]}={c}" for c in classes]
        return {"kind": "logistic", "names": ynames, "Ys": Ys, "classes": classes,
                "alpha_max": lambda Xs, off: max(ymax(Xs, off, (yy[:, None] + 1) / 2, standardize=False)
                                                     for yy in Ys)}

    def _fit_y(self, Xs, offset, alive, y_info, alphas, n_rows, per_target, solver_name):
        """Fit the prediction target(s) on every live column; returns names, path coefs, selected coefs."""
        cols = np.flatnonzero(alive)
        Xp = Xs[:, cols]
        n_cols = Xs.shape[1]
        off = None if offset is None else offset[cols]
        out = []

        def lift(W: sp.spmatrix, n_y: int) -> sp.csr_matrix:
            c = sp.coo_matrix(W)
            return sp.csr_matrix((c.data, (c.row, cols[c.col])), shape=(n_y, n_cols))

        if y_info["kind"] == "linear":
            Y = y_info["Y"]
            sd = Y.std(0)
            Y = np.asfortranarray((Y - Y.mean(0)) / np.where(sd > 0, sd, 1.0))
            res = get_solver(solver_name).path(Xp, Y, alphas, offset=off, tol=self.tol, max_iter=self.max_iter,
                                               n_jobs=1)
            out = [lift(res.coefs[k], Y.shape[1]) for k in range(len(alphas))]
            sel = None
            if per_target:
                k_sel = self._select_per_target(Xp, off, Y, res, n_rows)
                sel = lift(select.pick_rows(res.coefs, k_sel), Y.shape[1])
            return y_info["names"], out, sel
        ys = y_info["Ys"]
        res = get_solver("logistic").path(Xp, np.column_stack(ys), alphas, offset=off, tol=self.tol)
        out = [lift(res.coefs[k], len(ys)) for k in range(len(alphas))]
        sel = None
        if per_target:  # BIC on the deviance (logistic targets have no relaxed residual)
            dev = res.info["deviance"]                                   # [n_alphas, n_targets]
            df = np.vstack([np.diff(c.indptr) for c in res.coefs])
            crit = dev + df * math.log(n_rows)
            k_sel = np.argmin(crit, axis=0)
            sel = lift(select.pick_rows(res.coefs, k_sel), len(ys))
        return y_info["names"], out, sel


def _read_blocks(reads, sites: Sequence[str], n_rows: int) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """``reads`` checked and ordered: ``[(head, [(pathway, [n_rows, d] array), ...]), ...]`` in site order, pathways
    sorted."""
    if reads is None:
        return []
    if not isinstance(reads, Mapping):
        raise TypeError(f"reads must map head sites to {{pathway: array}}, got {type(reads).__name__}")
    out = []
    for head, block in reads.items():
        if head not in sites or parse_site(head).kind != "head":
            raise ValueError(f"reads has {head!r}, which is not a head site of this fit (sites: {list(sites)})")
        if not isinstance(block, Mapping) or not block:
            raise TypeError(f"reads[{head!r}] must map pathway names (e.g. 'q', 'k') to arrays, got {block!r}")
        arrays = []
        for via in sorted(block):
            if not isinstance(via, str) or not via.isidentifier():
                raise ValueError(f"reads[{head!r}] pathway names are identifiers like 'q' or 'k', got {via!r}")
            a = np.asarray(block[via])
            if a.ndim != 2 or a.shape[0] != n_rows:
                raise ValueError(f"reads[{head!r}][{via!r}] must be [{n_rows}, d] (one row per captured row), "
                                 f"got shape {a.shape}")
            arrays.append((via, a))
        out.append((head, arrays))
    return sorted(out, key=lambda hb: list(sites).index(hb[0]))


def _triplets(m: sp.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, values)`` of a sparse matrix in its stored (row-major for CSR) order, like ``m.tocoo()``
    without building a COO matrix."""
    if sp.isspmatrix_csr(m) or isinstance(m, sp.csr_array):
        return np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr)), m.indices, m.data
    c = m.tocoo()
    return c.row, c.col, c.data


def _assemble(parts: list[tuple], n_cols: int) -> sp.csr_matrix:
    """One canonical CSR ``[n_cols, n_cols]`` from ``(rows, cols, values)`` triplets of disjoint target
    blocks (one conversion instead of a sum of sparse matrices); explicit zeros are dropped."""
    if not parts:
        return sp.csr_matrix((n_cols, n_cols))
    rows, cols, vals = (np.concatenate(x) for x in zip(*parts))
    out = sp.csr_matrix((vals, (rows, cols)), shape=(n_cols, n_cols))
    out.sum_duplicates()
    out.eliminate_zeros()
    return out


def _kept(probability: sp.csr_matrix, pi_thr: float) -> sp.csr_matrix:
    """0/1 CSR of the pairs whose selection probability reaches ``pi_thr``."""
    keep = probability.copy()
    keep.data = (keep.data >= pi_thr - 1e-12).astype(np.float64)
    keep.eliminate_zeros()
    return keep


def _stable_coef(coefs: list[sp.csr_matrix], keep: sp.csr_matrix) -> sp.csr_matrix:
    """The kept pairs' full-data coefficients at the last grid point where each is nonzero."""
    shape = keep.shape
    parts = [(k,) + _triplets(c) for k, c in enumerate(coefs) if c.nnz]
    if not parts or keep.nnz == 0:
        return sp.csr_matrix(shape)
    ks = np.concatenate([np.full(len(p[1]), p[0]) for p in parts])
    r, c, v = (np.concatenate([p[i] for p in parts]) for i in (1, 2, 3))
    nz = v != 0
    ks, r, c, v = ks[nz], r[nz], c[nz], v[nz]
    key = r.astype(np.int64) * shape[1] + c
    order = np.lexsort((-ks, key))          # by pair, the last grid point first
    first = np.ones(order.size, dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    o = order[first]
    K = keep.tocoo()
    kept = np.isin(key[o], K.row.astype(np.int64) * shape[1] + K.col)
    o = o[kept]
    return sp.csr_matrix((v[o], (r[o], c[o])), shape=shape)


def _collinear_sites(layout: Layout, design: Any, mean: np.ndarray, alive: np.ndarray,
                     problems: list) -> pd.DataFrame | None:
    """Component level: source sites whose captured output has a direction that is a (near) linear function
    of the sites before it (:func:`circuitkit.fit.collinear.collinear_blocks` on the centred live columns).
    ``None`` at feature level or when the check would cost more than ``COLLINEAR_MAX_WORK``."""
    if layout.kind != "component" or sp.issparse(design) or not problems:
        return None
    n_live = int(alive.sum())
    if design.shape[0] * n_live ** 2 > COLLINEAR_MAX_WORK:
        logger.info("CircuitLasso: collinearity check skipped (%d rows x %d live columns; collinear_sites_ = None)",
                    design.shape[0], n_live)
        return None
    nodes = np.arange(len(layout.node_cols)) if layout.is_source is None else np.flatnonzero(layout.is_source)
    pos = {int(i): k for k, i in enumerate(nodes)}
    used = np.unique(np.concatenate([layout.col_node[scols] for _, scols in problems]))
    blocks = []
    for i in nodes:
        cols = layout.node_cols[i]
        live = cols[alive[cols]]
        blocks.append(design[:, live] - mean[live])
    names = layout.nodes["node"].to_numpy()[nodes].tolist()
    return collinear_blocks(blocks, names, check=[pos[int(i)] for i in used], r2_threshold=COLLINEAR_R2)


def _collinear_groups(layout: Layout, design: Any, std: np.ndarray, alive: np.ndarray) -> list[list[str]]:
    """Groups of single-column nodes (SAE features) whose standardised columns are identical (e.g. features
    active in the same single row); such sources are interchangeable for every Lasso."""
    if not sp.issparse(design):
        return []
    X = sp.csc_matrix(design)
    width = np.array([len(c) for c in layout.node_cols])
    by_key: dict[bytes, list[int]] = {}
    names = layout.nodes["node"].to_numpy()
    for i in np.flatnonzero(width == 1):
        j = int(layout.node_cols[i][0])
        if not alive[j]:
            continue
        lo, hi = X.indptr[j], X.indptr[j + 1]
        mean = X.data[lo:hi].sum() / X.shape[0]
        z = np.round((X.data[lo:hi] - mean) / std[j], 9)
        key = X.indices[lo:hi].tobytes() + b"|" + z.tobytes() + b"|" + np.round(-mean / std[j], 9).tobytes()
        by_key.setdefault(key, []).append(i)
    return [[str(names[i]) for i in g] for g in by_key.values() if len(g) > 1]


def __getattr__(name: str) -> Any:
    # old import paths (one release)
    if name == "logistic_path":
        from .logistic import logistic_path

        return logistic_path
    if name == "_relaxed_rss":
        return select.relaxed_rss
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
