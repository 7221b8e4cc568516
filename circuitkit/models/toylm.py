"""The embedded toy language model (``circuitkit-toylm``) and its sae_lens SAEs, loaded offline.

``data/toylm/`` holds a 4-layer GPT-2-style ``GPT2LMHeadModel`` (d_model 128) trained on circuitkit's
template tasks (IOI, SVA, induction, bios; see :mod:`circuitkit.datasets`) with a word-level tokenizer
whose post-processor prepends ``<bos>``. ``data/saes/toylm/<hook>/`` holds one sae_lens SAE per residual
stream site (``blocks.0.hook_resid_pre`` = embeddings, ``blocks.{l}.hook_resid_post`` = output of block
``l`` *before* the final layer norm). Both are rebuilt by ``scripts/build_toylm.py`` and
``scripts/build_saes.py``; their READMEs give the accuracies / FVU.

The data root is :func:`circuitkit._paths.data_root` (``$CIRCUITKIT_DATA`` or the installed package data). Nothing is loaded at import.

Example::

    >>> from circuitkit.models.toylm import load_toy_lm, next_token_logits
    >>> model, tok = load_toy_lm()
    >>> logits = next_token_logits(model, tok, ["the key to the cabinets"])
    >>> tok.convert_ids_to_tokens(int(logits.argmax(-1)))
    'is'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:  # heavy imports stay lazy
    import pandas as pd
    from sae_lens import SAE
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

from .._paths import DATA_ENV_VAR, data_root

MODEL_NAME = "circuitkit-toylm"
SAE_HOOKS = (
    "blocks.0.hook_resid_pre",
    "blocks.0.hook_resid_post",
    "blocks.1.hook_resid_post",
    "blocks.2.hook_resid_post",
    "blocks.3.hook_resid_post",
)


def __getattr__(name: str) -> Any:
    # TOYLM_DIR / TOY_SAES_DIR resolve at access time, so setting CIRCUITKIT_DATA later still works.
    if name == "TOYLM_DIR":
        return data_root() / "toylm"
    if name == "TOY_SAES_DIR":
        return data_root() / "saes" / "toylm"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _toylm_dir() -> Path:
    return data_root() / "toylm"


# SAE families shipped in data/saes/: the k=16 TopK SAEs of every residual site, and sparser (smaller-L0)
# SAEs of some sites -- like sae_lens releases that offer several L0s per hook. The sparse embedding SAE is
# the one the debiasing workflow uses: with k=16 a first name is coded by 16 features, most of them shared
# between female and male names, so no set of whole features carries gender alone.
SAE_FAMILIES = {"toylm": "k=16 TopK, width 1024, every residual site",
                "toylm-sparse": "k=4 TopK, width 1024, 4000 steps, the embedding (blocks.0.hook_resid_pre)"}


def _saes_dir(family: str = "toylm") -> Path:
    if family not in SAE_FAMILIES:
        raise ValueError(f"unknown SAE family {family!r}; valid choices: {list(SAE_FAMILIES)}")
    return data_root() / "saes" / family


def load_toy_lm(
    path: str | os.PathLike | None = None, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """Load the toy LM and its tokenizer from ``path`` (default ``TOYLM_DIR``), offline, in eval mode.

    The tokenizer prepends ``<bos>`` (post-processor); pass ``add_special_tokens=False`` to skip it.
    """
    from transformers import AutoTokenizer, GPT2LMHeadModel

    p = Path(path) if path is not None else _toylm_dir()
    if not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"no toy LM at {p} (missing config.json); build it with `python scripts/build_toylm.py` "
            f"or point ${DATA_ENV_VAR} at a data root that contains toylm/"
        )
    tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    model = GPT2LMHeadModel.from_pretrained(str(p), local_files_only=True, dtype=dtype)
    model.to(device).eval()
    return model, tok


def toy_sae_dir(hook_name: str, *, family: str = "toylm") -> Path:
    """Directory of the toy LM's SAE for a TransformerLens-style hook name (e.g. ``blocks.1.hook_resid_post``)
    in SAE ``family`` (:data:`SAE_FAMILIES`)."""
    if hook_name not in SAE_HOOKS:
        raise ValueError(f"no toy SAE for hook {hook_name!r}; valid choices: {list(SAE_HOOKS)}")
    return _saes_dir(family) / hook_name


def list_toy_saes(*, family: str = "toylm") -> list[str]:
    """Hook names of the toy SAEs of ``family`` present on disk (in computation order)."""
    return [h for h in SAE_HOOKS if (_saes_dir(family) / h / "cfg.json").is_file()]


def load_toy_saes(hooks: Sequence[str] | None = None, *, family: str = "toylm",
                  device: str = "cpu") -> dict[str, SAE]:
    """Load the toy LM's sae_lens SAEs of ``family`` (default the k=16 SAEs of every residual site; see
    :data:`SAE_FAMILIES`) from disk, keyed by hook name, in eval mode."""
    from sae_lens import SAE

    hooks = list_toy_saes(family=family) if hooks is None else list(hooks)
    if not hooks:
        raise FileNotFoundError(f"no toy SAEs under {_saes_dir(family)}; build them with "
                                "`python scripts/build_saes.py` (see `make assets`)")
    out = {}
    for h in hooks:
        d = toy_sae_dir(h, family=family)
        if not (d / "cfg.json").is_file():
            raise FileNotFoundError(f"no SAE for {h!r} at {d}")
        sae = SAE.load_from_disk(str(d), device=device)
        out[h] = sae.eval()
    return out


def next_token_logits(
    model: Any, tok: Any, prompts: Sequence[str], *, batch_size: int = 256
) -> Float[Tensor, "n vocab"]:
    """Logits for the token after each prompt (BOS prepended): :func:`circuitkit.runtime.next_token_logits`."""
    from ..runtime.capturing import next_token_logits as run

    return run(model, prompts, tokenizer=tok, batch_size=batch_size)


def evaluate_task(model: Any, tok: Any, df: pd.DataFrame, *, batch_size: int = 256) -> dict[str, float]:
    """Next-token accuracy on a template frame: :func:`circuitkit.evaluate.task_accuracy`."""
    from ..evaluate import task_accuracy

    return task_accuracy(model, tok, df, batch_size=batch_size)
