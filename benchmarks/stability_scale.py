"""Stability selection vs EBIC on planted SAE-like data (circuitkit.bench.scale.make_pair).

Usage: OMP_NUM_THREADS=1 python benchmarks/stability_scale.py --D 1024 --M 10000 --pairs 10 --q 5 --n-jobs 2
Prints one markdown row per selection: edges, false edges, precision, recall (planted edges whose source is a
candidate, i.e. active in >= 5 rows), seconds, and for stability the E[V] bound.

The bench CLI has the same comparison on its own fit pipeline (rows_per_edge=1, the library's default
min_source_rows), with the negative-edge recall and the reachable-rows refit next to it:
``python -m circuitkit bench scale --sizes 1024 --no-naive --no-capture --selection ebic stability``."""

import argparse
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from circuitkit.bench import scale
from circuitkit.features import Features
from circuitkit.fit.lasso import CircuitLasso


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--D", type=int, default=1024)
    ap.add_argument("--M", type=int, default=10_000)
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--q", type=int, default=5)
    ap.add_argument("--pi", type=float, default=0.6)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    Zs, Zt, A = scale.make_pair(a.D, a.M, seed=a.seed)
    idx = pd.DataFrame({"prompt": np.arange(a.M), "position": 0, "token": ""})
    feats = Features({"L0.resid_post": sp.csr_matrix(Zs), "L1.resid_post": sp.csr_matrix(Zt)}, {}, idx)
    ok = np.asarray((Zs != 0).sum(axis=0)).ravel() >= 5
    n_planted = int(ok[A.tocoo().row].sum())
    print(f"D={a.D} M={a.M} planted={A.nnz} (candidate source: {n_planted})")
    print("| selection | edges | false | precision | recall | seconds | E[V] bound |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for kw in ({"selection": "ebic", "min_source_rows": 5},
               {"selection": "stability", "stability_b": a.pairs, "stability_q": a.q, "stability_pi": a.pi}):
        t = time.perf_counter()
        c = CircuitLasso(include_errors=False, progress=False, n_jobs=a.n_jobs, **kw).fit(feats).circuit_
        sec = time.perf_counter() - t
        base = base or sec
        e = c.edges
        s = e["source"].str.split("/f").str[1].astype(int).to_numpy()
        tg = e["target"].str.split("/f").str[1].astype(int).to_numpy()
        true = np.asarray(A[s, tg]).ravel() != 0
        bound = c.meta.get("expected_false_edges_bound", float("nan"))
        print(f"| {kw['selection']} | {len(e)} | {int((~true).sum())} | {true.mean() if len(e) else float('nan'):.3f} "
              f"| {true.sum() / n_planted:.3f} | {sec:.1f} ({sec / base:.1f}x) | {bound:.1f} |")


if __name__ == "__main__":
    main()
