"""Regression gates on the release in exported/ and on the edge runtime, against benchmarks/baseline.json and the
pinned references in benchmarks/reference/.

Real files, real interpreters, real device venvs. Sizes, memory and the int8 model's TensorFlow Lite Micro arena
and flash are judged against byte budgets; every time
only as a ratio to its pinned reference, measured in the same fresh process in interleaved rounds, so a gate
reads ~1.00 on any CPU until the release or the runtime changes; MACs and accuracy exactly. Set
FASHION_EDGE_EXPORTED to gate another release folder (a candidate, or a deliberately broken copy).
"""
from __future__ import annotations

import pytest

from benchmarks import baseline as baseline_mod
from benchmarks import child, common, mcu, memory, reference, sizes
from benchmarks.common import BenchError
from benchmarks.common import MiB

RELEASE = common.exported_dir()
BASELINE_NAME = "benchmarks/baseline.json"
INT8 = ["model_int8.tflite", "model_int8.onnx"]
# Bare calls per artifact (~0.1 ms each) in 20 interleaved rounds; the photo path 3 passes over the photos.
CALLS, ROUNDS, PHOTO_ROUNDS = 3000, 20, 3


@pytest.fixture(scope="module")
def manifest() -> dict:
    return common.load_manifest(RELEASE)


@pytest.fixture(scope="module")
def baseline() -> dict:
    return baseline_mod.load()


def _gate(ok: bool, message: str) -> None:
    """Fail with just the message (figure, measured value, budget, where the budget comes from)."""
    if not ok:
        pytest.fail(message, pytrace=False)


def _report(capsys, line: str) -> None:
    with capsys.disabled():
        print(f"\n  [regression] {line}")


def _path(name: str):
    path = RELEASE / name
    if not path.is_file():
        pytest.fail(f"{name} missing from {RELEASE}", pytrace=False)
    return path


def test_pinned_references_are_the_ones_the_baseline_accepted(baseline):
    problems = reference.check_pinned(baseline["pinned"])
    _gate(not problems, "; ".join(problems) + ": run `make bench-baseline` to accept a release on purpose")
    assert set(baseline["pinned"]) == {*common.ARTIFACTS, reference.MANIFEST, reference.RUNTIME_ZIP}


# --- size and compute (the same on every machine) ---------------------------------------------------

@pytest.mark.parametrize("name", common.ARTIFACTS)
def test_size_within_baseline_budget(name, baseline):
    size = _path(name).stat().st_size
    budget = baseline["artifacts"][name]["max_bytes"]
    _gate(size <= budget, f"{name} size {size:,} B > budget {budget:,} B ({BASELINE_NAME})")


@pytest.mark.parametrize("name", common.ARTIFACTS)
def test_size_within_manifest_bytes(name, manifest, baseline):
    size = _path(name).stat().st_size
    entry = {a["file"]: a for a in manifest["artifacts"]}.get(name)
    _gate(entry is not None, f"{name} is not listed in {RELEASE / 'manifest.json'}")
    tolerance = baseline_mod.tolerance(baseline, "manifest_size")
    limit = int(entry["bytes"] * tolerance)
    _gate(size <= limit, f"{name} size {size:,} B > {tolerance:.0%} of the manifest's {entry['bytes']:,} B = {limit:,} B "
                         f"({RELEASE / 'manifest.json'})")


@pytest.mark.parametrize("name", common.ARTIFACTS)
def test_macs_within_pinned_reference(name, baseline):
    """MACs per image counted from the graph: on CPUs where a kernel's time does not follow its MACs (int8 XNNPACK
    on this AMX Xeon ran a 1.56× wider model 1.04× slower), this still sees the wider model."""
    today, pinned = sizes.graph_macs(_path(name)), sizes.graph_macs(reference.path(name))
    tolerance = baseline_mod.tolerance(baseline, "artifact_macs")
    _gate(today <= pinned * tolerance, f"{name} MACs per image {today:,} > {tolerance} × the pinned reference's "
                                       f"{pinned:,} (benchmarks/reference/{name})")


