"""benchmarks/results.md: the gated ratios against the pinned references first, then what describes this machine."""
from __future__ import annotations

from . import baseline as baseline_mod
from .common import BASELINE, MiB


def _mib(b: float | None) -> str:
    return "–" if b is None else f"{b / MiB:.1f} MiB"


def _ok(value: float, limit: float) -> str:
    return "ok" if value <= limit else "**over**"


def gated_markdown(results: dict, baseline: dict | None) -> list[str]:
    """The figures tests/test_regression.py gates, with their tolerances (information when no baseline)."""
    against, device = results.get("against_references"), results.get("device_memory") or {}
    if not against:
        return ["## Against the pinned references (the gates)", "",
                "No pinned references (benchmarks/reference/): `make bench-baseline` accepts this release as them.", ""]
    tol = (lambda k: baseline_mod.tolerance(baseline, k)) if baseline else (lambda k: baseline_mod.TOLERANCES[k])
    lines = ["## Against the pinned references (the gates)", "",
             "Each figure is today's ÷ its pinned reference (benchmarks/reference/), timed in the same process in "
             "interleaved rounds (median of the per-round ratios): 1.00 on any CPU until the release or the runtime "
             "changes.", "",
             "| figure | today | pinned | ratio | tolerance | |", "|---|--:|--:|--:|--:|---|"]
    for name, r in against["artifacts"].items():
        t = tol("artifact_latency")
        lines.append(f"| {name} bare call | {r['release']['median_ms'] * 1e3:.1f} µs | {r['pinned']['median_ms'] * 1e3:.1f} µs "
                     f"| {r['ratio']:.3f} | {t} | {_ok(r['ratio'], t)} |")
    for name, r in against["overhead"].items():
        t = tol("runtime_overhead")
        lines.append(f"| Classifier overhead, {name} | {r['today_overhead_us']:.1f} µs | {r['pinned_overhead_us']:.1f} µs "
                     f"| {r['ratio']:.3f} | {t} | {_ok(r['ratio'], t)} |")
    if against.get("photo"):
        r, t = against["photo"], tol("photo_path")
        lines.append(f"| photo path ({r['photos']} photos × {r['rounds']}) | {r['today']['median_ms']:.3f} ms "
                     f"| {r['pinned']['median_ms']:.3f} ms | {r['ratio']:.3f} | {t} | {_ok(r['ratio'], t)} |")
    for backend, m in device.items():
        if "today" not in m:
            continue
        for what, key, tkey in (("peak RSS", "peak_rss_bytes", "peak_rss"), ("model memory", "model_rss_bytes", "model_memory")):
            ratio = m["peak_ratio"] if key == "peak_rss_bytes" else m["model_ratio"]
            t = tol(tkey)
            lines.append(f"| {what}, {m['model']} ({backend} venv) | {_mib(m['today'][key])} | {_mib(m['pinned'][key])} "
                         f"| {ratio:.3f} | {t} | {_ok(ratio, t)} |")
    lines += ["", "MACs per image are counted from each file's graph (the same on every machine) and gated at 1.05× the pinned file's; sizes, the installed "
                  "edge-classify's peak RSS and the int8 model's TFLite Micro arena and flash have byte budgets in "
                  "benchmarks/baseline.json.", ""]
    return lines


def mcu_markdown(results: dict, baseline: dict | None) -> list[str]:
    """model_int8.tflite in TensorFlow Lite Micro: the arena and flash tests/test_regression.py gates (bytes)."""
    m = results.get("mcu")
    if not m:
        return []
    lines = ["## On a microcontroller (byte budgets, gated)", ""]
    if "error" in m:
        return lines + [f"Not measured: {m['error']}", ""]
    budgets = (baseline or {}).get("mcu", {})
    lines += [f"`{m['model']}` ({m['model_bytes']:,} bytes) measured from the file with tflite-micro "
              f"{m['tflite_micro']} ({m['seconds']:.1f} s): the smallest arena that allocates and runs it once, and "
              f"the flash of its C array ({m['flash_what']}).", "",
              "| figure | today | budget | |", "|---|--:|--:|---|"]
    for key, figure, what in baseline_mod.MCU_FIGURES:
        budget = budgets.get(key)
        lines.append(f"| {what} | {m[figure]:,} B | {'–' if budget is None else f'{budget:,} B'} "
                     f"| {'' if budget is None else _ok(m[figure], budget)} |")
    return lines + [""]


