"""Debiasing benchmark: CircuitLasso's prediction-target ranking vs SHIFT on synthetic Bias in Bios.

Protocol (:func:`circuitkit.debias.run_debias`; fixed seeds; ``benchmarks/debias.md``): the toy LM and its
sparse (k=4) embedding SAE (``--sae-layers``/``--sae-family`` choose other sites); a logistic-regression
profession probe on block 3's mean-pooled residual, trained on the ambiguous split; features ranked by
CircuitLasso (the Lasso of the probe's logit on the pooled SAE codes, iterated on what is left) and by SHIFT
(attribution patching to the probe's logit); the same automatic gender-purity rule on both candidate lists;
zero-ablation inside the forward pass; metrics on a balanced test split. ``seconds`` is the ranking time
(CircuitLasso: forward pass for the codes + its L1 paths + the rule; SHIFT: forward + backward passes; JIT
warm-up not counted), plus retraining for ``*-retrain``, and the probe's training time for
``original``/``oracle``.

Run::

    python -m circuitkit bench debias --json outputs/debias.json   # + outputs/debias.budgets.json
    python -m circuitkit bench debias --quick
"""

from __future__ import annotations

import json
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="400 bios per split instead of 1000")
    parser.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    parser.add_argument("--sae-layers", default=None,
                        help="comma-separated SAE sites to rank and ablate: -1 = embedding, l = block l's output "
                             "(default -1: the embedding)")
    parser.add_argument("--sae-family", default=None,
                        help="toy SAE family: toylm-sparse (k=4 embedding SAE, the default; other sites from "
                             "toylm) or toylm (k=16 SAEs of every residual site)")
    parser.add_argument("--target", choices=["logit", "prediction", "label"], default=None,
                        help="CircuitLasso's prediction target (default logit: Lasso of the probe's logit)")
    parser.add_argument("--budgets", default="10,20,50,100,200",
                        help="inspection budgets for the ranking sweep (comma-separated top-k; '' to skip)")
    parser.add_argument("--profession-signal", type=float, default=None,
                        help="probability that a bio's text is its own (default 0.8; 1.0 = the easy task)")


def format_table(records: list[dict]) -> str:
    cols = ["method", "profession_acc", "gender_leakage", "worst_group_acc", "classifier_gender_acc",
            "n_features", "seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        cells = [str(r["method"])] + [f"{r[c]:.3f}" for c in cols[1:5]] + [str(r["n_features"]),
                                                                          f"{r['seconds']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_budgets(rows: list[dict]) -> str:
    cols = ["budget", "method", "n_features", "worst_group_acc", "gender_leakage", "profession_acc"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: (r["budget"], r["method"])):
        lines.append(f"| {r['budget']} | {r['method']} | {r['n_features']} | {r['worst_group_acc']:.3f} | "
                     f"{r['gender_leakage']:.3f} | {r['profession_acc']:.3f} |")
    return "\n".join(lines)


def main(args) -> int:
    from ..debias import DebiasConfig, run_debias

    kw = {"seed": getattr(args, "seed", 0)}
    if getattr(args, "quick", False):
        kw.update(n_train=400, n_test=400)
    if getattr(args, "profession_signal", None) is not None:
        kw["profession_signal"] = args.profession_signal
    if getattr(args, "sae_layers", None):
        try:
            kw["sae_layers"] = tuple(int(v) for v in str(args.sae_layers).split(","))
        except ValueError:
            raise SystemExit(f"--sae-layers must be comma-separated ints (-1 = embedding), got {args.sae_layers!r}") \
                from None
    if getattr(args, "sae_family", None):
        kw["sae_family"] = args.sae_family
    if getattr(args, "target", None):
        kw["target"] = args.target
    raw = str(getattr(args, "budgets", "") or "")
    try:
        budgets = [int(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--budgets must be comma-separated ints, got {raw!r}") from None
    result = run_debias(DebiasConfig(**kw), budgets=budgets)
    print(format_table(result.records))
    for name, sel in result.selections.items():
        chosen = sel.loc[sel["selected"]]
        per_site = chosen["site"].value_counts().sort_index().to_dict()
        rk = result.rankings[name]
        rounds = f", {rk.meta['rounds']} rounds {rk.meta['selected_per_round']}" if "rounds" in rk.meta else ""
        print(f"{name}: {len(chosen)} features selected of {len(sel)} candidates{rounds}; per site {per_site}; "
              f"first: {chosen['node'].head(8).tolist()} (ranking {rk.seconds:.2f} s: {rk.meta.get('timed', '')})")
    if result.budgets:
        print("\nInspection budget: the retrained classifier after ablating the gender features among each "
              "ranking's top k (CircuitLasso: first round only; the 'original' row holds without any)")
        print(format_budgets(result.budgets))
    if getattr(args, "json", None):
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.records, indent=1) + "\n")
        if result.budgets:
            bpath = path.with_name(path.stem + ".budgets.json")
            bpath.write_text(json.dumps(result.budgets, indent=1) + "\n")
    return 0
