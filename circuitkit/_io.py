"""Reading circuitkit's versioned on-disk documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_versioned_json(path: Path, filename: str, *, fmt: str, version: int, what: str,
                        version_word: str = "format") -> dict[str, Any]:
    """Load ``path / filename`` and check its ``format`` and ``version`` fields.

    Raises ``ValueError`` when the file is missing (``path`` is not a saved ``what``), holds another
    format, or was written by a newer circuitkit.
    """
    f = path / filename
    if not f.is_file():
        raise ValueError(f"{path} is not a {what} (no {filename})")
    doc = json.loads(f.read_text())
    if doc.get("format") != fmt:
        raise ValueError(f"{path} holds {doc.get('format')!r}, not {fmt!r}")
    if doc.get("version", 0) > version:
        raise ValueError(f"{path} has {version_word} version {doc['version']}; this circuitkit reads <= {version}")
    return doc
