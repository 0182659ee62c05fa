"""This project's capture against the tools researchers use instead, at full depth (CPU).

    pip install -e ".[bench]"                       # nnsight and TransformerLens, pinned
    python benchmarks/peers.py sweep                # the table in benchmarks/README.md (~40 min on 2 cores)
    python benchmarks/peers.py sweep --tiny --depths 2 4 --repeats 1   # the whole pipeline in a minute
    python benchmarks/peers.py sweep --model data/toy-a1 --repeats 2   # a local model folder (an organism)
    python benchmarks/peers.py render benchmarks/results/peers-cpu.jsonl   # markdown from the raw records

The task, the same for every method: for every decoder layer and head, the attention row of the
last prompt position and of the first answer token (greedy ``generate`` of 2 tokens: the prefill's
last row and the first decoding step's row). Methods:

- ``plain``: ``model.generate`` with sdpa and no capture (the time every method is held against);
- ``ours``: the same inside ``helpers.capture.attention(model, rows="generated")``;
- ``eager``: eager attention with ``output_attentions=True`` (what transformers offers);
- ``nnsight``: ``nnsight`` 0.8.1 ``TransformersModel`` around the same model, eager attention,
  ``with model.generate(...)``, ``tracer.iter[0:2]``, the last row of each ``self_attn.output[1]``
  cloned (only the rows are kept: the peer's cheapest use);
- ``tlens``: TransformerLens 3.9 ``TransformerBridge.boot_transformers(hf_model=...)`` (eager), hooks
  on ``blocks.{i}.attn.hook_pattern`` that clone the last row. The bridge's ``generate`` cannot do this
  task for LLaVA with transformers 5.24 (its attention reads the cache from ``past_key_values``, which
  transformers now passes as ``cache``, so a cached decoding step sees one key; uncached steps get no
  ``pixel_values`` after the first), so the answer row comes from a second, uncached forward over the
  prompt plus the answer token: two full forwards.

Models: random weights at the real attention geometry of LLaVA-1.5-7B (607 prompt tokens) and
LLaVA-1.6-Vicuna-7B (2,400 tokens, anyres), hidden 4096, 32 heads of 128, the real CLIP tower and
processors (``helpers.offline``), built offline. Two parts that do not enter attention are narrowed
or shared, as stated in every output: the language model's MLP width (``--mlp-width``, 1024 instead of
11008) and the decoder layers' weights, which are *one* random layer's parameters shared by all
``--depths`` layers (distinct modules, distinct KV-cache slots, the same tensors), so 32 layers fit in
the memory of one and every layer does its full computation.

Measurement: each (method, geometry, depth, repeat) runs in its own process (``nice -n 15``, 2 torch
threads) under a memory cap (``--cap-gib``, default 12): a cgroup v1/v2 memory limit where one can be
made, and an RSS watchdog in any case; a run killed at the cap is recorded as out of memory. Variants
are interleaved (plain, ours, eager, nnsight, tlens, then the next repeat in a rotated order) and the
tables give medians. Wall and process CPU seconds of the call, after a short text-only warm-up of the
same method; peak memory = rise of the peak resident set (``VmHWM`` reset through
``/proc/self/clear_refs``) over the resident set before the call, with glibc returning freed blocks
(``MALLOC_MMAP_THRESHOLD_``). Every run appends one JSON record (:class:`Record`) to the results
file, so an interrupted sweep keeps what finished and ``--resume`` skips it.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
METHODS = ("plain", "ours", "eager", "nnsight", "tlens")
LABELS = {"plain": "plain sdpa `generate` (no capture)", "ours": "this project (`capture.attention`)",
          "eager": "eager `output_attentions=True`", "nnsight": "nnsight 0.8.1 (eager, rows cloned)",
          "tlens": "TransformerLens 3.9 bridge (eager, 2 forwards)"}
GEOMETRIES = {"LLaVA-1.5": "llava-v1.5-7b", "LLaVA-1.6": "llava-v1.6-vicuna-7b"}
EAGER_KERNEL = {"eager", "nnsight", "tlens"}
MIB = 2**20
NICE = 15  # every measurement process runs at this niceness (the machine is shared)

Rows = dict[str, Any]  # {"prompt_end": [layers, heads, keys], "answer": [layers, heads, keys + 1]}


@dataclass
class Record:
    """One measurement: one method on one model, one repeat, in its own process."""

    method: str
    geometry: str
    layers: int
    repeat: int
    status: str = "ok"  # ok | oom | error | timeout | skipped
    tokens: int | None = None
    wall_s: float | None = None
    cpu_s: float | None = None
    peak_mib: float | None = None  # rise of the peak resident set over the resident set before the call
    base_mib: float | None = None  # resident set before the call (weights, inputs, libraries)
    answer_token: int | None = None
    detail: str = ""  # the error, or the cap that was hit
    kind: str = "run"


# ---------------------------------------------------------------------------------------------
# Worker side: build one model, run one method once, write the record and the rows


def share_layers(model: Any, layers: int) -> None:
    """Grow the language model from its one decoder layer to ``layers`` that share its parameters.

    Each new layer is a deep copy whose parameters (and config) are the first layer's (no new memory),
    with its own ``layer_idx`` (its own KV-cache slot); the config's layer count follows.
    """
    from helpers import capture

    lm = capture.language_model(model)
    first = lm.layers[0]
    shared: dict[int, Any] = {id(p): p for p in first.parameters()}
    shared[id(lm.config)] = lm.config  # one config: set_attn_implementation must reach every layer
    for index in range(1, layers):
        layer = copy.deepcopy(first, memo=dict(shared))
        layer.self_attn.layer_idx = index
        lm.layers.append(layer)
    config = model.config.text_config
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[0]] * layers


def build_model(geometry: str, layers: int, mlp_width: int, tiny: bool) -> tuple[Any, Any]:
    """A random-weight model of ``GEOMETRIES[geometry]`` with ``layers`` layers sharing one layer's weights."""
    import torch
    from transformers import AutoModelForImageTextToText

    from helpers import offline

    name = GEOMETRIES[geometry]
    tokenizer = offline.build_tokenizer()
    config = offline.build_config(name, tiny=tiny, layers=1, tokenizer=tokenizer)
    if mlp_width and not tiny:
        config.text_config.intermediate_size = mlp_width
    config.architectures = [{"llava": "LlavaForConditionalGeneration",
                             "llava_next": "LlavaNextForConditionalGeneration"}[config.model_type]]
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    share_layers(model.eval(), layers)
    from helpers.models import REGISTRY

    model.vh_spec = REGISTRY[name]
    return model, offline.build_processor(name, tokenizer)


