"""The τ / γ / mask panels work in a real browser: JupyterLab + headless Chromium (issue 9).

papermill cannot show that a slider renders and redraws (it even swallows callback errors), so
these tests do what a student does: open the notebook in JupyterLab at the ``smoke`` preset with
``interactive=True``, Run All Cells, drag and arrow-key every τ / γ / mask slider, and check the
panel image, the readouts and the absence of widget errors (``tests/browser_support.py``).
Screenshots go to the test's tmp folder; the final ones are copied to ``runs/browser-screenshots/``.
Needs Debian's chromium (``make browser-deps``) and the ``playwright`` package; skipped otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import browser_support as bs
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "browser_fixture.ipynb"
SCREENSHOTS = ROOT / "runs" / "browser-screenshots"
# notebook -> slider kinds that must be found among its panels
NOTEBOOKS = {
    "01_latent_corruption": ("tau", "gamma", "mask"),
    "04_latent_explorer": ("tau", "gamma", "mask"),
    "11_cnn_tokenizer": ("tau", "gamma", "mask"),
}

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a temp folder of notebook copies; always stopped afterwards."""
    reason = bs.unavailable_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("browser")
    root_dir = base / "notebooks"
    root_dir.mkdir()
    server = bs.start_lab(root_dir, base / "jupyter")
    try:
        spec = server.api("kernelspecs")["kernelspecs"]["python3"]["spec"]
        assert Path(spec["argv"][0]).absolute().is_relative_to(Path(sys.prefix).absolute()), \
            f"the python3 kernel is not this venv's: {spec['argv']}"
        yield server
    finally:
        server.stop()
    left = bs.leftover_pids(server.state_dir)
    assert not left, f"processes of the test's JupyterLab are still alive: {left}"


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = bs.launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()


def _copy(lab, src: Path, name: str, tmp_path: Path, shared_cache: Path, **extra) -> str:
    """Write ``src`` under the server's root with smoke/interactive parameters; return its relative path."""
    bs.set_parameters(src, lab.root_dir / f"{name}.ipynb", preset="smoke", interactive=True, seed=0,
                      out_dir=str(tmp_path / "out"), cache_dir=str(shared_cache), **extra)
    return f"{name}.ipynb"


def _check(lab, page, rel: str, tmp_path: Path, **kw):
    checker = bs.PanelChecker(page, lab, tmp_path / "shots", **kw)
    try:
        return checker.check_notebook(rel)
    finally:
        checker.close(rel)


def _report(report, tmp_path: Path) -> None:
    kept = bs.copy_screenshots(report, SCREENSHOTS)
    print(f"\n{report.notebook}: {report.panels} panel view(s) ({report.duplicate_views} duplicate), "
          f"{len(report.moves)} slider moves, timings {report.seconds}; screenshots in {tmp_path / 'shots'} "
          f"(copies: {[p.name for p in kept]})")
    for m in report.moves:
        print(f"  panel {m.panel} {m.kind:<5} {m.how:<8} {m.before:g} -> {m.after:g} ({m.seconds:.1f} s) "
              f"status: {m.status}")


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_panels_in_browser(name, lab, page, tmp_path, shared_cache):
    src = ROOT / "notebooks" / f"{name}.ipynb"
    assert src.exists(), f"notebooks/{name}.ipynb is missing"
    rel = _copy(lab, src, name, tmp_path, shared_cache)
    report = _check(lab, page, rel, tmp_path, required_kinds=NOTEBOOKS[name])
    _report(report, tmp_path)
    assert report.moves


def test_check_fails_on_a_panel_whose_callback_raises(lab, page, tmp_path, shared_cache):
    """The fixture notebook shows a working panel, then one whose render raises after its first call
    (the static figure): the check passes on the first (positive control) and fails on the second."""
    rel = _copy(lab, FIXTURE, "browser_fixture", tmp_path, shared_cache, broken=True, device="cpu")
    checker = bs.PanelChecker(page, lab, tmp_path / "shots", move_timeout=20)
    try:
        with pytest.raises(AssertionError, match=r"panel \d+, tau slider, mouse: the panel shows an error: .*"
                                                 r"Error in FixturePanel: RuntimeError: deliberately broken") as exc:
            checker.check_notebook(rel)
    finally:
        checker.close(rel)
    report = checker.report
    _report(report, tmp_path)
    print(f"the check failed as it should: {str(exc.value)[:400]}")
    assert [(m.kind, m.how) for m in report.moves] == [(k, h) for k in ("tau", "gamma", "mask")
                                                       for h in ("mouse", "keyboard")], \
        "the working panel (the positive control) should have passed all six moves"
    assert {m.panel for m in report.moves} == {0}
    failed = [p for p in report.screenshots if "FAILED" in p.name]
    assert failed, "the failing move should leave a screenshot"
    bs.copy_screenshots(report, SCREENSHOTS)
