"""Resumable, sharded extraction of per-head results for one model and one benchmark split.

    python -m helpers.sweep --model llava-v1.5-7b --benchmark pope --data-files pope.parquet --out results/x
    accelerate launch --num_processes 4 -m helpers.sweep ...      # one shard per process, merged on load

Each finished batch is written atomically to ``OUT/part-r{rank}-{first index:06d}.parquet``
(:mod:`helpers.results`), so an interrupted sweep restarts where it stopped: samples whose index is in
any part file are skipped, none is lost or written twice. ``OUT/settings.json`` records the run's
settings (model id, revision and resolved commit, quantization, prompt template, package version).
Out of GPU memory, the batch is halved with a warning and the sweep goes on. Full attention rows are
written (``maps-r{rank}-{first:06d}.safetensors``, float16 ``[batch, layers, heads, keys]``) only with
``--save-maps``. Load the merged results with ``helpers.results.read_dir(OUT)``.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import __version__, data, extract, results
from .models import load_default, spec_of


def done_indices(out: Path) -> set[int]:
    """Sample indices already written by any process of this sweep."""
    import pyarrow.parquet as pq

    done: set[int] = set()
    for part in out.glob("part-*.parquet"):
        done.update(pq.read_table(part, columns=["index"]).column("index").to_pylist())
    return done


def shard(indices: list[int], rank: int, world: int) -> list[int]:
    """This process's share of the sample indices (round robin)."""
    return indices[rank::world]


def settings_of(model: Any, args: argparse.Namespace) -> dict[str, Any]:
    """What a reader of the results needs to know about the run."""
    spec = spec_of(model)
    return {"model": args.model or spec.name, "model_name": spec.name, "hub_id": spec.hub_id,
            "revision": spec.revision, "commit": getattr(model.config, "_commit_hash", None),
            "quantization": args.quantization, "benchmark": args.benchmark, "split": args.split,
            "dataset": f"{args.benchmark}/{args.split}", "prompt_kind": args.prompt_kind, "template": spec.prompt_template, "rows": args.rows, "k": args.k,
            "max_new_tokens": args.max_new_tokens, "package_version": __version__,
            "torch": torch.__version__, "dtype": str(model.dtype)}


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def process(model: Any, processor: Any, samples: list[data.Sample], todo: list[int], out: Path, rank: int,
            batch_size: int, settings: dict[str, Any], save_maps: bool = False, **kwargs: Any) -> int:
    """Run ``todo`` (indices into ``samples``) in batches, writing one part file per batch.

    Halves the batch on out-of-memory errors. Returns the final batch size.
    """
    bar = tqdm(total=len(todo), unit="sample", desc=f"{settings['model_name']} r{rank}", position=rank)
    pos = 0
    while pos < len(todo):
        idx = todo[pos:pos + batch_size]
        try:
            res, rows = extract.run_batch(model, processor, [samples[i] for i in idx], indices=idx,
                                          keep_rows=save_maps, **kwargs)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
            if not _is_oom(err):
                raise
            if batch_size == 1:
                raise RuntimeError("out of memory at batch size 1: use quantization='4bit' or a larger GPU") from err
            batch_size = max(1, batch_size // 2)
            warnings.warn(f"out of memory; halving the batch size to {batch_size} and going on", stacklevel=2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        res.settings = settings
        if save_maps:
            from safetensors.torch import save_file

            tmp = out / f".maps-r{rank}-{idx[0]:06d}.tmp"
            save_file({"rows": rows.half().contiguous(), "index": torch.tensor(idx)}, str(tmp))
            os.replace(tmp, out / f"maps-r{rank}-{idx[0]:06d}.safetensors")
        results.write(res, out / f"part-r{rank}-{idx[0]:06d}.parquet")
        pos += len(idx)
        bar.update(len(idx))
    bar.close()
    return batch_size


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="registry name, hub id or folder (default: by hardware)")
    parser.add_argument("--quantization", default="auto", help="auto, none, 4bit or 8bit")
    parser.add_argument("--benchmark", default="shapes", help="shapes, pointqa, pope, mmbench, seed, qbench")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-files", nargs="*", help="local files in the benchmark's schema")
    parser.add_argument("--prompt-kind", default=None, choices=[None, "visual", "plain"],
                        help="keep only samples of this prompt kind (PointQA-style sets)")
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rows", default="answer", choices=["answer", "prompt_end"])
    parser.add_argument("--k", type=float, default=0.05, help="top-k as a fraction of the image tokens")
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--save-maps", action="store_true", help="also write full attention rows (large)")
    args = parser.parse_args(argv)

    state = PartialState(cpu=not torch.cuda.is_available())
    rank, world = state.process_index, state.num_processes
    args.out.mkdir(parents=True, exist_ok=True)
    samples = load_samples(args)
    todo = [i for i in shard(list(range(len(samples))), rank, world) if i not in done_indices(args.out)]
    device = f"cuda:{state.local_process_index}" if torch.cuda.is_available() else "cpu"
    quantization = None if args.quantization == "none" else args.quantization
    model, processor = load_default(args.model, device=device, quantization=quantization)
    settings = settings_of(model, args)
    if rank == 0:
        _write_json_atomic(args.out / "settings.json", {**settings, "samples": len(samples), "processes": world})
    print(f"rank {rank}/{world}: {len(todo)} samples to do, {len(samples)} in the split", flush=True)
    process(model, processor, samples, todo, args.out, rank, args.batch_size, settings, save_maps=args.save_maps,
            rows=args.rows, k=args.k, max_new_tokens=args.max_new_tokens)
    state.wait_for_everyone()
    return 0


def load_samples(args: argparse.Namespace) -> list[data.Sample]:
    """The split's samples (bad ones skipped and reported), filtered and truncated as asked."""
    kwargs: dict[str, Any] = {"on_error": "skip"}
    if args.benchmark in ("shapes", "shapes-pointqa"):
        samples = data.load_shapes(split=args.split, **kwargs)
    else:
        samples = data.load(args.benchmark, args.data_files, **kwargs)
    if args.prompt_kind:
        samples = [s for s in samples if s.prompt_kind == args.prompt_kind]
    if not samples:
        raise data.EmptySplitError(f"no samples in {args.benchmark}/{args.split} after filtering")
    return list(samples[: args.max_samples])


if __name__ == "__main__":
    raise SystemExit(main())
