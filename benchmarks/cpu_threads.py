"""Seconds per forward pass of a small model on CPU at different torch thread counts (one run, ratios).

    python benchmarks/cpu_threads.py                      # the embedded default (a toy model, or the stand-in)
    python benchmarks/cpu_threads.py --model data/toy-b1 --threads 1 2 4 --batch 12

Why: the figure notebooks set ``CPU_THREADS = 1`` (``helpers.selection.set_cpu_threads``). The models they run
on CPU are tiny, and on a machine shared with other jobs extra threads wait on each other. Prints one
markdown table row per thread count, with the time relative to the first count.
"""

from __future__ import annotations

import argparse
import time

import torch

from helpers import extract, models, selection


def per_forward(model: object, inputs: dict, threads: int, repeats: int) -> float:
    """Mean seconds of ``repeats`` forward passes with ``threads`` torch threads (after one warm-up)."""
    torch.set_num_threads(threads)
    with torch.no_grad():
        model(**inputs)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(**inputs)
    return (time.perf_counter() - t0) / repeats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or name (default: the embedded default)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    model, processor = selection.load_default(args.model, device="cpu")
    inputs, _ = extract.batch_inputs(model, processor, selection.samples("shapes", args.batch))
    name = models.spec_of(model).name
    print("| model | batch x tokens | threads | s / forward | relative |\n|---|---|---|---|---|")
    first = None
    for threads in args.threads:
        seconds = per_forward(model, inputs, threads, args.repeats)
        first = first or seconds
        print(f"| {name} | {args.batch} x {inputs['input_ids'].shape[1]} | {threads} | {seconds:.3f} | "
              f"{seconds / first:.2f} |")


if __name__ == "__main__":
    main()
