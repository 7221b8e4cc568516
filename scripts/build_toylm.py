"""Build circuitkit's embedded toy language model and write ``data/toylm/``.

    OMP_NUM_THREADS=2 python scripts/build_toylm.py [--out data/toylm] [--steps 5000] [--max-minutes 12]
                                                    [--seed 0] [--regen-vocab]

Steps 1-2 are exactly deterministic. Training is deterministic given the seed when it finishes by step
count (``--max-minutes 0``: steps only); with a wall-clock budget the cosine schedule follows whichever of
steps/time runs out first, so on a slow or shared machine fewer steps are done (``metrics.json`` records
``steps_done``). The shipped build did all 5000 steps in ~10 minutes on a shared 2-core machine.

1. ``circuitkit/datasets/vocab.json``: the fixed word lists (first names by gender, surnames, places,
   filler words for induction, ...). Drawn once with ``faker`` (seeded) plus hand-written task words;
   only regenerated with ``--regen-vocab`` (or when missing), so the runtime never depends on faker.
2. A word-level tokenizer (``tokenizers`` WordLevel model, whitespace pre-tokenizer, special tokens
   ``<bos> <eos> <pad> <unk>``). Its post-processor prepends ``<bos>`` to every sequence, so
   ``tokenizer(text)`` already starts with BOS (pass ``add_special_tokens=False`` to get none). The
   vocabulary is :func:`circuitkit.datasets.templates.all_words`, every word the generators can emit.
3. A GPT-2-style ``GPT2LMHeadModel`` (4 layers, 4 heads, d_model 128, 64 positions) trained from scratch
   on :func:`circuitkit.datasets.templates.mixture` text (one example per row, right-padded; loss on all
   non-pad tokens plus an extra term on the answer token), bf16 autocast on CPU.
4. Held-out evaluation on fresh samples (seed differs from training) -> ``metrics.json`` + ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCAB_PATH = ROOT / "circuitkit" / "datasets" / "vocab.json"

# ------------------------------------------------------------------------------------------------
# 1. word lists
# ------------------------------------------------------------------------------------------------

SVA_NOUNS = [
    ("key", "keys"), ("cabinet", "cabinets"), ("dog", "dogs"), ("cat", "cats"), ("book", "books"),
    ("table", "tables"), ("door", "doors"), ("car", "cars"), ("house", "houses"), ("tree", "trees"),
    ("box", "boxes"), ("picture", "pictures"), ("window", "windows"), ("bottle", "bottles"),
    ("lamp", "lamps"), ("chair", "chairs"), ("phone", "phones"), ("child", "children"), ("man", "men"),
    ("woman", "women"), ("mouse", "mice"), ("person", "people"), ("bird", "birds"), ("river", "rivers"),
    ("bridge", "bridges"), ("road", "roads"), ("farmer", "farmers"), ("painting", "paintings"),
    ("boat", "boats"), ("horse", "horses"), ("student", "students"), ("tower", "towers"),
]
SVA_PREPS = ["near", "behind", "beside", "under", "above", "with", "of", "to", "on", "by", "next to", "across from"]
SVA_ADJS = ["old", "new", "red", "big", "small", "broken", "blue", "green", "heavy", "dirty"]
SVA_REL_VERBS = ["liked", "saw", "found", "painted", "moved", "bought", "fixed", "cleaned"]
SVA_VERBS = [("is", "are"), ("was", "were")]

IOI_PLACES = ["store", "park", "school", "office", "station", "beach", "restaurant", "library", "market",
              "museum", "cafe", "garden", "zoo", "church"]
IOI_OBJECTS = ["drink", "book", "ring", "bone", "kiss", "snack", "bag", "letter", "gift", "ball", "pen",
               "flower", "key", "hat"]

# canonical profession word -> (title synonyms, descriptions). Canonical words start with a consonant
# so "... works as a" is grammatical for every answer.
PROFESSIONS = {
    "nurse": (["nurse", "caregiver", "ward nurse"],
              ["cares for patients on the ward", "gives medicine to sick patients",
               "checks the blood pressure of patients", "works night shifts at the clinic"]),
    "surgeon": (["surgeon", "heart surgeon", "physician"],
                ["performs operations in the hospital", "operates on the heart and lungs",
                 "repairs broken bones in the operating room", "removes tumors from patients"]),
    "professor": (["professor", "lecturer", "academic"],
                  ["teaches courses at the university", "grades exams and supervises students",
                   "publishes research papers every year", "gives lectures on history"]),
    "lawyer": (["lawyer", "attorney", "barrister"],
               ["argues cases in court", "represents clients before the judge",
                "writes contracts for companies", "defends people accused of crimes"]),
    "chef": (["chef", "cook", "head cook"],
             ["cooks meals in the restaurant", "prepares dishes in the kitchen",
              "bakes bread and cakes every morning", "creates new recipes for the menu"]),
    "pilot": (["pilot", "aviator", "airline captain"],
              ["flies planes across the ocean", "lands jets at the airport",
               "checks the engines before every flight", "carries passengers to distant cities"]),
}
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "fifteen", "twenty"]


def build_vocab(path: Path = VOCAB_PATH, seed: int = 0) -> dict:
    """Draw the name/place/filler lists with faker (seeded) and write ``vocab.json``."""
    from faker import Faker
    from faker.providers.address.en_US import Provider as Address
    from faker.providers.lorem.en_US import Provider as EnglishLorem
    from faker.providers.lorem.la import Provider as LatinLorem
    from faker.providers.person.en_US import Provider as Person

    Faker.seed(seed)
    fake = Faker("en_US")
    rng = random.Random(seed)

    def clean(words):
        return sorted({w.lower() for w in words if w.isalpha() and w.isascii()})

    male = set(clean(Person.first_names_male))
    female = set(clean(Person.first_names_female))
    both = male & female
    states = [s for s in clean(Address.states)]
    reserved = set(both) | set(states)
    # the names used in docs and examples are always present; the rest are a seeded faker draw
    classic_male = ["john", "james", "michael", "david", "tom", "robert", "daniel", "mark"]
    classic_female = ["mary", "sarah", "anna", "lisa", "emma", "laura", "susan", "kate"]
    male_names = classic_male + rng.sample(sorted(male - reserved - set(classic_male)), 60 - len(classic_male))
    female_names = classic_female + rng.sample(
        sorted(female - reserved - set(classic_female)), 60 - len(classic_female))
    surnames = sorted({fake.last_name().lower() for _ in range(3000)} - male - female - set(states))
    surnames = [s for s in surnames if s.isalpha()]
    surnames = rng.sample(surnames, 60)
    english = set(clean(EnglishLorem.word_list))
    fillers = [w for w in clean(LatinLorem.word_list) if len(w) >= 4 and w not in english]
    fillers = rng.sample(fillers, min(100, len(fillers)))
    places = [s for s in states if s not in male | female][:40]
    vocab = {
        "_about": "Fixed word lists for circuitkit's template datasets. Generated once by "
        "scripts/build_toylm.py --regen-vocab (faker, seed 0) plus hand-written task words; committed.",
        "male_first_names": sorted(male_names),
        "female_first_names": sorted(female_names),
        "surnames": sorted(surnames),
        "places": places,
        "filler_words": sorted(fillers),
        "ioi_places": IOI_PLACES,
        "ioi_objects": IOI_OBJECTS,
        "sva_nouns": [list(p) for p in SVA_NOUNS],
        "sva_preps": SVA_PREPS,
        "sva_adjs": SVA_ADJS,
        "sva_rel_verbs": SVA_REL_VERBS,
        "sva_verbs": [list(p) for p in SVA_VERBS],
        "professions": {k: {"titles": v[0], "descriptions": v[1]} for k, v in PROFESSIONS.items()},
        "numbers": NUMBERS,
    }
    path.write_text(json.dumps(vocab, indent=1) + "\n")
    return vocab


# ------------------------------------------------------------------------------------------------
# 2. tokenizer
# ------------------------------------------------------------------------------------------------

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def build_tokenizer(words: list[str]):
    """A word-level PreTrainedTokenizerFast whose post-processor prepends ``<bos>``."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in words:
        if w not in vocab:
            vocab[w] = len(vocab)
    tk = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    # \w+|[^\w\s]+ : words and punctuation runs become separate tokens ("store," -> "store" ",")
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        padding_side="right", model_max_length=64,
    )
    return tok


