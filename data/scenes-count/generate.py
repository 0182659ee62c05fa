"""Build the scenes-count set: plain PNGs and a LookTwice-QA json (ViP-LLaVA schema) for data.load_pointqa.

    python data/scenes-count/generate.py              # the committed set (300 scenes, seed 20260301)
    python data/scenes-count/generate.py --out /tmp/sc --n 20 --seed 1

Records come from :func:`helpers.tasks.count_samples` (``expand=True``: every question kind and prompt
kind of a scene, which the loader rebuilds from one record). Scene ``i`` is drawn from
``numpy.random.default_rng([seed, i])`` alone, so any prefix of the set can be rebuilt exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for `import helpers`

from helpers import data, tasks  # noqa: E402

SEED = 20260301
N = 300
LOADER_KEYS = ("record_id", "count", "image_size")  # what data.load_pointqa puts in meta itself


def build_samples(n: int = N, seed: int = SEED) -> list[data.Sample]:
    """The samples of the first ``n`` scenes (6 per scene)."""
    return tasks.count_samples(seed, n, expand=True)


def records(samples: list[data.Sample]) -> list[dict]:
    """One ViP-LLaVA record per scene: id, image, the three questions, answer, bboxes."""
    by_record: dict[str, dict] = {}
    for s in samples:
        rec = by_record.setdefault(s.meta["record_id"], {
            "id": s.meta["record_id"], "image": f"images/{s.meta['image_id']}.png", "general_question": None,
            "obj_question": None, "super_question": None, "answer": s.answer,
            "bboxes": [[int(v) for v in b] for b in s.boxes]})
        rec[data.QUESTION_FIELDS[s.question_kind]] = s.question
    return list(by_record.values())


def sidecar(samples: list[data.Sample], n: int, seed: int) -> dict:
    """meta.json: generator parameters, then the scenes and per-record meta (helpers.tasks.sidecar)."""
    return {"n": n, "seed": seed, "generator": "helpers.tasks.count_samples(seed, n, expand=True)",
            **tasks.sidecar(samples, row_id=lambda s: s.meta["record_id"], loader_keys=LOADER_KEYS)}


def build(out: Path = HERE, n: int = N, seed: int = SEED) -> list[dict]:
    """Write ``out/images/NNNN.png``, ``out/test.json`` and ``out/meta.json``; return the records."""
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
    print(f"wrote {len(recs)} records to {args.out / 'test.json'}")


if __name__ == "__main__":
    main()
