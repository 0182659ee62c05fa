"""Execute the numbered notebooks; check that committed notebooks carry no outputs and type no numbers.

    python -m helpers.notebooks --out build/notebooks      # execute all, keep executed copies
    python -m helpers.notebooks --check-stripped           # exit 1 if any notebook has outputs
    python -m helpers.notebooks --check-prose              # exit 1 if any prose types a number by hand

**Prose rule.** Every number a notebook's text states comes from an output the notebook computes (a printed
line or table the text points to). :func:`typed_numbers` finds the numbers in markdown cells that break it.
Allowed, because they are not findings: code spans and math (parameters, formulas), links, names that mix
letters and digits (``LLaVA-1.5-7B``, ``SmolLM2-135M``, ``4-bit``, ``top-k``), references (Figure 3,
Tables 1-3, notebook 08, stage 2), years, list numbering, and numbers of a sentence tagged **[paper]** or
**[code]** that ``docs/paper-notes.md`` states under the same tag. Provenance tags must be ones paper-notes
defines (``[paper]``, ``[code]``, ``[ours]``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .env import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PAPER_NOTES = REPO_ROOT / "docs" / "paper-notes.md"
TAGS = ("paper", "code", "ours")

_SKIP = re.compile(r"`[^`]*`|\$\$.*?\$\$|\$[^$]*\$|\[([^\]]*)\]\([^)]*\)|<[^>]+>|https?://\S+", re.S)
_REFERENCE = re.compile(r"\b(?:Fig(?:ure)?s?\.?|Tables?|[Nn]otebooks?|[Ss]ections?|[Ss]tages?|Eq\.?|[Ii]ssues?)\s+"
                        r"\d+(?:\s*(?:[-–,]|and|or)\s*\d+)*")
_NAME = re.compile(r"[A-Za-z][\w.+/-]*\d[\w.+/-]*|\d[\w.+/-]*[A-Za-z][\w+/-]*")
_YEAR = re.compile(r"\b(?:19|20)\d\d\b")
_ENUM = re.compile(r"^\s*(?:\d+[.)]|#+\s*\d+[.)]?)\s", re.M)
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*%?")
_TAG = re.compile(r"\[(\w[\w-]*)\]")


def _numbers(text: str) -> list[str]:
    """The numbers ``text`` states, after removing what the prose rule allows (module docstring)."""
    for pattern in (_REFERENCE, _NAME, _YEAR):
        text = pattern.sub(" ", text)
    return _NUMBER.findall(text)


def _unskipped(text: str) -> str:
    """``text`` without code spans, math, HTML and URLs; links keep their text."""
    return _SKIP.sub(lambda m: m.group(1) if m.group(1) is not None else " ", text)


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+|\n\s*\n|\n\s*[-*]\s", text) if s.strip()]


def paper_numbers(notes: Path = PAPER_NOTES) -> dict[str, set[str]]:
    """Per provenance tag, the numbers ``docs/paper-notes.md`` states on lines (or list items) with that tag."""
    found: dict[str, set[str]] = {t: set() for t in TAGS}
    for item in re.split(r"\n(?=\S|\s*[-*\d])", notes.read_text()):
        for tag in set(_TAG.findall(item)) & set(TAGS):
            found[tag] |= {n.rstrip("%").replace(",", "") for n in _NUMBER.findall(item)}
    return found


def typed_numbers(path: Path, notes: Path = PAPER_NOTES) -> list[str]:
    """Problems of the prose rule in one notebook: ``"<name> cell <i>: ..."`` per typed number or unknown tag."""
    known = paper_numbers(notes)
    problems = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        text = _ENUM.sub(" ", _unskipped("".join(cell["source"])))
        for sentence in _sentences(text):
            tags = set(_TAG.findall(sentence)) & set(TAGS)
            sourced = set().union(*(known.get(t, set()) for t in tags)) if tags else set()
            for number in _numbers(sentence):
                if number.rstrip("%").replace(",", "").lstrip("+-") not in sourced:
                    problems.append(f"{path.name} cell {i}: {number!r} typed in prose ({sentence.strip()[:90]!r}); "
                                    "print it from a code cell, or tag the sentence [paper]/[code] with a number "
                                    "docs/paper-notes.md states")
        for tag in _TAG.findall(text):
            if tag.lower() == tag and tag not in TAGS and not tag.isdigit():
                problems.append(f"{path.name} cell {i}: provenance tag [{tag}] is not one of {list(TAGS)}")
    return problems


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
    parser.add_argument("--check-prose", action="store_true", help="only check that prose types no numbers")
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
    if args.check_prose:
        problems = [p for path in paths for p in typed_numbers(path)]
        print(*problems, sep="\n") if problems else print(f"{len(paths)} notebooks, no number typed in prose")
        return 1 if problems else 0
    execute(paths, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
