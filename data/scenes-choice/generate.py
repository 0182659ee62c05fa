"""Build the scenes-choice set: PNGs and MMBench rows (lmms-lab columns) read by data.load_mmbench.

    python data/scenes-choice/generate.py             # the committed set (400 questions, seed 20260303)
    python data/scenes-choice/generate.py --out /tmp/sch --n 20 --seed 1

Rows come from :func:`helpers.tasks.choice_samples`; question ``i`` is drawn from
``numpy.random.default_rng([seed, i])`` alone, so any prefix can be rebuilt exactly. MMBench has no box
column: the image of a box question is stored with its red box drawn (what the model sees), so that
``data.load_mmbench`` alone asks a complete question; ``meta.json`` also keeps the box for the analyses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for `import helpers`

from helpers import data, tasks  # noqa: E402

SEED = 20260303
N = 400
LOADER_KEYS = ("category",)  # what data.load_mmbench puts in meta itself
L2_CATEGORY = "finegrained_perception (instance-level)"  # MMBench's level-2 ability for such questions


def build_samples(n: int = N, seed: int = SEED) -> list[data.Sample]:
    """The first ``n`` questions."""
    return tasks.choice_samples(seed, n)


def records(samples: list[data.Sample]) -> list[dict]:
    """MMBench rows: index, question, hint, A-D, answer, category, l2-category, source, split, image."""
    return [{"index": i, "question": s.question, "hint": None, **dict(zip("ABCD", s.options, strict=True)),
             "answer": s.answer, "category": s.meta["category"], "l2-category": L2_CATEGORY,
             "source": "scenes-choice", "split": "dev", "image": f"images/{s.meta['image_id']}.png"}
            for i, s in enumerate(samples)]


def sidecar(samples: list[data.Sample], n: int, seed: int) -> dict:
    """meta.json: generator parameters, scenes, per-row meta, ids and boxes (helpers.tasks.sidecar)."""
    index = {s.id: str(i) for i, s in enumerate(samples)}
    return {"n": n, "seed": seed, "generator": "helpers.tasks.choice_samples(seed, n)",
            **tasks.sidecar(samples, row_id=lambda s: index[s.id], loader_keys=LOADER_KEYS, rename=True)}


def build(out: Path = HERE, n: int = N, seed: int = SEED) -> list[dict]:
    """Write ``out/images/NNNN.png`` (box drawn for box questions), ``out/test.json``, ``out/meta.json``."""
    samples = build_samples(n, seed)
    tasks.write_images(samples, out, model_image=True)
    recs = records(samples)
    (out / "test.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in recs) + "\n]\n")
    (out / "meta.json").write_text(json.dumps(sidecar(samples, n, seed), separators=(",", ":")) + "\n")
    return recs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    recs = build(args.out, args.n, args.seed)
    print(f"wrote {len(recs)} rows to {args.out / 'test.json'}")


if __name__ == "__main__":
    main()
