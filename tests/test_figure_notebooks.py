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
    for parameter in ("MODELS = None", "GPU_MODELS", "DEVICE", "SEED", "RESULTS_DIR", "ROWS", "env.pick("):
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


def test_notebooks_01_03_04_run_on_the_organisms_and_task_sets():
    """01 (one model), 03 (Figure 1) and 04 (Figure 2): shared parameters, cached extraction, a findings table."""
    sets = ("scenes-count", "scenes-pope", "scenes-choice")
    for name in ("01_load_quantized_mllm", "03_attention_vs_concentration", "04_pointqa_examples"):
        nb = cells(name)
        (params,) = [c for c in nb if "parameters" in c["metadata"].get("tags", [])]
        source = "".join(params["source"])
        assert "DATASETS = " in source and all(s in source for s in sets), name
        code = "\n".join("".join(c["source"]) for c in nb if c["cell_type"] == "code")
        text = "\n".join("".join(c["source"]) for c in nb)
        assert "## What the organisms show" in "".join(nb[-2]["source"]), name
        assert "findings.show(" in "".join(nb[-1]["source"]), name
        assert "import matplotlib.pyplot" not in code and "toy-" not in text, name
        if name != "04_pointqa_examples":
            assert "N_SAMPLES = env.pick(12, 96)" in source, name
    figure1 = "\n".join("".join(c["source"]) for c in cells("03_attention_vs_concentration"))
    for needed in ("MODELS = None", "GPU_MODELS = [", "RESULTS_DIR = None", "selection.default_models(GPU_MODELS, DEVICE)",
                   "runs.collect(", "plots.save_figure(", "results.summary("):
        assert needed in figure1, needed
    assert "loaded=(model, processor)" in "\n".join("".join(c["source"]) for c in cells("01_load_quantized_mllm"))
