"""The prose rule of the notebooks (helpers.notebooks.typed_numbers): numbers come from outputs."""

from __future__ import annotations

import json

import pytest

from helpers import notebooks


def _notebook(tmp_path, *markdown: str):
    cells = [{"cell_type": "markdown", "metadata": {}, "source": m} for m in markdown]
    path = tmp_path / "01_x.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


@pytest.mark.parametrize("text", [
    "Accuracy is 0.77 on yes/no questions.",
    "We used 300 held-out samples, 150 with the box drawn.",
    "Masking lowers accuracy by 12% here.",
])
def test_typed_numbers_are_flagged(tmp_path, text):
    problems = notebooks.typed_numbers(_notebook(tmp_path, text))
    assert problems and "typed in prose" in problems[0]


@pytest.mark.parametrize("text", [
    "Figure 3 and Tables 1-3 of the paper; notebook 08 masks heads (stage 2 of the recipe).",
    "LLaVA-1.5-7B and SmolLM2-135M in 4-bit, CVPR 2025.",
    "Set `N_SAMPLES = 96` and read the interval the cell prints; concentration is $C = 1 - H/\\log|V|$.",
    "1. Rank heads.\n2. Mask them.",
    "[Open in Colab](https://colab.research.google.com/x/01.ipynb)",
])
def test_allowed_numbers_pass(tmp_path, text):
    assert notebooks.typed_numbers(_notebook(tmp_path, text)) == []


def test_paper_numbers_need_the_tag_and_paper_notes(tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("- [paper] Across 4 model families and 4 scales (3.8B, 7B, 8B, 13B).\n- [ours] k = 40 heads.\n")
    tagged = _notebook(tmp_path, "The paper studies 4 model families [paper].")
    assert notebooks.typed_numbers(tagged, notes) == []
    untagged = _notebook(tmp_path, "The paper studies 4 model families.")
    assert notebooks.typed_numbers(untagged, notes)
    wrong = _notebook(tmp_path, "The paper studies 5 model families [paper].")
    assert notebooks.typed_numbers(wrong, notes)
    other_tag = _notebook(tmp_path, "The paper uses k = 40 heads [paper].")  # 40 is [ours] in the notes
    assert notebooks.typed_numbers(other_tag, notes)
    unknown = _notebook(tmp_path, "A claim [guess].")
    assert "provenance tag [guess]" in notebooks.typed_numbers(unknown, notes)[0]


def test_committed_notebooks_type_no_numbers():
    problems = [p for path in notebooks.notebook_paths() for p in notebooks.typed_numbers(path)]
    assert not problems, "\n".join(problems[:20])
