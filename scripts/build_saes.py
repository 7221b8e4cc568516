"""Train sae_lens TopK SAEs on the toy LM's residual stream and write ``data/saes/toylm/``.

    python scripts/build_saes.py [--out data/saes/toylm] [--d-sae 1024] [--k 32] [--seed 0]

One SAE per hook (TransformerLens names, as sae_lens metadata expects):

* ``blocks.0.hook_resid_pre``  -- the embeddings (token + position), input of block 0 (site ``embed`` /
  ``L0.resid_pre``);
* ``blocks.{l}.hook_resid_post`` for l = 0..3 -- the output of block ``l`` (site ``L{l}.resid_post``),
  taken by a forward hook on ``model.transformer.h[l]``, so the last one is *before* ``ln_f``.

Activations: the toy LM on ``circuitkit.datasets.mixture`` text (training seed 1, held-out seed 2), every
token position **except BOS** (the BOS residual is a large constant vector that would waste features).

Architecture: sae_lens ``TopKTrainingSAE`` (k active latents per token, decoder-norm-rescaled top-k,
AuxK loss for dead latents), trained with a plain Adam loop on in-memory activations scaled to
``E||x|| = sqrt(d_in)``; the scale is folded back into ``b_enc``/``b_dec`` before saving, so the saved
inference SAE (``save_inference_model``, architecture ``topk``) takes raw activations
(``normalize_activations="none"``). Each SAE is reloaded with ``SAE.load_from_disk`` and evaluated on
held-out activations: FVU = sum||x - x_hat||^2 / sum||x - mean(x)||^2, mean L0, dead fraction (latents
that never fire on the held-out set).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from circuitkit.datasets import mixture
from circuitkit.models.toylm import MODEL_NAME, SAE_HOOKS, load_toy_lm

TRAIN_SEED, HELDOUT_SEED = 1, 2


@torch.no_grad()

def residual_activations(model, tok, prompts, *, positions="after_bos", batch_size=256):
    """``{hook: [tokens, d_model]}`` at every toy SAE hook, through the runtime's capture (nnsight)."""
    import circuitkit as ck
    from circuitkit.sae import hook_to_site

    lm = ck.load_model(model, tokenizer=tok)
    acts = ck.capture(lm, list(prompts), sites=[hook_to_site(h) for h in SAE_HOOKS], positions=positions,
                      batch_size=batch_size, progress=False)
    return {h: torch.from_numpy(acts[hook_to_site(h)]) for h in SAE_HOOKS}

def sae_stats(sae, x: torch.Tensor, batch: int = 8192) -> dict:
    sse, l0, n = 0.0, 0.0, 0
    fired = None
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        f = sae.encode(xb)
        xh = sae.decode(f)
        sse += float(((xb - xh) ** 2).sum())
        act = f > 0
        l0 += float(act.sum())
        fired = act.any(0) if fired is None else fired | act.any(0)
        n += len(xb)
    sst = float(((x - x.mean(0)) ** 2).sum())
    return {"fvu": sse / sst, "l0": l0 / n, "dead_frac": float(1 - fired.float().mean()), "n_tokens": n}


