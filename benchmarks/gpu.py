"""One-shot GPU benchmark: LLaVA-1.5-7B and LLaVA-1.6-7B real geometry, random weights, full depth, 4-bit.

    bash benchmarks/gpu.sh                                   # on a CUDA machine: installs if needed, runs, writes
                                                             # benchmarks/results/gpu-<date>-<gpu>.md (< 8 min, H100 class)
    python benchmarks/gpu.py --device cpu --layers 2 --dry-run   # the same code path at tiny size, on CPU

Per geometry (no network: the model is built with ``helpers.offline`` at the real geometry, 32 decoder
layers, real MLP width, bf16 random weights, saved to a local folder, then loaded like any checkpoint):

1. load: ``helpers.models.load(folder, quantization="4bit")`` seconds and the GPU memory it holds;
2. prefill and decode: ``generate`` of 1 token (the prefill) and of 17 tokens, one PointQA-style prompt with
   one 500x375 image (607 tokens for LLaVA-1.5, 2,400 for LLaVA-1.6);
3. capture overhead: ``generate`` of 8 tokens plain vs inside ``capture.attention(rows="first_generated")``, the two
   interleaved, medians (goal <= 1.05);
4. memory: peak GPU memory rise of ``generate`` (2 tokens) inside the capture vs eager attention with
   ``output_attentions=True`` (``torch.cuda.max_memory_allocated`` over the memory allocated before);
5. sweep throughput: ``helpers.extract.run_batch`` (generate under capture + every head's scores) over the
   synthetic PointQA set at batch sizes 1, 8 and 24, samples/s after one warm-up batch.

Each section is appended to the output file as soon as it is measured, so a run stopped early keeps what it
measured. ``--dry-run`` shrinks everything (tiny geometry, 2 samples per batch size, 2 repeats) so that the
whole path runs on a CPU in about a minute; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers import capture, data, extract, models, offline  # noqa: E402
from helpers.models import REGISTRY  # noqa: E402

GEOMETRIES = {"LLaVA-1.5": "llava-v1.5-7b", "LLaVA-1.6": "llava-v1.6-vicuna-7b"}


# ---------------------------------------------------------------------------------------------
# Timing and memory on either device


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def timed(fn: Callable[[], Any], device: str) -> tuple[float, float, Any]:
    """``(seconds, peak memory rise in GiB over the memory in use before, result)`` of ``fn()``.

    CUDA: ``max_memory_allocated`` over ``memory_allocated``; CPU: ``VmHWM`` (reset) over ``VmRSS``.
    """
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        base = _rss_kib("VmRSS") * 1024
    start = time.perf_counter()
    result = fn()
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else _rss_kib("VmHWM") * 1024
    return seconds, (peak - base) / 2**30, result


def held_gib(device: str) -> float:
    """Memory the process holds now: CUDA allocated, or the CPU resident set."""
    return torch.cuda.memory_allocated() / 2**30 if device.startswith("cuda") else _rss_kib("VmRSS") / 2**20


# ---------------------------------------------------------------------------------------------
# Building, loading, inputs


def build_folder(name: str, layers: int, tiny: bool, device: str, cache: Path) -> Path:
    """A random-weight ``name`` model saved as a Hugging Face folder (built on ``device`` in bf16; cached)."""
    folder = cache / f"{name}-{'tiny' if tiny else 'geometry'}-{layers}L-random"
    if (folder / "visual_heads.json").is_file():
        return folder
    with torch.device(device):
        model, processor = offline.build(name, tiny=tiny, layers=layers, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    spec = REGISTRY[name]
    (folder / "visual_heads.json").write_text(json.dumps({
        "name": f"{name}-{'tiny' if tiny else 'geometry'}-random", "family": spec.family, "template": spec.template,
        "note": f"random weights, {name} geometry, {layers} decoder layers: for benchmarks, not for results"}))
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return folder


def prompt_inputs(model: Any, processor: Any) -> dict[str, torch.Tensor]:
    """One PointQA-style prompt with one 500x375 image, on the model's device (pixels in its dtype)."""
    import numpy as np
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8))
    prompt = models.spec_of(model).format_prompt(
        "<image>\nhow many circles are in the image ? the exemplary object is within the rectangle . answer the "
        "question using a single word or phrase .")
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    return {k: (v.to(model.device, dtype) if v.is_floating_point() else v.to(model.device)) for k, v in inputs.items()}


# ---------------------------------------------------------------------------------------------
# The measurements


def generate(model: Any, batch: dict, n: int, **kw: Any) -> Any:
    with torch.no_grad():
        return model.generate(**batch, max_new_tokens=n, min_new_tokens=n, do_sample=False, **kw)


