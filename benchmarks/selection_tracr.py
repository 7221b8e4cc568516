"""Selected circuits on the Tracr suite and holdout: stability selection (the default) vs eBIC.

For every task of both splits: capture + CircuitLasso as ``bench ground-truth`` runs it (400 prompts, seed 0,
one warm-up call on 8 prompts), once with ``selection="stability"`` and once with ``selection="ebic"``. Reports
the SHD of each *selected* circuit against the compiled program's true edges (``shd_selected``), the number
of selected edges, the stated E[V] bound, the path AUROC (the same for both: the path does not depend on the
selection) and seconds. Prints per-split means and writes JSON.

Run: PYTHONPATH=. CIRCUITKIT_DATA=$PWD/data OMP_NUM_THREADS=1 python benchmarks/selection_tracr.py \
        [--json outputs/selection_tracr.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import pandas as pd

from circuitkit.baselines.eap import circuitlasso
from circuitkit.bench.ground_truth import DEFAULT_N, make_prompts
from circuitkit.evaluate import candidate_edges, edge_metrics
from circuitkit.models.tracr import list_tracr_tasks, load_tracr_task

MODES = ("stability", "ebic")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="outputs/selection_tracr.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    out = []
    for split in ("suite", "holdout"):
        for name in list_tracr_tasks(split):
            task = load_tracr_task(name)
            clean, _ = make_prompts(task, DEFAULT_N, seed=0)
            cands = candidate_edges(task.sites)
            for mode in MODES:
                circuitlasso(task.model, clean[:8], sites=task.sites, selection=mode)
                t = time.perf_counter()
                c = circuitlasso(task.model, clean, sites=task.sites, selection=mode)
                secs = time.perf_counter() - t
                met = edge_metrics(c, task.true_edges, candidates=cands)
                out.append({"split": split, "task": name, "selection": mode, "shd_selected": met["shd_selected"],
                            "auroc": met["auroc"], "n_true": met["n_true"], "n_selected": int(c.n_edges),
                            "expected_false_edges_bound": c.meta.get("expected_false_edges_bound"),
                            "seconds": secs})
    df = pd.DataFrame(out)
    summary = df.groupby(["split", "selection"]).agg(shd_selected=("shd_selected", "mean"), auroc=("auroc", "mean"),
                                                     n_selected=("n_selected", "mean"), n_true=("n_true", "mean"),
                                                     seconds=("seconds", "sum")).reset_index()
    print("| split | selection | mean SHD (selected) | mean AUROC | mean edges | mean true | total seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in summary.itertuples():
        print(f"| {r.split} | {r.selection} | {r.shd_selected:.2f} | {r.auroc:.3f} | {r.n_selected:.1f} | "
              f"{r.n_true:.1f} | {r.seconds:.1f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
