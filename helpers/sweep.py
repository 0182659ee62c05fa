"""Resumable, sharded extraction of per-head results for one model and one benchmark split.

    python -m helpers.sweep --model llava-v1.5-7b --benchmark pope --data-files pope.parquet --out results/x
    accelerate launch --num_processes 4 -m helpers.sweep ...      # one shard per process, merged on load

Each finished batch is written atomically to ``OUT/part-r{rank}-{first index:06d}.parquet``
(:mod:`helpers.results`), so an interrupted sweep restarts where it stopped: samples whose *sample id*
is in any part file are skipped, none is lost or written twice (a sample skipped as bad in one run and
fixed before the resume is run then; parts whose positions shifted are renumbered). ``OUT/settings.json``
and every part record the run's settings, resolved (model id, revision and resolved commit, the
quantization actually used, benchmark, split, data files, prompt kind, max samples, rows, k, max new
tokens, prompt template, package version). A resume compares them with the folder's and refuses any
difference, naming it. Every argument is checked before the model loads; bad arguments, a mismatched
resume and bad data end the command with exit status 2 and a message that names what to change.
Out of GPU memory, the batch is halved with a warning and the sweep goes on. Full attention rows are
written (``maps-r{rank}-{first:06d}.safetensors``, float16 ``[batch, layers, heads, keys]``) only with
``--save-maps``. Load the merged results with ``helpers.results.read_dir(OUT)``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import __version__, data, extract, results, selection
from .models import ModelLoadError, spec_of

SHAPES = (data.SHAPES,)
BENCHMARKS = (*SHAPES, *(b for b in data.LOADERS if b not in SHAPES))
QUANTIZATIONS = ("auto", "none", "4bit", "8bit")
RUN_ONLY = ("samples", "processes")  # in settings.json, not compared on resume
FLAGS = {"model": "--model", "quantization": "--quantization", "benchmark": "--benchmark", "split": "--split",
         "dataset": "--benchmark/--split", "data_files": "--data-files", "image_folder": "--image-folder",
         "prompt_kind": "--prompt-kind",
         "max_samples": "--max-samples", "rows": "--rows", "k": "--k", "max_new_tokens": "--max-new-tokens"}


class SweepError(ValueError):
    """Bad sweep arguments, or a resume that does not match the folder; the message names the argument or setting."""


# ---------------------------------------------------------------------------------------------
# Arguments


def k_value(text: str) -> float | int | str:
    """``--k``: ``region``, a fraction of the image tokens in (0, 1], or a whole count of keys above 1."""
    if text == "region":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'region'") from None
    if value > 1 and value.is_integer():
        return int(value)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: pass a fraction of the image tokens in (0, 1] (e.g. 0.05), a "
                                         "whole count of keys above 1 (e.g. 29), or 'region'")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m helpers.sweep`` (types and choices only; :func:`check_args` does the rest)."""
    parser = argparse.ArgumentParser(prog="python -m helpers.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="registry name, hub id or folder (default: by hardware)")
    parser.add_argument("--quantization", default="auto", choices=QUANTIZATIONS,
                        help="auto (4-bit for hub models on CUDA, else none), none, 4bit or 8bit")
    parser.add_argument("--benchmark", default="shapes", choices=BENCHMARKS)
    parser.add_argument("--split", default=None, help="split of the shapes set (default test); other benchmarks "
                        "use their pinned split")
    parser.add_argument("--data-files", nargs="*", help="local files in the benchmark's schema")
    parser.add_argument("--image-folder", default=None, help="folder of the images the data files name "
                        "(pointqa: Visual Genome; pope, qbench: when rows hold file names)")
    parser.add_argument("--prompt-kind", default=None, choices=data.PROMPT_KINDS,
                        help="keep only samples of this prompt kind (PointQA-style sets)")
    parser.add_argument("--max-samples", type=int, default=None, help="at most this many samples (>= 1)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the results (created; resumed if it "
                        "holds parts of the same run)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rows", default="answer", choices=["answer", "first_generated", "prompt_end"])
    parser.add_argument("--k", type=k_value, default=0.05,
                        help="top-k keys: a fraction of the image tokens in (0, 1], a count above 1, or region")
    parser.add_argument("--max-new-tokens", type=int, default=4, help=">= 2 for --rows answer")
    parser.add_argument("--save-maps", action="store_true", help="also write full attention rows (large)")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Check every argument before anything loads, and resolve ``split``, ``data_files`` and ``model`` in place.

    Raises :class:`SweepError` naming the argument: batch size < 1, k outside (0, 1] and not a positive
    count, max samples < 1, max new tokens below what ``--rows`` needs, ``--split`` for a benchmark that
    has no splits here, missing data files, ``--out`` that is a file or not writable.
    """
    if args.batch_size < 1:
        raise SweepError(f"--batch-size {args.batch_size}: pass 1 or more")
    k = args.k
    if not (k == "region" or (isinstance(k, float) and 0 < k <= 1) or (isinstance(k, int) and k >= 1)):
        raise SweepError(f"--k {k!r}: pass a fraction in (0, 1], a positive count or 'region'")
    if args.max_samples is not None and args.max_samples < 1:
        raise SweepError(f"--max-samples {args.max_samples}: pass 1 or more (or leave it out for the whole split)")
    need = extract.min_new_tokens(args.rows)
    if args.max_new_tokens < need:
        raise SweepError(f"--max-new-tokens {args.max_new_tokens}: --rows {args.rows} needs at least {need}")
    if args.benchmark in SHAPES:
        args.split = args.split or "test"
        if not (data.SHAPES_DIR / f"{args.split}.json").is_file():
            known = sorted(p.stem for p in data.SHAPES_DIR.glob("*.json") if p.stem != "meta")
            raise SweepError(f"--split {args.split}: the shapes set has no such split (known: {', '.join(known)})")
    elif args.split is not None:
        raise SweepError(f"--split {args.split}: only the shapes set has splits here; {args.benchmark} reads "
                         f"--data-files or its pinned hub split ({data.HUB[args.benchmark].split})")
    else:
        args.split = data.HUB[args.benchmark].split
    if args.data_files is not None:
        if args.benchmark in SHAPES:
            raise SweepError("--data-files: the shapes set is embedded; leave --data-files out")
        if not args.data_files:
            raise SweepError("--data-files given without files")
        args.data_files = [f if "://" in f else str(Path(f).resolve()) for f in args.data_files]
        missing = [f for f in args.data_files if "://" not in f and not Path(f).is_file()]
        if missing:
            raise SweepError(f"--data-files: {', '.join(missing)} not found")
    check_image_folder(args)
    if args.model is not None and Path(args.model).expanduser().is_dir():
        args.model = str(Path(args.model).expanduser().resolve())
    check_out(args.out)


def check_image_folder(args: argparse.Namespace) -> None:
    """``--image-folder``: required by pointqa, taken by pope and qbench, refused elsewhere; resolved in place."""
    takes = ("pointqa", "pope", "qbench")
    if args.image_folder is None:
        if args.benchmark == "pointqa":
            raise SweepError("--image-folder: pointqa needs the folder of its Visual Genome images")
        return
    if args.benchmark not in takes:
        raise SweepError(f"--image-folder: {args.benchmark} does not read images from a folder (only "
                         f"{', '.join(takes)} do); leave it out")
    folder = Path(args.image_folder).expanduser()
    if not folder.is_dir():
        raise SweepError(f"--image-folder {args.image_folder} is not a folder")
    args.image_folder = str(folder.resolve())


def check_out(out: Path) -> None:
    """Create ``out`` if needed; :class:`SweepError` if it is a file or cannot be written to."""
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} is a file; pass a folder (created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise SweepError(f"--out {out} cannot be written to ({err}); pass a writable folder") from err


# ---------------------------------------------------------------------------------------------
# Settings and resume


def planned_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings known before the model loads (``args`` after :func:`check_args`)."""
    planned = {"benchmark": args.benchmark, "split": args.split, "dataset": f"{args.benchmark}/{args.split}",
               "data_files": args.data_files, "image_folder": args.image_folder, "prompt_kind": args.prompt_kind,
               "max_samples": args.max_samples,
               "rows": args.rows, "k": args.k, "max_new_tokens": args.max_new_tokens,
               "package_version": __version__, "torch": torch.__version__}
    if args.model is not None:
        planned["model"] = args.model
    return planned


def quantization_of(model: Any) -> str:
    """The quantization a loaded model actually uses: ``"4bit"``, ``"8bit"``, ``"none"`` or the method's name."""
    config = getattr(model.config, "quantization_config", None)
    if config is None:
        return "none"
    config = config if isinstance(config, dict) else config.to_dict()
    if config.get("load_in_4bit"):
        return "4bit"
    if config.get("load_in_8bit"):
        return "8bit"
    return str(config.get("quant_method", "unknown"))


def settings_of(model: Any, args: argparse.Namespace) -> dict[str, Any]:
    """What a reader of the results needs to know about the run, resolved (``args`` after :func:`check_args`)."""
    spec = spec_of(model)
    return {"model": args.model or spec.name, "model_name": spec.name, "hub_id": spec.hub_id,
            "revision": spec.revision, "commit": getattr(model.config, "_commit_hash", None),
            "quantization": quantization_of(model), **planned_settings(args), "template": spec.prompt_template,
            "dtype": str(model.dtype)}


def previous_run(out: Path) -> tuple[dict[str, Any] | None, list[results.Results], list[Path]]:
    """``(settings.json without run-only keys or None, parts, their paths)`` of what ``out`` holds.

    A part that cannot be read raises :class:`helpers.results.ResultsError` naming the file to delete.
    """
    paths = sorted(out.glob("part-*.parquet"))
    parts = [results.read(p) for p in paths]
    saved = out / "settings.json"
    recorded = None
    if saved.is_file():
        try:
            recorded = {k: v for k, v in json.loads(saved.read_text()).items() if k not in RUN_ONLY}
        except (OSError, ValueError) as err:
            raise SweepError(f"{saved} cannot be read ({err}); delete it (the part files keep the settings) and "
                             "resume") from err
    return recorded, parts, paths


def check_resume(out: Path, settings: dict[str, Any], recorded: dict[str, Any] | None,
                 parts: list[results.Results], paths: list[Path]) -> None:
    """Refuse to resume into ``out`` unless its parts (and settings.json) were written with ``settings``.

    Only the keys of ``settings`` are compared (before the model loads: :func:`planned_settings`; after:
    all of :func:`settings_of`). Nothing to compare when ``out`` holds no parts. Raises :class:`SweepError`
    naming each differing setting and the command-line flag that sets it.
    """
    if not parts:
        return
    sources = [("settings.json", recorded)] if recorded is not None else []
    sources += list(zip([p.name for p in paths], [p.settings for p in parts], strict=True))
    for name, old in sources:
        diff = results.settings_difference({k: old.get(k, "not recorded") for k in settings}, settings)
        if diff:
            named = [f"{FLAGS.get(d.split(' ')[0], d.split(' ')[0])}: {d.split(' ', 1)[1]}" for d in diff]
            raise SweepError(f"--out {out} holds a sweep with other settings ({name}, folder vs now): "
                             f"{'; '.join(named)}. A resume must repeat the run's settings: rerun with the folder's "
                             "settings, or pass another --out")


def done_samples(out: Path, samples: list[data.Sample], parts: list[results.Results],
                 paths: list[Path]) -> dict[str, int]:
    """``{sample id: position now}`` of the samples already in ``out``'s parts.

    Raises :class:`SweepError` naming the file for a sample written twice or a sample that is not in
    the split any more (the data changed since the run started).
    """
    position = {s.id: i for i, s in enumerate(samples)}
    done: dict[str, int] = {}
    where: dict[str, str] = {}
    for path, part in zip(paths, parts, strict=True):
        ids = part.table["sample_id"].astype(str).tolist()
        for sid in ids:
            if sid in where:
                raise SweepError(f"sample {sid} is written twice, in {where[sid]} and {path.name} (both in {out}); "
                                 "delete one of the two files")
            where[sid] = path.name
        gone = [sid for sid in ids if sid not in position]
        if gone:
            raise SweepError(f"{out / path.name} holds samples that are not in the split now ({', '.join(gone[:5])}"
                             f"{'...' if len(gone) > 5 else ''}): the data, its filters or --max-samples changed. "
                             "Delete that part file to drop them, restore the data, or pass another --out")
        done.update({sid: position[sid] for sid in ids})
    return done


def renumber(parts: list[results.Results], paths: list[Path], done: dict[str, int]) -> int:
    """Rewrite (atomically) the parts whose ``index`` is no longer the sample's position; returns how many.

    Positions shift when a sample skipped as bad in an earlier run is fine now. The matching maps
    file (``--save-maps``) gets the new positions too.
    """
    count = 0
    for path, part in zip(paths, parts, strict=True):
        now = [done[str(sid)] for sid in part.table["sample_id"]]
        if part.table["index"].tolist() == now:
            continue
        part.table["index"] = now
        results.write(part, path)
        maps = path.with_name(path.name.replace("part-", "maps-", 1).replace(".parquet", ".safetensors"))
        if maps.is_file():
            tensors = load_file(str(maps))
            tensors["index"] = torch.tensor(now)
            tmp = maps.with_name(f".{maps.name}.tmp-{os.getpid()}")
            save_file(tensors, str(tmp))
            os.replace(tmp, maps)
        count += 1
    return count


# ---------------------------------------------------------------------------------------------
# Running


def shard(indices: list[int], rank: int, world: int) -> list[int]:
    """This process's share of the sample indices (round robin)."""
    return indices[rank::world]


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _free_stem(out: Path, rank: int, first: int) -> str:
    """``part-r{rank}-{first:06d}`` (the part of the batch starting at sample ``first``), with a suffix if taken.

    A name is taken when positions shifted since an earlier run (a skipped sample fixed before the resume).
    """
    stem, n = f"r{rank}-{first:06d}", 1
    while (out / f"part-{stem}.parquet").exists():
        stem, n = f"r{rank}-{first:06d}-{n}", n + 1
    return stem


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
            batch = extract.run_batch(model, processor, [samples[i] for i in idx], indices=idx,
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
        res = batch.results
        res.settings = settings
        stem = _free_stem(out, rank, idx[0])
        if save_maps:
            tmp = out / f".maps-{stem}.tmp"
            save_file({"rows": batch.rows.half().contiguous(), "index": torch.tensor(idx)}, str(tmp))
            os.replace(tmp, out / f"maps-{stem}.safetensors")
        results.write(res, out / f"part-{stem}.parquet")
        pos += len(idx)
        bar.update(len(idx))
    bar.close()
    return batch_size


def main(argv: list[str] | None = None) -> int:
    """The command: exit status 0 when done, 2 with a message on stderr for bad arguments, data or resumes."""
    args = parse_args(argv)
    try:
        return run(args)
    except (SweepError, data.DataError, ModelLoadError, results.ResultsError) as err:
        print(f"helpers.sweep: error: {err}", file=sys.stderr, flush=True)
        return 2


def run(args: argparse.Namespace) -> int:
    """Check, load the samples, compare with what ``args.out`` holds, load the model, compare again, run."""
    check_args(args)
    samples = load_samples(args)
    recorded, parts, paths = previous_run(args.out)
    check_resume(args.out, planned_settings(args), recorded, parts, paths)
    done = done_samples(args.out, samples, parts, paths)
    state = PartialState(cpu=not torch.cuda.is_available())
    rank, world = state.process_index, state.num_processes
    device = f"cuda:{state.local_process_index}" if torch.cuda.is_available() else "cpu"
    quantization = None if args.quantization == "none" else args.quantization
    model, processor = selection.load_default(args.model, device=device, quantization=quantization)
    settings = settings_of(model, args)
    check_resume(args.out, settings, recorded, parts, paths)
    if rank == 0:
        moved = renumber(parts, paths, done)
        if moved:
            print(f"renumbered {moved} part file(s): sample positions shifted since the last run", flush=True)
        _write_json_atomic(args.out / "settings.json", {**settings, "samples": len(samples), "processes": world})
    todo = [i for i in shard(list(range(len(samples))), rank, world) if samples[i].id not in done]
    print(f"rank {rank}/{world}: {len(todo)} samples to do, {len(samples)} in the split", flush=True)
    process(model, processor, samples, todo, args.out, rank, args.batch_size, settings, save_maps=args.save_maps,
            rows=args.rows, k=args.k, max_new_tokens=args.max_new_tokens)
    state.wait_for_everyone()
    return 0


def load_samples(args: argparse.Namespace) -> list[data.Sample]:
    """The split's samples (all of :func:`helpers.selection.samples`; bad ones skipped and reported), of
    ``--prompt-kind`` only when given, then the first ``--max-samples``.

    Raises :class:`helpers.data.EmptySplitError` when nothing is left, :class:`SweepError` when two samples
    share an id (a resume keys on ids).
    """
    name = f"{args.benchmark}/{args.prompt_kind}" if args.prompt_kind else args.benchmark
    samples = selection.samples(name, split=args.split if args.benchmark in SHAPES else None,
                                data_files=args.data_files, image_folder=args.image_folder)
    if samples.skipped:
        print(f"skipped {len(samples.skipped)} bad sample(s): "
              + "; ".join(f"{sid}: {why}" for sid, why in samples.skipped[:3])
              + (" ..." if len(samples.skipped) > 3 else ""), file=sys.stderr, flush=True)
    samples = samples[: args.max_samples]  # the first good ones (bad samples skipped before counting)
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise SweepError(f"sample id {s.id} occurs twice in {args.benchmark}/{args.split}; a resume keys on "
                             "sample ids, so each must be unique. Fix the data's id column")
        seen.add(s.id)
    return samples


if __name__ == "__main__":
    raise SystemExit(main())
