"""Tried and not adopted: scoring the edges out of a collinear site to its whole group (issue 15, item 3).

For every Tracr task of both splits: capture + ``CircuitLasso(selection="ebic")`` as ``bench ground-truth`` runs
it (400 prompts, seed 0). Then, for every site in ``collinear_sites_`` (a site with a direction that is a linear
function of earlier sites ``sources``), each edge out of any member of the group ``{site} + sources`` is given, at
every grid alpha, the largest score any member has to that target: the choice among the group is no longer the
Lasso's. Reports the path AUROC and top-|true| SHD with and without that rule. Prints per-split means and writes JSON.

Run: PYTHONPATH=. CIRCUITKIT_DATA=$PWD/data OMP_NUM_THREADS=1 python benchmarks/collinear_group_scoring.py \
        [--json benchmarks/collinear_group_scoring.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
from pathlib import Path

import pandas as pd

from circuitkit.baselines.eap import _observational_capture
from circuitkit.bench.ground_truth import DEFAULT_N, make_prompts
from circuitkit.evaluate import candidate_edges, edge_metrics
from circuitkit.fit.lasso import CircuitLasso
from circuitkit.models.tracr import list_tracr_tasks, load_tracr_task


def group_scored(circuit, collinear: pd.DataFrame, candidates: set) -> object:
    """A copy of ``circuit`` whose path gives every member of each collinear group the group's best score."""
    out = copy.deepcopy(circuit)
    path = out.path
    parts = [path]
    for r in collinear.itertuples():
        group = [r.site, *r.sources]
        sub = path[path["source"].isin(group)]
        for g in group:
            parts.append(sub.assign(source=g))
    merged = pd.concat(parts, ignore_index=True)
    merged = merged[[(s, t) in candidates for s, t in zip(merged["source"], merged["target"])]]
    out.path = merged.groupby(["alpha", "source", "target"], as_index=False).agg(
        weight=("weight", "first"), score=("score", "max"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="outputs/collinear_group_scoring.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    out = []
    for split in ("suite", "holdout"):
        for name in list_tracr_tasks(split):
            task = load_tracr_task(name)
            clean, _ = make_prompts(task, DEFAULT_N, seed=0)
            acts, _ = _observational_capture(task.model, clean, sites=task.sites, skip_first=1, batch_size=256)
            est = CircuitLasso(progress=False, selection="ebic").fit(acts)
            cands = candidate_edges(task.sites)
            base = edge_metrics(est.circuit_, task.true_edges, candidates=cands)
            coll = est.collinear_sites_
            n_coll = 0 if coll is None else len(coll)
            grp = (edge_metrics(group_scored(est.circuit_, coll, set(cands)), task.true_edges, candidates=cands)
                   if n_coll else base)
            out.append({"split": split, "task": name, "n_collinear_sites": n_coll, "auroc": base["auroc"],
                        "shd": base["shd"], "auroc_group": grp["auroc"], "shd_group": grp["shd"]})
    df = pd.DataFrame(out)
    print("| split | tasks | mean AUROC (Lasso's choice) | mean AUROC (group scored) | mean SHD | mean SHD (group) |")
    print("|---|---|---|---|---|---|")
    for split, g in df.groupby("split", sort=False):
        print(f"| {split} | {len(g)} | {g.auroc.mean():.3f} | {g.auroc_group.mean():.3f} | {g.shd.mean():.2f} | "
              f"{g.shd_group.mean():.2f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