# ------------------------------------------------------------------------------------------------
# 3. model + training
# ------------------------------------------------------------------------------------------------


def make_model(tok, seed: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=64, n_embd=128, n_layer=4, n_head=4, n_inner=512,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(cfg)


def encode_texts(tok, texts: list[str]):
    """ids [N, T] right-padded with <pad>, plus lengths [N] (BOS included)."""
    import torch

    enc = tok(list(texts), add_special_tokens=True)["input_ids"]
    T = max(len(e) for e in enc)
    ids = torch.full((len(enc), T), tok.pad_token_id, dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, : len(e)] = torch.tensor(e)
    lengths = torch.tensor([len(e) for e in enc])
    return ids, lengths


TRAIN_MIXTURE = {"ioi": 0.34, "sva": 0.1, "induction": 0.34, "bios_profession": 0.1, "bios_pronoun": 0.12}


def length_bucketed_batches(lengths, batch_size: int, generator, chunk: int = 64):
    """Shuffle, then sort chunks of ``chunk`` batches by length (less padding), then shuffle the batches."""
    import torch

    perm = torch.randperm(len(lengths), generator=generator)
    batches = []
    span = batch_size * chunk
    for i in range(0, len(perm), span):
        block = perm[i : i + span]
        block = block[torch.argsort(lengths[block], stable=True)]
        batches += [block[j : j + batch_size] for j in range(0, len(block) - batch_size + 1, batch_size)]
    order = torch.randperm(len(batches), generator=generator)
    return [batches[int(k)] for k in order]


def train(model, tok, *, steps: int, batch_size: int, lr: float, seed: int, n_train: int, answer_weight: float,
          bf16: bool = True, max_minutes: float | None = None, log_every: int = 100):
    import torch
    import torch.nn.functional as F

    from circuitkit.datasets import mixture

    t0 = time.time()
    df = mixture(n_train, seed=seed, weights=TRAIN_MIXTURE)
    ids, lengths = encode_texts(tok, df["text"].tolist())
    unk = int((ids == tok.unk_token_id).sum())
    if unk:
        raise RuntimeError(f"{unk} <unk> tokens in the training text")
    print(f"[data] {len(df)} rows, {int(lengths.sum())} tokens, max len {ids.shape[1]}, "
          f"{time.time() - t0:.1f}s", flush=True)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warm = max(1, min(200, steps // 25))

    def progress(s):
        """Fraction of training done: by steps, or by wall clock if --max-minutes is the tighter budget."""
        p = s / steps
        if max_minutes is not None:
            p = max(p, (time.time() - t_train) / (60 * max_minutes))
        return min(p, 1.0)

    def lr_at(s, p):
        if s < warm:
            return lr * (s + 1) / warm
        return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))

    quick = {k: v.sample(200, random_state=1) for k, v in eval_suites(400, seed + 1).items()}
    model.train()
    t_train = time.time()
    losses = []
    batches: list = []
    stopped_early = False
    step = 0
    for step in range(steps):
        if not batches:
            batches = length_bucketed_batches(lengths, batch_size, g)
        idx = batches.pop()
        L = lengths[idx]
        T = int(L.max())
        x = ids[idx, :T]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=x).logits[:, :-1]
        logits = logits.float()
        y = x[:, 1:].clone()
        y[y == tok.pad_token_id] = -100
        loss_all = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)
        rows = torch.arange(len(idx))
        loss_ans = F.cross_entropy(logits[rows, L - 2], x[rows, L - 1])  # the answer is the last token
        loss = loss_all + answer_weight * loss_ans
        prog = progress(step)
        lr_now = lr_at(step, prog)
        for group in opt.param_groups:
            group["lr"] = lr_now
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append((loss_all.item(), loss_ans.item()))
        if (step + 1) % log_every == 0 or step == 0:
            la = sum(v[0] for v in losses[-log_every:]) / len(losses[-log_every:])
            lb = sum(v[1] for v in losses[-log_every:]) / len(losses[-log_every:])
            msg = ""
            if (step + 1) % (5 * log_every) == 0:
                model.eval()
                from circuitkit.models.toylm import evaluate_task

                msg = " | " + " ".join(f"{k} {evaluate_task(model, tok, d)['top1']:.2f}" for k, d in quick.items())
                model.train()
            print(f"[train] step {step + 1}/{steps} loss_all {la:.3f} loss_answer {lb:.3f} "
                  f"lr {lr_now:.2e} {time.time() - t_train:.0f}s{msg}", flush=True)
        if prog >= 1.0 and step + 1 < steps:
            print(f"[train] wall-clock budget of {max_minutes} min used up at step {step + 1}/{steps} "
                  "(the cosine schedule followed wall time)", flush=True)
            stopped_early = True
            break
    model.eval()
    tail = losses[-200:]
    return {
        "steps_done": step + 1,
        "stopped_early_by_wall_clock": stopped_early,
        "train_loss_all_tokens": sum(v[0] for v in tail) / len(tail),
        "train_loss_answer": sum(v[1] for v in tail) / len(tail),
        "train_wall_s": time.time() - t_train,
        "n_train_examples": len(df),
        "n_train_tokens": int(lengths.sum()),
        "mixture_weights": TRAIN_MIXTURE,
        "bf16_autocast": bf16,
    }


