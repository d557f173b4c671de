"""Old import paths of the kit, kept working for one release with a ``DeprecationWarning``.

The library moved to packages (``training``, ``evaluation``, ``experiments``, ``cli``) and
one module per concern (``presets``, ``io``, ``assets``, ``convert``, ``pretrained``,
``analysis``). ``import ldetok_lite.train`` and friends still work: :data:`MOVED_MODULES` maps
each old module to the modules that hold its names now, and :data:`MOVED_NAMES` the names that
left a module that still exists (``ldetok_lite.tokenizer.load_official_checkpoint``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "ldetok_lite.train": ("ldetok_lite.training", "ldetok_lite.training.loop", "ldetok_lite.training.batches",
                          "ldetok_lite.training.generator", "ldetok_lite.pretrained"),
    "ldetok_lite.artifacts": ("ldetok_lite.experiments.cache", "ldetok_lite.presets"),
    "ldetok_lite.compare": ("ldetok_lite.experiments.compare", "ldetok_lite.experiments.table",
                            "ldetok_lite.experiments.cache", "ldetok_lite.presets", "ldetok_lite.analysis"),
    "ldetok_lite.fid": ("ldetok_lite.evaluation", "ldetok_lite.evaluation.sources", "ldetok_lite.evaluation.metrics",
                        "ldetok_lite.evaluation.feature_net", "ldetok_lite.assets"),
    "ldetok_lite.feature_net": ("ldetok_lite.evaluation.feature_net", "ldetok_lite.assets"),
    "ldetok_lite.fullscale": ("ldetok_lite.experiments.fullscale", "ldetok_lite.io"),
    "ldetok_lite.distributed": ("ldetok_lite.training.distributed",),
    "ldetok_lite.accel": ("ldetok_lite.training.accel",),
    "ldetok_lite.streaming": ("ldetok_lite.training.streaming",),
    "ldetok_lite.training_cli": ("ldetok_lite.cli.train",),
    "ldetok_lite.benchmarks": ("ldetok_lite.cli.bench",),
    "ldetok_lite.benchmarks.evaluate": ("ldetok_lite.evaluation.evaluate", "ldetok_lite.cli.evaluate"),
    "ldetok_lite.benchmarks.compare": ("ldetok_lite.cli.bench", "ldetok_lite.experiments.compare"),
    "ldetok_lite.benchmarks.tokenizer": ("ldetok_lite.experiments.bench", "ldetok_lite.cli.bench"),
    "ldetok_lite.benchmarks.generator": ("ldetok_lite.experiments.bench", "ldetok_lite.cli.bench"),
    "ldetok_lite.benchmarks.speed": ("ldetok_lite.experiments.speed", "ldetok_lite.cli.bench"),
}

MOVED_NAMES: dict[str, dict[str, str]] = {
    "ldetok_lite.tokenizer": {"load_official_checkpoint": "ldetok_lite.convert",
                              "infer_official_config": "ldetok_lite.convert"},
    "ldetok_lite.checkpoint": {"from_pretrained": "ldetok_lite.pretrained", "build_from_spec": "ldetok_lite.pretrained",
                               "safe_torch_load": "ldetok_lite.io", "write_json_atomic": "ldetok_lite.io",
                               "save_tensors_atomic": "ldetok_lite.io"},
    "ldetok_lite.config": {"load_preset": "ldetok_lite.presets", "PRESET_NAMES": "ldetok_lite.presets"},
    "ldetok_lite.notebook": {"repo_root": "ldetok_lite.io"},
    "ldetok_lite.viz": {"read_jsonl": "ldetok_lite.io"},
    "ldetok_lite.losses": {"MissingWeightsError": "ldetok_lite.assets",
                           "load_state_dict_file": "ldetok_lite.io"},
    "ldetok_lite.widgets.latent_explorer": {"corrupt_and_decode": "ldetok_lite.analysis",
                                            "robustness_curves": "ldetok_lite.analysis",
                                            "latent_pca_image": "ldetok_lite.viz"},
}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old name works until the next release", DeprecationWarning,
                  stacklevel=3)


def moved_attribute(module: str, name: str):
    """``module.name`` for a name that moved elsewhere (called from the module's ``__getattr__``)."""
    target = MOVED_NAMES.get(module, {}).get(name)
    if target is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    _warn(f"{module}.{name}", f"{target}.{name}")
    return getattr(importlib.import_module(target), name)


def renamed_keywords(**old_to_new: str):
    """Decorator: accept a keyword argument under its name of the previous release (``generator=``
    for the random generator, now ``rng=``; ``cfg=`` for the guidance scale, now ``cfg_scale=``)."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__qualname__}() got both {old}= and {new}=; use {new}=")
                    _warn(f"{fn.__qualname__}({old}=...)", f"{new}=")
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return inner

    return wrap


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads an old module path as a module whose names come from the modules that hold them now."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self, is_package=fullname == "ldetok_lite.benchmarks")
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        targets = MOVED_MODULES[module.__name__]
        _warn(module.__name__, " / ".join(targets))
        for name in reversed(targets):  # the first target wins
            new = importlib.import_module(name)
            module.__dict__.update({k: v for k, v in vars(new).items() if not k.startswith("__")})
        module.__all__ = sorted(k for k in module.__dict__ if not k.startswith("_"))


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
