"""`make bench`: every figure of the release in exported/ (sizes, MACs, latency, throughput, the photo path,
memory on a device install, cold start, the int8 model's TFLite Micro arena and flash) → benchmarks/results.{json,md}; `make bench-baseline` accepts it.

The gated figures are ratios to pinned references measured in the same run (benchmarks/reference/; see
reference.py); the others describe this machine. Everything runs on one thread.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
import warnings
from pathlib import Path

from pipeline.release import provenance

from . import baseline, child, floor, latency, mcu, memory, photo, reference, report, sizes
from .common import (BASELINE, BENCH_DIR, ROOT, BenchError, exported_dir, load_manifest, machine,
                     progress, release_artifacts, write_json)


def _keras(manifest: dict, folder: Path, build_dir: Path | None, cold_repeats: int):
    """The Keras model's runners, MACs, file sizes and cold start (information), or None without TensorFlow."""
    from . import keras_model
    pinned = keras_model.pin_tensorflow_threads()
    try:
        model, source = keras_model.load_keras(manifest, folder, build_dir)
    except ValueError as e:    # an imported model (export --keras-model) exported without pruning: no cached h5
        return {"row": None, "source": f"not measured ({e})", "threads_pinned": pinned, "b1": None, "batch": None}
    norm = manifest["input"]["normalization"]
    mean, std = float(norm["mean"]), float(norm["std"])
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        h5 = Path(tmp) / "keras_float.h5"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "HDF5 is legacy": it is the pipeline's cache format
            model.save(h5, include_optimizer=False)
        row = {"format": "keras h5", "precision": "float32", **sizes.sizes(h5), "macs": keras_model.layer_macs(model),
               "cold": keras_model.cold_start_keras(h5, mean, std, cold_repeats)}
    return {"row": row, "source": source, "threads_pinned": pinned,
            "b1": keras_model.keras_runner(model, mean, std, latency.sample_images(1)),
            "batch": keras_model.keras_runner(model, mean, std, latency.sample_images(latency.BATCH, seed=1))}


def _mcu(folder: Path, names: list[str]) -> dict | None:
    """The int8 model's TFLite Micro arena and flash (gated), or {"error": why} when they cannot be measured."""
    if mcu.MODEL not in names:
        return None
    progress(f"{mcu.MODEL} in TensorFlow Lite Micro: smallest arena, flash of its C array (this process)")
    try:
        return mcu.measure(folder / mcu.MODEL)
    except BenchError as e:
        progress(f"not measured: {e}")
        return {"model": mcu.MODEL, "error": str(e)}


def measure(folder: Path, *, build_dir: Path | None = None, calls: int = 2000, keras_calls: int = 1000,
            batch_calls: int = 200, keras_batch_calls: int = 60, rounds: int = 20, cold_repeats: int = 3,
            photo_rounds: int = 5, gate_rounds: int = 3, pinned: Path = reference.REFERENCE_DIR) -> dict:
    """Every figure of `make bench` for the release in `folder`, in one run."""
    t_start = time.perf_counter()
    folder = Path(folder)
    manifest = load_manifest(folder)
    entries = {a["file"]: a for a in manifest["artifacts"]}
    names = release_artifacts(folder)

    progress("compute floor: single-thread float32 GEMM")
    gemm = floor.gemm_floor()
    progress("the float Keras model: load, cold start")
    keras = _keras(manifest, folder, build_dir, cold_repeats)

    rows = {n: {"format": entries[n]["format"], "precision": entries[n]["precision"], **sizes.sizes(folder / n),
                "graph_macs": sizes.graph_macs(folder / n)} for n in names}
    mcu_figures = _mcu(folder, names)
    progress(f"batch-1 latency and batch-{latency.BATCH} throughput: {len(names)} artifacts and Keras, "
             f"{rounds} interleaved rounds")
    info = latency.informational(folder, names, keras["b1"], keras["batch"], calls, keras_calls, batch_calls,
                                 keras_batch_calls, rounds)
    floor_s = (keras["row"] or rows[names[0]])["macs" if keras["row"] else "graph_macs"] / gemm["macs_per_s"]
    for n, r in info["rows"].items():
        rows.setdefault(n, keras["row"] if n == latency.KERAS else {}).update(r)
        median = (r.get("latency_b1") or r["invoke_b1"])["median_ms"] / 1e3
        rows[n]["x_compute_floor"] = median / floor_s

    against = None
    if (pinned / reference.RUNTIME_ZIP).is_file():
        progress(f"against the pinned references ({pinned.relative_to(ROOT) if pinned.is_relative_to(ROOT) else pinned}): "
                 "artifacts, runtime overhead, photo path, in a fresh process")
        against = child.in_fresh_process("against_references", release=str(folder), names=names, pinned=str(pinned),
                                         calls=3000, rounds=rounds, photo_rounds=gate_rounds)
    else:
        progress("no pinned references yet: `make bench-baseline` makes them")

    photos_found = photo.dev_photos()
    stages = camera = None
    if photos_found and photo.PHOTO_MODEL in names:
        progress(f"photo path by stage: {len(photos_found)} real photos × {photo_rounds} rounds, and the camera loop "
                 "on a 640×480 video made from them, in a fresh process")
        fresh = child.in_fresh_process("photo_info", model=str(folder / photo.PHOTO_MODEL), rounds=photo_rounds,
                                       camera_frames=300)
        stages, camera = fresh["stages"], fresh["camera"]

    progress("memory and cold start in device venvs (build/device-venvs: the device wheel + tflite / onnx)")
    device = (memory.device_memory(folder, repeats=cold_repeats, pinned=pinned, log=progress)
              if (pinned / reference.RUNTIME_ZIP).is_file() else {})
    gated = {m["model"]: {"venv": b, **m["installed"]} for b, m in device.items()}
    others = [n for n in names if n not in gated]   # the gated int8 models were just measured installed
    for n, figures in {**memory.installed_figures(folder, others, cold_repeats, log=progress), **gated}.items():
        rows[n]["device"] = figures
    if not device:
        device = {b: {"model": m, "installed": rows[m]["device"]} for b, m in memory.BACKENDS.items() if m in rows}

    return {
        "schema": 2,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": provenance.git_commit(ROOT),
        "machine": machine(),
        "exported": str(folder),
        "manifest": {"created": manifest.get("created"), "git_commit": manifest.get("git_commit"),
                     "macs": manifest.get("float_reference", {}).get("macs")},
        "settings": {"threads": 1, "tensorflow_threads_pinned": keras["threads_pinned"], "rounds": rounds,
                     "calls_b1": calls, "keras_calls_b1": keras_calls, "batch": latency.BATCH,
                     "calls_batch": batch_calls, "keras_calls_batch": keras_batch_calls, "cold_repeats": cold_repeats},
        "keras_source": keras["source"],
        "compute_floor": {**gemm, "floor_ms_per_image": floor_s * 1e3},
        "models": rows,
        "ratios": info["ratios"],
        "against_references": against,
        "photo_path": stages,
        "camera": camera,
        "device_memory": device,
        "mcu": mcu_figures,
        "wall_s": time.perf_counter() - t_start,
    }