def train_one(hook: str, x_train: torch.Tensor, *, d_sae: int, k: int, steps: int, batch_size: int, lr: float,
              seed: int, context_size: int, bf16: bool = True, dead_window: int = 200):
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata, TrainStepInput

    torch.manual_seed(seed)
    d_in = x_train.shape[1]
    scale = float(x_train.norm(dim=1).mean() / math.sqrt(d_in))
    u = x_train / scale
    cfg = TopKTrainingSAEConfig(
        d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device="cpu", apply_b_dec_to_input=True,
        normalize_activations="none", aux_loss_coefficient=1.0, rescale_acts_by_decoder_norm=True,
        metadata=SAEMetadata(
            model_name=MODEL_NAME, hook_name=hook, hook_head_index=None, context_size=context_size,
            prepend_bos=True, exclude_special_tokens=True, seqpos_slice=[1, None],
            dataset_path="circuitkit.datasets.mixture", sae_id=f"{MODEL_NAME}/{hook}",
        ),
    )
    sae = TopKTrainingSAE(cfg)
    with torch.no_grad():
        sae.b_dec.data = u.mean(0).clone()
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999))
    g = torch.Generator().manual_seed(seed)
    last_fired = torch.zeros(d_sae, dtype=torch.long)
    seen = 0
    perm = torch.randperm(len(u), generator=g)
    pos = 0
    t0 = time.time()
    for step in range(steps):
        if pos + batch_size > len(perm):
            perm, pos = torch.randperm(len(u), generator=g), 0
        xb = u[perm[pos : pos + batch_size]]
        pos += batch_size
        dead = (seen - last_fired) > dead_window * batch_size if step > dead_window else None
        lr_now = lr * min(1.0, (steps - step) / (0.2 * steps))  # linear decay over the last 20%
        for grp in opt.param_groups:
            grp["lr"] = lr_now
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = sae.training_forward_pass(
                TrainStepInput(sae_in=xb, coefficients={}, dead_neuron_mask=dead, n_training_steps=step,
                               is_logging_step=False)
            )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        seen += len(xb)
        fired = (out.feature_acts > 0).any(0)
        last_fired[fired] = seen
        if (step + 1) % 250 == 0:
            fvu = out.losses["mse_loss"].item() / float(((xb - xb.mean(0)) ** 2).sum(-1).mean())
            print(f"  [{hook}] step {step + 1}/{steps} batch-FVU {fvu:.3f} "
                  f"dead {int(((seen - last_fired) > dead_window * batch_size).sum())} {time.time() - t0:.0f}s",
                  flush=True)
    # fold the input scale back so the saved SAE takes raw activations
    with torch.no_grad():
        sae.b_enc.data *= scale
        sae.b_dec.data *= scale
    return sae, {"input_scale": scale, "train_wall_s": time.time() - t0}


README = """# Toy-LM SAEs (family `{family}`)

sae_lens {version} **TopK** SAEs (inference architecture `topk`, k = {k}, width {d_sae} = {ratio}× d_in = 128),
one per listed residual-stream site of `data/toylm`. Load them with

```python
from circuitkit.models.toylm import load_toy_saes
saes = load_toy_saes(family="{family}")   # {{hook_name: sae_lens.SAE}}, eval mode
# or: sae_lens.SAE.load_from_disk("data/saes/{family}/{first_hook}")
```

Rebuild (needs `data/toylm`; ≈{minutes:.0f} min on 2 CPU cores): `OMP_NUM_THREADS=2 python scripts/build_saes.py{cmd_args}`.

| hook (sae_lens `hook_name`) | circuitkit site | what |
|---|---|---|
| `blocks.0.hook_resid_pre` | `L0.resid_pre` (= `embed`) | token + position embedding |
| `blocks.{{l}}.hook_resid_post` | `L{{l}}.resid_post` | output of block l (the last one *before* `ln_f`) |

Activations: the toy LM on `circuitkit.datasets.mixture` text (all tasks, answer appended), every token
position except BOS (`<bos>` is prepended by the tokenizer; its residual is a constant outlier, so it
is excluded from training and from the metrics: metadata `prepend_bos=True`, `seqpos_slice=[1, None]`).
Train: {n_train:,} tokens (mixture seed {train_seed}); held-out: {n_heldout:,} tokens (seed {heldout_seed}).
Training: Adam (lr {lr}), batch {batch_size}, {steps} steps (bf16 autocast), AuxK loss for dead latents, inputs scaled to
E‖x‖ = √d_in during training with the scale folded into `b_enc`/`b_dec` afterwards
(`normalize_activations="none"`: feed raw activations). Seed {seed}.

Held-out metrics (after reloading with `SAE.load_from_disk`): FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖²;
L0 = mean number of active latents per token; dead = fraction of latents never active on the held-out set.

| hook | FVU | L0 | dead | train s |
|---|---|---|---|---|
{table}
"""


def _cmd_args(args) -> str:
    """The non-default options of this build, for the README's rebuild command."""
    parts = []
    if Path(args.out).resolve() != (ROOT / "data" / "saes" / "toylm").resolve():
        parts.append(f"--out {os.path.relpath(Path(args.out).resolve(), ROOT)}")
    for name, default in (("k", 16), ("d_sae", 1024), ("steps", 1000), ("seed", 0)):
        if getattr(args, name) != default:
            parts.append(f"--{name.replace('_', '-')} {getattr(args, name)}")
    if args.hooks != ",".join(SAE_HOOKS):
        parts.append(f"--hooks {args.hooks}")
    return "".join(" " + p for p in parts)