def load_folder(path: str) -> tuple[Any, Any]:
    """A local model folder (an organism) through ``helpers.models.load``, on CPU, in float32."""
    import torch

    from helpers import models

    model, processor = models.load(path, device="cpu")
    return model.to(torch.float32).eval(), processor


def prompt_inputs(model: Any, processor: Any, image: bool = True) -> dict[str, Any]:
    """One PointQA-style prompt with one 500x375 image (as ``capture_overhead.py``), or the text alone."""
    import numpy as np
    from PIL import Image

    from helpers.models import spec_of

    question = ("how many circles are in the image ? the exemplary object is within the rectangle . "
                "answer the question using a single word or phrase .")
    if not image:
        return dict(processor.tokenizer([spec_of(model).format_prompt(question)], return_tensors="pt"))
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8))
    prompt = spec_of(model).format_prompt("<image>\n" + question)
    return dict(processor(images=[picture], text=[prompt], return_tensors="pt"))


def _generate_kw() -> dict[str, Any]:
    return {"max_new_tokens": 2, "min_new_tokens": 2, "do_sample": False}


def method_plain(model: Any, processor: Any) -> Callable[[dict], Rows | None]:
    def run(batch: dict) -> None:
        model.generate(**batch, **_generate_kw())
    return run


def method_ours(model: Any, processor: Any) -> Callable[[dict], Rows]:
    from helpers import capture

    def run(batch: dict) -> Rows:
        with capture.attention(model, rows="generated") as att:
            out = model.generate(**batch, **_generate_kw())
        rows = att.rows[0]  # [steps, layers, heads, prompt + 1]
        return {"prompt_end": rows[0, :, :, :-1], "answer": rows[1], "token": int(out[0, -2])}
    return run