# --- on a microcontroller: TensorFlow Lite Micro arena and flash of the int8 model (bytes, any machine) -------------

@pytest.fixture(scope="module")
def mcu_figures() -> dict:
    """Measured from the file itself, not its manifest: the smallest arena that allocates, the compiled C array."""
    try:
        return mcu.measure(_path(mcu.MODEL))
    except BenchError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.mark.parametrize("key, figure, what", baseline_mod.MCU_FIGURES, ids=["arena", "flash"])
def test_mcu_bytes_within_baseline_budget(key, figure, what, mcu_figures, baseline, capsys):
    budget = baseline.get("mcu", {}).get(key)
    _gate(budget is not None, f"{BASELINE_NAME} has no mcu.{key}: set the budget by hand (see benchmarks/baseline.py)")
    measured = mcu_figures[figure]
    message = (f"{mcu_figures['model']} {what} {measured:,} B > budget {budget:,} B ({BASELINE_NAME} mcu.{key}; "
               f"tflite-micro {mcu_figures['tflite_micro']})")
    _report(capsys, f"{mcu_figures['model']} {what} {measured:,} B (budget {budget:,} B)")
    _gate(measured <= budget, message)


# --- time: ratios to the pinned references, measured together ---------------------------------------

@pytest.fixture(scope="module")
def against():
    """Every timed comparison in one fresh process (no TensorFlow, one thread): artifacts, overhead, photo path."""
    return child.in_fresh_process("against_references", release=str(RELEASE), names=list(common.ARTIFACTS),
                                  pinned=str(reference.REFERENCE_DIR), calls=CALLS, rounds=ROUNDS,
                                  photo_rounds=PHOTO_ROUNDS)


@pytest.mark.parametrize("name", common.ARTIFACTS)
def test_latency_within_pinned_reference(name, against, baseline, capsys):
    r = against["artifacts"][name]
    tolerance = baseline_mod.tolerance(baseline, "artifact_latency")
    message = (f"{name} bare batch-1 call ÷ its pinned reference {r['ratio']:.3f} (budget {tolerance}); medians "
               f"{r['release']['median_ms'] * 1e3:.1f} µs vs {r['pinned']['median_ms'] * 1e3:.1f} µs")
    _report(capsys, message)
    _gate(r["ratio"] <= tolerance, message)


@pytest.mark.parametrize("name", ["model_int8.tflite", "model_int8.onnx"])
def test_runtime_overhead_within_pinned_runtime(name, against, baseline, capsys):
    """What Classifier.scores adds to the bare interpreter call (normalize, quantize, dequantize, calibrate), today's
    edge_runtime ÷ the pinned one's, both on the pinned model."""
    r = against["overhead"][name]
    tolerance = baseline_mod.tolerance(baseline, "runtime_overhead")
    message = (f"Classifier overhead on {name} ÷ the pinned runtime's {r['ratio']:.3f} (budget {tolerance}): "
               f"{r['today_overhead_us']:.1f} µs vs {r['pinned_overhead_us']:.1f} µs over a {r['bare']['median_ms'] * 1e3:.1f} "
               f"µs bare call; Classifier call ÷ bare call {r['today_over_bare']:.2f} (pinned {r['pinned_over_bare']:.2f})")
    _report(capsys, message)
    _gate(r["ratio"] <= tolerance, message)


def test_photo_path_within_pinned_runtime(against, baseline, capsys):
    """One real photo, decode to answer, today's runtime ÷ the pinned runtime's. Skipped without the real photos."""
    r = against["photo"]
    if r is None:
        pytest.skip("no real-photos-dev folder here ($FASHION_EDGE_PHOTOS)")
    tolerance = baseline_mod.tolerance(baseline, "photo_path")
    message = (f"photo path ÷ the pinned runtime's {r['ratio']:.3f} (budget {tolerance}): {r['today']['median_ms']:.3f} ms "
               f"vs {r['pinned']['median_ms']:.3f} ms per photo ({r['photos']} photos × {r['rounds']})")
    _report(capsys, message)
    _gate(r["ratio"] <= tolerance, message)


