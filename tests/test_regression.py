"""Regression gates on the release in exported/ against the committed benchmarks/baseline.json.

Real files, real interpreters. Sizes are judged against budgets and the manifest; latency only as
ratios measured together in this process (the machine is shared, absolute times are noise); accuracy
by re-running the int8 artifacts on the test set and comparing the exact count of correct answers.
Set FASHION_EDGE_EXPORTED to gate another release folder (a candidate, or a deliberately broken copy).
"""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench

RELEASE = bench.exported_dir()
BASELINE_NAME = "benchmarks/baseline.json"
OTHERS = [n for n in bench.ARTIFACTS if n != bench.REFERENCE]
INT8 = ["model_int8.tflite", "model_int8.onnx"]
# Batch-1 calls per edge artifact (~0.2 ms each) and Keras predict calls (~50 ms each), in 20
# round-robin rounds: stable medians in about ten seconds.
EDGE_CALLS, KERAS_CALLS, ROUNDS = 4000, 60, 20


@pytest.fixture(scope="module")
def manifest() -> dict:
    return bench.load_manifest(RELEASE)


@pytest.fixture(scope="module")
def baseline() -> dict:
    return bench.load_baseline()


def _gate(ok: bool, message: str) -> None:
    """Fail with just the message (figure, measured value, budget, where the budget comes from)."""
    if not ok:
        pytest.fail(message, pytrace=False)


def _path(name: str):
    path = RELEASE / name
    if not path.is_file():
        pytest.fail(f"{name} missing from {RELEASE}", pytrace=False)
    return path


# --- the baseline itself --------------------------------------------------------------------------

def test_committed_baseline_has_every_artifact_ratio_for_the_same_cpu_kinds(baseline):
    kinds = {k for a in baseline["artifacts"].values() for k in a["latency_ratio_vs_float_tflite"]}
    assert kinds and all(set(a["latency_ratio_vs_float_tflite"]) == kinds for a in baseline["artifacts"].values())
    assert kinds <= set(baseline["measured"]) and set(baseline[bench.PHOTO_RATIO]) <= set(baseline["measured"])


def test_rewriting_the_baseline_on_one_cpu_kind_keeps_the_others(baseline):
    """`make bench-baseline` on a VNNI machine must not hand an AVX2 machine VNNI's int8 ratio (0.53, where
    AVX2 measures ~1.5): figures are replaced for the measuring kind only, and a kind with no figure of
    its own is gated by the loosest committed one."""
    models = {n: {"bytes": 1000, "ratio_vs_float_tflite": 0.5, "x_compute_floor": 1.0} for n in bench.ARTIFACTS}
    results = {"created": "t", "git_commit": "c", "machine": {"cpu_kind": "kind_b"}, "manifest": {},
               "models": models, "ratios": {"int8_over_float_tflite": 0.5, "keras_predict_over_edge": {}},
               "compute_floor": {"gflops": 1.0}, "photo_path": {bench.PHOTO_RATIO: 30.0}}
    previous = {"artifacts": {n: {"max_bytes": 2000, "latency_ratio_vs_float_tflite": {"kind_a": 1.5}}
                              for n in bench.ARTIFACTS},
                "measured": {"kind_a": {"created": "old"}}, bench.PHOTO_RATIO: {"kind_a": 40.0},
                "info": {"kind_a": {"int8_over_float_tflite": 1.5}}}
    new = bench.make_baseline(results, previous)
    name = "model_int8.tflite"
    assert new["artifacts"][name]["latency_ratio_vs_float_tflite"] == {"kind_a": 1.5, "kind_b": 0.5}
    assert set(new["measured"]) == set(new["info"]) == {"kind_a", "kind_b"}
    assert bench.latency_ratio_budget(new, name, "kind_a") == (1.5, "kind_a")
    assert bench.latency_ratio_budget(new, name, "kind_b") == (0.5, "kind_b")
    assert bench.latency_ratio_budget(new, name, "kind_c") == (1.5, "kind_a (none committed for kind_c)")
    assert bench.photo_ratio_budget(new, "kind_c") == (40.0, "kind_a (none committed for kind_c)")
    results["models"][name]["bytes"] = 3000                  # over its budget: refused, not raised
    with pytest.raises(SystemExit, match="baseline not written"):
        bench.make_baseline(results, previous)


