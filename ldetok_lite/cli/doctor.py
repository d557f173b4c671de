"""``ldetok-lite doctor`` (versions, device, widget front end, offline assets) and ``ldetok-lite presets``."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

import torch
from jupyter_client.kernelspec import KernelSpecManager

from ..assets import list_assets
from ..device import describe_device, pick_device
from ..presets import PRESET_NAMES, load_preset


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def cmd_doctor(args) -> int:
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
        specs = KernelSpecManager().find_kernel_specs()
        print(f"kernels             {', '.join(sorted(specs)) or 'none'} (papermill uses python3)")
    except Exception as e:  # pragma: no cover - depends on the install
        print(f"kernels             could not list kernelspecs: {e}")
    print("offline assets (none is needed for the tiny preset):")
    for label, present, where in list_assets():
        print(f"  [{'x' if present else ' '}] {label}\n      {where}")
    return 0


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


def add_doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=cmd_doctor)


def add_presets_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", choices=PRESET_NAMES)
    p.set_defaults(func=cmd_presets)
