"""Project-level consistency: environment.yml follows pyproject.toml, notebooks are stripped and numbered."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from helpers.notebooks import notebook_paths, unstripped

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_the_package_with_every_extra():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "pip" in env["dependencies"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.replace("python", "") == pyproject["project"]["requires-python"]
    (line,) = [p for p in pip_section if p.startswith("-e .")]
    extras = set(re.fullmatch(r"-e \.\[(.*)\]", line).group(1).split(","))
    # "bench" (nnsight, TransformerLens: the peers of benchmarks/peers.py) is installed on request only
    assert extras == set(pyproject["project"]["optional-dependencies"]) - {"bench"}


def test_notebooks_are_numbered_and_stripped():
    paths = notebook_paths()
    assert paths, "no notebooks found"
    assert unstripped(paths) == []
    numbers = [int(p.name[:2]) for p in paths]
    assert numbers == sorted(set(numbers)), "notebook numbers must be unique"


def test_unstripped_detects_outputs(tmp_path):
    nb = json.loads(notebook_paths()[0].read_text())
    nb["cells"] = [c for c in nb["cells"] if c["cell_type"] == "code"][:1]
    nb["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x"}]
    path = tmp_path / "01_x.ipynb"
    path.write_text(json.dumps(nb))
    assert unstripped([path]) == ["01_x.ipynb"]


def test_every_notebook_opens_with_badge_goal_and_setup():
    for path in notebook_paths():
        cells = json.loads(path.read_text())["cells"]
        first = "".join(cells[0]["source"])
        assert "colab.research.google.com" in first and "Hardware" in first, path.name
        setup = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
        assert "google.colab" in setup and "pip install" in setup, path.name
        installs = [line for line in setup.splitlines() if "pip install" in line]
        assert not any("torch" in line for line in installs), f"{path.name}: the setup cell must not reinstall torch"