# --- size -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", bench.ARTIFACTS)
def test_size_within_baseline_budget(name, baseline):
    size = _path(name).stat().st_size
    budget = baseline["artifacts"][name]["max_bytes"]
    _gate(size <= budget, f"{name} size {size} B > budget {budget} B ({BASELINE_NAME})")


@pytest.mark.parametrize("name", bench.ARTIFACTS)
def test_size_within_manifest_bytes(name, manifest, baseline):
    size = _path(name).stat().st_size
    entry = {a["file"]: a for a in manifest["artifacts"]}.get(name)
    _gate(entry is not None, f"{name} is not listed in {RELEASE / 'manifest.json'}")
    tolerance = baseline.get("manifest_size_tolerance", 1.05)
    limit = int(entry["bytes"] * tolerance)
    _gate(size <= limit, f"{name} size {size} B > {tolerance:.0%} of the manifest's {entry['bytes']} B = {limit} B "
                         f"({RELEASE / 'manifest.json'})")


# --- latency (ratios measured in this process) ----------------------------------------------------

@pytest.fixture(scope="module")
def latency(manifest) -> dict[str, np.ndarray]:
    """Batch-1 seconds per call (rounds × calls) of each artifact and of Keras predict, measured round-robin."""
    bench.pin_tensorflow_threads()
    model, _ = bench.load_keras(manifest, RELEASE)
    norm = manifest["input"]["normalization"]
    one = bench.sample_images(1)
    runners = {n: bench.edge_runner(_path(n), one) for n in bench.ARTIFACTS}
    runners[bench.KERAS] = bench.keras_runner(model, norm["mean"], norm["std"], one)
    calls = {**{n: EDGE_CALLS for n in bench.ARTIFACTS}, bench.KERAS: KERAS_CALLS}
    return bench.interleaved(runners, calls, rounds=ROUNDS)


def _ms(times: np.ndarray) -> str:
    return f"{np.median(times) * 1e3:.3f} ms"


def _ratio_budget(name: str, baseline: dict) -> tuple[float, float, float, str]:
    committed, kind = bench.latency_ratio_budget(baseline, name)
    tolerance = baseline.get("latency_tolerance", bench.TOLERANCE)
    return committed * tolerance, committed, tolerance, kind


@pytest.mark.parametrize("name", OTHERS)
def test_latency_ratio_vs_float_tflite_within_baseline(name, latency, baseline):
    ratio = bench.ratio(latency, name)
    budget, committed, tolerance, kind = _ratio_budget(name, baseline)
    _gate(ratio <= budget, (
        f"{name} batch-1 latency ÷ {bench.REFERENCE} {ratio:.2f} > budget {budget:.2f} "
        f"(baseline {committed} for CPU kind {kind} × {tolerance}, {BASELINE_NAME}); medians "
        f"{_ms(latency[name])} vs {_ms(latency[bench.REFERENCE])}"))


@pytest.mark.parametrize("name", bench.ARTIFACTS)
def test_latency_edge_runtime_100x_below_keras_predict(name, latency, baseline):
    factor = baseline.get("min_keras_over_edge", bench.MIN_KERAS_OVER_EDGE)
    speedup = bench.ratio(latency, bench.KERAS, name)
    _gate(speedup >= factor, (
        f"{name} batch-1 latency {_ms(latency[name])} is only {speedup:.0f}× below Keras predict's "
        f"{_ms(latency[bench.KERAS])}; budget: at least {factor}× ({BASELINE_NAME})"))