# ------------------------------------------------------------------------------------------------
# 4. evaluation + writing
# ------------------------------------------------------------------------------------------------

EVAL_SEED = 10_000


def eval_suites(n: int, seed: int) -> dict:
    from circuitkit.datasets import bios, induction, ioi, professions, sva

    return {
        "ioi": ioi(n, seed=seed),
        "sva": sva(n, seed=seed),
        "induction": induction(n, seed=seed),
        "bios_profession": bios(n, seed=seed, split="balanced", professions=professions(), form="profession"),
        "bios_pronoun": bios(n, seed=seed, split="balanced", professions=professions(), form="pronoun"),
    }


def evaluate(model, tok, n: int, seed: int) -> dict:
    from circuitkit.models.toylm import evaluate_task

    return {name: evaluate_task(model, tok, df) for name, df in eval_suites(n, seed).items()}


README_TEMPLATE = """# circuitkit toy LM (`circuitkit-toylm`)

A small GPT-2-style language model trained from scratch, on CPU, on circuitkit's template tasks, so the
tutorials and tests run offline. Load it with

```python
from circuitkit.models.toylm import load_toy_lm
model, tok = load_toy_lm()          # GPT2LMHeadModel (eval mode), PreTrainedTokenizerFast
```

or `transformers.AutoTokenizer/AutoModelForCausalLM.from_pretrained("data/toylm")`.

Rebuild (≈{minutes:.0f} min on 2 CPU cores): `OMP_NUM_THREADS=2 python scripts/build_toylm.py`
(`--regen-vocab` also redraws `circuitkit/datasets/vocab.json` with faker; without it the committed
word lists are reused).

## Architecture
`GPT2LMHeadModel`: {n_layer} layers, {n_head} heads, d_model {n_embd}, d_mlp {n_inner}, {n_positions} positions,
vocab {vocab_size} (tied embeddings), GELU, no dropout. {n_params:,} parameters.

## Tokenizer
Word-level (`tokenizers` WordLevel): lowercase normalizer, `Whitespace` pre-tokenizer (words and
punctuation runs are separate tokens), special tokens `<pad>`=0, `<bos>`=1, `<eos>`=2, `<unk>`=3.
**BOS is prepended by the tokenizer's post-processor**: `tok("the key to the cabinets")` gives
`<bos> the key to the cabinets`; pass `add_special_tokens=False` for no BOS. Padding side: right.
The vocabulary is `circuitkit.datasets.all_words()`: every word the template generators emit.

## Training
{n_train:,} examples of `circuitkit.datasets.mixture(seed={seed})` (task weights {mix};
the answer appended; one example per row, BOS-prefixed,
right-padded). Loss = mean next-token cross-entropy over all non-pad tokens + {answer_weight} × cross-entropy
on the answer token. AdamW (lr {lr}, warm-up + cosine), batch {batch_size}, {steps_done} of {steps} steps (wall-clock budget {max_minutes} min; the cosine
schedule follows whichever budget binds first), seed {seed}, bf16 autocast on CPU.
Final train loss (last 200 steps): all tokens {loss_all:.3f}, answer token {loss_ans:.3f}.
Wall time: {wall:.0f} s training ({threads} threads).

## Held-out accuracy
{n_eval} fresh samples per task (`seed={eval_seed}`, not the training seed). *top-1*: the answer is the
argmax over the whole vocabulary at the last prompt token; *logit diff > 0*: logit(answer) > logit(distractor).

| task | top-1 | logit diff > 0 | mean logit diff |
|---|---|---|---|
{table}

Task forms: `ioi` → indirect object name; `sva` → `is/are`, `was/were` across an attractor;
`induction` → next word of a repeated random filler sequence; `bios_profession` → canonical profession
after "… so <name> works as a"; `bios_pronoun` → `she`/`he` after a pronoun-free opening (gender from the
first name only). Note that the "random" parts (names, fillers) make most non-answer tokens unpredictable,
so the all-token loss stays well above zero by construction.
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "data" / "toylm"))
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--answer-weight", type=float, default=2.0)
    ap.add_argument("--n-train", type=int, default=200_000)
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--regen-vocab", action="store_true")
    ap.add_argument("--no-bf16", action="store_true", help="train in float32 (bf16 autocast is ~2x faster on CPU)")
    ap.add_argument("--max-minutes", type=float, default=12.0,
                    help="wall-clock training budget; the cosine schedule follows whichever of steps/time runs out "
                    "first (<= 0: steps only, fully deterministic)")
    args = ap.parse_args(argv)

    import torch

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    t_start = time.time()
    if args.regen_vocab or not VOCAB_PATH.exists():
        build_vocab()
        print(f"[vocab] wrote {VOCAB_PATH}")
    from circuitkit.datasets import all_words

    tok = build_tokenizer(all_words())
    model = make_model(tok, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[model] vocab {len(tok)}, {n_params:,} params, {torch.get_num_threads()} threads")
    stats = train(model, tok, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                  n_train=args.n_train, answer_weight=args.answer_weight, bf16=not args.no_bf16,
                  max_minutes=args.max_minutes if args.max_minutes and args.max_minutes > 0 else None)
    acc = evaluate(model, tok, args.n_eval, EVAL_SEED)
    for k, v in acc.items():
        print(f"[eval] {k:16s} top1 {v['top1']:.3f}  logit_diff>0 {v['logit_diff_acc']:.3f}  "
              f"mean_ld {v['mean_logit_diff']:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    wall = time.time() - t_start
    metrics = {
        "model_name": "circuitkit-toylm",
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "answer_weight": args.answer_weight,
        "n_params": n_params,
        "vocab_size": len(tok),
        "threads": torch.get_num_threads(),
        **stats,
        "total_wall_s": wall,
        "eval_seed": EVAL_SEED,
        "n_eval": args.n_eval,
        "accuracy": acc,
        "torch": torch.__version__,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    cfg = model.config
    table = "\n".join(
        f"| {k} | {v['top1']:.3f} | {v['logit_diff_acc']:.3f} | {v['mean_logit_diff']:.2f} |" for k, v in acc.items()
    )
    (out / "README.md").write_text(README_TEMPLATE.format(
        minutes=wall / 60, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, n_inner=cfg.n_inner,
        n_positions=cfg.n_positions, vocab_size=cfg.vocab_size, n_params=n_params, n_train=stats["n_train_examples"],
        seed=args.seed, answer_weight=args.answer_weight, lr=args.lr, batch_size=args.batch_size, steps=args.steps,
        steps_done=stats["steps_done"], max_minutes=args.max_minutes, loss_all=stats["train_loss_all_tokens"], loss_ans=stats["train_loss_answer"], wall=stats["train_wall_s"],
        threads=torch.get_num_threads(), n_eval=args.n_eval, mix=stats["mixture_weights"], eval_seed=EVAL_SEED, table=table,
    ))
    print(f"[done] wrote {out} in {wall:.0f}s")


if __name__ == "__main__":
    main()
