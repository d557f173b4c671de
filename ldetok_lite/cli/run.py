"""``ldetok-lite run``: execute notebooks headless with papermill, one readable line per cell.

While a cell runs, the library's progress lines (``run.log``: training steps, loss, time left) are
streamed to the terminal, indented under the notebook's name, and a long silent cell gets a
``still running`` line every :data:`HEARTBEAT_S` seconds; when it ends, one line names it by what
it does (:func:`cell_label`) with its time. ``--verbose`` streams every output line.

Trained models go to the series' one model cache, the notebooks' own default (``runs/cache`` of
the checkout), so JupyterLab later finds the models a headless run trained; figures, metrics and
``summary.json`` go next to each executed notebook (``--out``/<notebook>/). Kernels run over IPC
sockets (no TCP ports, no encryption warning) where the platform has them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import papermill as pm
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.utils import run_sync
from nbclient.exceptions import CellTimeoutError
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError

from ..config import suggest
from ..device import pick_device
from ..io import parse_value, repo_root
from ..notebook import COMMON_PARAMETERS, check_parameters
from ..presets import PRESET_NAMES, load_preset
from .errors import CliError, check_out_dir

SERIES_GLOB = "[0-1][0-9]_*.ipynb"  # the learning series 00-12; 2x notebooks are full-scale research runs
HEARTBEAT_S = 30.0  # a cell silent this long gets a "still running" line (and again every HEARTBEAT_S)
_PROGRESS = re.compile(r"^\[\d\d:\d\d:\d\d\] ")  # NotebookRun.log lines: the library's progress
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def notebooks_dir() -> Path:
    d = repo_root() / "notebooks"
    if not d.is_dir():
        raise CliError(f"no notebooks/ folder under {repo_root()}; run from a checkout of ldetok_lite")
    return d


def find_notebooks(names: list[str]) -> list[Path]:
    """Resolve notebook names ('01', '01_latent_corruption', a path) in series order."""
    if names and all(Path(n).suffix == ".ipynb" and Path(n).is_file() for n in names):
        return [Path(n) for n in names]  # explicit notebook files: no checkout needed
    nb_dir = notebooks_dir()
    if not names:
        found = sorted(nb_dir.glob(SERIES_GLOB))
        if not found:
            raise CliError(f"no notebooks found in {nb_dir}")
        return found
    out = []
    for name in names:
        p = Path(name)
        if p.suffix == ".ipynb" and p.is_file():
            out.append(p)
            continue
        matches = sorted(nb_dir.glob(f"{name}*.ipynb")) or sorted(nb_dir.glob(f"*{name}*.ipynb"))
        if len(matches) != 1:
            known = ", ".join(q.stem for q in sorted(nb_dir.glob("*.ipynb")))
            what = "matches no notebook" if not matches else f"is ambiguous ({', '.join(m.stem for m in matches)})"
            raise CliError(f"notebook {name!r} {what}; known: {known}")
        out.append(matches[0])
    return out


def _check_parameters(nb: Path, params: dict) -> None:
    """Reject unknown names and wrong types against the notebook's ``parameters`` cell."""
    declared = pm.inspect_notebook(str(nb))
    if not declared:
        raise CliError(f"{nb.name} has no cell tagged 'parameters'")
    for name, value in params.items():
        if name not in declared:
            raise CliError(f"unknown parameter {name!r} for {nb.stem}{suggest(name, declared)}; it takes: "
                           f"{', '.join(declared)}")
        want = declared[name].get("inferred_type_name", "None")
        ok = {
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "bool": lambda v: isinstance(v, bool),
            "str": lambda v: isinstance(v, str),
        }.get(want, lambda v: True)
        if not ok(value):
            raise CliError(f"parameter {name}={value!r} has the wrong type for {nb.stem}: expected {want}")


