"""Where circuitkit finds its embedded data and where it caches what it builds.

* **Data root** (the embedded Tracr suite, the toy LM, our SAEs): ``$CIRCUITKIT_DATA`` if set, else the
  installed package data ``circuitkit.data`` (the repository's ``data/`` folder, mapped into the package by
  ``pyproject.toml``, so a non-editable ``pip install .`` carries it).
* **Cache root** (models converted on first use, e.g. SmolLM2 dequantised from its GGUF):
  ``$CIRCUITKIT_CACHE`` if set, else ``$XDG_CACHE_HOME/circuitkit``, else ``~/.cache/circuitkit``.

Nothing is created at import; :func:`cache_root` creates the folder when asked for it.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "CIRCUITKIT_DATA"
CACHE_ENV_VAR = "CIRCUITKIT_CACHE"


def data_root() -> Path:
    """The embedded data root: ``$CIRCUITKIT_DATA``, else the package resource ``circuitkit.data``."""
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env)
    try:
        from importlib.resources import files

        root = Path(str(files("circuitkit.data")))
        if root.is_dir():
            return root
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - a broken install
        pass
    return Path(__file__).resolve().parents[1] / "data"


def cache_root(*, create: bool = True) -> Path:
    """The user cache directory for converted models (see the module docstring)."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        root = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "circuitkit"
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return root