def main(argv=None):
    import sae_lens
    from sae_lens import SAE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "data" / "saes" / "toylm"))
    ap.add_argument("--model", default=None, help="toy LM directory (default data/toylm)")
    ap.add_argument("--d-sae", type=int, default=1024)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--n-train-prompts", type=int, default=16000)
    ap.add_argument("--n-heldout-prompts", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hooks", default=",".join(SAE_HOOKS))
    ap.add_argument("--no-bf16", action="store_true", help="train in float32 (bf16 autocast is faster on CPU)")
    args = ap.parse_args(argv)
    t_start = time.time()
    hooks = [h for h in args.hooks.split(",") if h]
    bad = [h for h in hooks if h not in SAE_HOOKS]
    if bad:
        raise SystemExit(f"unknown hooks {bad}; valid: {list(SAE_HOOKS)}")

    model, tok = load_toy_lm(args.model)
    context_size = int(model.config.n_positions)
    acts_tr = residual_activations(model, tok, mixture(args.n_train_prompts, seed=TRAIN_SEED)["text"].tolist())
    acts_ho = residual_activations(model, tok, mixture(args.n_heldout_prompts, seed=HELDOUT_SEED)["text"].tolist())
    n_train = len(next(iter(acts_tr.values())))
    n_ho = len(next(iter(acts_ho.values())))
    print(f"[acts] train {n_train} tokens, held-out {n_ho} tokens, {time.time() - t_start:.0f}s", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for i, hook in enumerate(hooks):
        sae, info = train_one(hook, acts_tr[hook], d_sae=args.d_sae, k=args.k, steps=args.steps,
                              batch_size=args.batch_size, lr=args.lr, seed=args.seed + i, context_size=context_size,
                              bf16=not args.no_bf16)
        d = out / hook
        sae.save_inference_model(d)
        loaded = SAE.load_from_disk(str(d), device="cpu").eval()
        if loaded.cfg.d_in != acts_ho[hook].shape[1] or loaded.cfg.metadata.hook_name != hook:
            raise RuntimeError(f"reloaded SAE for {hook} has wrong d_in/hook_name")
        stats = sae_stats(loaded, acts_ho[hook])
        stats.update(info)
        stats["architecture"] = loaded.cfg.architecture()
        results[hook] = stats
        print(f"[sae] {hook:26s} FVU {stats['fvu']:.4f}  L0 {stats['l0']:.1f}  dead {stats['dead_frac']:.3f}  "
              f"{info['train_wall_s']:.0f}s", flush=True)

    wall = time.time() - t_start
    metrics = {
        "model_name": MODEL_NAME,
        "sae_lens_version": sae_lens.__version__,
        "architecture": "topk",
        "d_in": 128,
        "d_sae": args.d_sae,
        "k": args.k,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "train_tokens": n_train,
        "heldout_tokens": n_ho,
        "train_seed": TRAIN_SEED,
        "heldout_seed": HELDOUT_SEED,
        "exclude_bos": True,
        "bf16_autocast": not args.no_bf16,
        "total_wall_s": wall,
        "saes": results,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    table = "\n".join(
        f"| `{h}` | {r['fvu']:.4f} | {r['l0']:.1f} | {r['dead_frac']:.3f} | {r['train_wall_s']:.0f} |"
        for h, r in results.items()
    )
    (out / "README.md").write_text(README.format(
        family=out.name, first_hook=hooks[0], cmd_args=_cmd_args(args),
        version=sae_lens.__version__, k=args.k, d_sae=args.d_sae, ratio=args.d_sae // 128, minutes=wall / 60,
        n_train=n_train, n_heldout=n_ho, train_seed=TRAIN_SEED, heldout_seed=HELDOUT_SEED, lr=args.lr,
        batch_size=args.batch_size, steps=args.steps, seed=args.seed, table=table,
    ))
    print(f"[done] wrote {out} in {wall:.0f}s")


if __name__ == "__main__":
    main()
