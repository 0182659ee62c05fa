"""Build the synthetic PointQA-style set: PNG images and a LookTwice-QA json (ViP-LLaVA schema).

    python data/shapes-pointqa/generate.py            # the committed set (500 records, seed 20251124)
    python data/shapes-pointqa/generate.py --out /tmp/shapes --n 50 --seed 1

Scenes come from :mod:`helpers.shapes` (the generator the toy models are trained on). Sample ``i``
uses its own generator ``numpy.random.default_rng([seed, i])``, so any prefix of the set can be
rebuilt exactly (the tests do). Images are stored *plain* (no box); the loader draws the red box for
visual prompts (:func:`helpers.data.draw_boxes`, identical to ``shapes.render(scene, True)``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for `import helpers`

from helpers import shapes  # noqa: E402

SEED = 20251124
N = 500
SIZE = (112, 112)
GRID = 8  # the toy models' geometry: one object per 14-pixel patch of a 112-pixel image


def record(index: int, seed: int = SEED, size: tuple[int, int] = SIZE, grid: int = GRID) -> tuple[dict, Image.Image]:
    """The json record and the plain image of sample ``index`` (other scene parameters: shapes' defaults)."""
    scene = shapes.make_scene(np.random.default_rng([seed, index]), size=size, grid=grid)
    qs = shapes.questions(scene)
    rec = {
        "id": f"shapes-{index:04d}",
        "image": f"images/{index:04d}.png",
        "general_question": qs["general"][0],
        "obj_question": qs["object"][0],
        "super_question": qs["super"][0],
        "answer": qs["general"][1],
        "bboxes": [list(scene.box)],
    }
    return rec, shapes.render(scene, draw_box=False)


def build(out: Path = HERE, n: int = N, seed: int = SEED, size: tuple[int, int] = SIZE,
          grid: int = GRID) -> list[dict]:
    """Write ``out/images/NNNN.png`` and ``out/test.json`` (a list of records); return the records."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        rec, image = record(i, seed, size, grid)
        image.save(out / rec["image"], optimize=True)
        records.append(rec)
    (out / "test.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
    meta = {"n": n, "seed": seed, "size": list(size), "grid": grid,
            "generator": "helpers.shapes.make_scene (other parameters at their defaults)"}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--size", type=int, nargs=2, default=list(SIZE), metavar=("W", "H"))
    parser.add_argument("--grid", type=int, default=GRID)
    args = parser.parse_args()
    records = build(args.out, args.n, args.seed, tuple(args.size), args.grid)
    print(f"wrote {len(records)} records to {args.out / 'test.json'}")


if __name__ == "__main__":
    main()
