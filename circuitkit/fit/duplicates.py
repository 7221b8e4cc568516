"""Duplicate source columns: one variable to every Lasso, fitted once and credited to every copy.

At component level a site often writes a column that is an exact affine function of one column of an earlier
site on the captured rows: a Tracr MLP that maps each token to a category writes a one-hot that repeats the
token embedding's, a numerical MLP rescales one input. After standardisation the two columns are equal up to
sign. The Lasso objective then cannot tell them apart: any split of a coefficient between them (with matching
signs) is optimal, and which copy a solver credits is an accident of its coordinate order (celer, ``"gram"`` and
``"dense"`` pick differently). Every edge between the copies' sites and their targets would be decided by that
accident.

:class:`CircuitLasso` (component level, dense designs) therefore

1. finds groups of candidate source columns whose standardised values have ``|correlation| >=``
   :data:`DUPLICATE_CORR` (from the Gram of the source columns; :func:`find_duplicates`);
2. in each target block, fits one representative per group (the group's first column among the block's
   candidates) and drops the other copies from the design (:func:`reduce_block`);
3. splits the representative's coefficient equally among the block's copies, each with its sign relative to
   the representative (:meth:`BlockReduction.expand`). The split is itself an optimal solution of the original
   problem (the fitted values and the l1 norm are unchanged), and the one that treats the copies alike: every
   copy enters the path at the same alpha, and stability selection selects all of them or none.

Only *exact* copies are merged (up to float32 rounding of the captures). A site that is a linear function of
*several* earlier columns is not a copy of any one of them; it is reported by
:func:`circuitkit.fit.collinear.collinear_blocks` (``collinear_sites_``) and fitted as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .solvers import DenseCoefs

#: two standardised columns are copies when ``|correlation|`` is at least this (float32 rounding of one variable
#: leaves ``1 - |corr|`` around 1e-14; distinct variables of the Tracr and toy-LM designs stay below 1 - 1e-6)
DUPLICATE_CORR = 1 - 1e-9
#: rows of the Gram compared at a time
CHUNK_ROWS = 1024


@dataclass
class DuplicateGroups:
    """Groups of design columns that are copies of one another: ``groups[g]`` the columns (increasing),
    ``signs[g]`` each one's sign relative to the group's first column."""

    groups: list[np.ndarray]
    signs: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.groups)


def find_duplicates(gram: np.ndarray, cols: np.ndarray, *, threshold: float = DUPLICATE_CORR) -> DuplicateGroups:
    """Groups of copies among ``cols`` from the Gram ``gram`` of their centred columns (``gram[a, b]`` pairs
    ``cols[a]`` with ``cols[b]``). ``|G_ab| >= threshold * sqrt(G_aa G_bb)`` makes ``a`` and ``b`` copies;
    groups are the connected components of that relation."""
    cols = np.asarray(cols, dtype=np.int64)
    d = np.sqrt(np.maximum(np.diag(gram), 0.0))
    live = d > 0
    inv = np.where(live, 1.0 / np.where(live, d, 1.0), 0.0)
    rows, cols_hit = [], []
    for lo in range(0, gram.shape[0], CHUNK_ROWS):   # row chunks: no second [p, p] array at SmolLM2 size
        c = np.abs(gram[lo:lo + CHUNK_ROWS]) * inv[lo:lo + CHUNK_ROWS, None] * inv[None, :]
        r, k = np.nonzero(c >= threshold)
        keep = r + lo != k
        rows.append(r[keep] + lo)
        cols_hit.append(k[keep])
    r, k = np.concatenate(rows), np.concatenate(cols_hit)
    if r.size == 0:
        return DuplicateGroups([], [])
    hit = sp.csr_matrix((np.ones(r.size), (r, k)), shape=gram.shape)
    n_comp, label = sp.csgraph.connected_components(hit, directed=False)
    groups, signs = [], []
    for c in range(n_comp):
        members = np.flatnonzero(label == c)
        if members.size < 2:
            continue
        order = members[np.argsort(cols[members], kind="stable")]
        groups.append(cols[order])
        signs.append(np.where(gram[order[0], order] < 0, -1.0, 1.0))
    return DuplicateGroups(groups, signs)


@dataclass
class BlockReduction:
    """One target block's candidates with copies merged: ``scols`` the columns fitted (one per group present in
    the block) and ``expand_matrix`` ``[len(scols), len(full)]`` mapping their coefficients back onto the block's
    full candidate list ``full``."""

    scols: np.ndarray
    full: np.ndarray
    expand_matrix: sp.csr_matrix

    def expand(self, coef: sp.spmatrix) -> sp.csr_matrix:
        """``[n_targets, len(full)]`` coefficients: each representative's coefficient split equally among its
        copies in the block, with their signs."""
        out = sp.csr_matrix(sp.csr_matrix(coef) @ self.expand_matrix)
        out.sort_indices()
        return out

    def expand_path(self, coefs):
        """:meth:`expand` at every grid point of ``PathResult.coefs`` (a :class:`~circuitkit.fit.solvers.DenseCoefs`
        stays one)."""
        if isinstance(coefs, DenseCoefs):
            return coefs.matmul(self.expand_matrix)
        return [self.expand(c) for c in coefs]

    def expand_pairs(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(row, fitted column, value)`` triplets (e.g. selection probabilities; design column indices) -> the
        same row and value for every copy of each column."""
        E = self.expand_matrix
        pos = np.searchsorted(self.scols, cols)
        counts = np.diff(E.indptr)[pos]
        take = np.concatenate([E.indices[E.indptr[q]:E.indptr[q + 1]] for q in pos]) if pos.size else \
            np.empty(0, np.int64)
        return np.repeat(rows, counts), self.full[take], np.repeat(values, counts)


