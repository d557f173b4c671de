"""The library's layout is its architecture: imports go one way, every module has one job.

    cli → experiments → training | evaluation → models → data / corruption / checkpoint → config / presets / device / io

The graph is built from the source with ``ast`` (nothing is imported), so a cycle, an upward
import or a function-level import of the package's own modules fails here, not in a user's session.
"""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ldetok_lite"

#: layer of each top-level module or package (lower layers never import higher ones)
LAYERS = {
    0: {"__init__", "_compat", "config", "io", "device", "presets"},
    1: {"data", "corruption", "checkpoint", "assets"},
    2: {"layers", "autoencoder", "tokenizer", "conv_tokenizer", "generators", "losses", "distill", "teacher", "convert",
        "convert_vae", "pretrained", "metrics", "analysis", "viz", "widgets", "notebook"},
    3: {"training", "evaluation"},
    4: {"experiments"},
    5: {"cli"},
}
LAYER_OF = {name: level for level, names in LAYERS.items() for name in names}
#: function-level imports of the package's own modules that are allowed, and why (none today)
ALLOWED_LOCAL_IMPORTS: dict[str, str] = {}
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("ldetok_lite"):
        return []
    out = []
    for alias in node.names:  # ``from pkg import submodule`` imports that module
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in MODULES else target)
    return out


def _imports(module: str, path: Path) -> tuple[set[str], list[tuple[int, str]]]:
    """(modules imported at the top, [(line, module) imported inside a function])."""
    tree = ast.parse(path.read_text())
    top, local = set(), []
    is_package = path.name == "__init__.py"

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                targets = _resolve(module, is_package, child)
            elif isinstance(child, ast.Import):
                targets = [a.name for a in child.names if a.name.startswith("ldetok_lite")]
            else:
                targets = []
            for t in targets:
                (local.append((child.lineno, t)) if in_function else top.add(t))
            visit(child, nested)

    visit(tree, False)
    return top, local


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYER_OF[parts[1] if len(parts) > 1 else "__init__"]


def test_every_module_has_a_layer():
    missing = sorted({m.split(".")[1] for m in MODULES if "." in m} - set(LAYER_OF))
    assert not missing, f"add these to LAYERS (and to the README's map): {missing}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_one_way(module):
    top, _ = GRAPH[module]
    up = [t for t in top if _layer(t) > _layer(module)]
    assert not up, f"{module} (layer {_layer(module)}) imports {up} from a higher layer"
    family = module.split(".")[1] if "." in module else ""
    if family in ("training", "evaluation"):  # siblings: neither imports the other
        other = "evaluation" if family == "training" else "training"
        assert not [t for t in top if t.split(".")[1:2] == [other]], f"{module} imports {other}"


def test_no_import_cycle():
    graph = {m: {t for t in GRAPH[m][0] if t in MODULES and t != m} for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                dfs(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)


def test_the_library_never_imports_the_cli():
    offenders = [m for m, (top, local) in GRAPH.items() if not m.startswith("ldetok_lite.cli")
                 and any(t.startswith("ldetok_lite.cli") for t in list(top) + [t for _, t in local])]
    assert not offenders


def test_no_function_level_imports_of_the_package():
    found = [f"{m}:{line} imports {t}" for m, (_, local) in GRAPH.items() for line, t in local
             if f"{m}:{t}" not in ALLOWED_LOCAL_IMPORTS]
    assert not found, "move these to the top of their module (the dependency graph must be visible):\n" + \
        "\n".join(found)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_says_its_one_job_and_stays_short(module):
    path = MODULES[module]
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and len(doc.split()) >= 6, f"{module} needs a docstring that says its one job"
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{module} has {n} lines; split it along its seams (at most ~{MAX_LINES})"


def test_one_home_for_each_decision():
    """A reviewer searching for these finds one definition."""
    defs: dict[str, list[str]] = {}
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defs.setdefault(node.name, []).append(m)
    for name in ("neighbour_correlation", "noise_robustness", "decoder_finetune", "warm_start_recipe",
                 "parse_overrides", "parse_value", "MissingWeightsError", "read_jsonl", "atomic_write",
                 "get_tokenizer", "get_generator", "compute_metrics", "tokenizer_recipe", "variant_settings"):
        assert len(defs.get(name, [])) == 1, f"{name} is defined in {defs.get(name)}"


OLD_PATHS = [
    ("ldetok_lite.train", "train_tokenizer"), ("ldetok_lite.train", "load_latent_stats"),
    ("ldetok_lite.artifacts", "get_tokenizer"), ("ldetok_lite.artifacts", "TOKENIZER_VARIANTS"),
    ("ldetok_lite.compare", "run_comparison"), ("ldetok_lite.compare", "neighbour_correlation"),
    ("ldetok_lite.fid", "compute_metrics"), ("ldetok_lite.fid", "get_shapes_extractor"),
    ("ldetok_lite.feature_net", "ShapesCNN"), ("ldetok_lite.fullscale", "tokenizer_stages"),
    ("ldetok_lite.distributed", "init"), ("ldetok_lite.accel", "compile_blocks"),
    ("ldetok_lite.benchmarks.evaluate", "evaluate_tokenizer"),
]


@pytest.mark.parametrize("module, name", OLD_PATHS)
def test_old_import_paths_still_work_with_a_warning(module, name):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import sys

        sys.modules.pop(module, None)
        mod = importlib.import_module(module)
        assert getattr(mod, name) is not None
    assert any(issubclass(w.category, DeprecationWarning) and "moved to" in str(w.message) for w in caught)


@pytest.mark.parametrize("module, name, new_home", [
    ("ldetok_lite.tokenizer", "load_official_checkpoint", "ldetok_lite.convert"),
    ("ldetok_lite.checkpoint", "from_pretrained", "ldetok_lite.pretrained"),
    ("ldetok_lite.config", "load_preset", "ldetok_lite.presets"),
])
def test_moved_names_still_resolve(module, name, new_home):
    with pytest.warns(DeprecationWarning, match=f"moved to {new_home}"):
        value = getattr(importlib.import_module(module), name)
    assert value is getattr(importlib.import_module(new_home), name)