def prefill_decode(model: Any, batch: dict, device: str, repeats: int, decode_tokens: int = 16) -> dict:
    """Median seconds of the prefill (generate 1 token) and per decoded token (generate 1 + ``decode_tokens``)."""
    generate(model, batch, 2)  # warm-up
    first = statistics.median(timed(lambda: generate(model, batch, 1), device)[0] for _ in range(repeats))
    total = statistics.median(timed(lambda: generate(model, batch, 1 + decode_tokens), device)[0]
                              for _ in range(repeats))
    return {"prefill_s": first, "decode_s_per_token": (total - first) / decode_tokens}


def capture_overhead(model: Any, batch: dict, device: str, repeats: int, new_tokens: int = 8) -> dict:
    """Plain ``generate`` vs the same inside ``capture.attention(rows="first_generated")``, interleaved, medians."""
    def plain() -> Any:
        return generate(model, batch, new_tokens)

    def captured() -> Any:
        with capture.attention(model, rows="first_generated") as att:
            generate(model, batch, new_tokens)
        return att.rows

    times: dict[str, list[float]] = {"plain": [], "capture": []}
    for _ in range(repeats):
        for key, fn in (("plain", plain), ("capture", captured)):
            times[key].append(timed(fn, device)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"plain_s": med["plain"], "capture_s": med["capture"], "ratio": med["capture"] / med["plain"],
            "new_tokens": new_tokens, "repeats": repeats}


def eager_memory(model: Any, batch: dict, device: str) -> dict:
    """Peak memory rise of 2-token ``generate``: inside the capture (sdpa) vs eager ``output_attentions``;
    the two rows' max difference."""
    def captured() -> torch.Tensor:
        with capture.attention(model, rows="first_generated") as att:
            generate(model, batch, 2)
        return att.rows

    def eager() -> torch.Tensor:
        lm = capture.language_model(model)
        lm.set_attn_implementation("eager")
        try:
            out = generate(model, batch, 2, output_attentions=True, return_dict_in_generate=True)
            return torch.stack([a[:, :, -1].float().cpu() for a in out.attentions[1]], dim=1)
        finally:
            lm.set_attn_implementation("sdpa")

    s_cap, m_cap, rows = timed(captured, device)
    result = {"capture_s": s_cap, "capture_peak_gib": m_cap}
    try:
        s_eager, m_eager, ref = timed(eager, device)
        result.update(eager_s=s_eager, eager_peak_gib=m_eager, ratio=m_eager / max(m_cap, 2**-10),
                      max_diff=(rows - ref).abs().max().item())
    except torch.cuda.OutOfMemoryError as err:
        result.update(eager_error=f"out of GPU memory: {str(err)[:160]}")
    return result


def sweep_throughput(model: Any, processor: Any, samples: list, batch_sizes: list[int], device: str) -> list[dict]:
    """Samples/s of ``extract.run_batch`` at each batch size over ``samples`` (after one warm-up batch)."""
    out = []
    for bs in batch_sizes:
        try:
            extract.run_batch(model, processor, samples[:bs], max_new_tokens=2)
            seconds, peak, _ = timed(lambda bs=bs: [extract.run_batch(model, processor, samples[i:i + bs],
                                                                      max_new_tokens=2)
                                                    for i in range(0, len(samples), bs)], device)
            out.append({"batch": bs, "samples": len(samples), "samples_per_s": len(samples) / seconds,
                        "peak_gib": peak})
        except torch.cuda.OutOfMemoryError as err:
            out.append({"batch": bs, "error": f"out of GPU memory: {str(err)[:120]}"})
            torch.cuda.empty_cache()
    return out


# ---------------------------------------------------------------------------------------------
# The report


class Report:
    """Markdown appended to ``path`` section by section (and echoed), plus the raw numbers as JSON beside it."""

    def __init__(self, path: Path):
        self.path = path
        self.raw: dict[str, Any] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def add(self, text: str, key: str | None = None, value: Any = None) -> None:
        with self.path.open("a") as f:
            f.write(text.rstrip() + "\n\n")
        print(text, flush=True)
        if key:
            self.raw[key] = value
            self.path.with_suffix(".json").write_text(json.dumps(self.raw, indent=1))


def machine(device: str) -> str:
    from importlib.metadata import version

    what = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    libs = ", ".join(f"{n} {version(n)}" for n in ("torch", "transformers", "bitsandbytes", "accelerate"))
    return f"{what}; {libs}; CUDA {torch.version.cuda}; Python {platform.python_version()}; {date.today()}"


