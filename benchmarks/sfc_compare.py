"""SFC (attribution patching of SAE features) vs CircuitLasso feature circuits, scored by the same ablation.

Both methods see the same fit prompts; both are scored by :func:`circuitkit.faithfulness.feature_faithfulness`
(mean ablation of every feature outside the top-N, error nodes kept, logit difference at the last token) on
held-out prompts. Node rankings:

* SFC: feature nodes by mean ``|IE|`` over the fit prompts (``circuit.nodes["abs_effect"]``);
* CircuitLasso (``fit(feats, y)`` with ``y`` = the logit difference, features captured at the last token): feature
  nodes by the regularisation-path entry of their edge into ``y`` (largest alpha first), ties by ``|weight|`` at
  the selected alpha; features that never enter ``y`` on the path are unranked (so CircuitLasso may have fewer
  than N nodes to offer: the table says how many it had).
* random: N features drawn uniformly (seed 0) from the SAE sites, as a floor.

Run: ``PYTHONPATH=. CIRCUITKIT_DATA=data OMP_NUM_THREADS=1 python benchmarks/sfc_compare.py --model toylm``
(``--model smollm2`` needs the SmolLM2 wheel and its SAEs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def _log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def _batches(rows, lengths_of):
    """Group row indices by token length -> list of index lists (one batch per length)."""
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(lengths_of(r), []).append(i)
    return [groups[k] for k in sorted(groups)]


def _prepare(tok, df, bos: bool):
    ids = [tok(p)["input_ids"] if bos else tok.encode(p) for p in df["prompt"]]
    groups = _batches(ids, len)
    x = [torch.tensor([ids[i] for i in g]) for g in groups]
    a = [torch.tensor([int(df["answer_id"].iloc[i]) for i in g]) for g in groups]
    d = [torch.tensor([int(df["distractor_id"].iloc[i]) for i in g]) for g in groups]
    order = [i for g in groups for i in g]
    return x, a, d, order


def _lasso_ranking(circ):
    """y-path entry order (module docstring), then the other feature nodes of the selected graph by their
    largest incident edge score."""
    path = circ.path
    into = path[path["target"] == "y"]
    entry = into.groupby("source")["alpha"].max()
    final = circ.edges[circ.edges["target"] == "y"].set_index("source")["score"]
    keys = [(float(entry[s]), float(final.get(s, 0.0)), s) for s in entry.index if "/f" in s]
    keys.sort(key=lambda k: (-k[0], -k[1], k[2]))
    ranked = [k[2] for k in keys]
    e = circ.edges[circ.edges["target"] != "y"]
    inc = (e.melt(id_vars=["score"], value_vars=["source", "target"])
           .groupby("value")["score"].max().sort_values(ascending=False, kind="mergesort"))
    seen = set(ranked)
    return ranked + [n for n in inc.index if "/f" in n and n not in seen]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("toylm", "smollm2"), default="toylm")
    ap.add_argument("--n-fit", type=int, default=64)
    ap.add_argument("--n-eval", type=int, default=64)
    ap.add_argument("--sizes", default="10,20,50,100,200,500,1000,2000")
    ap.add_argument("--sites", default=None, help="comma-separated SAE sites to use (default: every SAE)")
    ap.add_argument("--ig", action="store_true", help="also run SFC with integrated gradients (10 steps)")
    ap.add_argument("--lasso-targets", default="all", choices=("all", "y"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip-edges", action="store_true", help="time SFC without its edge pass only")
    args = ap.parse_args()

    import circuitkit as ck
    from circuitkit.baselines.sfc import sfc_circuit
    from circuitkit.faithfulness import feature_faithfulness
    from circuitkit.fit.lasso import CircuitLasso
    from circuitkit.sae import attach_saes

    if args.model == "toylm":
        from circuitkit.datasets.templates import ioi
        from circuitkit.models.toylm import load_toy_lm, load_toy_saes

        model, tok = load_toy_lm()
        saes = attach_saes(load_toy_saes())

        def frame(n, seed):
            df = ioi(n, seed=seed)
            df["answer_id"] = [tok.convert_tokens_to_ids(w) for w in df["answer"]]
            df["distractor_id"] = [tok.convert_tokens_to_ids(w) for w in df["distractor"]]
            return df

        fit_df = frame(args.n_fit, 0)
        ev_df = frame(args.n_eval + args.n_fit, 1)
        ev_df = ev_df[~ev_df["prompt"].isin(set(fit_df["prompt"]))].head(args.n_eval).reset_index(drop=True)
        bos = True
        lm = ck.load_model(model, tokenizer=tok, name="circuitkit-toylm")
    else:
        from circuitkit.datasets.real import ioi
        from circuitkit.models.smollm2 import MODEL_NAME, load_smollm2, load_smollm2_saes

        model, tok = load_smollm2()
        saes = attach_saes(load_smollm2_saes())
        fit_df = ioi(tok, args.n_fit, seed=0, split="train")
        ev_df = ioi(tok, args.n_eval, seed=0, split="test")
        bos = False
        lm = ck.load_model(model, tokenizer=tok, name=MODEL_NAME)
    model.eval()
    if args.sites:
        saes = {s: saes[s] for s in args.sites.split(",")}
    sites = list(saes)
    fx, fa, fd, forder = _prepare(tok, fit_df, bos)
    ex, ea, edd, _ = _prepare(tok, ev_df, bos)
    eval_kw = {"ablation": "mean", "metric": "logit_diff", "answer": ea, "distractor": edd, "batch_size": 64}
    res: dict = {"model": args.model, "sites": sites, "n_fit": len(fit_df), "n_eval": len(ev_df), "methods": {}}

    # -- SFC -----------------------------------------------------------------------------------------------
    rankings: dict[str, list[str]] = {}
    runs = [("sfc", {"method": "attrib"})] + ([("sfc-ig", {"method": "ig", "steps": 10})] if args.ig else [])
    for name, kw in runs:
        _log(f"{name}: start")
        t = time.perf_counter()
        circ = sfc_circuit(model, saes, fx, answer=fa, distractor=fd, ablation="mean", edges=not args.skip_edges,
                           **kw)
        sec = time.perf_counter() - t
        _log(f"{name}: {sec:.1f} s, {circ.meta['n_nodes_kept']} nodes kept")
        nodes = circ.nodes[circ.nodes["kind"] == "feature"].sort_values("abs_effect", ascending=False, kind="mergesort")
        rankings[name] = nodes["node"].tolist()
        res["methods"][name] = {"seconds": sec, "n_edges": circ.n_edges, "n_nodes_kept": circ.meta["n_nodes_kept"],
                                "m_clean": circ.meta["m_clean"]}
        t = time.perf_counter()
        sfc_circuit(model, saes, fx, answer=fa, distractor=fd, ablation="mean", edges=False, **kw)
        res["methods"][name]["seconds_nodes_only"] = time.perf_counter() - t

    # -- CircuitLasso: capture at the last token, encode, fit the feature graph and y ----------------------
    _log("circuitlasso: start")
    t = time.perf_counter()
    from circuitkit.runtime.capturing import next_token_logits

    prompts = [fit_df["prompt"].iloc[i] for i in forder]
    logits = next_token_logits(lm, prompts, batch_size=64).double().numpy()
    rows = np.arange(len(prompts))
    y = (logits[rows, fit_df["answer_id"].to_numpy()[forder]] - logits[rows, fit_df["distractor_id"].to_numpy()[forder]])
    acts = ck.capture(lm, prompts, sites=sites, positions="last", batch_size=64, progress=False)
    feats = ck.encode(acts, saes)
    t_cap = time.perf_counter() - t
    est = CircuitLasso(n_alphas=8, min_target_freq=0.05, n_jobs=1, targets=args.lasso_targets).fit(feats, y)
    sec = time.perf_counter() - t
    rankings["circuitlasso"] = _lasso_ranking(est.circuit_)
    res["methods"]["circuitlasso"] = {"seconds": sec, "seconds_capture": t_cap, "n_edges": est.circuit_.n_edges,
                                      "targets": args.lasso_targets, "n_ranked": len(rankings["circuitlasso"]),
                                      "mean_y": float(y.mean())}

    _log(f"circuitlasso: {sec:.1f} s")
    rng = np.random.default_rng(0)
    every = [f"{s}/f{i}" for s in sites for i in range(int(saes[s].cfg.d_sae))]
    rankings["random"] = [every[i] for i in rng.permutation(len(every))]

    # -- held-out faithfulness at each N ---------------------------------------------------------------------
    sizes = [int(s) for s in args.sizes.split(",")]
    table = []
    for n in sizes:
        row = {"N": n}
        for name, rk in rankings.items():
            if len(rk) < n:
                row[name] = None
                continue
            r = feature_faithfulness(model, ex, rk[:n], saes, **eval_kw)
            _log(f"N={n} {name}: faithfulness {r['faithfulness']:.3f}")
            row[name] = r["faithfulness"]
            row[name + "_completeness"] = r["completeness"]
            res.setdefault("m_full", r["m_full"])
            res.setdefault("m_empty", r["m_empty"])
        table.append(row)
    res["table"] = table
    out = json.dumps(res, indent=1, default=float)
    if args.json:
        with open(args.json, "w") as f:
            f.write(out)
    print(out)


if __name__ == "__main__":
    main()