def _first_sentence(markdown: str) -> str:
    for line in markdown.splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line:
            text = re.sub(r"[*_`]", "", line)
            return re.split(r"(?<=[.!?:])\s", text, maxsplit=1)[0].rstrip(".:")
    return ""


def cell_label(cells: list, index: int, width: int = 70) -> str:
    """What code cell ``cells[index]`` does, in a few words: its first comment line, else the
    heading (or first sentence) of the nearest markdown cell above it, else its first code line.
    The parameters cell and papermill's injected one are named as such."""
    cell = cells[index]
    tags = cell.get("metadata", {}).get("tags", [])
    if "injected-parameters" in tags:
        label = "parameters (injected by the run)"
    elif "parameters" in tags:
        label = "parameters"
    elif "setup(globals()" in cell.source:  # the second cell of every notebook (ldetok_lite.notebook)
        label = "setup: check the parameters, pick the device"
    else:
        lines = [ln.strip() for ln in cell.source.splitlines() if ln.strip()]
        comment = next((ln.lstrip("#").strip() for ln in lines if ln.startswith("#") and not ln.startswith("#!")
                        and ln.lstrip("#").strip()), "")
        above = next((c for c in reversed(cells[:index]) if c.cell_type == "markdown" and c.source.strip()), None)
        label = comment or (_first_sentence(above.source) if above is not None else "") or (lines[0] if lines else "")
    return label if len(label) <= width else label[:width - 1] + "…"


