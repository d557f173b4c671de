"""The second cell of every notebook: validate the parameters cell and prepare the run.

Each notebook starts with a ``parameters`` cell of flat literals (papermill overrides them), then::

    from ldetok_lite.notebook import setup
    run = setup(globals(), "01_latent_corruption")

``setup`` rejects unknown parameter names (papermill itself only warns), wrong types and
out-of-range values with a one-line error (on the first call in a kernel; when the notebook is
run again in the same kernel, the globals it defined itself, such as ``run``, are not
parameters and are left alone), seeds everything, picks the device, creates
``out_dir`` and prints a short environment header. Everything the notebook produces goes
through ``run.save`` / ``run.summary`` into ``out_dir``.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
import types
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from . import _compat
from .config import ConfigError, Preset, suggest
from .device import DEVICE_CHOICES, describe_device, pick_device, seed_everything
from .io import FileContentError, repo_root, write_json_atomic
from .presets import PRESET_NAMES, load_preset
from .viz import image_grid, save_figure

# name -> (type, allowed values or None, help). Notebook-specific names are passed as ``extra``.
COMMON_PARAMETERS: dict[str, tuple[type, tuple | None, str]] = {
    "preset": (str, PRESET_NAMES, "size of everything: smoke (tests) | tiny (CPU laptop) | small | full"),
    "seed": (int, None, "seed for data, initialisation and sampling"),
    "out_dir": (str, None, "where figures, metrics and summary.json go ('' = runs/notebooks/<notebook>)"),
    "cache_dir": (str, None, "shared artefacts of the series, e.g. trained tokenizers ('' = runs/cache)"),
    "interactive": (bool, None, "show widget panels (False in headless runs: static figures only)"),
    "device": (str, DEVICE_CHOICES, "auto picks cuda -> mps -> cpu"),
    "data_dir": (str, None, "dataset root for imagefolder/cifar10/mnist ('' = data/<dataset>)"),
}
_IGNORED = {"In", "Out", "get_ipython", "exit", "quit", "open"}
# set in the namespace by the first setup() call: the parameter names it saw (the notebook's own
# globals come later, so a second Run All in the same kernel does not mistake them for parameters)
_SEEN = "_ldetok_parameters"


def _resolve(path: str, default: Path) -> Path:
    if not path:
        return default
    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root() / p


def _user_globals(ns: dict) -> dict:
    out = {}
    for k, v in ns.items():
        if k.startswith("_") or k in _IGNORED:
            continue
        if isinstance(v, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)):
            continue
        if callable(v) and not isinstance(v, (str, int, float, bool)):
            continue
        out[k] = v
    return out


def check_parameters(values: dict, extra: dict | None = None) -> dict:
    """Validate notebook parameters against the common table plus ``extra`` ({name: type}).

    Returns the values with ints widened to float where a float is expected. Raises
    ``ConfigError`` naming the parameter for an unknown name, a wrong type or a bad value.
    """
    schema = {k: v[:2] for k, v in COMMON_PARAMETERS.items()}
    for name, spec in (extra or {}).items():
        schema[name] = spec if isinstance(spec, tuple) else (spec, None)
    out = {}
    for name, value in values.items():
        if name not in schema:
            raise ConfigError(f"unknown notebook parameter {name!r}{suggest(name, schema)}; allowed: "
                              f"{', '.join(sorted(schema))}")
        tp, choices = schema[name]
        ok = (isinstance(value, bool) if tp is bool else
              isinstance(value, (int, float)) and not isinstance(value, bool) if tp is float else
              isinstance(value, int) and not isinstance(value, bool) if tp is int else isinstance(value, tp))
        if not ok:
            raise ConfigError(f"notebook parameter {name}={value!r} must be {tp.__name__}, "
                              f"got {type(value).__name__}")
        if tp is float:
            value = float(value)
        if choices is not None and value not in choices and not (name == "device" and str(value).startswith("cuda:")):
            raise ConfigError(f"notebook parameter {name}={value!r} is not allowed; allowed: "
                              f"{', '.join(map(str, choices))}")
        if tp in (int, float) and name in ("seed",) and value < 0:
            raise ConfigError(f"notebook parameter {name}={value!r} must be >= 0")
        out[name] = value
    return out


@dataclass
class NotebookRun:
    """What a notebook needs: its preset, seed, device, folders and a few output helpers."""

    name: str
    preset: Preset
    seed: int
    device: object
    out_dir: Path
    cache_dir: Path
    interactive: bool
    params: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def log(self, msg: str) -> None:
        """One plain, timestamped line (readable in papermill logs)."""
        print(f"[{_dt.datetime.now():%H:%M:%S}] {msg}", flush=True)

    def save(self, fig, filename: str, show: bool = True) -> Path:
        """Save a matplotlib figure, PIL image or image batch as ``out_dir/filename`` and show it."""
        if not filename.endswith(".png"):
            filename += ".png"
        path = self.out_dir / filename
        base = self.out_dir.resolve()
        if Path(filename).is_absolute() or not path.resolve().is_relative_to(base):
            raise ValueError(f"filename={filename!r} must stay inside out_dir ({base}); pass a relative name "
                             "such as 'figure.png' or 'sub/figure.png'")
        path = save_figure(fig, path)
        if show and _in_ipython():
            from IPython.display import display

            if hasattr(fig, "savefig"):
                import matplotlib.pyplot as plt

                display(fig)
                plt.close(fig)
            elif hasattr(fig, "ndim"):
                display(image_grid(fig) if fig.ndim == 4 else fig)
            else:
                display(fig)
        elif hasattr(fig, "savefig"):
            import matplotlib.pyplot as plt

            plt.close(fig)
        return path

    def show(self, panel, filename: str | None = None) -> None:
        """A widget cell: the same as ``panel.show(run, filename)`` (static figure saved; shown
        headless, the live panel when ``interactive``). Returns None."""
        panel.show(self, filename)

    def summary(self, **metrics) -> Path:
        """Merge ``metrics`` into ``out_dir/summary.json`` (atomic write)."""
        path = self.out_dir / "summary.json"
        if path.is_symlink():
            raise FileContentError(f"{str(path)!r} is a symbolic link; the kit does not read or write through links")
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update({k: _jsonable(v) for k, v in metrics.items()})
        data.setdefault("notebook", self.name)
        data["preset"] = self.preset.name
        data["seed"] = self.seed
        data["elapsed_s"] = round(time.time() - self.started, 2)
        return write_json_atomic(path, data)

    @property
    def smoke(self) -> bool:
        """True at the ``smoke`` preset (the test suite): notebooks then do the least work that still runs."""
        return self.preset.name == "smoke"

    @property
    def progress(self) -> str:
        """'tqdm' in an interactive session, 'log' (plain periodic lines) when headless."""
        return "tqdm" if self.interactive else "log"


def _jsonable(v):
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def widget_versions() -> tuple[str | None, str | None]:
    """(ipywidgets, jupyterlab_widgets) versions, None when missing."""
    out = []
    for pkg in ("ipywidgets", "jupyterlab_widgets"):
        try:
            out.append(version(pkg))
        except PackageNotFoundError:
            out.append(None)
    return tuple(out)


def setup(namespace: dict, name: str, extra: dict | None = None, quiet: bool = False) -> NotebookRun:
    """Validate the notebook's parameters (the user globals of ``namespace``) and prepare the run.

    The first call in a kernel checks every user global (the parameters cell and what papermill
    injected), so an unknown name is an error. Later calls in the same kernel (Run All again)
    check the parameter names (edited values are validated again) and skip the globals the
    notebook defined after its first setup (``run``, models, figures)."""
    found = _user_globals(namespace)
    seen = namespace.get(_SEEN)
    if isinstance(seen, frozenset):
        schema = set(COMMON_PARAMETERS) | set(extra or {}) | seen
        found = {k: v for k, v in found.items() if k in schema}
    values = check_parameters(found, extra)
    for required in ("preset", "seed", "out_dir", "interactive"):
        if required not in values:
            raise ConfigError(f"the parameters cell must define {required!r}")
    preset = load_preset(values["preset"])
    if values.get("data_dir"):
        preset = preset.override(**{"data.data_dir": values["data_dir"]})
    seed = values["seed"]
    preset = preset.override(**{"data.seed": seed, "tokenizer_train.seed": seed, "generator_train.seed": seed})
    seed_everything(seed)
    device = pick_device(values.get("device", "auto"))
    root = repo_root()
    out_dir = _resolve(values["out_dir"], root / "runs" / "notebooks" / name)
    cache_dir = _resolve(values.get("cache_dir", ""), root / "runs" / "cache")
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    interactive = bool(values["interactive"]) and _in_ipython()
    run = NotebookRun(name=name, preset=preset, seed=seed, device=device, out_dir=out_dir, cache_dir=cache_dir,
                      interactive=interactive, params=values)
    namespace[_SEEN] = frozenset(values)
    if not quiet:
        ipw, jlw = widget_versions()
        print(f"ldetok_lite notebook {name} | preset {preset.name} | seed {seed} | device {describe_device(device)}")
        print(f"python {sys.version.split()[0]} | torch {torch.__version__} | ipywidgets {ipw} | "
              f"jupyterlab_widgets {jlw}")
        print(f"out_dir {out_dir}\ncache_dir {cache_dir}")
        if interactive and ipw and jlw and ipw.split(".")[0] != "8":
            print("warning: ipywidgets is not 8.x; sliders may not render (see README, Troubleshooting)")
    return run


def __getattr__(name: str):  # names that moved to another module in this release (ldetok_lite._compat)
    return _compat.moved_attribute(__name__, name)