def machine_markdown(results: dict) -> list[str]:
    """Per artifact: what describes this machine (never gated: it moves with the CPU)."""
    f = results["compute_floor"]
    lines = ["## This machine (information, not gated)", "",
             "| model | bytes | gzip | MACs/img | b1 median | b1 p99 | b1 bare | Classifier ÷ bare | b1 ÷ float TFLite "
             "| × compute floor | b64 img/s | cold start | peak RSS | model memory |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for name, r in results["models"].items():
        lat, bare = r.get("latency_b1"), r.get("invoke_b1")
        dev = r.get("device") or {}
        macs = r.get("graph_macs", r.get("macs"))
        cold = dev.get("cold_start_s", (r.get("cold") or {}).get("cold_start_s"))
        peak = dev.get("peak_rss_bytes", (r.get("cold") or {}).get("peak_rss_bytes"))
        cell = lambda v, fmt: "–" if v is None else fmt.format(v)   # noqa: E731
        lines.append(
            f"| {name} | {r['bytes']:,} | {r['gzip_bytes']:,} | {macs / 1e6:.2f} M "
            f"| {cell(lat and lat['median_ms'], '{:.3f} ms')} | {cell(lat and lat['p99_ms'], '{:.3f} ms')} "
            f"| {cell(bare and bare['median_ms'], '{:.3f} ms')} | {cell(r.get('classifier_over_bare'), '{:.2f}')} "
            f"| {cell(r.get('ratio_vs_float_tflite'), '{:.2f}')} | {r['x_compute_floor']:.1f} "
            f"| {cell(r.get('throughput_b64_ips'), '{:,.0f}')} | {cell(cold, '{:.2f} s')} | {_mib(peak)} "
            f"| {_mib(dev.get('model_rss_bytes'))} |")
    ratios = results["ratios"]
    keras_over = ", ".join(f"{n} {v:,.0f}×" for n, v in ratios.get("keras_predict_over_edge", {}).items())
    s = results["settings"]
    lines += [
        "",
        f"- **Compute floor**: {f['gflops']:.1f} GFLOP/s = {f['macs_per_s'] / 1e9:.1f} GMAC/s ({f['n']}×{f['n']} float32 "
        f"numpy matmul, one OpenBLAS thread, median); MACs ÷ that = {f['floor_ms_per_image']:.3f} ms per image. "
        "“× compute floor” is the batch-1 median (bare for the RGB model) divided by it.",
        "- **int8 ÷ float** (batch-1 median): " + ", ".join(
            f"{k.removeprefix('int8_over_float_')} {v:.2f}" for k, v in ratios.items() if k.startswith("int8_")),
        f"- **Keras predict ÷ edge runtime** (batch-1): {keras_over}.",
        f"- **Keras model**: {results['keras_source']}; its cold start and peak RSS include importing TensorFlow.",
        "- b1 = one image through `Classifier.scores` (normalize, quantize, invoke, dequantize, calibrate) or Keras "
        "`model.predict`; b1 bare = the interpreter alone on a tensor of the model's own type; b64 = batches of 64. "
        f"{s['calls_b1']:,} edge / {s['keras_calls_b1']:,} Keras calls, round-robin in {s['rounds']} rounds.",
        "- cold start (process start to the first answer), peak RSS (VmHWM of `edge-classify --model M photo.jpg`) and "
        "model memory (RSS gained by loading the model and its first inference) in device venvs holding only "
        "the device wheel (`make bundle`) with its `tflite` or `onnx` extra, medians of "
        f"{s['cold_repeats']} fresh processes.",
        f"- Whole run: {results['wall_s']:.0f} s.",
        "",
    ]
    return lines


def device_markdown(results: dict, baseline: dict | None) -> list[str]:
    """Peak RSS of edge-classify on one photo, tflite-only and onnx-only: what a device pays."""
    device = results.get("device_memory") or {}
    if not device:
        return []
    budgets = (baseline or {}).get("memory", {})
    lines = ["## Memory on a device install", "",
             "`edge-classify --model M photo.jpg` in a fresh venv holding only the device install (no TensorFlow):",
             "", "| venv | model | peak RSS | model memory | cold start | budget (peak) |", "|---|---|--:|--:|--:|--:|"]
    for backend, m in device.items():
        i = m["installed"]
        budget = budgets.get(backend, {}).get("max_peak_rss_bytes")
        lines.append(f"| {backend}-only | {m['model']} | {_mib(i['peak_rss_bytes'])} | {_mib(i['model_rss_bytes'])} "
                     f"| {i['cold_start_s']:.2f} s | {_mib(budget)} |")
    photo = next(iter(device.values())).get("photo")
    return lines + ["", f"On one real phone photo ({photo})." if photo else "", ""]


def photo_markdown(results: dict) -> list[str]:
    """The photo path split by stage, as a profiler would, and the camera loop's frame rate."""
    p, cam = results.get("photo_path"), results.get("camera")
    if not p:
        return ["## Photo path", "", "Not measured: no real-photos-dev folder here ($FASHION_EDGE_PHOTOS).", ""]
    total = p["total"]["median_ms"]
    lines = ["## Photo path by stage (information)", "",
             f"`{p['model']}` on {p['photos']} real phone photos (real-photos-dev) × {p['rounds']} rounds, one thread: "
             f"{total:.3f} ms per photo, {p['photo_over_model_call']:.1f}× a batch-1 model call "
             f"({p['model_call_b1']['median_ms']:.4f} ms; median per round; this ratio moves with the CPU).", "",
             "| stage | median | p99 | share of the median photo |", "|---|--:|--:|--:|"]
    what = {"decode": "decode (JPEG draft)", "cutout": "cut-out (garment mask)",
            "conversion": "rest of the conversion", "model": "model (photo + mirror) + top-k"}
    for stage, r in p["stages"].items():
        lines.append(f"| {what.get(stage, stage)} | {r['median_ms']:.3f} ms | {r['p99_ms']:.3f} ms | "
                     f"{r['median_ms'] / total:.0%} |")
    lines.append(f"| **whole photo** | **{total:.3f} ms** | **{p['total']['p99_ms']:.3f} ms** | |")
    if cam:
        lines += ["", f"Camera loop (`edge-classify --camera`) on a {cam['size'][0]}×{cam['size'][1]} MJPG video made "
                      f"from the photos: **{cam['fps']:.0f} frames classified per second** ({cam['frames']} frames in "
                      f"{cam['seconds']:.2f} s). Its own summary: `{cam['summary']}`"]
    return lines + [""]


def markdown(results: dict) -> str:
    baseline = baseline_mod.load() if BASELINE.exists() else None
    m = results["machine"]
    head = ["# Benchmark", "",
            f"{results['created']}, commit {results['git_commit']}, release `{results['exported']}` "
            f"(manifest {results['manifest']['created']}), {m['cpu']} ({m['cpu_kind']}, {m['cores']} cores, shared: "
            "read the ratios, not the absolute times). One thread.", ""]
    body = (gated_markdown(results, baseline) + device_markdown(results, baseline) + mcu_markdown(results, baseline)
            + machine_markdown(results))
    return "\n".join(head + body + photo_markdown(results))