def method_eager(model: Any, processor: Any) -> Callable[[dict], Rows]:
    import torch

    from helpers import capture

    capture.language_model(model).set_attn_implementation("eager")

    def run(batch: dict) -> Rows:
        out = model.generate(**batch, **_generate_kw(), output_attentions=True, return_dict_in_generate=True)
        return {"prompt_end": torch.stack([a[0, :, -1].float() for a in out.attentions[0]]),
                "answer": torch.stack([a[0, :, -1].float() for a in out.attentions[1]]),
                "token": int(out.sequences[0, -2])}
    return run


def method_nnsight(model: Any, processor: Any) -> Callable[[dict], Rows]:
    import torch
    from nnsight.modeling.transformers import TransformersModel

    from helpers import capture

    capture.language_model(model).set_attn_implementation("eager")
    wrapped = TransformersModel(model, task="image-text-to-text", processor=processor,
                                tokenizer=processor.tokenizer)
    layers = wrapped.model.language_model.layers
    n = len(capture.language_model(model).layers)

    def run(batch: dict) -> Rows:
        with wrapped.generate(dict(batch), **_generate_kw()) as tracer:
            steps = list().save()
            for _ in tracer.iter[0:2]:
                steps.append([layers[i].self_attn.output[1][0, :, -1].clone() for i in range(n)])
            ids = tracer.result.save()
        return {"prompt_end": torch.stack(steps[0]).float(), "answer": torch.stack(steps[1]).float(),
                "token": int(ids[0, -2])}
    return run


