"""Execute the numbered notebooks, and check that committed notebooks carry no outputs.

    python -m helpers.notebooks --out build/notebooks      # execute all, keep executed copies
    python -m helpers.notebooks --check-stripped           # exit 1 if any notebook has outputs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .env import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def notebook_paths(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in reading order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def unstripped(paths: list[Path]) -> list[str]:
    """Names of notebooks whose code cells carry outputs or execution counts."""
    bad = []
    for path in paths:
        cells = json.loads(path.read_text())["cells"]
        if any(c.get("outputs") or c.get("execution_count") for c in cells if c["cell_type"] == "code"):
            bad.append(path.name)
    return bad


def execute(paths: list[Path], out_dir: Path, timeout: int = 1800) -> None:
    """Execute each notebook top to bottom with papermill, writing the executed copy to ``out_dir``.

    Raises the first cell error (papermill's ``PapermillExecutionError``) after saving the failed copy.
    """
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    for path in paths:
        print(f"executing {path.name}", flush=True)
        papermill.execute_notebook(
            str(path), str(out_dir / path.name), cwd=str(path.parent), execution_timeout=timeout,
            progress_bar=False, kernel_name="python3",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/notebooks"), help="folder for executed copies")
    parser.add_argument("--check-stripped", action="store_true", help="only check that outputs are stripped")
    parser.add_argument("names", nargs="*", help="notebook file names to run (default: all)")
    args = parser.parse_args(argv)
    paths = notebook_paths()
    if args.names:
        paths = [p for p in paths if p.name in args.names or p.stem in args.names]
    if args.check_stripped:
        bad = unstripped(paths)
        if bad:
            print("notebooks with outputs committed (run `nbstripout notebooks/*.ipynb`):", *bad, sep="\n  ")
            return 1
        print(f"{len(paths)} notebooks, no outputs committed")
        return 0
    execute(paths, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
