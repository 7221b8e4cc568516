"""Execute the notebooks with quick sizes and store their outputs, small enough to commit and preview.

    python scripts/execute_notebooks.py                 # every notebook in notebooks/
    python scripts/execute_notebooks.py notebooks/00_quickstart.ipynb

Each notebook runs top to bottom with ``CIRCUITKIT_QUICK=1`` (what the tests run). What is kept, so a student
previewing the file on a forge sees the results: text, tables (HTML under 100 kB), PNG images. What is
dropped: widget state and views (they only render in a live kernel), plotly JSON bundles (large; the figure
is rebuilt when the notebook runs) -- each dropped figure leaves a one-line note in its place.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
MAX_HTML = 100_000
MAX_TEXT = 20_000
DROP = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json",
        "application/vnd.plotly.v1+json")


def _shrink(nb: nbformat.NotebookNode) -> None:
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data is not None:
                dropped = [k for k in list(data) if k in DROP]
                for k in dropped:
                    data.pop(k)
                html = data.get("text/html")
                if html is not None and len("".join(html)) > MAX_HTML:
                    data.pop("text/html")
                    dropped.append("text/html")
                if dropped and not any(k in data for k in ("image/png", "text/html")):
                    data["text/plain"] = "[interactive output: run the notebook to see it]"
                out.get("metadata", {}).clear()
            if out.get("output_type") == "stream":
                text = "".join(out.get("text", ""))
                lines = [ln for ln in text.splitlines(keepends=True) if "it/s]" not in ln and "\r" not in ln]
                out["text"] = "".join(lines)[-MAX_TEXT:]
                if not out["text"].strip():
                    continue
            kept.append(out)
        cell.outputs = kept


def run(path: Path, timeout: int) -> None:
    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("CIRCUITKIT_QUICK")
    os.environ["CIRCUITKIT_QUICK"] = "1"
    os.environ.setdefault("CIRCUITKIT_OUT", str(ROOT / "outputs" / "notebooks"))
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
                       ).execute()
    finally:
        if env_before is None:
            os.environ.pop("CIRCUITKIT_QUICK", None)
    _shrink(nb)
    nbformat.write(nb, path)
    print(f"{path.name}: {path.stat().st_size / 1024:.0f} kB", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--timeout", type=int, default=900)
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for p in paths:
        run(p.resolve(), args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
