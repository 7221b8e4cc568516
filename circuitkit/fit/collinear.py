"""Collinear sites: blocks of columns that are (near) linear functions of the blocks before them.

Observational data cannot tell a true parent from a site that is an exact linear function of other sites
on the captured rows: any coefficient on one can be moved to the others. Both
:class:`~circuitkit.fit.lasso.CircuitLasso` (component level) and
:class:`~circuitkit.fit.group.GroupCircuitLasso` report such sites with :func:`collinear_blocks`.

The test, for block ``i`` (centred columns): the squared canonical correlations between the column span
of block ``i`` and the span of all blocks ``0 .. i-1``, i.e. the squared singular values of ``Q' U_i``
with ``U_i`` an orthonormal basis of block ``i`` and ``Q`` one of the earlier blocks. A value of 1 means a
direction of block ``i`` is exactly a linear combination of earlier columns (the R^2 of that least-squares
fit). ``Q`` is grown block by block (the part of each block's basis orthogonal to ``Q``), so the whole
check costs one pass over the blocks: ``O(n p^2)`` for ``p`` total columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: a block's own directions with singular value below this fraction of its largest are numerically zero
#: (float32 captures)
BLOCK_RTOL = 1e-6
#: a direction joins the basis of earlier blocks when its part orthogonal to them has at least this norm
BASIS_TOL = 1e-10
#: an earlier block is named as a source of a collinear block when it carries at least this fraction of
#: the squared projection of the most collinear direction
SOURCE_SHARE = 0.01

COLUMNS = ["site", "r2", "n_dims", "n_columns", "sources"]


def _basis(a: np.ndarray, *, orthonormal: bool) -> np.ndarray:
    if orthonormal:
        return a
    if a.shape[1] == 0:
        return a
    u, sv, _ = np.linalg.svd(a, full_matrices=False)
    if sv.size == 0 or sv[0] <= 0:
        return u[:, :0]
    return u[:, sv > BLOCK_RTOL * sv[0]]


def collinear_blocks(blocks: Sequence[np.ndarray], names: Sequence[str], *, check: Sequence[int] | None = None,
                     r2_threshold: float = 1 - 1e-6, orthonormal: bool = False) -> pd.DataFrame:
    """Blocks with a direction whose squared canonical correlation with all earlier blocks exceeds
    ``r2_threshold`` (module docstring).

    ``blocks``: ``[n, d_i]`` arrays with centred columns, in order; ``names`` name them. ``check``: the block
    indices to test (default all; block 0 has nothing before it). ``orthonormal=True``: every block's columns
    are already an orthonormal basis of its span (e.g. whitened PCA scores divided by ``sqrt(n)``).

    Returns a DataFrame with one row per collinear block: ``site``, ``r2`` (the largest squared canonical
    correlation), ``n_dims`` (directions above the threshold), ``n_columns`` (the block's rank) and
    ``sources`` (the earlier blocks carrying at least :data:`SOURCE_SHARE` of the most collinear direction's
    projection, attributed in block order: a direction shared by two earlier blocks counts for the first).
    """
    if len(blocks) != len(names):
        raise ValueError(f"got {len(blocks)} blocks but {len(names)} names")
    want = set(range(len(blocks))) if check is None else {int(i) for i in check}
    last = max(want, default=-1)
    n = blocks[0].shape[0] if blocks else 0
    Q = np.zeros((n, 0))
    owner = np.zeros(0, dtype=np.int64)   # block that contributed each column of Q
    rows = []
    for i in range(last + 1):
        U = _basis(np.asarray(blocks[i], dtype=np.float64), orthonormal=orthonormal)
        if U.shape[1] == 0:
            continue
        P = Q.T @ U
        if i in want and Q.shape[1]:
            left, cc, _ = np.linalg.svd(P, full_matrices=False)
            r2 = np.clip(cc ** 2, 0.0, 1.0)
            hit = int(np.sum(r2 > r2_threshold))
            if hit:
                share = np.bincount(owner, weights=left[:, 0] ** 2, minlength=len(blocks))
                share = share / max(share.sum(), 1e-300)
                sources = [str(names[j]) for j in np.flatnonzero(share >= SOURCE_SHARE)]
                rows.append({"site": str(names[i]), "r2": float(r2.max()), "n_dims": hit,
                             "n_columns": int(U.shape[1]), "sources": sources})
        if i < last:
            R = U
            if Q.shape[1]:  # Gram-Schmidt against Q, twice (one pass loses orthogonality for near-dependent U)
                R = U - Q @ P
                R = R - Q @ (Q.T @ R)
            ur, sr, _ = np.linalg.svd(R, full_matrices=False)
            new = ur[:, sr > BASIS_TOL]
            Q = np.hstack([Q, new])
            owner = np.concatenate([owner, np.full(new.shape[1], i, dtype=np.int64)])
    return pd.DataFrame(rows, columns=COLUMNS)


__all__ = ["BASIS_TOL", "BLOCK_RTOL", "COLUMNS", "SOURCE_SHARE", "collinear_blocks"]
