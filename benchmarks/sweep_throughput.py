"""Sweep throughput (samples/s) of the extraction path at several batch sizes, in one run.

    python benchmarks/sweep_throughput.py                         # embedded default on CPU
    python benchmarks/sweep_throughput.py --model llava-v1.5-7b --quantization 4bit --batch-sizes 1 8 24

Each configuration runs ``helpers.extract.run_batch`` (generate under capture + all head scores) over the
same samples of the synthetic set; the first batch is a warm-up and not timed. Offline, ``--geometry NAME``
times a random-weight model of that registry architecture (``helpers.offline``, ``--layers`` decoder layers).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from helpers import data, extract, models, offline, selection


def throughput(model, processor, samples, batch_size: int) -> float:
    """Samples per second over ``samples`` (after one warm-up batch)."""
    extract.run_batch(model, processor, samples[:batch_size], max_new_tokens=2)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(samples), batch_size):
        extract.run_batch(model, processor, samples[i:i + batch_size], max_new_tokens=2)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return len(samples) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--geometry", default=None, help="registry name: random weights at its geometry")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--quantization", default=None)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    source = args.model
    if args.geometry:
        source = offline.save(args.geometry, Path(tempfile.mkdtemp()) / args.geometry, layers=args.layers)
    model, processor = selection.load_default(source, quantization=args.quantization)
    samples = list(data.load_shapes())[: args.samples]
    print("| model | device | batch size | samples/s | vs batch 1 |\n|---|---|---|---|---|")
    base = None
    for bs in args.batch_sizes:
        rate = throughput(model, processor, samples, bs)
        base = base or rate
        print(f"| {models.spec_of(model).name} | {model.device} | {bs} | {rate:.2f} | {rate / base:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