def test_latency_figures_reported(latency, baseline, capsys):
    """Prints the measured ratios. int8 ÷ float is information, not a gate: int8 is not faster on every CPU."""
    lines = [f"{name} ÷ {bench.REFERENCE} {bench.ratio(latency, name):.2f} (budget {_ratio_budget(name, baseline)[0]:.2f} "
             f"for CPU kind {_ratio_budget(name, baseline)[3]})" for name in OTHERS]
    info = baseline.get("info", {}).get(bench.cpu_kind(), {})
    for fmt in ("tflite", "onnx"):
        lines.append(f"{fmt} int8 ÷ float {bench.ratio(latency, f'model_int8.{fmt}', f'model_float.{fmt}'):.2f} "
                     f"(baseline {info.get(f'int8_over_float_{fmt}', '?')})")
    slowest = min(bench.ratio(latency, bench.KERAS, n) for n in bench.ARTIFACTS)
    lines.append(f"Keras predict ÷ slowest edge artifact {slowest:,.0f}× (budget ≥ "
                 f"{baseline.get('min_keras_over_edge', bench.MIN_KERAS_OVER_EDGE)}×)")
    with capsys.disabled():
        print("\n" + "\n".join(f"  [regression] {line}" for line in lines))


# --- accuracy -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def test_set(manifest):
    from pipeline import data
    _, _, x_test, y_test, _ = data.load_raw()
    n = int(manifest.get("test_images", len(y_test)))   # a quick export evaluates a prefix
    return x_test[:n], y_test[:n]


@pytest.mark.parametrize("name", INT8)
def test_int8_accuracy_reproduces_manifest_count(name, manifest, test_set):
    from edge_runtime.classifier import Classifier
    x, y = test_set
    entry = {a["file"]: a for a in manifest["artifacts"]}[name]
    # Two threads, as pipeline/validate.py ran it; integer kernels give the same answers on any count.
    pred = Classifier(_path(name), num_threads=2).scores(x).argmax(1)
    correct = int((pred == y).sum())
    _gate(correct == entry["correct"], (
        f"{name} correct answers {correct}/{len(y)} != manifest's {entry['correct']} "
        f"(accuracy {correct / len(y):.4f} vs {entry['accuracy']}, {RELEASE / 'manifest.json'})"))


# --- real photos ------------------------------------------------------------------------------------

def test_real_photos_reproduce_manifest_and_reach_the_baseline(manifest, baseline):
    """The shipped int8 model on the real phone photos: the manifest's exact count, and ≥ the committed
    floor (benchmarks/baseline.json: real_photos_min_top1). Skipped where the photos are not present."""
    from pipeline import photos
    recorded = manifest.get("real_photos")
    folder = photos.find_dev_set()
    if recorded is None or folder is None:
        pytest.skip("no real_photos in the manifest, or no real-photos-dev folder here")
    r = photos.evaluate(_path(recorded["model"]), folder)
    _gate(r["correct"] == recorded["correct"], (
        f"{recorded['model']} on {folder}: {r['correct']}/{r['photos']} right, manifest says "
        f"{recorded['correct']}/{recorded['photos']} ({RELEASE / 'manifest.json'})"))
    floor = baseline.get("real_photos_min_top1", 0.5)
    _gate(r["accuracy"] >= floor, f"real-photo top-1 {r['accuracy']:.2%} < {floor:.0%} ({BASELINE_NAME})")


# --- the photo path (decode + conversion + model) ---------------------------------------------------

def test_photo_path_ratio_within_baseline(baseline, capsys):
    """One real photo through the whole path ÷ one batch-1 model call, both measured here, one thread:
    the committed ratio × the latency tolerance. Skipped where the real photos are not present."""
    photos = bench.dev_photos()
    if not photos:
        pytest.skip("no real-photos-dev folder here ($FASHION_EDGE_PHOTOS)")
    r = bench.photo_path_fresh(_path(bench.PHOTO_MODEL), rounds=3, camera_frames=0)["photo_path"]
    committed, kind = bench.photo_ratio_budget(baseline)
    tolerance = baseline.get("latency_tolerance", bench.TOLERANCE)
    ratio = r[bench.PHOTO_RATIO]
    stages = ", ".join(f"{s} {v['median_ms']:.3f} ms" for s, v in r["stages"].items())
    message = (f"photo path ÷ batch-1 model call {ratio:.1f} (budget {committed * tolerance:.1f} = baseline {committed} "
               f"for CPU kind {kind} × {tolerance}, {BASELINE_NAME}); per photo {r['total']['median_ms']:.3f} ms "
               f"({stages}), model call {r['model_call_b1']['median_ms']:.4f} ms")
    with capsys.disabled():
        print(f"\n  [regression] {message}")
    _gate(ratio <= committed * tolerance, message)
