"""Load time, memory and first-token latency of a model loaded with ``helpers.models.load``.

    python benchmarks/load_model.py                       # embedded default + LLaVA-1.5-7B geometry (1 layer)
    python benchmarks/load_model.py --model llava-v1.5-7b --quantization 4bit   # a real checkpoint on a GPU

Offline, the real-geometry model has random weights and one decoder layer (``helpers.offline``): its
per-layer numbers scale to 32 layers; its load time does not include a hub download.
Prints one markdown table row per configuration.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from helpers import models, offline, selection


def measure(source: str | Path, quantization: str | None, device: str, new_tokens: int = 8) -> dict:
    """Seconds to load, GiB held by weights, seconds to the first token, seconds per further token."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model, processor = models.load(source, quantization=quantization, device=device, check=False)
    load_s = time.perf_counter() - t0
    spec = models.spec_of(model)
    prompt = spec.format_prompt("<image>\nHow many circles are there within the rectangle?")
    inputs = processor(images=[Image.new("RGB", (448, 336), "gray")], text=[prompt], return_tensors="pt")
    inputs = inputs.to(model.device)

    def run(n: int) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(1)  # warm-up
    first = min(run(1) for _ in range(2))
    total = run(new_tokens)
    row = {"model": spec.name, "quantization": quantization or "none", "device": device,
           "load_s": load_s, "weights_gib": models.memory_footprint_gib(model), "first_token_s": first,
           "decode_s_per_token": (total - first) / (new_tokens - 1),
           "prompt_tokens": inputs.input_ids.shape[1]}
    if device.startswith("cuda"):
        row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="registry name or folder (default: offline configurations)")
    parser.add_argument("--quantization", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.model:
        rows = [measure(args.model, args.quantization, args.device)]
    else:
        tmp = Path(tempfile.mkdtemp())
        real = offline.save("llava-v1.5-7b", tmp / "llava-v1.5-7b-geometry", layers=1)
        rows = [measure(selection.embedded_default(), None, args.device),
                measure(real, None, args.device), measure(real, "4bit", args.device)]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
