"""The ``ldetok-lite`` command: run notebooks headless, train, evaluate, benchmark, check setup.

    ldetok-lite run [NOTEBOOK ...] --preset tiny --out runs/demo [-p name value ...]
    ldetok-lite doctor
    ldetok-lite presets [NAME]
    ldetok-lite train tokenizer|generator ...
    ldetok-lite evaluate ...
    ldetok-lite bench tokenizer|generator|compare|speed ...

Multi-GPU and multi-node training use torchrun around ``ldetok-lite train`` (see README,
"Headless and multi-GPU runs").
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from .config import PRESET_NAMES, ConfigError, load_preset

SERIES_GLOB = "[0-1][0-9]_*.ipynb"  # the learning series; 2x notebooks are full-scale research runs


class CliError(Exception):
    """A one-line error for the user (printed without a traceback, exit code 2)."""


# --------------------------------------------------------------------------------------------
# run: execute notebooks with papermill
# --------------------------------------------------------------------------------------------

def _parse_value(text: str):
    """Papermill's CLI typing: True/False/None, then int, then float, else the string."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def notebooks_dir() -> Path:
    from .notebook import repo_root

    d = repo_root() / "notebooks"
    if not d.is_dir():
        raise CliError(f"no notebooks/ folder under {repo_root()}; run from a checkout of ldetok_lite")
    return d


def find_notebooks(names: list[str]) -> list[Path]:
    """Resolve notebook names ('01', '01_latent_corruption', a path) in series order."""
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
    import papermill as pm

    declared = pm.inspect_notebook(str(nb))
    if not declared:
        raise CliError(f"{nb.name} has no cell tagged 'parameters'")
    for name, value in params.items():
        if name not in declared:
            import difflib

            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CliError(f"unknown parameter {name!r} for {nb.stem}{hint}; it takes: {', '.join(declared)}")
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
    from papermill.engines import NBClientEngine

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


def run_notebooks(notebooks: list[Path], out: Path, preset: str, seed: int = 0, params: dict | None = None,
                  kernel: str = "python3", verbose: bool = False, timeout: int | None = None) -> list[Path]:
    """Execute ``notebooks`` in order into ``out``; stop at the first failure (raises CliError)."""
    import papermill as pm
    from papermill.engines import papermill_engines
    from papermill.exceptions import PapermillExecutionError

    from .notebook import COMMON_PARAMETERS, check_parameters

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
        from .device import pick_device

        pick_device(params["device"])  # e.g. cuda asked for on a machine without it
    papermill_engines.register("ldetok-cells", _logging_engine())
    out.mkdir(parents=True, exist_ok=True)
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
        print(f"[{nb.stem}] done in {time.time() - t0:.1f}s", flush=True)
        written.append(target)
    return written


def cmd_run(args) -> int:
    params = {}
    for name, value in args.parameters or []:
        params[name] = _parse_value(value)
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


# --------------------------------------------------------------------------------------------
# doctor
# --------------------------------------------------------------------------------------------

