"""benchmarks/baseline.json: the budgets (policy, edited by hand) and the checksums of the pinned references.

No figure in it depends on the CPU. Sizes, memory and the int8 model's TFLite Micro arena and flash are byte
budgets; every time is gated as a ratio to
its pinned reference measured in the same run, within a tolerance kept here. `make bench-baseline` writes
this file when it accepts a release (bench.py); it never raises a budget or a tolerance.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .common import ARTIFACTS, BASELINE, MiB, ROOT

SCHEMA = 4   # 4: the `mcu` budgets (arena, flash)
# How far a figure may move against its pinned reference before its gate fails. Measured with one core
# kept busy by another process (10 runs): artifacts 0.977–1.020, overhead 0.925–1.168, photo path 0.974–1.043,
# memory 0.985–1.011. A 1.56× wider model ran 2.07× slower in float TFLite, 50 µs per call made the overhead 1.73×.
TOLERANCES = {
    "artifact_latency": 1.15,   # bare interpreter call, today's file ÷ its pinned copy
    "artifact_macs": 1.05,      # MACs per image counted from the graph, today's ÷ pinned (exact, any CPU)
    "runtime_overhead": 1.3,    # what Classifier.scores adds to the bare call, today's runtime ÷ pinned runtime
    "photo_path": 1.15,         # one photo decode to answer, today's runtime ÷ pinned runtime
    "peak_rss": 1.1,            # edge-classify on one photo in a device venv, today ÷ pinned
    "model_memory": 1.25,       # RSS gained by loading the model and its first inference, today ÷ pinned
    "manifest_size": 1.05,      # an artifact's bytes ÷ what its manifest records
}
# Budgets are policy; these seed a baseline that has none yet: the int8 model's 64 KiB target, the others
# measured × 1.25 rounded up to 4 KiB (files) or 8 MiB (memory).
DEFAULT_BUDGETS = {"model_int8.tflite": 64 * 1024}
# model_int8.tflite on a microcontroller (benchmarks/mcu.py), seeded the same way: flash at the int8 model's 64 KiB
# target (the flash is that file as a const array, + its length and alignment: 16 bytes today), the arena measured
# × 1.25 rounded up to 4 KiB (29,792 B today → 40,960).
DEFAULT_MCU_BUDGETS = {"max_flash_bytes": 64 * 1024}
MCU_FIGURES = (("max_arena_bytes", "arena_bytes", "TFLite Micro arena"), ("max_flash_bytes", "flash_bytes", "flash"))
REAL_PHOTOS_MIN_TOP1 = 0.5


def load(path: Path = BASELINE) -> dict:
    return json.loads(Path(path).read_text())


def tolerance(baseline: dict, key: str) -> float:
    return float(baseline.get("tolerances", {}).get(key, TOLERANCES[key]))


def _budget(previous: float | None, measured: int, step: int, default: int | None = None) -> int:
    return int(previous or default or step * math.ceil(measured * 1.25 / step))


def make(results: dict, pinned: dict, previous: dict | None = None) -> dict:
    """The baseline for a release just accepted: `results` of bench.measure, `pinned` the new checksums.
    Budgets and tolerances are kept from `previous` (seeded where missing); a release over one is refused."""
    previous = previous or {}
    old_art, old_mem = previous.get("artifacts", {}), previous.get("memory", {})
    artifacts, memory, over = {}, {}, []
    for name in ARTIFACTS:
        r = results["models"].get(name)
        if r is None:
            continue
        budget = _budget(old_art.get(name, {}).get("max_bytes"), r["bytes"], 4096, DEFAULT_BUDGETS.get(name))
        if r["bytes"] > budget:
            over.append(f"{name} size {r['bytes']:,} B > budget {budget:,} B")
        artifacts[name] = {"max_bytes": budget}
    for backend, m in (results.get("device_memory") or {}).items():
        peak = m["installed"]["peak_rss_bytes"]
        budget = _budget(old_mem.get(backend, {}).get("max_peak_rss_bytes"), peak, 8 * MiB)
        if peak > budget:
            over.append(f"edge-classify peak RSS ({backend}) {peak / MiB:.1f} MiB > budget {budget / MiB:.0f} MiB")
        memory[backend] = {"model": m["model"], "max_peak_rss_bytes": budget}
    mcu = _mcu_budgets(results.get("mcu"), previous.get("mcu") or {}, over)
    if over:
        raise SystemExit("baseline not written: " + "; ".join(over) + f". If the growth is intended, raise the "
                         f"budget by hand in {BASELINE.relative_to(ROOT)} and say why in the commit.")
    return {
        "schema": SCHEMA,
        "what": "What tests/test_regression.py gates the release in exported/ against. Budgets (bytes) are policy, "
                "edited by hand. Every timing and memory figure is a ratio to a pinned reference "
                "(benchmarks/reference/: the accepted release's artifacts and manifest, and the edge runtime's code "
                "zipped) measured in the same run, so nothing here depends on the CPU.",
        "update": "`make bench-baseline` on purpose after an intended change: it re-pins benchmarks/reference/, "
                  "rewrites `pinned` and `accepted`, and prints what changed against the previous references. It "
                  "never raises a budget or a tolerance. Review `git diff benchmarks/` and commit with the reason.",
        "accepted": {"created": results["created"], "git_commit": results["git_commit"],
                     "machine": results["machine"], "release": results["manifest"],
                     "figures": accepted_figures(results)},
        "pinned": pinned,
        "tolerances": {**TOLERANCES, **previous.get("tolerances", {})},
        "artifacts": artifacts,
        "memory": {**old_mem, **memory},
        "mcu": mcu,
        "real_photos_min_top1": previous.get("real_photos_min_top1", REAL_PHOTOS_MIN_TOP1),
    }


def _mcu_budgets(measured: dict | None, old: dict, over: list[str]) -> dict:
    """The arena and flash budgets of the int8 model (kept from `old`, seeded where missing); a figure over its
    budget, or none measured while the baseline has budgets, goes into `over` (the release is refused)."""
    if not measured or "error" in measured:
        if old:
            why = measured["error"] if measured else "no figures in the results"
            over.append(f"{old.get('model', 'model_int8.tflite')} TFLite Micro arena and flash not measured ({why})")
        return old
    budgets = {"model": measured["model"]}
    for key, figure, what in MCU_FIGURES:
        budget = _budget(old.get(key), measured[figure], 4096, DEFAULT_MCU_BUDGETS.get(key))
        if measured[figure] > budget:
            over.append(f"{measured['model']} {what} {measured[figure]:,} B > budget {budget:,} B")
        budgets[key] = budget
    return budgets


def accepted_figures(results: dict) -> dict:
    """What the accepted release measured (information for the next `what changed`; nothing is gated on it)."""
    out = {"macs": {n: r["graph_macs"] for n, r in results["models"].items() if "graph_macs" in r}}
    for backend, m in (results.get("device_memory") or {}).items():
        out[f"{backend}_peak_rss_bytes"] = m["installed"]["peak_rss_bytes"]
        out[f"{backend}_model_rss_bytes"] = m["installed"]["model_rss_bytes"]
    mcu = results.get("mcu") or {}
    if "arena_bytes" in mcu:
        out["mcu_arena_bytes"], out["mcu_flash_bytes"] = mcu["arena_bytes"], mcu["flash_bytes"]
    return out


def changes(previous: dict | None, results: dict, pinned: dict, runtime_files: list[str]) -> list[str]:
    """What accepting this release changes, one line per figure, against the previous pinned references
    (`results["against_references"]` was measured before they were replaced)."""
    previous = previous or {}
    old_pinned = previous.get("pinned", {})
    if not old_pinned:
        return ["no previous pinned references: this release becomes the first"]
    against = results.get("against_references") or {}
    old_macs = previous.get("accepted", {}).get("figures", {}).get("macs", {})
    lines = []
    for name in ARTIFACTS:
        if name not in pinned:
            continue
        old, new = old_pinned.get(name), pinned[name]
        if old and old["sha256"] == new["sha256"]:
            lines.append(f"{name}: unchanged")
            continue
        r = results["models"].get(name, {})
        lat = against.get("artifacts", {}).get(name, {}).get("ratio")
        parts = [f"{old['bytes']:,} → {new['bytes']:,} B" if old else f"new, {new['bytes']:,} B"]
        if name in old_macs and "graph_macs" in r:
            parts.append(f"MACs {old_macs[name] / 1e6:.2f} M → {r['graph_macs'] / 1e6:.2f} M")
        if lat is not None:
            parts.append(f"latency {lat:.2f}× the previous reference's")
        lines.append(f"{name}: replaced ({', '.join(parts)})")
    if runtime_files:
        over = against.get("overhead", {})
        figures = ["Classifier overhead " + " and ".join(f"{v['ratio']:.2f}× ({n})" for n, v in over.items())]
        if against.get("photo"):
            figures.append(f"photo path {against['photo']['ratio']:.2f}×")
        lines.append(f"edge_runtime: {', '.join(runtime_files)}; " + ", ".join(figures) + ", against the previous runtime")
    else:
        lines.append("edge_runtime: unchanged")
    figures = previous.get("accepted", {}).get("figures", {})
    for backend, m in (results.get("device_memory") or {}).items():
        old = figures.get(f"{backend}_peak_rss_bytes")
        new = m["installed"]["peak_rss_bytes"]
        was = f"{old / MiB:.1f} → " if old else ""
        lines.append(f"edge-classify peak RSS ({backend}): {was}{new / MiB:.1f} MiB "
                     f"({m['peak_ratio']:.3f}× the previous reference's in this run)")
    mcu = results.get("mcu") or {}
    if "arena_bytes" in mcu:
        was = lambda key: f"{figures[key]:,} → " if key in figures else ""   # noqa: E731
        lines.append(f"{mcu['model']} in TFLite Micro: arena {was('mcu_arena_bytes')}{mcu['arena_bytes']:,} B, "
                     f"flash {was('mcu_flash_bytes')}{mcu['flash_bytes']:,} B")
    lines.append("budgets and tolerances: kept (the tool never raises them)")
    return lines
