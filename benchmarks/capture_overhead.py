"""What capture costs: generate with vs without capture, and capture vs eager ``output_attentions``.

    python benchmarks/capture_overhead.py                 # CPU, a few minutes on 2 cores
    python benchmarks/capture_overhead.py --layers 4 --repeats 5

Models: ``helpers.offline.build`` random-weight models at the real attention geometry of
LLaVA-1.5-7B (576 image tokens) and LLaVA-1.6-Vicuna-7B (anyres: base view + 2x2 tiles for the
500x375 image used): hidden 4096, 32 heads of 128, real CLIP ViT-L/14-336 tower; ``--layers``
decoder layers; the language model's MLP narrowed to ``--mlp-width`` (default 1024, ``0`` = the
real 11008) to keep the run to minutes on a 2-core CPU. Capture only adds attention-side work, so
a narrower MLP makes its overhead ratio *larger*: the default errs on the conservative side. All
comparisons of one geometry run in this one process on the same inputs, interleaved (A, B, A, B,
...), and report medians of wall time and of process CPU time (steadier on a shared machine).

1. ``generate(max_new_tokens=--new-tokens)`` plain vs inside ``capture.attention(rows="first_generated")``
   (and ``rows="generated"``, every step): time ratio. Both use sdpa.
2. ``generate(max_new_tokens=2)`` inside ``capture.attention(rows="first_generated")`` (sdpa) vs eager
   attention with ``output_attentions=True, return_dict_in_generate=True`` (the usual way): time
   ratio and peak-memory ratio. Peak memory on CPU is the rise of the process's peak resident set
   (``VmHWM``, reset through ``/proc/self/clear_refs``) over the resident set before the call; the
   script re-executes itself with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors go back
   to the system and each call's peak is its own. On CUDA: ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import capture, offline  # noqa: E402
from helpers.models import REGISTRY  # noqa: E402

GEOMETRIES = {"LLaVA-1.5": "llava-v1.5-7b", "LLaVA-1.6": "llava-v1.6-vicuna-7b"}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(fn: Callable[[], object], device: str) -> tuple[float, float, float]:
    """``(wall seconds, process CPU seconds, peak MiB above the memory in use before the call)`` of ``fn()``."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
        base = _status_kib("VmRSS") * 1024
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else _status_kib("VmHWM") * 1024
    return seconds, cpu, (peak - base) / 2**20


def inputs_for(name: str, processor, device: str) -> dict[str, torch.Tensor]:
    """One PointQA-style prompt with one 500x375 image (LLaVA-1.6: base view + 2x2 tiles, 2400 tokens)."""
    spec = REGISTRY[name]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8))
    prompt = spec.format_prompt("<image>\nhow many circles are in the image ? the exemplary object is within the "
                                "rectangle . answer the question using a single word or phrase .")
    return {k: v.to(device) for k, v in processor(images=[image], text=[prompt], return_tensors="pt").items()}


Timing = dict[str, tuple[float, float, float]]


def interleaved(runs: dict[str, Callable[[], object]], repeats: int, device: str) -> tuple[Timing, dict]:
    """Medians of (wall s, CPU s, peak MiB) of each run, called in turn ``repeats`` times; and its last result."""
    got: dict[str, list[tuple[float, float, float]]] = {k: [] for k in runs}
    last: dict[str, object] = {}
    for _ in range(repeats):
        for key, fn in runs.items():
            box: list[object] = []
            got[key].append(measure(lambda fn=fn, box=box: box.append(fn()), device))
            last[key] = box[0]
    medians = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in got.items()}
    return medians, last


def build(name: str, layers: int, mlp_width: int) -> tuple[object, object]:
    """``offline.build(name, layers=layers)``, with the language model's MLP narrowed to ``mlp_width`` (0: real)."""
    if not mlp_width:
        return offline.build(name, layers=layers)
    from transformers import AutoModelForImageTextToText

    tokenizer = offline.build_tokenizer()
    config = offline.build_config(name, layers=layers, tokenizer=tokenizer)
    config.text_config.intermediate_size = mlp_width
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32, attn_implementation="sdpa").eval()
    return model, offline.build_processor(name, tokenizer)


