"""Stability selection with a prediction target on the SmolLM2 demo data (benchmarks/scale.md).

160 held-out IOI prompts, the four SmolLM2 SAE sites at the last token, ``y`` = logit difference;
``CircuitLasso(n_alphas=8, min_target_freq=0.05)`` with eBIC (the demo's) and with ``selection="stability"``
(defaults: 25 pairs, q = 5 per site target, q_y for y from its bound share, pi = 0.6). Prints a table (seconds, edges, edges into y, E[V] bound) and writes
JSON.

Run: PYTHONPATH=. CIRCUITKIT_DATA=data OMP_NUM_THREADS=1 python benchmarks/stability_demo.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from circuitkit import capture, encode, load_model
from circuitkit.datasets.real import ioi
from circuitkit.fit.lasso import CircuitLasso
from circuitkit.models.smollm2 import MODEL_NAME, load_smollm2, load_smollm2_saes
from circuitkit.runtime.capturing import next_token_logits
from circuitkit.sae import hook_to_site


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="outputs/stability_demo.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    model, tok = load_smollm2()
    lm = load_model(model, tokenizer=tok, name=MODEL_NAME)
    saes = load_smollm2_saes()
    sites = [hook_to_site(h) for h in saes]
    df = ioi(tok, 160, seed=0, split="test")
    prompts = df["prompt"].tolist()
    lg = next_token_logits(lm, prompts, batch_size=32).numpy()
    rows = np.arange(len(df))
    y = lg[rows, df["answer_id"].to_numpy(np.int64)] - lg[rows, df["distractor_id"].to_numpy(np.int64)]
    feats = encode(capture(lm, prompts, sites=sites, positions="last", batch_size=32, progress=False), saes)
    records = []
    for selection in ("ebic", "stability"):
        t = time.perf_counter()
        est = CircuitLasso(n_alphas=8, min_target_freq=0.05, n_jobs=1, progress=False, selection=selection).fit(feats, y)
        c = est.circuit_
        records.append({"selection": selection, "seconds": time.perf_counter() - t, "n_edges": int(c.n_edges),
                        "edges_into_y": int((c.edges["target"] == "y").sum()),
                        "expected_false_edges_bound": c.meta.get("expected_false_edges_bound"),
                        "q_y": c.meta.get("q_y")})
    print("| selection | seconds | edges | edges into y | E[V] bound |\n|---|---|---|---|---|")
    for r in records:
        print(f"| {r['selection']} | {r['seconds']:.1f} | {r['n_edges']} | {r['edges_into_y']} | "
              f"{r['expected_false_edges_bound'] if r['expected_false_edges_bound'] is not None else '-'} |")
    from pathlib import Path

    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
