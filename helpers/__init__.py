"""visual-heads: find the attention heads through which a multimodal LLM looks at an image.

Layers. Each module imports only from layers below its own (never from its own layer or above), at the top
of the module, never inside a function; ``tests/test_layers.py`` checks it by parsing the imports. Data
flow one way: samples -> inputs -> rows under capture -> per-head scores -> analysis tables -> figures.

    layer  modules                                   job
    -----  ----------------------------------------  -----------------------------------------------------
    4b     widgets                                   the interactive head explorer (pick, see, mask heads)
           toy                                       the toy organisms (data/toy-*): training, model building, cards
           organisms                                 the organisms: vision tower, LLaVA recipe, evaluation, cards
           notebooks                                 run the numbered notebooks; check committed ones carry no outputs
    4a     plots                                     figures from tables and score maps (tables in, figures out)
           findings                                  what a notebook's outputs show next to the paper: verdict tables
    3      agreement                                 map agreement across models (Fig. 4), data sets (Fig. 5), conditions (Fig. 3)
           ablation                                  head masking: head sets, accuracy curves, tables (Figs. 6-8, Tables 1-3)
           runs                                      per-head results of the figure notebooks: computed, or read from sweeps
           sweep                                     resumable, sharded extraction from the command line
    2b     selection                                 which models (defaults by hardware, loading in turn) and which samples
           cache                                     the extraction cache: one extraction (model, samples, settings) stored once
    2a     extract                                   the one extraction path: Batch record, head scores, answers (masked or not)
           offline                                   random-weight models of each architecture's real geometry, built offline
    1b     models                                    the paper's model registry and load() (4-bit/8-bit, CPU, organism folders)
           tasks                                     the organisms' task sets on scenes v2 (PointQA, POPE, MMBench analogues)
    1a     data                                      samples, benchmark loaders, the paper's prompts, scoring, the box drawer
           results                                   the per-sample per-head schema, Parquet I/O, regrouping, rankings
           assemble                                  a LLaVA on a base LM, rebuilt from the trained parts of an organism folder
    0      env                                       switches read from the environment (fast mode, figure folder, device)
           capture                                   per-head attention rows through transformers' attention registry; masking
           layout                                    image-token and box-region token positions following the processor
           metrics                                   weight, concentration, region, detection, stages, head counts, agreement
           shapes                                    the synthetic PointQA-style scene generator (embedded set, toys)
           scenes                                    scenes v2: 160-px synthetic scenes for the organisms
           baselm                                    the organisms' pretrained text LMs from package wheels, cached

The five tiers of docs/DESIGN.md, split where the code argues for it: ``assemble`` builds what ``models.load``
loads (1a under 1b); ``tasks`` builds on ``data`` (1b); ``offline`` builds from the registry and ``selection``
falls back on an offline build (2a under 2b); ``widgets`` draws with ``plots`` (4a under 4b).
"""

__version__ = "0.1.0"

# module -> layer; "0" < "1a" < "1b" < "2a" < "2b" < "3" < "4a" < "4b" (tests/test_layers.py)
LAYERS = {
    "env": "0", "capture": "0", "layout": "0", "metrics": "0", "shapes": "0", "scenes": "0", "baselm": "0",
    "data": "1a", "results": "1a", "assemble": "1a",
    "models": "1b", "tasks": "1b",
    "extract": "2a", "offline": "2a",
    "selection": "2b", "cache": "2b",
    "agreement": "3", "ablation": "3", "runs": "3", "sweep": "3",
    "plots": "4a", "findings": "4a",
    "widgets": "4b", "toy": "4b", "organisms": "4b", "notebooks": "4b",
}