def accept(results: dict, folder: Path, pinned: Path = reference.REFERENCE_DIR) -> list[str]:
    """`make bench-baseline`: pin the release and today's runtime, rewrite baseline.json, return what changed.
    Refused (SystemExit, nothing written) when the release is over a budget."""
    previous = baseline.load() if BASELINE.exists() else None
    old_zip = (pinned / reference.RUNTIME_ZIP).read_bytes() if (pinned / reference.RUNTIME_ZIP).is_file() else None
    names = [n for n in results["models"] if n != latency.KERAS]
    # Check the budgets before anything is replaced: a refused release leaves the references as they were.
    baseline.make(results, reference.pinned_files(pinned), previous)
    new_pinned = reference.accept(folder, names, pinned)
    runtime_files = reference.runtime_changes(old_zip, (pinned / reference.RUNTIME_ZIP).read_bytes())
    write_json(BASELINE, baseline.make(results, new_pinned, previous))
    return baseline.changes(previous, results, new_pinned, runtime_files if old_zip else [])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    p.add_argument("--exported", type=Path, default=None,
                   help="release folder (default: $FASHION_EDGE_EXPORTED, else exported/)")
    p.add_argument("--build-dir", type=Path, default=None,
                   help="where to look for the cached Keras model (default: the manifest's build dir, and build/)")
    p.add_argument("--out-dir", type=Path, default=BENCH_DIR, help="where results.{json,md} go")
    p.add_argument("--calls", type=int, default=2000, help="batch-1 calls per edge artifact (default 2000)")
    p.add_argument("--keras-calls", type=int, default=1000, help="batch-1 Keras predict calls (default 1000)")
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    p.add_argument("--cold-repeats", type=int, default=3, help="fresh processes per figure (default 3)")
    p.add_argument("--photo-rounds", type=int, default=5,
                   help="passes over the real photos for the photo path by stage (default 5)")
    p.add_argument("--write-baseline", action="store_true",
                   help="accept this release: pin its artifacts and today's runtime in benchmarks/reference/, rewrite "
                        f"{BASELINE.relative_to(ROOT)} (budgets and tolerances are kept) and print what changed")
    args = p.parse_args(argv)

    folder = args.exported or exported_dir()
    try:
        results = measure(folder, build_dir=args.build_dir, calls=args.calls, keras_calls=args.keras_calls,
                          rounds=args.rounds, cold_repeats=args.cold_repeats, photo_rounds=args.photo_rounds)
    except (BenchError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / "results.json", results)
    table = report.markdown(results)
    (args.out_dir / "results.md").write_text(table)
    print(table)
    print(f"wrote {args.out_dir / 'results.json'} and {args.out_dir / 'results.md'}", file=sys.stderr)
    if args.write_baseline:
        lines = accept(results, folder)
        print(f"accepted {folder} as the reference: {reference.REFERENCE_DIR.relative_to(ROOT)}/ re-pinned, "
              f"{BASELINE.relative_to(ROOT)} rewritten. What changed:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        print(f"review `git diff benchmarks/` and commit it on purpose, with the reason", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
