"""Helpers for ``tests/test_browser.py``: run JupyterLab, drive it with headless Chromium, check panels.

The check works the way a student uses a notebook: open it in JupyterLab, Run > Run All Cells, then
drag each τ / γ / mask slider of every panel with the mouse and step it with the arrow keys. After
each move the panel image (the ``ipywidgets.Image`` ``<img>``) must show new pixels, the slider
readout and the panel's status line must show the new value, and no widget error text may appear
(a panel whose callback raises writes ``Error in <Panel>: ...`` into its status line, see
``ldetok_lite/widgets/base.py``). Chromium is Debian's package, never ``playwright install``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

CHROMIUM = os.environ.get("LDETOK_CHROMIUM") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]
# Text that must never appear in a notebook's outputs or a panel (checked case-sensitively).
ERROR_MARKERS = ("Error displaying widget", "model not found", "Traceback", "Error in ")
# Slider kinds, found by the slider's description label (a panel's τ / γ / mask-ratio controls).
SLIDER_KINDS = {
    "tau": re.compile(r"^\s*(τ|tau)\b", re.I),
    "gamma": re.compile(r"^\s*(γ|gamma)\b", re.I),
    "mask": re.compile(r"\bmask", re.I),
}
# The same quantity in a panel's status text: ``τ = 0.50``, ``tau = 0.5``, ``mask ratio = 0.25`` ...
STATUS_KEYS = {
    "tau": r"(?:τ|tau)",
    "gamma": r"(?:γ|gamma)",
    "mask": r"mask(?:[ _]?ratio)?",
}
NUMBER = r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)"


def unavailable_reason() -> str | None:
    """Why the browser test cannot run here (None when it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing (pip install -e '.[test]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"chromium is not installed at {CHROMIUM} (make browser-deps, or apt-get install chromium)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ notebooks

def set_parameters(src: Path, dst: Path, **values) -> Path:
    """Copy notebook ``src`` to ``dst`` with the literals of its ``parameters`` cell replaced.

    Each ``name = literal  # comment`` line keeps its comment; names the cell lacks are appended.
    """
    nb = nbformat.read(src, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    todo = dict(values)
    for node in ast.parse(cell.source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if not isinstance(target, ast.Name) or target.id not in todo or node.value is None:
            continue
        v = node.value
        if v.lineno != v.end_lineno:
            raise ValueError(f"{src.name}: parameter {target.id} spans several lines")
        line = lines[v.lineno - 1]
        lines[v.lineno - 1] = line[: v.col_offset] + repr(todo.pop(target.id)) + line[v.end_col_offset:]
    lines += [f"{k} = {v!r}" for k, v in todo.items()]
    cell.source = "\n".join(lines)
    for c in nb.cells:  # run from a clean slate
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dst)
    return dst


# ------------------------------------------------------------------------------------ JupyterLab

_LAB_SETTINGS = {
    # every cell attached and rendered, so all outputs are in the DOM
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # no news / update toasts over the notebook (offline anyway)
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                          "checkForUpdates": False},
}


@dataclass
class LabServer:
    """A JupyterLab process started by :func:`start_lab`; ``stop()`` ends it and its kernels."""

    proc: subprocess.Popen
    port: int
    token: str
    root_dir: Path
    state_dir: Path
    log_path: Path
    stopped: bool = field(default=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 10.0):
        req = urllib.request.Request(self.url(f"api/{path}"), method=method,
                                     headers={"Authorization": f"token {self.token}"},
                                     data=b"" if method in ("POST", "PATCH") else None)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Shut the kernels and the server down; kill whatever is left (the server's process group,
        then any kernel whose connection file lives in this server's runtime dir)."""
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            try:
                self.api("shutdown", method="POST", timeout=5)
            except Exception:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        # Kernels run in their own sessions (jupyter_client's start_new_session): find ours by path.
        for pid in leftover_pids(self.state_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def leftover_pids(state_dir: Path) -> list[int]:
    """Processes whose command line names ``state_dir`` (this server's kernels), except ourselves."""
    needle = str(state_dir).encode()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except OSError:
            continue
    return out


def start_lab(root_dir: Path, state_dir: Path, timeout: float = 120.0, attempts: int = 3) -> LabServer:
    """:func:`_start_lab`, retried on a new port when another process took the free port first."""
    for attempt in range(attempts):
        try:
            return _start_lab(root_dir, state_dir, timeout)
        except RuntimeError as e:
            if "already in use" not in str(e) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _start_lab(root_dir: Path, state_dir: Path, timeout: float) -> LabServer:
    """Start JupyterLab on 127.0.0.1 (free port, random token, no browser) serving ``root_dir``.

    All Jupyter state (runtime, config, data, settings, workspaces) lives under ``state_dir``, so the
    user's own settings and kernelspecs cannot interfere; the kernel is this venv's ``python3``.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    for rel, data in _LAB_SETTINGS.items():
        p = state_dir / "settings" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(data))
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # let ipykernel pick its inline backend, as for a student
    env.update(JUPYTER_RUNTIME_DIR=str(state_dir / "runtime"), JUPYTER_CONFIG_DIR=str(state_dir / "config"),
               JUPYTER_DATA_DIR=str(state_dir / "data"), JUPYTERLAB_SETTINGS_DIR=str(state_dir / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(state_dir / "workspaces"), JUPYTER_PLATFORM_DIRS="1",
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS=env.get("LDETOK_BROWSER_KERNEL_THREADS", "1"))
    port, token = free_port(), uuid.uuid4().hex
    log_path = state_dir / "jupyterlab.log"
    # started as `make lab` starts it: the venv's `jupyter lab`, with --allow-root when run as root
    # (the Makefile's LAB_ARGS; tests/test_runner.py checks that target)
    jupyter = Path(sys.executable).parent / "jupyter"
    cmd = [str(jupyter), "lab"] if jupyter.is_file() else [sys.executable, "-m", "jupyterlab"]
    cmd += ["--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root_dir}", "--ServerApp.open_browser=False",
           "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
           "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: only to read the kernel's state
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--ServerApp.terminals_enabled=False", "--MappingKernelManager.cull_idle_timeout=0"]
    if os.geteuid() == 0:  # containers and CI often run as root; JupyterLab refuses to start there without it
        cmd.append("--allow-root")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = LabServer(proc=proc, port=port, token=token, root_dir=root_dir, state_dir=state_dir,
                       log_path=log_path)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            server.stop()
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode}:\n{server.log_tail()}")
        try:
            server.api("status", timeout=2)
            break
        except Exception:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s:\n{server.log_tail()}")
            time.sleep(0.3)
    return server


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


# ------------------------------------------------------------------------------------ the checker

PANEL_CSS = ".widget-vbox:has(> .widget-image)"  # a Panel's ui: VBox(title?, HBox(controls), Image, status)

_JS_PROMPTS = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')]
  .map(c => (c.querySelector('.jp-InputPrompt') || {}).textContent || '')"""
_JS_IMAGE_HASH = """async (img) => {
  if (!img.src) return '';
  const buf = await (await fetch(img.src)).arrayBuffer();
  const h = await crypto.subtle.digest('SHA-256', buf);
  return [...new Uint8Array(h)].map(b => b.toString(16).padStart(2, '0')).join('');
}"""


@dataclass
class Move:
    panel: int
    kind: str
    how: str  # mouse | keyboard
    before: float
    after: float
    readout: str
    status: str
    seconds: float


@dataclass
class NotebookReport:
    notebook: str
    panels: int = 0
    duplicate_views: int = 0
    kinds: set = field(default_factory=set)
    moves: list = field(default_factory=list)
    screenshots: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def find_error_text(text: str) -> str | None:
    for marker in ERROR_MARKERS:
        i = text.find(marker)
        if i >= 0:
            return text[max(0, i - 80): i + 300].strip()
    return None


def assert_no_widget_errors(page, where: str = "") -> None:
    """Fail when any output area of the open notebook shows a widget error or a traceback."""
    texts = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea").all_inner_texts()
    hit = find_error_text("\n".join(texts))
    assert hit is None, f"widget error text in the notebook{where}: {hit!r}"


def status_value(status: str, kind: str) -> float | None:
    """The value a panel's status text shows for ``kind`` (first ``key = number`` match)."""
    m = re.search(rf"(?:^|[^\w·*]){STATUS_KEYS[kind]}\s*[=:]\s*{NUMBER}", status, re.I)
    return float(m.group(1)) if m else None


def _parse_readout(text: str, fallback: float) -> tuple[float, float]:
    """(value, tolerance of one unit in its last digit) from a slider readout like ``0.25``."""
    m = re.fullmatch(NUMBER, text.replace("\u2212", "-").strip())
    if not m:
        return fallback, 0.051
    digits = text.split(".")[1] if "." in text and "e" not in text.lower() else ""
    return float(m.group(1)), 10.0 ** -len(digits) * 1.01


class PanelChecker:
    """Open a notebook in JupyterLab, run all cells, move every τ / γ / mask slider, assert on the panels."""

    def __init__(self, page, server: LabServer, shots_dir: Path, move_timeout: float = 45.0,
                 required_kinds=("tau", "gamma", "mask"), run_timeout: float = 300.0):
        self.required_kinds = tuple(required_kinds)
        self.run_timeout = run_timeout
        self.page = page
        self.js_errors: list[str] = []  # uncaught page errors and console errors
        page.on("pageerror", lambda e: self.js_errors.append(f"pageerror: {e}"))
        page.on("console", lambda m: m.type == "error" and self.js_errors.append(f"console: {m.text}"))
        self.server = server
        self.shots_dir = Path(shots_dir)
        self.shots_dir.mkdir(parents=True, exist_ok=True)
        self.move_timeout = move_timeout

    # -- notebook level -----------------------------------------------------------------------
    def shot(self, report: NotebookReport, locator, name: str) -> Path:
        path = self.shots_dir / f"{report.notebook}_{name}.png"
        try:
            (locator or self.page).screenshot(path=str(path))
            report.screenshots.append(path)
        except Exception:  # a screenshot is evidence, never the failure itself
            pass
        return path

    def open(self, rel_path: str, timeout: float = 90.0) -> None:
        page = self.page
        # ?reset: start from an empty workspace (no tabs restored from an earlier notebook)
        page.goto(self.server.url(f"lab/tree/{rel_path}?reset"), wait_until="domcontentloaded")
        page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=timeout * 1000)
        # the kernel is up when the notebook's session has a connected, idle kernel (the toolbar's
        # indicator says "idle" before the kernel exists, so ask the app: expose_app_in_browser)
        page.wait_for_function(
            """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                       const k = w && w.sessionContext && w.sessionContext.session
                                 && w.sessionContext.session.kernel;
                       return !!k && k.connectionStatus === 'connected' && k.status === 'idle'; }""",
            timeout=timeout * 1000)
        dialog = page.locator(".jp-Dialog")
        assert dialog.count() == 0, f"JupyterLab shows a dialog: {dialog.first.inner_text()!r}"

    def run_all(self, timeout: float = 300.0) -> None:
        """Run > Run All Cells, then wait until every code cell has run (or one failed)."""
        page = self.page
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").click(position={"x": 5, "y": 5})
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        start = time.monotonic()
        deadline = start + timeout
        time.sleep(0.5)
        while True:
            prompts = [p.strip() for p in page.evaluate(_JS_PROMPTS)]
            running = any("*" in p for p in prompts)
            done = all(re.search(r"\[\d+\]", p) for p in prompts)
            started = running or any(re.search(r"\[\d+\]", p) for p in prompts)
            assert started or time.monotonic() - start < 30, f"Run All Cells started no cell: {prompts}"
            failed = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) "
                                  "[data-mime-type='application/vnd.jupyter.error']").count() > 0
            if not running and (done or failed):
                break
            assert time.monotonic() < deadline, f"cells still running after {timeout:.0f} s: {prompts}"
            time.sleep(0.5)
        assert not failed, "a cell raised:\n" + "\n".join(
            page.locator("[data-mime-type='application/vnd.jupyter.error']").all_inner_texts())[:3000]

    def panels(self, timeout: float = 30.0):
        page = self.page
        page.wait_for_function(  # widget views render asynchronously after the cell finished
            f"""() => {{ const p = document.querySelectorAll(
                           '.jp-NotebookPanel:not(.lm-mod-hidden) {PANEL_CSS} > img.widget-image');
                        return p.length > 0 && [...p].every(i => i.src && i.complete && i.naturalWidth > 0); }}""",
            timeout=timeout * 1000)
        return page.locator(f".jp-NotebookPanel:not(.lm-mod-hidden) {PANEL_CSS}").all()

    def check_notebook(self, rel_path: str) -> NotebookReport:
        """The whole check for one notebook (already written with interactive=True under root_dir)."""
        report = self.report = NotebookReport(notebook=Path(rel_path).stem)  # kept when a check fails
        t0 = time.monotonic()
        self.open(rel_path)
        report.seconds["open"] = round(time.monotonic() - t0, 1)
        t1 = time.monotonic()
        try:
            self.run_all(timeout=self.run_timeout)
        except AssertionError:
            self.shot(report, None, "run_all_failed")
            raise
        report.seconds["run_all"] = round(time.monotonic() - t1, 1)
        assert_no_widget_errors(self.page, " after Run All")
        panels = self.panels()
        report.panels = len(panels)
        t2 = time.monotonic()
        views_of_checked = set()
        for i, panel in enumerate(panels):
            if i in views_of_checked:
                continue
            srcs = [self.state(p)["src"] for p in panels]
            self.check_panel(report, i, panel)
            # a panel displayed twice (e.g. ``run.show(panel)`` as a cell's last line also displays
            # the returned panel) is two views of one model: both redraw, so check it once
            views_of_checked |= {j for j, p in enumerate(panels) if j > i and self.state(p)["src"] != srcs[j]}
            report.duplicate_views = len(views_of_checked)
        report.seconds["sliders"] = round(time.monotonic() - t2, 1)
        missing = set(self.required_kinds) - report.kinds
        assert not missing, (f"{report.notebook}: no slider found for {sorted(missing)} in {len(panels)} panel(s); "
                             f"sliders are found by their description label ({SLIDER_KINDS})")
        assert_no_widget_errors(self.page, " after moving the sliders")
        widget_js = [e for e in self.js_errors if re.search(r"widget|model|comm", e, re.I)]
        assert not widget_js, f"{report.notebook}: widget errors in the browser console: {widget_js[:5]}"
        self.shot(report, None, "page")
        report.seconds["total"] = round(time.monotonic() - t0, 1)
        return report

    def close(self, rel_path: str) -> None:
        """Shut down the notebook's kernel (frees its memory before the next notebook)."""
        try:
            for sess in self.server.api("sessions"):
                if sess.get("path") == rel_path:
                    self.server.api(f"sessions/{sess['id']}", method="DELETE")
        except Exception:
            pass

    # -- panel level ---------------------------------------------------------------------------
    def sliders(self, panel) -> list[tuple[str, object]]:
        """(kind, slider locator) for the panel's τ / γ / mask sliders, in display order."""
        out = []
        for s in panel.locator(".widget-slider").all():
            label = s.locator(":scope > .widget-label").first
            text = label.inner_text().strip() if label.count() else ""
            for kind, rx in SLIDER_KINDS.items():
                if rx.search(text):
                    out.append((kind, s))
                    break
        return out

    def state(self, panel, slider=None) -> dict:
        img = panel.locator(":scope > img.widget-image").first
        status = panel.locator(":scope > .widget-html").last
        st = {"src": img.get_attribute("src") or "", "status": status.inner_text() if status.count() else "",
              "panel_text": panel.inner_text()}
        if slider is not None:
            handle = slider.locator(".noUi-handle").first
            readout = slider.locator(".widget-readout").first
            st["readout"] = readout.inner_text().strip() if readout.count() and readout.is_visible() else ""
            # noUiSlider writes aria-value* with one decimal, so the readout is the precise value
            st["handle"] = float(handle.get_attribute("aria-valuenow"))
            st["min"] = float(handle.get_attribute("aria-valuemin"))
            st["max"] = float(handle.get_attribute("aria-valuemax"))
            st["value"], st["tol"] = _parse_readout(st["readout"], st["handle"])
        return st

    def image_hash(self, panel) -> str:
        return panel.locator(":scope > img.widget-image").first.evaluate(_JS_IMAGE_HASH)

    def check_panel(self, report: NotebookReport, index: int, panel) -> None:
        sliders = self.sliders(panel)
        if not sliders:
            return
        panel.scroll_into_view_if_needed()
        self.shot(report, panel, f"panel{index}_initial")
        for kind, slider in sliders:
            report.kinds.add(kind)
            for how in ("mouse", "keyboard"):
                self.move(report, index, panel, kind, slider, how)
        self.shot(report, panel, f"panel{index}_final")

    def move(self, report: NotebookReport, index: int, panel, kind: str, slider, how: str) -> None:
        page = self.page
        before = self.state(panel, slider)
        hash_before = self.image_hash(panel)
        lo, hi, v0 = before["min"], before["max"], before["value"]
        handle = slider.locator(".noUi-handle").first
        t0 = time.monotonic()
        if how == "mouse":
            frac0 = (v0 - lo) / (hi - lo) if hi > lo else 0.0
            frac = 0.8 if frac0 < 0.5 else 0.25
            slider.scroll_into_view_if_needed()
            track = slider.locator(".noUi-target").first.bounding_box()
            hb = handle.bounding_box()
            y = hb["y"] + hb["height"] / 2
            page.mouse.move(hb["x"] + hb["width"] / 2, y)
            page.mouse.down()
            page.mouse.move(track["x"] + frac * track["width"], y, steps=8)
            page.mouse.up()
            expect_dir = 1 if frac > frac0 else -1
            target = lo + frac * (hi - lo)
        else:
            handle.focus()
            key = "ArrowRight" if v0 < hi else "ArrowLeft"
            for _ in range(2):
                page.keyboard.press(key)
            expect_dir = 1 if key == "ArrowRight" else -1
            target = None
        where = f"{report.notebook} panel {index}, {kind} slider, {how}"
        deadline = time.monotonic() + self.move_timeout
        while True:
            now = self.state(panel, slider)
            err = find_error_text(now["panel_text"])
            if err is not None:
                self.shot(report, panel, f"panel{index}_{kind}_{how}_FAILED")
                raise AssertionError(f"{where}: the panel shows an error: {err!r}")
            assert now["value"] != v0 or time.monotonic() - t0 < 5, \
                f"{where}: the slider did not move (still {v0})"
            shown = status_value(now["status"], kind)
            if (now["src"] != before["src"] and now["value"] != v0 and shown is not None
                    and abs(shown - now["value"]) <= now["tol"]):
                break
            if time.monotonic() > deadline:
                self.shot(report, panel, f"panel{index}_{kind}_{how}_FAILED")
                raise AssertionError(
                    f"{where}: no redraw within {self.move_timeout:.0f} s (slider {v0} -> {now['value']}, "
                    f"image src changed: {now['src'] != before['src']}, status: {now['status']!r})")
            time.sleep(0.2)
        seconds = time.monotonic() - t0
        v1 = now["value"]
        assert (v1 - v0) * expect_dir > 0, f"{where}: the slider moved the wrong way ({v0} -> {v1})"
        if target is not None:
            assert abs(v1 - target) <= 0.1 * (hi - lo), f"{where}: dragged to ~{target:.3g}, value is {v1}"
        assert now["readout"], f"{where}: the slider shows no readout"
        assert abs(now["handle"] - v1) <= 0.051 + now["tol"], \
            f"{where}: the readout {now['readout']!r} disagrees with the handle position {now['handle']}"
        assert now["status"] != before["status"], f"{where}: the status text did not change"
        hash_after = self.image_hash(panel)
        assert hash_after and hash_after != hash_before, f"{where}: the new image has the same pixels as before"
        self.shot(report, panel, f"panel{index}_{kind}_{how}")
        report.moves.append(Move(index, kind, how, v0, v1, now["readout"], now["status"], round(seconds, 2)))


def copy_screenshots(report: NotebookReport, dest: Path) -> list[Path]:
    """Copy a notebook's page and final panel screenshots to ``dest`` (for a human to look at)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for p in report.screenshots:
        if p.exists() and (p.stem.endswith(("_page", "_final", "_initial")) or "FAILED" in p.stem):
            out.append(Path(shutil.copy2(p, dest / p.name)))
    return out
