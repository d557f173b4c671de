"""The student's path from ``make demo`` to JupyterLab (issue 20): re-running a notebook in one
kernel, one model cache for headless runs and Lab, a readable headless log, clear errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from ldetok_lite.cli import main
from ldetok_lite.cli import run as run_cli
from ldetok_lite.experiments import cache
from ldetok_lite.experiments.compare import run_comparison

ROOT = Path(__file__).resolve().parents[1]
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def _client(nb, cwd: Path) -> NotebookClient:
    return NotebookClient(nb, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(cwd)}})


def _text(nb) -> str:
    """Every stream and error output of ``nb`` as one string."""
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            parts.append(o.get("text", "") if o.output_type == "stream" else "\n".join(o.get("traceback", [])))
    return "\n".join(parts)


def _inject(nb, params: dict):
    """``nb`` with a cell of ``params`` after its parameters cell, as papermill injects it."""
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    cell = nbformat.v4.new_code_cell("# Parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at + 1, cell)
    return nb


def _notebook(path: Path, *cells) -> Path:
    """A small notebook: a parameters cell, then ``cells`` (str: code; ("md", str): markdown)."""
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell('preset = "smoke"\nseed = 0\nout_dir = ""\ninteractive = False')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [nbformat.v4.new_markdown_cell(c[1]) if isinstance(c, tuple) else nbformat.v4.new_code_cell(c)
                      for c in cells]
    nb.metadata["kernelspec"] = KERNELSPEC
    nbformat.write(nb, path)
    return path


# ---------------------------------------------------------------------------------------------
# 1. Run All twice in one kernel
# ---------------------------------------------------------------------------------------------


@pytest.mark.notebook
def test_notebook_runs_twice_in_one_kernel(tmp_path):
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome.ipynb", as_version=4)
    nb = _inject(nb, {"preset": "smoke", "out_dir": str(tmp_path / "out"),
                                    "cache_dir": str(tmp_path / "cache"), "interactive": False})
    client = _client(nb, ROOT / "notebooks")
    with client.setup_kernel():
        for _ in range(2):  # the second pass sees `run`, `ds`, ... as globals: not parameters
            for i, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    client.execute_cell(cell, i)
    assert "unknown notebook parameter" not in _text(nb)
    assert (tmp_path / "out" / "summary.json").is_file()


@pytest.mark.notebook
def test_unknown_injected_parameter_is_still_an_error(tmp_path):
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome.ipynb", as_version=4)
    nb.cells = nb.cells[:3]  # title, parameters, setup
    nb = _inject(nb, {"preset": "smoke", "out_dir": str(tmp_path / "out"), "interactive": False,
                                    "devise": "cpu"})
    with pytest.raises(CellExecutionError, match="unknown notebook parameter 'devise'.*did you mean 'device'"):
        _client(nb, ROOT / "notebooks").execute()


# ---------------------------------------------------------------------------------------------
# 2. The demo's models are the ones JupyterLab finds
# ---------------------------------------------------------------------------------------------


@pytest.mark.notebook
def test_demo_models_are_found_by_lab(tmp_path, monkeypatch, capsys):
    # a checkout-like folder: the notebooks resolve runs/ and data/ against it, as in a real checkout
    repo = tmp_path / "checkout"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "ldetok_lite").mkdir()
    shutil.copy(ROOT / "pyproject.toml", repo)
    shutil.copy(ROOT / "notebooks" / "05_dit.ipynb", repo / "notebooks")
    monkeypatch.chdir(repo)
    # what `make demo` does (at smoke, one notebook)
    assert main(["run", "05", "--preset", "smoke", "--out", "runs/demo"]) == 0
    demo_log = capsys.readouterr().out
    assert "training generator DiT" in demo_log  # the headless log streams the library's progress lines
    assert (repo / "runs" / "cache" / "generators" / "smoke-DiT-ldetok-s0").is_dir()
    assert sorted((repo / "runs" / "demo" / "05_dit").glob("*.png")), "figures go next to the executed notebook"
    assert not (repo / "runs" / "demo" / "cache").exists()
    # then the student opens 05_dit in Lab: default parameters (only the preset edited), kernel in notebooks/
    nb = nbformat.read(repo / "notebooks" / "05_dit.ipynb", as_version=4)
    params = nb.cells[1]
    assert "parameters" in params.metadata["tags"] and 'preset = "tiny"' in params.source
    params.source = params.source.replace('preset = "tiny"', 'preset = "smoke"')
    _client(nb, repo / "notebooks").execute()
    text = _text(nb)
    assert "loaded smoke-DiT-ldetok-s0" in text and "loaded smoke-ldetok-s0" in text
    assert "training " not in text, "Lab trained again what the demo had trained"
    assert sorted((repo / "runs" / "notebooks" / "05_dit").glob("*.png"))


# ---------------------------------------------------------------------------------------------
# 3. Generator names in any case hit the same cache folder
# ---------------------------------------------------------------------------------------------


def test_generator_names_are_canonical_in_the_cache(tmp_path):
    sit = cache.generator_dir("smoke", "SiT", "ldetok", tmp_path)
    assert sit.name == "smoke-SiT-ldetok-s0"
    assert cache.generator_dir("smoke", "sit", "ldetok", tmp_path) == sit
    assert cache.generator_dir("smoke", "LIGHTNINGDIT", "ldetok", tmp_path).name == "smoke-LightningDiT-ldetok-s0"
    assert cache.generator_family("mar") == "MAR"
    with pytest.raises(ValueError, match="generator family 'sitt' is not known.*allowed: DiT, SiT"):
        cache.generator_dir("smoke", "sitt", "ldetok", tmp_path)
    with pytest.raises(ValueError, match="generator family 'gan' is not known"):
        run_comparison("smoke", out_dir=tmp_path / "cmp", cache_dir=tmp_path, generators=["sit", "gan"])
    assert not (tmp_path / "cmp").exists()


# ---------------------------------------------------------------------------------------------
# 4. make lab as root
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_allows_root(root):
    venv = Path(sys.executable).parent.parent
    r = subprocess.run(["make", "-n", "lab", f"VENV={venv}"], cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lab = [ln for ln in r.stdout.splitlines() if " lab " in ln and "jupyter" in ln]
    assert lab and lab[-1].endswith("notebooks")
    assert ("--allow-root" in lab[-1]) == (os.geteuid() == 0)


# ---------------------------------------------------------------------------------------------
# 5, 6. The headless log: progress while a cell runs, labels, no kernel transport warning
# ---------------------------------------------------------------------------------------------


def test_cell_label():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [md("# Title"), code("x = 1"), md("## Train the model\nIt takes a while."), code("y = 2\n# fit it\nz = 3"),
             code("w = 4"), md("Plot the curves. Then compare them."), code("plot()"), code("setup(globals(), 'x')")]
    assert run_cli.cell_label(cells, 1) == "Title"
    assert run_cli.cell_label(cells, 3) == "fit it"
    assert run_cli.cell_label(cells, 4) == "Train the model"
    assert run_cli.cell_label(cells, 6) == "Plot the curves"
    assert run_cli.cell_label(cells, 7).startswith("setup")
    assert run_cli.cell_label([code("a_very_long_name = 1  " + "x" * 100)], 0, width=20).endswith("…")
    assert run_cli.cell_label([code("a = 1\nb = 2")], 0) == "a = 1"


def test_headless_run_streams_progress_during_a_cell(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(run_cli, "HEARTBEAT_S", 0.5)
    slow = ("# pretend to train\nimport datetime, time\nprint('not a progress line')\n"
            "for i in range(3):\n"
            "    print(f'[{datetime.datetime.now():%H:%M:%S}] step {i + 1}/3 loss 0.5 (1 s left)', flush=True)\n"
            "    time.sleep(0.5)\n"
            "time.sleep(2.5)")
    nb = _notebook(tmp_path / "91_slow.ipynb", ("md", "## Warm up\nFirst a quick cell."), "x = 1", slow)
    assert main(["run", str(nb), "--preset", "smoke", "--out", str(tmp_path / "out")]) == 0
    out, err = capfd.readouterr()
    lines = out.splitlines()
    end = next(i for i, ln in enumerate(lines) if re.match(r"\s+\[91_slow\] cell  4/4 .*pretend to train$", ln))
    steps = [i for i, ln in enumerate(lines) if "step " in ln and "/3 loss 0.5" in ln]
    beats = [i for i, ln in enumerate(lines) if "still running cell 4/4" in ln and "pretend to train" in ln]
    assert len(steps) == 3 and steps[-1] < end, "progress lines come while the cell runs, before its end line"
    assert beats and beats[0] < end
    assert all(lines[i].startswith("      [") for i in steps), "progress lines are indented under the cell lines"
    assert "not a progress line" not in out  # only with --verbose
    assert any(re.match(r"\s+\[91_slow\] cell  3/4 .*Warm up$", ln) for ln in lines)
    assert any(re.match(r"\s+\[91_slow\] cell  1/4 .*parameters$", ln) for ln in lines)
    assert "without encryption" not in out + err and "TCP" not in out + err
    assert "Parent appears to have exited" not in err  # the kernel was shut down, not left behind


# ---------------------------------------------------------------------------------------------
# 7. Clear errors
# ---------------------------------------------------------------------------------------------


def test_parameter_error_from_setup_is_one_line(tmp_path, capsys):
    nb = _notebook(tmp_path / "92_bad.ipynb", 'from ldetok_lite.notebook import setup\nrun = setup(globals(), "92")')
    src = nbformat.read(nb, as_version=4)
    src.cells[0].source += "\nfoo = 1"
    nbformat.write(src, nb)
    assert main(["run", str(nb), "--preset", "smoke", "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in captured.out + captured.err
    assert err.startswith("ldetok-lite: error: 92_bad: unknown notebook parameter 'foo'")
    executed = nbformat.read(tmp_path / "out" / "92_bad.ipynb", as_version=4)
    assert "ConfigError" in _text(executed)  # the traceback stays in the executed notebook


def test_interactive_parameter_advice_is_correct(tmp_path, capsys):
    assert main(["run", "00", "--preset", "smoke", "--out", str(tmp_path), "-p", "interactive", "maybe"]) == 2
    err = capsys.readouterr().err
    assert "--interactive" not in err and "make lab" in err and "never interactive" in err
    help_text = main.__globals__["build_parser"]().format_help()
    assert help_text  # the parser builds
    run_help = subprocess.run([sys.executable, "-m", "ldetok_lite.cli", "run", "--help"], capture_output=True,
                              text=True, timeout=120).stdout
    assert "00-12" in run_help and "00-19" not in run_help