def _version(pkg: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def offline_assets() -> list[tuple[str, bool, str]]:
    """(asset, present, how to get it) for every external weight file an option may need."""
    import torch

    hub = Path(torch.hub.get_dir()) / "checkpoints"
    assets = []

    def hub_file(label, prefix, how):
        found = sorted(hub.glob(prefix + "*")) if hub.is_dir() else []
        assets.append((label, bool(found), str(found[0]) if found else how))

    hub_file("LPIPS VGG16 backbone (perceptual loss)", "vgg16-",
             "with internet: python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\"")
    hub_file("ConvNeXt-S logits (optional perceptual term)", "convnext_small-",
             "with internet: python -c \"import torchvision; "
             "torchvision.models.convnext_small(weights='IMAGENET1K_V1')\"")
    hub_file("Inception-v3 FID weights (rFID/gFID on real images)", "weights-inception-2015-12-05",
             "with internet: python -c \"import torch_fidelity; torch_fidelity.calculate_metrics(...)\" once, "
             "or pass --inception-weights PATH")
    try:
        import lpips

        lin = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
        assets.append(("LPIPS linear layers (ship with the lpips package)", lin.is_file(), str(lin)))
    except ImportError:
        assets.append(("LPIPS linear layers", False, "pip install lpips"))
    return assets


def cmd_doctor(args) -> int:
    import platform

    import torch

    from .device import describe_device, pick_device

    print(f"python              {platform.python_version()} ({sys.executable})")
    for pkg in ("torch", "torchvision", "timm", "lpips", "torch-fidelity", "safetensors", "papermill", "ipykernel",
                "ipywidgets", "jupyterlab", "jupyterlab_widgets", "matplotlib", "scikit-image"):
        print(f"{pkg:<20}{_version(pkg) or 'MISSING'}")
    print(f"device              {describe_device(pick_device())}")
    print(f"torch threads       {torch.get_num_threads()}")
    ipw, jlw = _version("ipywidgets"), _version("jupyterlab_widgets")
    if ipw and jlw and ipw.split(".")[0] == "8" and jlw.split(".")[0] == "3":
        print(f"widgets             OK: kernel ipywidgets {ipw} matches front end jupyterlab_widgets {jlw}")
    else:
        print(f"widgets             MISMATCH: ipywidgets {ipw} / jupyterlab_widgets {jlw}; "
              "pip install 'ipywidgets>=8.1,<9' in the kernel env and jupyterlab_widgets 3.x in the server env")
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        specs = KernelSpecManager().find_kernel_specs()
        print(f"kernels             {', '.join(sorted(specs)) or 'none'} (papermill uses python3)")
    except Exception as e:  # pragma: no cover - depends on the install
        print(f"kernels             could not list kernelspecs: {e}")
    print("offline assets (none is needed for the tiny preset):")
    for label, present, where in offline_assets():
        print(f"  [{'x' if present else ' '}] {label}\n      {where}")
    return 0


# --------------------------------------------------------------------------------------------
# presets, and the commands implemented in other modules
# --------------------------------------------------------------------------------------------

def cmd_presets(args) -> int:
    names = [args.name] if args.name else list(PRESET_NAMES)
    for name in names:
        p = load_preset(name)
        if args.name:
            print(json.dumps(p.to_dict(), indent=2))
        else:
            t, g = p.tokenizer_train, p.generator_train
            print(f"{name:<6} data={p.data.dataset}@{p.data.img_size}px tokenizer={p.tokenizer.model} "
                  f"({t.steps} steps, batch {t.batch_size}) generators={p.generator.size} "
                  f"({g.steps} steps, batch {g.batch_size})")
    return 0


def _delegate(module: str):
    """Build a sub-parser from ``ldetok_lite.<module>`` (add_arguments/run) on demand."""

    def add(sub, name, help_text):
        p = sub.add_parser(name, help=help_text)
        try:
            mod = importlib.import_module(f"ldetok_lite.{module}")
        except ImportError as e:
            p.set_defaults(func=lambda a, e=e: _missing(module, e))
            return p
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
        return p

    return add


def _missing(module, err) -> int:
    raise CliError(f"this command needs ldetok_lite.{module}, which failed to import: {err}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ldetok-lite", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="execute notebooks headless with papermill")
    p.add_argument("notebooks", nargs="*", help="names like 01 or 01_latent_corruption (default: the series 00-19)")
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

    p = sub.add_parser("doctor", help="versions, device, widget front end, offline assets")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("presets", help="list presets or print one as JSON")
    p.add_argument("name", nargs="?", choices=PRESET_NAMES)
    p.set_defaults(func=cmd_presets)

    _delegate("training_cli")(sub, "train", "train a tokenizer or a generator (torchrun for multi-GPU)")
    _delegate("benchmarks.evaluate")(sub, "evaluate", "rFID/PSNR/SSIM of a tokenizer, gFID/IS of a generator")

    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bsub = bench.add_subparsers(dest="bench", required=True)
    _delegate("benchmarks.tokenizer")(bsub, "tokenizer", "tokenizer forward+backward ms/step and img/s")
    _delegate("benchmarks.generator")(bsub, "generator", "generator training and sampling img/s")
    _delegate("benchmarks.compare")(bsub, "compare", "the tokenizer x generator comparison table")
    _delegate("benchmarks.speed")(bsub, "speed", "img/s and MFU at the paper's sizes vs the official recipe")
    return parser


def _user_error(e: Exception) -> bool:
    """Errors that describe a bad input or an unusable file (printed as one line, no traceback):
    ours, ValueError / FileNotFoundError, and the library's checkpoint and non-finite-loss errors."""
    kinds = [CliError, ConfigError, ValueError, FileNotFoundError]
    for module, name in (("ldetok_lite.checkpoint", "CheckpointError"), ("ldetok_lite.train", "NonFiniteLossError")):
        if module in sys.modules:  # raised from there only if it was imported
            kinds.append(getattr(sys.modules[module], name))
    return isinstance(e, tuple(kinds))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as e:
        if os.environ.get("LDETOK_DEBUG") or not _user_error(e):
            raise
        print(f"ldetok-lite: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ldetok-lite: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