def ratio(r: Timing, a: str, b: str) -> str:
    return f"{r[a][0] / r[b][0]:.3f} wall, {r[a][1] / r[b][1]:.3f} CPU"


def bench_geometry(label: str, layers: int, mlp_width: int, repeats: int, new_tokens: int,
                   device: str) -> list[str]:
    name = GEOMETRIES[label]
    model, processor = build(name, layers, mlp_width)
    model.to(device)
    batch = inputs_for(name, processor, device)
    lm = capture.language_model(model)
    n_keys = batch["input_ids"].shape[1]

    @torch.no_grad()
    def plain(n: int = new_tokens) -> object:
        return model.generate(**batch, max_new_tokens=n, do_sample=False)

    def captured(rows: str, n: int = new_tokens) -> Callable[[], object]:
        @torch.no_grad()
        def run() -> object:
            with capture.attention(model, rows) as att:
                model.generate(**batch, max_new_tokens=n, do_sample=False)
            return att.rows
        return run

    @torch.no_grad()
    def eager() -> object:
        lm.set_attn_implementation("eager")
        try:
            out = model.generate(**batch, max_new_tokens=2, do_sample=False, output_attentions=True,
                                 return_dict_in_generate=True)
            return torch.stack([a[:, :, -1].float() for a in out.attentions[1]], dim=1)
        finally:
            lm.set_attn_implementation("sdpa")

    model.generate(**batch, max_new_tokens=1, do_sample=False)  # warm-up
    mlp = f"MLP width {mlp_width} (narrowed)" if mlp_width else "real MLP width"
    lines = [f"\n## {label} geometry ({name}: {layers} layer(s), {mlp}, {n_keys} prompt tokens, batch 1, {device}, "
             f"median of {repeats})"]
    if label == "LLaVA-1.5":
        r, _ = interleaved({"plain": plain, "answer": captured("first_generated"), "generated": captured("generated")},
                           repeats, device)
        lines += [f"generate {new_tokens} tokens: plain {r['plain'][0]:.2f} s wall / {r['plain'][1]:.2f} s CPU; "
                  f"capture rows='first_generated' {r['answer'][0]:.2f} / {r['answer'][1]:.2f} s; rows='generated' "
                  f"{r['generated'][0]:.2f} / {r['generated'][1]:.2f} s",
                  f"capture / plain: rows='first_generated' {ratio(r, 'answer', 'plain')}; rows='generated' "
                  f"{ratio(r, 'generated', 'plain')}"]
    r, last = interleaved({"ours": captured("first_generated", 2), "eager": eager}, repeats, device)
    err = (last["ours"].to(last["eager"].device) - last["eager"]).abs().max().item()
    lines += [f"generate 2 tokens, rows of the answer: capture (sdpa) {r['ours'][0]:.2f} s wall / {r['ours'][1]:.2f} s "
              f"CPU, peak +{r['ours'][2]:.0f} MiB; eager output_attentions {r['eager'][0]:.2f} / {r['eager'][1]:.2f} s, "
              f"peak +{r['eager'][2]:.0f} MiB",
              f"eager / capture: time {ratio(r, 'eager', 'ours')}; peak memory {r['eager'][2] / max(r['ours'][2], 1):.2f}",
              f"captured 'answer' rows vs eager rows: max abs difference {err:.1e}"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2, help="decoder layers of the random-weight models")
    parser.add_argument("--mlp-width", type=int, default=1024,
                        help="language-model MLP width; 0 = the real one (11008). Narrower makes the capture "
                             "overhead ratio larger (capture only adds attention-side work), so the default is "
                             "the conservative side")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of each variant (after a warm-up)")
    parser.add_argument("--new-tokens", type=int, default=8, help="tokens generated in comparison 1")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--geometries", nargs="+", default=list(GEOMETRIES), choices=list(GEOMETRIES))
    args = parser.parse_args()
    if not args.device.startswith("cuda") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda")
               else f"CPU, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"# capture overhead on {machine}")
    for label in args.geometries:
        print("\n".join(bench_geometry(label, args.layers, args.mlp_width, args.repeats, args.new_tokens,
                                        args.device)), flush=True)


if __name__ == "__main__":
    main()
