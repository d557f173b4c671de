"""Every notebook is clean, has a proper parameters cell, and runs at the smoke preset."""

import json
from pathlib import Path

import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REQUIRED = {"preset", "seed", "out_dir", "interactive"}


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "00_welcome.ipynb"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_hygiene(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    # the same place for the same things: a title, the parameters, the setup cell
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "open with the title"
    assert "parameters" in nb.cells[1].metadata.get("tags", []), "the second cell must be tagged 'parameters'"
    assert [c.id for c in nb.cells] == [f"{nb_path.stem[:2]}-cell-{i:02d}" for i in range(len(nb.cells))], \
        "cell ids follow NN-cell-KK: run python scripts/tidy_notebooks.py"
    source = "\n".join(c.source for c in code)
    assert "assert torch.allclose" not in source, "check against the library with torch.testing.assert_close"
    assert 'name == "smoke"' not in source and "SMOKE" not in source, "the smoke flag is run.smoke"
    params = pm.inspect_notebook(str(nb_path))
    assert REQUIRED <= set(params), f"parameters cell lacks {REQUIRED - set(params)}"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert "setup(globals()" in code[1].source, "the second cell must validate the parameters with setup()"
    assert any("exercise" in c.source.lower() for c in nb.cells if c.cell_type == "markdown") or \
        nb_path.stem.startswith("2"), "end with exercises"


@pytest.mark.notebook
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_smoke(nb_path, tmp_path, shared_cache):
    out_dir = tmp_path / "out"
    pm.execute_notebook(
        str(nb_path), str(tmp_path / nb_path.name), kernel_name="python3", progress_bar=False,
        cwd=str(nb_path.parent),
        parameters={"preset": "smoke", "out_dir": str(out_dir), "cache_dir": str(shared_cache),
                    "interactive": False, "seed": 0},
    )
    pngs = sorted(out_dir.glob("*.png"))
    assert pngs, f"{nb_path.stem} wrote no figures to out_dir"
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["preset"] == "smoke"
