"""Every notebook in notebooks/ runs top to bottom on the embedded data (CIRCUITKIT_QUICK=1 shrinks them).

Outputs are not compared (plotly and widget outputs are not deterministic); a cell that raises fails the
test with the cell's source and traceback.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_the_tutorial_series_is_present():
    names = {p.name for p in NOTEBOOKS}
    assert "00_quickstart.ipynb" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, monkeypatch, tmp_path):
    monkeypatch.setenv("CIRCUITKIT_QUICK", "1")
    monkeypatch.setenv("CIRCUITKIT_OUT", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as e:  # pragma: no cover - the message is the useful part
        pytest.fail(f"{path.name} failed:\n{e}")
    assert all(c.get("outputs") is not None for c in nb.cells if c.cell_type == "code")
