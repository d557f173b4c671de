"""``ldetok-lite run``: execute notebooks headless with papermill, one readable line per cell."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import papermill as pm
from jupyter_client.kernelspec import KernelSpecManager
from nbclient.exceptions import CellTimeoutError
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError

from ..config import suggest
from ..device import pick_device
from ..io import parse_value, repo_root
from ..notebook import COMMON_PARAMETERS, check_parameters
from ..presets import PRESET_NAMES, load_preset
from .errors import CliError, check_out_dir

SERIES_GLOB = "[0-1][0-9]_*.ipynb"  # the learning series; 2x notebooks are full-scale research runs


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


def _logging_engine():
    """A papermill engine that prints one readable line per executed cell."""
    class CellLogEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            start, complete = nb_man.cell_start, nb_man.cell_complete
            code_cells = [c for c in nb_man.nb.cells if c.cell_type == "code"]
            total = len(code_cells)
            timers = {}
            stem = nb_man.nb.metadata.get("papermill", {}).get("input_path", "notebook")
            stem = Path(stem).stem

            def cell_start(cell, cell_index=None, **kw):
                timers[cell_index] = time.time()
                return start(cell, cell_index, **kw)

            def cell_complete(cell, cell_index=None, **kw):
                if cell.cell_type == "code":
                    n = code_cells.index(cell) + 1 if cell in code_cells else cell_index
                    first = next((ln.strip() for ln in cell.source.splitlines() if ln.strip()), "")
                    dt = time.time() - timers.get(cell_index, time.time())
                    print(f"  [{stem}] cell {n:>2}/{total} {dt:6.1f}s  {first[:70]}", flush=True)
                return complete(cell, cell_index, **kw)

            nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return CellLogEngine


def _check_kernel(kernel: str) -> None:
    """An unknown Jupyter kernel is a one-line error before any notebook starts."""
    names = sorted(KernelSpecManager().find_kernel_specs())
    if kernel not in names:
        raise CliError(f"--kernel {kernel!r} is not installed; installed: {', '.join(names) or 'none'} "
                       "(`jupyter kernelspec list`; `make install` registers python3)")


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
    papermill_engines.register("ldetok-cells", _logging_engine())
    cache_dir = out / "cache"
    written = []
    for nb in notebooks:
        nb_out = out / nb.stem
        base = {"preset": preset, "seed": seed, "out_dir": str(nb_out.resolve()), "interactive": False}
        declared = pm.inspect_notebook(str(nb))
        if "cache_dir" in declared:
            base["cache_dir"] = str(cache_dir.resolve())
        base.update(params)
        target = out / nb.name
        t0 = time.time()
        print(f"[{nb.stem}] running at preset {preset!r} -> {target}", flush=True)
        try:
            pm.execute_notebook(
                str(nb), str(target), parameters=base, kernel_name=kernel, engine_name="ldetok-cells",
                progress_bar=False, log_output=verbose, cwd=str(nb.parent), execution_timeout=timeout,
            )
        except PapermillExecutionError as e:
            first = str(e.evalue).splitlines()[0][:200] if e.evalue else ""
            raise CliError(f"{nb.stem} failed at cell {e.exec_count} ({e.ename}: {first}); "
                           f"the executed notebook with the traceback is {target}") from None
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
    for reserved in ("preset", "seed", "out_dir", "interactive"):
        if reserved in params:
            raise CliError(f"pass {reserved} with its own option (--{reserved.replace('_dir', '')}), not -p")
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
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("notebooks", nargs="*", help="names like 01 or 01_latent_corruption (default: the series 00-10)")
    p.add_argument("--preset", default="tiny", help=f"one of {', '.join(PRESET_NAMES)} (default tiny)")
    p.add_argument("--out", default="runs/demo", help="folder for executed notebooks and their outputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    p.add_argument("-p", "--parameter", dest="parameters", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="extra notebook parameter (papermill typing)")
    p.add_argument("--kernel", default="python3")
    p.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    p.add_argument("--verbose", action="store_true", help="stream cell outputs too")
    p.set_defaults(func=cmd_run)