def reduce_block(scols: np.ndarray, dups: DuplicateGroups) -> BlockReduction | None:
    """The block's candidate columns ``scols`` (increasing) with every group's copies after the first present
    one dropped; ``None`` when the block holds no two copies of one group."""
    scols = np.asarray(scols, dtype=np.int64)
    rep_of = np.arange(scols.size)
    factor = np.ones(scols.size)
    merged = False
    for g, s in zip(dups.groups, dups.signs):
        inside = np.isin(g, scols)
        if inside.sum() < 2:
            continue
        merged = True
        pos = np.searchsorted(scols, g[inside])
        sign = s[inside] * s[inside][0]
        rep_of[pos] = pos[0]
        factor[pos] = sign / pos.size
    if not merged:
        return None
    keep = np.unique(rep_of)
    new_pos = np.searchsorted(keep, rep_of)
    E = sp.csr_matrix((factor, (new_pos, np.arange(scols.size))), shape=(keep.size, scols.size))
    return BlockReduction(scols[keep], scols, E)


def reduce_problems(problems: Sequence[tuple[np.ndarray, np.ndarray]], dups: DuplicateGroups
                    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[BlockReduction | None]]:
    """``(target columns, fitted source columns)`` per block and each block's :class:`BlockReduction`
    (``None``: nothing merged)."""
    out, reductions = [], []
    for tcols, scols in problems:
        red = reduce_block(scols, dups) if len(dups) else None
        reductions.append(red)
        out.append((tcols, scols if red is None else red.scols))
    return out, reductions


def expand_selection(prob: sp.spmatrix, problems: Sequence[tuple[np.ndarray, np.ndarray]],
                     reductions: Sequence[BlockReduction | None]) -> sp.csr_matrix:
    """A ``[n_cols, n_cols]`` (rows targets) matrix of per-pair values over the fitted columns -- stability
    selection's probabilities -> the same with every copy of a merged source given its representative's value."""
    if all(r is None for r in reductions):
        return sp.csr_matrix(prob)
    P = sp.coo_matrix(prob)
    block = np.full(P.shape[0], -1, dtype=np.int64)
    for b, (tcols, _) in enumerate(problems):
        block[np.asarray(tcols, dtype=np.int64)] = b
    of = block[P.row]
    rows, cols, vals = [], [], []
    for b, red in enumerate(reductions):
        m = of == b
        if red is None:
            continue
        r, c, v = red.expand_pairs(P.row[m], P.col[m], P.data[m])
        rows.append(r)
        cols.append(c)
        vals.append(v)
        of[m] = -2  # handled
    keep = of != -2
    rows.append(P.row[keep])
    cols.append(P.col[keep])
    vals.append(P.data[keep])
    out = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=P.shape)
    out.sum_duplicates()
    return out


__all__ = ["DUPLICATE_CORR", "BlockReduction", "DuplicateGroups", "expand_selection", "find_duplicates",
           "reduce_block", "reduce_problems"]
