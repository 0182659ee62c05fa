"""Notebooks 05-08 (Figures 3-8): parameters, saved figures and honest labels are in place (no execution here;
the notebooks run under ``pytest --nbmake``)."""

from __future__ import annotations

import json

import pytest

from helpers.notebooks import NOTEBOOK_DIR

FIGURE_NOTEBOOKS = ["05_layer_head_heatmaps", "06_cross_model_heads", "07_cross_dataset_consistency",
                    "08_head_masking"]


def cells(name: str) -> list[dict]:
    return json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())["cells"]


@pytest.mark.parametrize("name", FIGURE_NOTEBOOKS)
def test_parameters_cell_and_saved_figures(name):
    nb = cells(name)
    (params,) = [c for c in nb if "parameters" in c["metadata"].get("tags", [])]
    source = "".join(params["source"])
    for parameter in ("MODELS = None", "GPU_MODELS", "DEVICE", "SEED", "RESULTS_DIR", "env.pick("):
        assert parameter in source, f"{name}: parameters cell lacks {parameter}"
    code = "\n".join("".join(c["source"]) for c in nb if c["cell_type"] == "code")
    assert "plots.save_figure(" in code and "torch.manual_seed(SEED)" in code
    assert "selection.default_models(GPU_MODELS, DEVICE)" in code
    assert "import matplotlib.pyplot" not in code, "plotting belongs in helpers.plots"


def test_labels_say_what_ran_and_what_is_reconstructed():
    text = {n: "\n".join("".join(c["source"]) for c in cells(n)) for n in FIGURE_NOTEBOOKS}
    assert "anyres" in text["05_layer_head_heatmaps"] and "omits region maps" in text["05_layer_head_heatmaps"]
    masking = text["08_head_masking"]
    assert masking.count("our reconstruction") >= 4 and "Tables 1–3" in masking
    for name, body in text.items():
        assert "random stand-in" in body and "toy" in body, name


ORGANISM_NOTEBOOKS = {"05_layer_head_heatmaps": '("scenes-count",)', "06_cross_model_heads": '("scenes-count",)',
                      "07_cross_dataset_consistency": '("scenes-count", "scenes-pope", "scenes-choice")'}


@pytest.mark.parametrize("name", ORGANISM_NOTEBOOKS)
def test_organism_notebooks_share_one_extraction_and_end_in_findings(name):
    """Notebooks 05-07 call runs.collect alike (one extraction per organism and task set in a run) and end in a
    findings table built by helpers.findings."""
    nb = cells(name)
    (params,) = [c for c in nb if "parameters" in c["metadata"].get("tags", [])]
    source = "".join(params["source"])
    assert f"DATASETS = {ORGANISM_NOTEBOOKS[name]}" in source and "N_SAMPLES = env.pick(12, 96)" in source
    code = "\n".join("".join(c["source"]) for c in nb if c["cell_type"] == "code")
    assert ("runs.collect(MODELS or selection.default_models(GPU_MODELS, DEVICE), DATASETS, n_samples=N_SAMPLES,\n"
            "                           results_dir=RESULTS_DIR, device=DEVICE)") in code
    headings = ["".join(c["source"]).split("\n")[0] for c in nb if c["cell_type"] == "markdown"]
    assert headings[-1] == "## What the organisms show"
    assert "findings.show(" in "".join(nb[-1]["source"]) and nb[-1]["cell_type"] == "code"