# --- memory on a device install ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def device():
    """Peak RSS and model memory in the tflite-only and onnx-only venvs (build/device-venvs, made once)."""
    return memory.device_memory(RELEASE, log=lambda m: print(f"\n  [regression] {m}"))


@pytest.mark.parametrize("backend", list(memory.BACKENDS))
def test_device_peak_rss_within_budget(backend, device, baseline, capsys):
    m = device[backend]
    tolerance = baseline_mod.tolerance(baseline, "peak_rss")
    budget = baseline["memory"][backend]["max_peak_rss_bytes"]
    peak = m["installed"]["peak_rss_bytes"]
    message = (f"edge-classify --model {m['model']} on one photo, {backend}-only venv: peak RSS {peak / MiB:.1f} MiB "
               f"(budget {budget / MiB:.0f} MiB); today's runtime ÷ the pinned one's {m['peak_ratio']:.3f} "
               f"(budget {tolerance}): {m['today']['peak_rss_bytes'] / MiB:.1f} vs {m['pinned']['peak_rss_bytes'] / MiB:.1f} MiB")
    _report(capsys, message)
    _gate(not m["installed"]["imports_tensorflow"], f"edge-classify imported TensorFlow in the {backend}-only venv")
    _gate(m["peak_ratio"] <= tolerance and peak <= budget, message)


@pytest.mark.parametrize("backend", list(memory.BACKENDS))
def test_device_model_memory_within_pinned_reference(backend, device, baseline, capsys):
    m = device[backend]
    tolerance = baseline_mod.tolerance(baseline, "model_memory")
    message = (f"{m['model']} model memory (RSS gained by loading it and its first inference), {backend}-only venv: "
               f"{m['today']['model_rss_bytes'] / MiB:.2f} MiB ÷ the pinned {m['pinned']['model_rss_bytes'] / MiB:.2f} MiB "
               f"= {m['model_ratio']:.3f} (budget {tolerance})")
    _report(capsys, message)
    _gate(m["model_ratio"] <= tolerance, message)


# --- accuracy -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def test_set(manifest):
    from pipeline.data import fashion_mnist
    _, _, x_test, y_test, _ = fashion_mnist.load_raw()
    n = int(manifest.get("test_images", len(y_test)))   # a quick export evaluates a prefix
    return x_test[:n], y_test[:n]


@pytest.mark.parametrize("name", INT8)
def test_int8_accuracy_reproduces_manifest_count(name, manifest, test_set):
    from edge_runtime.classifier import Classifier
    x, y = test_set
    entry = {a["file"]: a for a in manifest["artifacts"]}[name]
    # Two threads, as pipeline/evaluate/parity.py ran it; integer kernels give the same answers on any count.
    pred = Classifier(_path(name), num_threads=2).scores(x).argmax(1)
    correct = int((pred == y).sum())
    _gate(correct == entry["correct"], (
        f"{name} correct answers {correct}/{len(y)} != manifest's {entry['correct']} "
        f"(accuracy {correct / len(y):.4f} vs {entry['accuracy']}, {RELEASE / 'manifest.json'})"))


def test_real_photos_reproduce_manifest_and_reach_the_baseline(manifest, baseline):
    """The shipped int8 model on the real phone photos: the manifest's exact count, and ≥ the committed
    floor (benchmarks/baseline.json: real_photos_min_top1). Skipped where the photos are not present."""
    from pipeline.evaluate import real_photos
    recorded = manifest.get("real_photos")
    folder = real_photos.find_dev_set()
    if recorded is None or folder is None:
        pytest.skip("no real_photos in the manifest, or no real-photos-dev folder here")
    r = real_photos.evaluate(_path(recorded["model"]), folder)
    _gate(r["correct"] == recorded["correct"], (
        f"{recorded['model']} on {folder}: {r['correct']}/{r['photos']} right, manifest says "
        f"{recorded['correct']}/{recorded['photos']} ({RELEASE / 'manifest.json'})"))
    floor = baseline.get("real_photos_min_top1", 0.5)
    _gate(r["accuracy"] >= floor, f"real-photo top-1 {r['accuracy']:.2%} < {floor:.0%} ({BASELINE_NAME})")