def bench_geometry(label: str, args: argparse.Namespace, report: Report) -> None:
    name = GEOMETRIES[label]
    t0 = time.perf_counter()
    folder = build_folder(name, args.layers, args.dry_run, args.device, args.cache)
    build_s = time.perf_counter() - t0
    load_s, load_peak, (model, processor) = timed(
        lambda: models.load(folder, quantization=args.quantization, device=args.device), args.device)
    weights = models.memory_footprint_gib(model)
    batch = prompt_inputs(model, processor)
    tokens = batch["input_ids"].shape[1]
    pd = prefill_decode(model, batch, args.device, args.repeats)
    over = capture_overhead(model, batch, args.device, args.repeats)
    mem = eager_memory(model, batch, args.device)
    samples = list(data.load_shapes())[: args.samples]
    sweep = sweep_throughput(model, processor, samples, args.batch_sizes, args.device)
    eager = (f"{mem['eager_peak_gib']:.2f} GiB, {mem['eager_s']:.2f} s; **eager / capture peak {mem['ratio']:.1f}x**; "
             f"rows differ by at most {mem['max_diff']:.1e}" if "eager_peak_gib" in mem else mem.get("eager_error"))
    lines = [f"## {label} geometry: {name}, {args.layers} layers, {args.quantization or 'no'} quantization, "
             f"{tokens} prompt tokens, batch 1",
             "| quantity | value |", "|---|---|",
             f"| build + save the random-weight folder (not part of loading) | {build_s:.1f} s |",
             f"| load (`models.load`, {args.quantization or 'unquantized'}) | {load_s:.1f} s |",
             f"| weights held (`get_memory_footprint`) | {weights:.2f} GiB |",
             f"| memory held after load | {held_gib(args.device):.2f} GiB |",
             f"| prefill (generate 1 token), median of {args.repeats} | {pd['prefill_s']:.3f} s |",
             f"| decode, per token (16 tokens) | {pd['decode_s_per_token'] * 1000:.1f} ms |",
             f"| generate {over['new_tokens']} tokens: plain / inside `capture.attention(rows='answer')` | "
             f"{over['plain_s']:.3f} s / {over['capture_s']:.3f} s |",
             f"| **capture overhead** (goal <= 1.05) | **{over['ratio']:.3f}** |",
             f"| peak memory rise, generate 2 tokens: capture (sdpa) | {mem['capture_peak_gib']:.2f} GiB, "
             f"{mem['capture_s']:.2f} s |",
             f"| peak memory rise, generate 2 tokens: eager `output_attentions=True` | {eager} |"]
    lines += [f"| sweep (`extract.run_batch`, {s.get('samples', '?')} synthetic samples), batch {s['batch']} | "
              + (f"{s['samples_per_s']:.2f} samples/s, peak +{s['peak_gib']:.2f} GiB |" if "error" not in s
                 else f"{s['error']} |") for s in sweep]
    report.add("\n".join(lines), label, {"tokens": tokens, "build_s": build_s, "load_s": load_s,
                                         "load_peak_gib": load_peak, "weights_gib": weights, **pd,
                                         "overhead": over, "memory": mem, "sweep": sweep})
    del model
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--geometries", nargs="+", default=list(GEOMETRIES), choices=list(GEOMETRIES))
    parser.add_argument("--quantization", default="4bit", choices=["4bit", "8bit", "none"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 24])
    parser.add_argument("--samples", type=int, default=48, help="synthetic samples per batch size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny geometry, 2 samples, batch sizes 1 and 2, 2 repeats: the code path, not numbers")
    parser.add_argument("--cache", type=Path, default=None, help="where the random-weight folders are built "
                                                                  "(default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device is visible: run on a GPU machine, or try --device cpu --layers 2 --dry-run")
    if args.quantization == "none":
        args.quantization = None
    elif models.bitsandbytes_problem(args.device):
        if not args.dry_run:
            raise SystemExit(f"{args.quantization} needs bitsandbytes on {args.device}: "
                             f"{models.bitsandbytes_problem(args.device)}")
        args.quantization = None
    if args.dry_run:
        args.samples, args.batch_sizes, args.repeats = 2, [1, 2], 2
    args.cache = args.cache or Path(tempfile.mkdtemp(prefix="vh-gpu-bench-"))
    gpu = torch.cuda.get_device_name().replace(" ", "-") if args.device.startswith("cuda") else "cpu"
    args.out = args.out or (ROOT / "benchmarks" / "results" / f"gpu-{date.today()}-{gpu}"
                            f"{'-dry-run' if args.dry_run else ''}.md")
    report = Report(args.out)
    start = time.perf_counter()
    report.add(f"# GPU benchmark{' (DRY RUN: tiny geometry, numbers mean nothing)' if args.dry_run else ''}\n\n"
               f"{machine(args.device)}\n\n"
               f"Command: `python benchmarks/gpu.py {' '.join(sys.argv[1:] if argv is None else argv)}`. Models: "
               f"random weights at the real geometry ({'tiny, ' if args.dry_run else ''}{args.layers} decoder "
               "layers), built offline with `helpers.offline`, saved, then loaded with `helpers.models.load`.",
               "machine", machine(args.device))
    for label in args.geometries:
        bench_geometry(label, args, report)
    report.add(f"Total {time.perf_counter() - start:.0f} s.", "total_s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
