"""Where CircuitLasso's time goes on the Tracr ground-truth suite (benchmarks/ground_truth.md, "Fixed costs").

Runs the ``circuitlasso`` method exactly as ``python -m circuitkit bench ground-truth`` calls it (the same
prompts: ``make_prompts(task, 400, seed=0)``; nnsight capture + default ``CircuitLasso``; one warm-up call on
8 prompts first), ``--repeats`` times per task, and splits each call's wall time into phases by timing the
functions that make them up:

* ``capture``: the nnsight trace of the clean prompts (``_observational_capture``), and the heads' queries and
  keys (``capture_qk``, when the method fits them);
* ``layout+stats``: the design matrix, column statistics and collinearity checks (``fit`` up to the
  standardised design, ``timing_["design"]``);
* ``standardise+grid``: the standardised design, target blocks and the alpha grid;
* ``solver``: the solver paths (``CelerSolver.path``, ``GramSolver.path``) and stability selection's batched
  half-sample fits (``gram.select_first_q``);
* ``selection``: per-target eBIC (``_select_per_target``) and reading the chosen rows (``select.pick_rows``);
* ``edges``: node edge tables at every grid point and of the selected circuit (``_node_edges``, and
  ``_path_edges`` where it exists);
* ``circuit``: building the :class:`~circuitkit.circuit.Circuit` (its checks and sorting);
* ``other``: the rest of the call (coefficient bookkeeping, path concatenation, meta).

The script runs on older checkouts too (``PYTHONPATH`` = that checkout), so a change's before and after can
be measured with the same instrumentation. Prints a table (phase, seconds summed over the suite, fraction of the total) and writes JSON.

Run: PYTHONPATH=. CIRCUITKIT_DATA=data OMP_NUM_THREADS=1 python benchmarks/overhead.py [--holdout]
     [--tasks hist sort] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import time
import warnings
from collections import defaultdict
from pathlib import Path

PHASES = ("capture", "layout+stats", "standardise+grid", "solver", "selection", "edges", "circuit", "other")


def _instrument(acc: dict[str, float]) -> None:
    """Wrap the functions that make up each phase so that their wall time adds to ``acc[phase]``."""
    from circuitkit.baselines import eap
    from circuitkit.circuit import Circuit
    from circuitkit.fit import celer_solver, lasso, select

    depth: dict[str, int] = defaultdict(int)

    def timed(phase, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            depth[phase] += 1  # a phase's functions may call each other (_grid -> _target_block): count once
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[phase] -= 1
                if depth[phase] == 0:
                    acc[phase] += time.perf_counter() - t
        return wrapper

    eap._observational_capture = timed("capture", eap._observational_capture)
    for name in ("_standardise", "_target_block", "_grid"):
        setattr(lasso.CircuitLasso, name, timed("standardise+grid", getattr(lasso.CircuitLasso, name)))
    lasso.CircuitLasso._select_per_target = timed("selection", lasso.CircuitLasso._select_per_target)
    select.pick_rows = timed("selection", select.pick_rows)
    for name in ("_node_edges", "_path_edges"):  # _path_edges: only after the bookkeeping was cut
        if hasattr(lasso.CircuitLasso, name):
            setattr(lasso.CircuitLasso, name, timed("edges", getattr(lasso.CircuitLasso, name)))
    celer_solver.CelerSolver.path = timed("solver", celer_solver.CelerSolver.path)
    try:  # solver "gram" (the auto choice for these designs since 2026-12-05) and its batched half-sample fits
        from circuitkit.fit import gram, qk

        gram.GramSolver.path = timed("solver", gram.GramSolver.path)
        gram.select_first_q = timed("solver", gram.select_first_q)
        eap_capture_qk = qk.capture_qk
        qk.capture_qk = timed("capture", eap_capture_qk)
    except ImportError:  # older checkouts
        pass
    Circuit.__post_init__ = timed("circuit", Circuit.__post_init__)


def run(tasks: list[str] | None, *, split: str, repeats: int, n_samples: int, method: str = "circuitlasso") -> dict:
    from circuitkit.baselines import get_method
    from circuitkit.bench.ground_truth import make_prompts
    from circuitkit.fit import lasso
    from circuitkit.models.tracr import list_tracr_tasks, load_tracr_task

    acc: dict[str, float] = defaultdict(float)
    _instrument(acc)
    design_s = [0.0]
    fit = lasso.CircuitLasso.fit

    def fit_recording(self, *args, **kwargs):
        out = fit(self, *args, **kwargs)
        design_s[0] += self.timing_["design"]
        return out

    lasso.CircuitLasso.fit = fit_recording
    method_name = method
    method = get_method(method_name)
    loaded = [load_tracr_task(t) for t in (tasks or list_tracr_tasks(split))]
    warm = loaded[0]
    c, k = make_prompts(warm, 8, seed=12345)
    method(warm.model, c, k, sites=warm.sites, output_kind=warm.output_kind)
    per_task, totals = [], defaultdict(float)
    for task in loaded:
        clean, corrupt = make_prompts(task, n_samples, seed=0)
        acc.clear()
        design_s[0] = 0.0
        t0 = time.perf_counter()
        for _ in range(repeats):
            method(task.model, clean, corrupt, sites=task.sites, output_kind=task.output_kind)
        wall = (time.perf_counter() - t0) / repeats
        ph = {p: acc[p] / repeats for p in PHASES if p in acc}
        ph["layout+stats"] = design_s[0] / repeats
        ph["other"] = wall - sum(ph.values())
        per_task.append({"task": task.name, "seconds": wall, "phases": ph})
        for p, s in ph.items():
            totals[p] += s
        totals["total"] += wall
    return {"split": split, "method": method_name, "repeats": repeats, "n_samples": n_samples, "tasks": per_task,
            "totals": {p: totals[p] for p in (*PHASES, "total")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=None, help="Tracr task names (default: every task of the split)")
    ap.add_argument("--holdout", action="store_true", help="the holdout split instead of the suite")
    ap.add_argument("--repeats", type=int, default=3, help="calls per task; seconds are per call (default 3)")
    ap.add_argument("--n-samples", type=int, default=400, help="prompts per task (default 400, the bench's)")
    ap.add_argument("--method", default="circuitlasso",
                    help="registered discovery method (default circuitlasso; circuitlasso-v: outputs only)")
    ap.add_argument("--json", default="outputs/overhead.json")
    args = ap.parse_args()
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    warnings.filterwarnings("ignore", category=UserWarning)
    res = run(args.tasks, split="holdout" if args.holdout else "suite", repeats=args.repeats,
              n_samples=args.n_samples, method=args.method)
    tot = res["totals"]
    n = len(res["tasks"])
    print(f"{res['method']} on {n} {res['split']} tasks, {res['n_samples']} prompts, mean of {res['repeats']} calls "
          f"per task; seconds summed over tasks")
    print("| phase | seconds | fraction |\n|---|---|---|")
    for p in PHASES:
        print(f"| {p} | {tot[p]:.3f} | {tot[p] / tot['total']:.2f} |")
    print(f"| total | {tot['total']:.3f} | 1.00 |")
    print(f"mean seconds per task: {tot['total'] / n:.4f}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
