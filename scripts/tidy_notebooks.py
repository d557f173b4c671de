"""Keep the notebooks in the house style: outputs stripped, cell ids ``NN-cell-KK``, and the first
three cells in the same place (a markdown title, the ``parameters`` cell, the setup cell).

    python scripts/tidy_notebooks.py            # rewrite notebooks/*.ipynb in place
    python scripts/tidy_notebooks.py --check    # exit 1 and name the notebooks that need it

The pre-commit hook runs it; ``tests/test_notebooks.py`` checks the same rules.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def cell_id(stem: str, index: int) -> str:
    """The id of cell ``index`` of notebook ``NN_name``: ``NN-cell-KK``."""
    return f"{stem.split('_', 1)[0]}-cell-{index:02d}"


def tidy(nb: dict, stem: str) -> dict:
    cells = nb["cells"]
    params = next(i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    title = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown")
    if params < title:  # the title first, then the parameters and the setup cell
        cells.insert(0, cells.pop(title))
    for i, c in enumerate(cells):
        c["id"] = cell_id(stem, i)
        if c["cell_type"] == "code":
            c["outputs"], c["execution_count"] = [], None
        md = c.get("metadata", {})
        c["metadata"] = {k: v for k, v in md.items() if k == "tags" and v}
    nb["metadata"] = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                      "language_info": {"name": "python"}}
    nb["nbformat"], nb["nbformat_minor"] = 4, 5
    return nb


def dumps(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks that are not tidy")
    parser.add_argument("paths", nargs="*", help="notebooks (default: notebooks/*.ipynb)")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.paths] or sorted(NOTEBOOKS.glob("*.ipynb"))
    untidy = []
    for path in paths:
        text = path.read_text()
        new = dumps(tidy(json.loads(text), path.stem))
        if new != text:
            untidy.append(path)
            if not args.check:
                path.write_text(new)
    if args.check and untidy:
        print("not tidy (run python scripts/tidy_notebooks.py): " + ", ".join(p.name for p in untidy))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