def method_tlens(model: Any, processor: Any) -> Callable[[dict], Rows]:
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    from helpers import capture

    capture.language_model(model).set_attn_implementation("eager")
    folder = tempfile.mkdtemp(prefix="peers-tl-")
    model.config.save_pretrained(folder)  # the bridge reads the processor and tokenizer from a folder
    processor.save_pretrained(folder)
    bridge = TransformerBridge.boot_transformers(folder, hf_model=model, device="cpu")
    n = len(capture.language_model(model).layers)
    hooks_at = [f"blocks.{i}.attn.hook_pattern" for i in range(n)]

    def last_rows(forward: Callable[[], Any]) -> tuple[Any, torch.Tensor]:
        got: list[torch.Tensor] = []

        def keep(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
            got.append(pattern[0, :, -1].clone())
            return pattern
        with bridge.hooks(fwd_hooks=[(name, keep) for name in hooks_at]):
            out = forward()
        return out, torch.stack(got).float()

    def run(batch: dict) -> Rows:
        extra = {k: v for k, v in batch.items() if k != "input_ids"}
        logits, prompt_end = last_rows(lambda: bridge(batch["input_ids"], return_type="logits", **extra))
        token = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([batch["input_ids"], token], dim=1)
        extra["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(token)], dim=1)
        _, answer = last_rows(lambda: bridge(ids, return_type=None, **extra))
        return {"prompt_end": prompt_end, "answer": answer, "token": int(token)}
    return run


METHOD_BUILDERS = {"plain": method_plain, "ours": method_ours, "eager": method_eager,
                   "nnsight": method_nnsight, "tlens": method_tlens}


def _status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def measure(fn: Callable[[], Any]) -> tuple[float, float, float, float, Any]:
    """``(wall s, CPU s, peak MiB above the resident set before, that resident set MiB, result)`` of ``fn()``."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    base = _status_kib("VmRSS") * 1024
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = _status_kib("VmHWM") * 1024
    return wall, cpu, (peak - base) / MIB, base / MIB, result


def worker(args: argparse.Namespace) -> None:
    """Run one method once and write its :class:`Record` (and its rows) where the parent said."""
    import torch

    if args.cgroup:
        Path(args.cgroup, "cgroup.procs").write_text(str(os.getpid()))
    torch.set_num_threads(args.threads)
    record = Record(args.method, args.geometry, args.layers, args.repeat)
    try:
        if args.model:
            model, processor = load_folder(args.model)
        else:
            model, processor = build_model(args.geometry, args.layers, args.mlp_width, args.tiny)
        batch = prompt_inputs(model, processor)
        record.tokens = int(batch["input_ids"].shape[1])
        run = METHOD_BUILDERS[args.method](model, processor)
        with torch.no_grad():
            run(prompt_inputs(model, processor, image=False))  # warm-up: threads, allocator, tracing
            record.wall_s, record.cpu_s, record.peak_mib, record.base_mib, rows = measure(lambda: run(batch))
        if rows is not None:
            if "token" in rows:
                record.answer_token = rows.pop("token")
            torch.save(rows, args.rows)
    except Exception as exc:  # a peer that cannot wrap or run the model is a result, not a crash
        record.status, record.detail = "error", f"{type(exc).__name__}: {exc}"[:600]
    Path(args.record).write_text(json.dumps(asdict(record)))


# ---------------------------------------------------------------------------------------------
# Parent side: one process per measurement, under a memory cap


class MemoryCap:
    """A cgroup memory limit for the worker processes where one can be made, else nothing (RSS watchdog only)."""

    def __init__(self, cap_bytes: int):
        self.cap = cap_bytes
        self.path: Path | None = None
        self.limit_file = ""
        candidates = []
        if Path("/sys/fs/cgroup/cgroup.controllers").exists():
            candidates.append((Path("/sys/fs/cgroup"), "memory.max"))
        if Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists():
            candidates.append((Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"))
        for root, limit in candidates:
            try:
                path = root / f"visual-heads-peers-{os.getpid()}"
                path.mkdir(exist_ok=True)
                (path / limit).write_text(str(cap_bytes))
                self.path, self.limit_file = path, limit
                break
            except OSError:
                continue

    def describe(self) -> str:
        kind = "cgroup v2 memory.max" if self.limit_file == "memory.max" else "cgroup v1 memory.limit_in_bytes"
        return f"{kind} {self.cap / 2**30:.0f} GiB + RSS watchdog" if self.path else \
            f"RSS watchdog at {self.cap / 2**30:.0f} GiB (no cgroup could be made)"

    def reset(self) -> None:
        if self.path and self.limit_file == "memory.limit_in_bytes":
            for name in ("memory.max_usage_in_bytes", "memory.failcnt"):
                try:
                    Path(self.path, name).write_text("0")
                except OSError:
                    pass

    def hit(self) -> bool:
        """Whether the limit was reached since :meth:`reset` (cgroup only)."""
        if not self.path:
            return False
        name = "memory.events" if self.limit_file == "memory.max" else "memory.failcnt"
        text = Path(self.path, name).read_text()
        if self.limit_file == "memory.max":
            return any(line.split()[0] in ("max", "oom_kill") and int(line.split()[1]) > 0 for line in text.splitlines())
        return int(text) > 0

    def close(self) -> None:
        if self.path:
            try:
                self.path.rmdir()
            except OSError:
                pass


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Sweep:
    """What one ``sweep`` command measures, and where it writes."""

    geometries: list[str]
    depths: list[int]
    repeats: dict[int, int]
    methods: list[str]
    out: Path
    rows_dir: Path
    cap: MemoryCap
    timeout_s: float
    worker_args: list[str] = field(default_factory=list)


def run_one(sweep: Sweep, method: str, geometry: str, layers: int, repeat: int) -> Record:
    """One worker process, watched: its record, or an out-of-memory / timeout / crash record."""
    record_file = sweep.rows_dir / f"record-{os.getpid()}.json"
    record_file.unlink(missing_ok=True)
    rows = sweep.rows_dir / f"{geometry}-{layers}-{method}.pt"
    cmd = ["nice", "-n", str(max(0, NICE - os.nice(0))), sys.executable, str(Path(__file__).resolve()), "worker", "--method", method,
           "--geometry", geometry, "--layers", str(layers), "--repeat", str(repeat), "--rows", str(rows),
           "--record", str(record_file), *sweep.worker_args]
    if sweep.cap.path:
        cmd += ["--cgroup", str(sweep.cap.path)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PIP_NO_INDEX": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    sweep.cap.reset()
    start, peak_rss, killed = time.time(), 0, ""
    with subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        try:
            while proc.poll() is None:
                rss = _rss_bytes(proc.pid)
                peak_rss = max(peak_rss, rss)
                if rss > sweep.cap.cap * (1.02 if sweep.cap.path else 1.0):
                    killed = "oom"
                elif time.time() - start > sweep.timeout_s:
                    killed = "timeout"
                if killed:
                    proc.kill()
                    break
                time.sleep(0.1)
        except BaseException:  # Ctrl-C: stop the worker too, record nothing
            proc.kill()
            raise
        stderr = proc.stderr.read() if proc.stderr else ""
        code = proc.wait()
    if not killed and code == 0 and record_file.exists():
        return Record(**json.loads(record_file.read_text()))
    rec = Record(method, geometry, layers, repeat)
    if killed == "oom" or (code == -9 and sweep.cap.hit()):
        rec.status, rec.detail = "oom", (f"out of memory at the {sweep.cap.cap / 2**30:.0f} GiB cap "
                                         f"(resident {peak_rss / 2**30:.1f} GiB when stopped)")
    elif killed == "timeout":
        rec.status, rec.detail = "timeout", f"stopped after {sweep.timeout_s:.0f} s"
    else:
        rec.status, rec.detail = "error", f"exit {code}: {stderr.strip()[-600:]}"
    return rec


def rotated(methods: list[str], repeat: int) -> list[str]:
    """The interleaving order of one repeat: plain, ours, ... then rotated by one each repeat."""
    k = repeat % len(methods)
    return methods[k:] + methods[:k]


def load_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append(path: Path, item: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(item) + "\n")


def diffs(sweep: Sweep, geometry: str, layers: int) -> list[dict]:
    """Max absolute difference of each method's rows from eager ``output_attentions`` (or, where eager ran out of
    memory, from nnsight's eager-kernel rows), both rows, at this geometry and depth."""
    import torch

    got = {m: torch.load(p) for m in sweep.methods
           if (p := sweep.rows_dir / f"{geometry}-{layers}-{m}.pt").exists()}
    ref = next((m for m in ("eager", "nnsight", "tlens") if m in got), None)
    out = []
    for method, rows in got.items():
        if ref is None or method == ref:
            continue
        same = rows["answer"].shape == got[ref]["answer"].shape
        diff = max((rows[k] - got[ref][k]).abs().max().item() for k in ("prompt_end", "answer")) if same else None
        out.append({"kind": "diff", "geometry": geometry, "layers": layers, "method": method, "reference": ref,
                    "max_diff": diff, "finite": bool(all(torch.isfinite(v).all() for v in rows.values()))})
    for method in got:
        (sweep.rows_dir / f"{geometry}-{layers}-{method}.pt").unlink()
    return out


def run_sweep(sweep: Sweep, resume: bool) -> None:
    """Every (geometry, depth): its repeats, each running the methods interleaved; a method that ran out of
    memory is not run again at that depth or deeper."""
    done = {(r["method"], r["geometry"], r["layers"], r["repeat"]) for r in load_records(sweep.out)
            if r.get("kind") == "run"} if resume else set()
    oom_at: dict[tuple[str, str], int] = {}
    for r in load_records(sweep.out) if resume else []:
        if r.get("kind") == "run" and r["status"] in ("oom", "skipped"):
            oom_at.setdefault((r["method"], r["geometry"]), r["layers"])
    for geometry in sweep.geometries:
        for layers in sweep.depths:
            for repeat in range(sweep.repeats[layers]):
                for method in rotated(sweep.methods, repeat):
                    if (method, geometry, layers, repeat) in done:
                        continue
                    if (first := oom_at.get((method, geometry))) is not None and first <= layers:
                        if repeat == 0:
                            rec = Record(method, geometry, layers, repeat, status="skipped",
                                         detail=f"not run: out of memory at the cap at {first} layers")
                            append(sweep.out, asdict(rec))
                        continue
                    rec = run_one(sweep, method, geometry, layers, repeat)
                    append(sweep.out, asdict(rec))
                    print(f"{geometry} {layers:>2} layers r{repeat} {method:<8} {rec.status:<7} "
                          f"wall {rec.wall_s or 0:7.2f} s  cpu {rec.cpu_s or 0:7.2f} s  "
                          f"peak +{rec.peak_mib or 0:6.0f} MiB  {rec.detail[:160]}", flush=True)
                    if rec.status == "oom":
                        oom_at[(method, geometry)] = layers
            for item in diffs(sweep, geometry, layers):
                append(sweep.out, item)


def machine() -> dict[str, Any]:
    """Where and with what the sweep ran."""
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"kind": "machine", "date": date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "loadavg_at_start": os.getloadavg()[0], "python": platform.python_version(),
            **{name: v(name) for name in ("torch", "transformers", "nnsight", "transformer-lens")}}


# ---------------------------------------------------------------------------------------------
# Rendering: markdown from the raw records


def _median(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(records: list[dict]) -> dict[tuple[str, int, str], dict]:
    """Per (geometry, depth, method): medians of the ok runs, their count, the status otherwise, the diff."""
    out: dict[tuple[str, int, str], dict] = {}
    for r in records:
        if r.get("kind") != "run":
            continue
        cell = out.setdefault((r["geometry"], r["layers"], r["method"]), {"runs": [], "other": []})
        (cell["runs"] if r["status"] == "ok" else cell["other"]).append(r)
    for r in records:
        if r.get("kind") == "diff" and (key := (r["geometry"], r["layers"], r["method"])) in out:
            out[key]["diff"] = r
    for cell in out.values():
        for k in ("wall_s", "cpu_s", "peak_mib", "base_mib", "tokens"):
            cell[k] = _median(r[k] for r in cell["runs"])
    return out


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def fit_line(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Least-squares ``(intercept, slope)`` of ``y = a + b x``; ``None`` under two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - b * mx, b


def projected_depth(cells: dict, geometry: str, method: str, memory_gib: float) -> tuple[str, float | None]:
    """Depth at which ``method`` would exhaust ``memory_gib`` (resident set before the call + peak rise, fitted
    linearly in depth from the measured depths), and the fitted MiB per layer."""
    pts = [(d, c["base_mib"] + c["peak_mib"]) for (g, d, m), c in cells.items()
           if g == geometry and m == method and c["peak_mib"] is not None]
    line = fit_line(pts)
    if not line:
        return "-", None
    depth = (memory_gib * 1024 - line[0]) / line[1] if line[1] > 0 else float("inf")
    return (f"~{depth:.0f}" if depth < 1000 else "over 1,000"), line[1]


def render(path: Path, memory_gib: float = 24.0) -> str:
    """The markdown tables of one results file."""
    records = load_records(path)
    info = next((r for r in records if r.get("kind") == "machine"), {})
    setup = next((r for r in records if r.get("kind") == "setup"), {})
    cells = summarise(records)
    lines = [f"Measured {info.get('date', '?')} on {info.get('cpu', '?')}, {info.get('cores', '?')} cores, "
             f"{info.get('memory_gib', '?')} GiB (shared; load average {info.get('loadavg_at_start', '?')} at start); "
             f"torch {info.get('torch')}, transformers {info.get('transformers')}, nnsight {info.get('nnsight')}, "
             f"transformer-lens {info.get('transformer-lens')}; {setup.get('threads', '?')} torch threads; "
             f"memory cap per run: {setup.get('cap', '?')}. {setup.get('models', '')}", ""]
    geometries = list(dict.fromkeys(g for g, _, _ in cells))
    for geometry in geometries:
        depths = sorted({d for g, d, _ in cells if g == geometry})
        tokens = _median(c["tokens"] for (g, _, _), c in cells.items() if g == geometry)
        lines += [f"### {geometry}, {_fmt(tokens, '.0f')} prompt tokens", "",
                  "| layers | method | runs | wall s | CPU s | peak rise MiB | time vs ours (wall / CPU) | "
                  "peak vs ours | max diff from eager | note |", "|---|---|---|---|---|---|---|---|---|---|"]
        for depth in depths:
            ours = cells.get((geometry, depth, "ours"), {})
            for method in METHODS:
                c = cells.get((geometry, depth, method))
                if not c:
                    continue
                ratio = (f"{c['wall_s'] / ours['wall_s']:.2f} / {c['cpu_s'] / ours['cpu_s']:.2f}"
                         if c["wall_s"] and ours.get("wall_s") else "-")
                mem = (f"{c['peak_mib'] / ours['peak_mib']:.1f}x" if c["peak_mib"] and ours.get("peak_mib") else "-")
                d = c.get("diff") or {}
                diff = ("(reference)" if method == "eager" and c["runs"] else
                        "-" if d.get("max_diff") is None else
                        f"{d['max_diff']:.1e}" + ("" if d["reference"] == "eager" else f" (vs {d['reference']})"))
                note = "; ".join(dict.fromkeys(r["detail"] for r in c["other"]))[:200]
                lines.append(f"| {depth} | {LABELS[method]} | {len(c['runs'])} | {_fmt(c['wall_s'])} | "
                             f"{_fmt(c['cpu_s'])} | {_fmt(c['peak_mib'], '.0f')} | {ratio} | {mem} | {diff} | "
                             f"{note} |")
        lines += [""]
    lines += ["### Goals, from the rows above", "",
              "| geometry | layers | ours / plain time (wall / CPU) | best peer's peak / ours | best peer | "
              "extra peak over plain: ours / best peer (MiB) |",
              "|---|---|---|---|---|---|"]
    for geometry in geometries:
        for depth in sorted({d for g, d, _ in cells if g == geometry}):
            ours, plain = cells.get((geometry, depth, "ours"), {}), cells.get((geometry, depth, "plain"), {})
            t = (f"{ours['wall_s'] / plain['wall_s']:.3f} / {ours['cpu_s'] / plain['cpu_s']:.3f}"
                 if ours.get("wall_s") and plain.get("wall_s") else "-")
            peers = [(c["peak_mib"], m) for (g, d, m), c in cells.items()
                     if g == geometry and d == depth and m in EAGER_KERNEL and c["peak_mib"]]
            best = min(peers) if peers else None
            mem = f"{best[0] / ours['peak_mib']:.1f}x" if best and ours.get("peak_mib") else "-"
            extra = (f"{ours['peak_mib'] - plain['peak_mib']:+.0f} / {best[0] - plain['peak_mib']:+.0f}"
                     if best and ours.get("peak_mib") and plain.get("peak_mib") else "-")
            lines.append(f"| {geometry} | {depth} | {t} | {mem} | {LABELS[best[1]] if best else 'none ran'} | "
                         f"{extra} |")
    lines += ["", f"### Out of memory: measured under the cap, projected to {memory_gib:.0f} GiB", "",
              "| geometry | method | first depth that hit the cap (measured) | MiB per layer (fit) | "
              f"projected depth at {memory_gib:.0f} GiB |", "|---|---|---|---|---|"]
    for geometry in geometries:
        for method in METHODS:
            hit = sorted(d for (g, d, m), c in cells.items() if g == geometry and m == method
                         and any(r["status"] == "oom" for r in c["other"]))
            depth, slope = projected_depth(cells, geometry, method, memory_gib)
            lines.append(f"| {geometry} | {LABELS[method]} | {hit[0] if hit else 'none (all depths ran)'} | "
                         f"{_fmt(slope, '.0f')} | {depth} (projected) |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--mlp-width", type=int, default=1024, help="language-model MLP width (0: the real 11008)")
    common.add_argument("--tiny", action="store_true", help="tiny geometry (hidden 64), to test the pipeline")
    common.add_argument("--model", default=None, help="a local model folder (an organism) instead of the "
                                                      "random-weight geometries; its own depth")
    common.add_argument("--threads", type=int, default=2)

    s = sub.add_parser("sweep", parents=[common], help="measure, appending records to --out")
    s.add_argument("--geometries", nargs="+", default=list(GEOMETRIES), choices=list(GEOMETRIES))
    s.add_argument("--depths", type=int, nargs="+", default=[2, 8, 16, 32])
    s.add_argument("--repeats", type=int, nargs="+", default=[3, 3, 1, 1],
                   help="repeats per depth (one number for all, or one per depth)")
    s.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    s.add_argument("--cap-gib", type=float, default=12.0, help="memory cap of one measurement process")
    s.add_argument("--timeout", type=float, default=900.0, help="seconds before one measurement is stopped")
    s.add_argument("--out", type=Path, default=RESULTS / "peers-cpu.jsonl")
    s.add_argument("--resume", action="store_true", help="skip measurements already in --out")

    w = sub.add_parser("worker", parents=[common], help=argparse.SUPPRESS)
    for name in ("--method", "--geometry", "--rows", "--record"):
        w.add_argument(name, required=True)
    w.add_argument("--layers", type=int, required=True)
    w.add_argument("--repeat", type=int, default=0)
    w.add_argument("--cgroup", default=None)

    r = sub.add_parser("render", help="markdown tables from a results file")
    r.add_argument("path", type=Path)
    r.add_argument("--memory-gib", type=float, default=24.0, help="machine memory for the projected depth")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # helpers, for the workers and for an organism's depth (imported where used)

    if args.command == "worker":
        return worker(args)
    if args.command == "render":
        markdown = render(args.path, args.memory_gib)
        args.path.with_suffix(".md").write_text(markdown)
        print(markdown)
        return None
    run_sweep_command(args)
    return None


def rows_dir(out: Path) -> Path:
    """Where the workers leave their rows until :func:`diffs` compares them: kept across ``--resume``."""
    path = Path(tempfile.gettempdir()) / "visual-heads-peers-rows" / out.resolve().stem
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_depth(folder: str) -> int:
    """Decoder layers of the model in ``folder``: its ``config.json``, or for an organism (no config of its own,
    :func:`helpers.assemble.read_meta`) its base LM's."""
    from helpers import assemble, baselm

    if assemble.is_organism(folder):
        return int(baselm.config(assemble.read_meta(Path(folder))["base_lm"]).num_hidden_layers)
    config = json.loads(Path(folder, "config.json").read_text())
    return int(config.get("text_config", config)["num_hidden_layers"])


def run_sweep_command(args: argparse.Namespace) -> None:
    """``sweep``: plan, run, render."""
    depths = [model_depth(args.model)] if args.model else args.depths
    repeats = args.repeats * len(depths) if len(args.repeats) == 1 else args.repeats
    if len(repeats) != len(depths):
        raise SystemExit(f"--repeats: give one number or one per depth ({len(depths)})")
    geometries = [Path(args.model).name] if args.model else args.geometries
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cap = MemoryCap(int(args.cap_gib * 2**30))
    worker_args = ["--mlp-width", str(args.mlp_width), "--threads", str(args.threads)]
    worker_args += ["--tiny"] * args.tiny + (["--model", str(Path(args.model).resolve())] if args.model else [])
    sweep = Sweep(geometries, depths, dict(zip(depths, repeats, strict=True)), args.methods, args.out,
                  rows_dir(args.out), cap, args.timeout, worker_args)
    if args.model:
        models = f"Model: the local folder {args.model} (its own weights and depth), float32."
    else:
        models = ("Models: random weights, real attention geometry (hidden 4096, 32 heads of 128, 32 kv heads), "
                  "real CLIP ViT-L/14-336 tower (2 layers) and processors; "
                  f"{'TINY geometry (hidden 64, pipeline test only); ' if args.tiny else ''}"
                  f"language-model MLP width {args.mlp_width or 11008}; the decoder layers share one layer's "
                  "random weights (full computation per layer, the memory of one).")
    if not (args.resume and load_records(args.out)):
        append(args.out, machine())
        append(args.out, {"kind": "setup", "threads": args.threads, "cap": cap.describe(), "models": models,
                          "depths": depths, "repeats": repeats, "command": " ".join(sys.argv)})
    print(f"# peers sweep -> {args.out}; {cap.describe()}", flush=True)
    try:
        run_sweep(sweep, args.resume)
    finally:
        cap.close()
    markdown = render(args.out)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
