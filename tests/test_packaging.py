"""The environment files agree, and the repository is laid out as the README promises."""

import re

import tomllib
import yaml


def _names(reqs):
    return {re.split(r"[<>=!~ ;\[]", r.strip(), maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_environment_yml_matches_pyproject(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_reqs = [r for r in pip_section if not r.startswith("-e")]
    assert _names(project["dependencies"]) == _names(conda_reqs)
    assert any(r.strip() == "-e ." for r in pip_section), "environment.yml must install the package itself"


def test_torch_is_never_pinned_above_the_local_wheels(root):
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    for d in deps:
        if d.startswith(("torch>", "torch=", "torchvision")):
            assert "==" not in d, "use a range: a newer pin means multi-GB downloads"


def test_readme_quick_start_and_ci(root):
    readme = (root / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (root / ".ci" / "run").read_text()
    assert "make test" in ci


def test_every_public_name_resolves():
    import ldetok_lite

    for name in ldetok_lite.__all__:
        assert getattr(ldetok_lite, name) is not None, name