class CellReporter:
    """The terminal side of a headless run: progress lines while a cell runs (papermill hands every
    stdout/stderr chunk to :meth:`write`), a heartbeat for silent cells, one line per finished cell."""

    def __init__(self, stem: str, total: int, verbose: bool = False, heartbeat: float | None = None,
                 out=None):
        self.stem, self.total, self.verbose = stem, total, verbose
        self.heartbeat = HEARTBEAT_S if heartbeat is None else heartbeat
        self.out = out or sys.stdout
        self._lock = threading.Lock()
        self._buf = {"stdout": "", "stderr": ""}
        self._cell: tuple[int, str, float] | None = None
        self._last = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _print(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)
            self._last = time.time()

    def stream(self, name: str):
        reporter = self

        class _Stream:  # the file-like object papermill writes a cell's stream output to
            def write(self, text: str) -> None:
                reporter._feed(name, text)

            def flush(self) -> None:
                pass

        return _Stream()

    def _feed(self, name: str, text: str) -> None:
        buf = self._buf[name] + _ANSI.sub("", text).replace("\r", "\n")
        *lines, self._buf[name] = buf.split("\n")
        for line in lines:
            if line.strip() and (self.verbose or (name == "stdout" and _PROGRESS.match(line))):
                self._print(f"      {line.rstrip()}")

    def start(self, n: int, label: str) -> None:
        self._cell = (n, label, time.time())
        self._last = time.time()
        if self._thread is None and self.heartbeat > 0:
            self._thread = threading.Thread(target=self._beat, daemon=True, name="ldetok-heartbeat")
            self._thread.start()

    def end(self, n: int, label: str) -> None:
        for name in self._buf:  # a last line without a newline
            if self._buf[name]:
                self._feed(name, "\n")
        began = self._cell[2] if self._cell and self._cell[0] == n else time.time()
        self._cell = None
        self._print(f"  [{self.stem}] cell {n:>2}/{self.total} {time.time() - began:6.1f}s  {label}")

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.heartbeat / 4)):
            cell = self._cell
            if cell is not None and time.time() - self._last >= self.heartbeat:
                n, label, began = cell
                self._print(f"    still running cell {n}/{self.total} ({time.time() - began:.0f} s): {label}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _logging_engine(reporter_for):
    """A papermill engine that reports each cell to the :class:`CellReporter` ``reporter_for(nb)``."""
    class CellLogEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            start, complete = nb_man.cell_start, nb_man.cell_complete
            cells = nb_man.nb.cells
            code_ids = [id(c) for c in cells if c.cell_type == "code"]
            reporter = reporter_for(nb_man.nb, len(code_ids))

            def where(cell, cell_index):
                n = code_ids.index(id(cell)) + 1 if id(cell) in code_ids else cell_index
                idx = cell_index if cell_index is not None and cells[cell_index] is cell else \
                    next(i for i, c in enumerate(cells) if c is cell)
                return n, cell_label(cells, idx)

            def cell_start(cell, cell_index=None, **kw):
                if cell.cell_type == "code":
                    reporter.start(*where(cell, cell_index))
                return start(cell, cell_index, **kw)

            def cell_complete(cell, cell_index=None, **kw):
                if cell.cell_type == "code":
                    reporter.end(*where(cell, cell_index))
                return complete(cell, cell_index, **kw)

            nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
            kwargs.update(stdout_file=reporter.stream("stdout"), stderr_file=reporter.stream("stderr"))
            try:
                return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
            finally:
                reporter.close()

    return CellLogEngine


def _kernel_manager(kernel: str, folder: str) -> AsyncKernelManager:
    """A kernel manager for ``kernel`` over IPC sockets in ``folder`` (TCP on Windows): no open
    ports, and no 'running over TCP without encryption' warning in the run's log. Asynchronous, as
    nbclient's own: with a blocking client its output poll holds the event loop and ``--timeout``
    never fires."""
    if os.name == "nt":
        return AsyncKernelManager(kernel_name=kernel)
    return AsyncKernelManager(kernel_name=kernel, transport="ipc", ip=os.path.join(folder, "k"),
                         connection_file=os.path.join(folder, "kernel.json"))


def _check_kernel(kernel: str) -> None:
    """An unknown Jupyter kernel is a one-line error before any notebook starts."""
    names = sorted(KernelSpecManager().find_kernel_specs())
    if kernel not in names:
        raise CliError(f"--kernel {kernel!r} is not installed; installed: {', '.join(names) or 'none'} "
                       "(`jupyter kernelspec list`; `make install` registers python3)")


def _failure_message(stem: str, e: PapermillExecutionError, target: Path) -> str:
    """One line for a failed cell. A parameter error from the setup cell (``ConfigError``) is the
    user's mistake: its own message, no traceback; the executed notebook keeps the traceback."""
    first = _ANSI.sub("", str(e.evalue or "")).strip().splitlines()
    first = first[0][:300] if first else ""
    if e.ename == "ConfigError":
        return f"{stem}: {first} (the executed notebook {target} shows where)"
    return (f"{stem} failed at cell {e.exec_count} ({e.ename}: {first}); "
            f"the executed notebook with the traceback is {target}")


def run_notebooks(notebooks: list[Path], out: Path, preset: str, seed: int = 0, params: dict | None = None,
                  kernel: str = "python3", verbose: bool = False, timeout: int | None = None) -> list[Path]:
    """Execute ``notebooks`` in order into ``out``; stop at the first failure (raises CliError)."""
    load_preset(preset)  # a one-line error for an unknown preset, before anything runs
    params = dict(params or {})
    if params.get("data_dir") and not Path(params["data_dir"]).is_dir():
        raise CliError(f"data_dir {params['data_dir']!r} does not exist")
    for nb in notebooks:
        _check_parameters(nb, params)
    # the values setup() checks in the notebook (choices, ranges), checked here before any kernel starts
    common = {"preset": preset, "seed": seed, **params}
    check_parameters({k: v for k, v in common.items() if k in COMMON_PARAMETERS})
    if params.get("device"):
        pick_device(params["device"])  # e.g. cuda asked for on a machine without it
    _check_kernel(kernel)
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    for nb in notebooks:
        if (out / nb.name).is_symlink():
            raise CliError(f"{out / nb.name} is a symbolic link; the kit does not write through links (remove it "
                           "or choose another --out)")
    written = []
    for nb in notebooks:
        # out_dir: next to the executed notebook. cache_dir: not passed (unless -p cache_dir), so the
        # notebook uses its own default, the series' shared cache that JupyterLab uses too.
        base = {"preset": preset, "seed": seed, "out_dir": str((out / nb.stem).resolve()), "interactive": False}
        base.update(params)
        target = out / nb.name
        t0 = time.time()
        print(f"[{nb.stem}] running at preset {preset!r} -> {target}", flush=True)

        def reporter_for(nb_node, total, stem=nb.stem):
            return CellReporter(stem, total, verbose=verbose)

        papermill_engines.register("ldetok-cells", _logging_engine(reporter_for))
        try:
            with tempfile.TemporaryDirectory(prefix="ldetok-kernel-") as kdir:
                km = _kernel_manager(kernel, kdir)
                try:
                    pm.execute_notebook(
                        str(nb), str(target), parameters=base, kernel_name=kernel, engine_name="ldetok-cells",
                        progress_bar=False, cwd=str(nb.parent), execution_timeout=timeout, km=km,
                    )
                finally:  # nbclient stops only the kernels it made itself
                    if km.has_kernel:
                        run_sync(km.shutdown_kernel)(now=True)
        except PapermillExecutionError as e:
            raise CliError(_failure_message(nb.stem, e, target)) from None
        except CellTimeoutError:
            raise CliError(f"{nb.stem}: a cell ran longer than --timeout {timeout} s and was stopped; raise --timeout "
                           f"(or leave it out: no limit). The partly executed notebook is {target}") from None
        print(f"[{nb.stem}] done in {time.time() - t0:.1f}s", flush=True)
        written.append(target)
    return written


def cmd_run(args) -> int:
    params = {}
    for name, value in args.parameters or []:
        params[name] = parse_value(value)
    reserved = {
        "preset": "pass preset with its own option (--preset), not -p",
        "seed": "pass seed with its own option (--seed), not -p",
        "out_dir": "pass out_dir with its own option, not -p: --out DIR (each notebook's out_dir is DIR/<notebook>)",
        "interactive": "interactive cannot be passed: headless runs are never interactive (interactive=False, static "
                       "figures only); for the sliders open the notebook in JupyterLab (make lab)",
    }
    for name, advice in reserved.items():
        if name in params:
            raise CliError(advice)
    if args.device:
        params["device"] = args.device
    load_preset(args.preset)
    notebooks = find_notebooks(args.notebooks)
    out = Path(args.out)
    t0 = time.time()
    written = run_notebooks(notebooks, out, args.preset, args.seed, params, args.kernel, args.verbose, args.timeout)
    pngs = sorted(out.rglob("*.png"))
    print(f"\n{len(written)} notebook(s) executed in {time.time() - t0:.0f}s at preset {args.preset!r}.")
    print(f"Executed notebooks: {out}/*.ipynb")
    print(f"Figures ({len(pngs)} PNG): {out}/<notebook>/*.png")
    if "cache_dir" not in params:
        print("Trained models: runs/cache of the checkout, shared with JupyterLab (make lab finds them)")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("notebooks", nargs="*", help="names like 01 or 01_latent_corruption (default: the learning "
                   "series 00-12; the full-scale 20-22 run only by name)")
    p.add_argument("--preset", default="tiny", help=f"one of {', '.join(PRESET_NAMES)} (default tiny)")
    p.add_argument("--out", default="runs/demo", help="folder for the executed notebooks; each one's figures and "
                   "metrics go to OUT/<notebook>/ (trained models go to the shared runs/cache; -p cache_dir DIR for "
                   "another)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    p.add_argument("-p", "--parameter", dest="parameters", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="extra notebook parameter (papermill typing)")
    p.add_argument("--kernel", default="python3")
    p.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    p.add_argument("--verbose", action="store_true", help="stream every output line of the cells (default: the "
                   "library's progress lines, and a 'still running' line for a long silent cell)")
    p.set_defaults(func=cmd_run)
