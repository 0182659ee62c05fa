"""Build the scenes-pope set: plain PNGs and POPE rows (lmms-lab columns) read by data.load_pope.

    python data/scenes-pope/generate.py               # the committed set (300 questions per negative kind)
    python data/scenes-pope/generate.py --out /tmp/sp --n 20 --seed 1

Rows come from :func:`helpers.tasks.pope_samples`, once per negative kind (random, popular,
adversarial) with the same seed: question ``i`` of every kind asks about the same image (drawn from
``numpy.random.default_rng([seed, i])`` alone), and its "yes" questions are the same, as in POPE.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for `import helpers`

from helpers import data, tasks  # noqa: E402

SEED = 20260302
N = 300  # per negative kind
LOADER_KEYS = ("category",)  # what data.load_pope puts in meta itself


def build_samples(n: int = N, seed: int = SEED) -> list[data.Sample]:
    """``n`` questions of each negative kind, kind by kind."""
    return [s for kind in tasks.NEGATIVES for s in tasks.pope_samples(seed, n, negatives=kind)]


def records(samples: list[data.Sample]) -> list[dict]:
    """POPE rows: id, question_id, question, answer, image (file name), image_source, category."""
    return [{"id": s.id, "question_id": str(s.meta["record_id"].rsplit("-", 1)[1]), "question": s.question,
             "answer": s.answer, "image_source": s.meta["image_id"],
             "image": f"images/{s.meta['image_id']}.png",
             "category": s.meta["category"]} for s in samples]


def sidecar(samples: list[data.Sample], n: int, seed: int) -> dict:
    """meta.json: generator parameters, then the scenes and per-row meta (helpers.tasks.sidecar)."""
    return {"n": n, "seed": seed, "negatives": list(tasks.NEGATIVES),
            "generator": "helpers.tasks.pope_samples(seed, n, negatives=kind) for each kind",
            **tasks.sidecar(samples, row_id=lambda s: s.id, loader_keys=LOADER_KEYS)}


def build(out: Path = HERE, n: int = N, seed: int = SEED) -> list[dict]:
    """Write ``out/images/NNNN.png``, ``out/test.json`` and ``out/meta.json``; return the rows."""
    samples = build_samples(n, seed)
    tasks.write_images(samples, out)
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
