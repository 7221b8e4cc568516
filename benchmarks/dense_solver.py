"""Solver "dense" against "celer" on a synthetic design of the component-scale shape (benchmarks/component_scale.md).

The component-scale CircuitLasso (SmolLM2-135M, 500 prompts, sites compressed to at most 32 whitened principal
components) regresses each of 292 target blocks of at most 32 columns on *all* earlier columns: 500 rows and up
to ~9,000 columns. This script builds a design of that shape without the model:

* ``--n-blocks`` blocks (default 292) of 32 columns, 500 rows (``--n-rows``);
* block ``b`` is a random sparse linear function of 3 earlier blocks (one 32 x 32 map each, 10 % nonzero) plus
  Gaussian noise, then centred and PCA-whitened within the block (what ``compress_sites`` does);

then times both solvers, in the same process and interleaved, on a few target blocks at early, middle and late
positions (``--blocks``), each on all earlier columns with the estimator's grid (16 alphas from the global
``alpha_max`` down to 1 %), ``tol=1e-6`` (CircuitLasso's default). It prints seconds per block, the ratio, the
largest coefficient difference, and a linear-in-position extrapolation of both to all blocks (the cost of a block
grows with the number of earlier columns; the extrapolation integrates the measured per-block times as a piecewise
linear function of the block index).

Run: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/dense_solver.py [--blocks 5 146 291] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def synthetic_design(n_rows: int = 500, n_blocks: int = 292, width: int = 32, seed: int = 0) -> np.ndarray:
    """``[n_rows, n_blocks * width]``: blocks that depend sparsely on earlier ones, each whitened (docstring)."""
    rng = np.random.default_rng(seed)
    blocks = []
    for b in range(n_blocks):
        Z = rng.standard_normal((n_rows, width))
        if b > 0:
            for src in rng.choice(b, size=min(3, b), replace=False):
                A = rng.standard_normal((width, width)) * (rng.random((width, width)) < 0.1)
                Z += blocks[src] @ A
        Z -= Z.mean(axis=0)
        U, _, _ = np.linalg.svd(Z, full_matrices=False)
        blocks.append(U * np.sqrt(n_rows))  # whitened: unit variance, uncorrelated within the block
    X = np.hstack(blocks)
    return (X - X.mean(0)) / X.std(0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-rows", type=int, default=500)
    ap.add_argument("--n-blocks", type=int, default=292)
    ap.add_argument("--blocks", type=int, nargs="+", default=[5, 146, 291])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from circuitkit.fit.celer_solver import CelerSolver
    from circuitkit.fit.dense import DenseSolver

    width = 32
    X = synthetic_design(args.n_rows, args.n_blocks, width)
    n = args.n_rows
    amax = 0.0  # the estimator's global alpha_max over all blocks
    for b in range(1, args.n_blocks):
        amax = max(amax, float(np.abs(X[:, :b * width].T @ X[:, b * width:(b + 1) * width]).max()) / n)
    alphas = amax * np.geomspace(1.0, 1e-2, 16)
    DenseSolver().path(X[:, :width], X[:, width:2 * width], alphas)  # compile the kernels once
    rows = []
    for b in sorted(set(args.blocks)):
        if not 1 <= b < args.n_blocks:
            raise ValueError(f"--blocks must be in [1, {args.n_blocks - 1}], got {b}")
        Xb = np.asfortranarray(X[:, :b * width])
        Yb = np.asfortranarray(X[:, b * width:(b + 1) * width])
        t0 = time.perf_counter()
        rd = DenseSolver().path(Xb, Yb, alphas, tol=1e-6)
        t1 = time.perf_counter()
        rc = CelerSolver().path(Xb, Yb, alphas, tol=1e-6, max_iter=50)
        t2 = time.perf_counter()
        diff = max(float(np.abs(rd.coefs[k].toarray() - rc.coefs[k].toarray()).max()) for k in range(len(alphas)))
        nnz = int(np.diff(rd.coefs[-1].indptr).mean())
        rows.append({"block": b, "p": b * width, "dense_s": t1 - t0, "celer_s": t2 - t1, "ratio": (t2 - t1) / (t1 - t0),
                     "max_coef_diff": diff, "mean_support_last_alpha": nnz})
        print(f"block {b:4d}  p={b * width:5d}  dense {t1 - t0:7.2f} s  celer {t2 - t1:7.2f} s  "
              f"ratio {(t2 - t1) / (t1 - t0):5.1f}  max |coef diff| {diff:.1e}  support at alpha_min {nnz}")
    idx = np.array([r["block"] for r in rows], dtype=float)
    allb = np.arange(1, args.n_blocks)
    ext = {}
    for key in ("dense_s", "celer_s"):
        ext[key] = float(np.interp(allb, idx, [r[key] for r in rows]).sum())
    print(f"extrapolated to blocks 1..{args.n_blocks - 1}: dense {ext['dense_s']:.0f} s, celer {ext['celer_s']:.0f} s "
          f"(ratio {ext['celer_s'] / ext['dense_s']:.1f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "extrapolated": ext, "n_rows": n, "n_blocks": args.n_blocks}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
