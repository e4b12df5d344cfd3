"""The benchmark's own machinery: accepting a release as the pinned reference, the baseline it writes, the
pinned runtime beside today's, MACs counted from the graphs, the ratios the gates read."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import baseline, common, reference, sizes, timing

RELEASE = common.ROOT / "exported"


def _results(bytes_each: int = 1000, peak: int = 50 * common.MiB) -> dict:
    models = {n: {"bytes": bytes_each, "graph_macs": 6_000_000} for n in common.ARTIFACTS}
    return {"created": "t", "git_commit": "c", "machine": {"cpu_kind": "x"}, "manifest": {}, "models": models,
            "device_memory": {"tflite": {"model": "model_int8.tflite",
                                         "installed": {"peak_rss_bytes": peak, "model_rss_bytes": 4 * common.MiB},
                                         "peak_ratio": 1.0}}}


def test_bench_baseline_keeps_budgets_and_tolerances_and_refuses_a_release_over_one():
    previous = {"artifacts": {n: {"max_bytes": 2000} for n in common.ARTIFACTS},
                "memory": {"tflite": {"max_peak_rss_bytes": 60 * common.MiB}},
                "tolerances": {"artifact_latency": 1.1}}
    new = baseline.make(_results(), {"model_int8.tflite": {"sha256": "a", "bytes": 1000}}, previous)
    assert {a["max_bytes"] for a in new["artifacts"].values()} == {2000}
    assert new["memory"]["tflite"]["max_peak_rss_bytes"] == 60 * common.MiB
    assert new["tolerances"]["artifact_latency"] == 1.1                  # kept, though the default is looser
    assert new["tolerances"]["photo_path"] == baseline.TOLERANCES["photo_path"]
    with pytest.raises(SystemExit, match="model_int8.tflite size 3,000 B > budget 2,000 B"):
        baseline.make(_results(bytes_each=3000), {}, previous)
    with pytest.raises(SystemExit, match="peak RSS"):
        baseline.make(_results(peak=70 * common.MiB), {}, previous)
    seeded = baseline.make(_results(), {}, None)                         # a first baseline seeds the budgets
    assert seeded["artifacts"]["model_int8.tflite"]["max_bytes"] == 64 * 1024
    assert seeded["artifacts"]["model_float.tflite"]["max_bytes"] == 4096  # 1000 × 1.25, up to 4 KiB
    assert seeded["memory"]["tflite"]["max_peak_rss_bytes"] == 64 * common.MiB


def test_committed_baseline_names_no_cpu_kind_in_any_gate():
    committed = baseline.load()
    gated = {k: committed[k] for k in ("pinned", "tolerances", "artifacts", "memory")}
    text = json.dumps(gated)
    for kind in ("avx2", "avx512_vnni", "avx_vnni", "amx", "x86_64", "aarch64"):
        assert kind not in text
    assert committed["schema"] == baseline.SCHEMA


def test_accept_pins_the_release_and_the_runtime_and_a_failed_accept_keeps_the_old(tmp_path):
    pinned = tmp_path / "reference"
    names = list(common.ARTIFACTS)
    files = reference.accept(RELEASE, names, pinned)
    assert set(files) == {*names, reference.MANIFEST, reference.RUNTIME_ZIP}
    for name in names:
        assert (pinned / name).read_bytes() == (RELEASE / name).read_bytes()
    before = {p.name: p.read_bytes() for p in pinned.iterdir()}
    broken = tmp_path / "broken"
    shutil.copytree(RELEASE, broken)
    (broken / "model_int8.onnx").unlink()
    with pytest.raises(FileNotFoundError):
        reference.accept(broken, names, pinned)
    assert {p.name: p.read_bytes() for p in pinned.iterdir()} == before
    assert not list(tmp_path.glob(".reference-new-*")) and not (tmp_path / "reference.old").exists()
    assert reference.check_pinned(files, pinned) == []
    (pinned / "model_int8.tflite").write_bytes(b"changed")
    assert reference.check_pinned(files, pinned) == [f"{pinned / 'model_int8.tflite'} does not match the sha256 "
                                                     "benchmarks/baseline.json records"]


def test_pinned_runtime_zip_is_deterministic_and_names_what_changed(tmp_path):
    packed = reference.pack_runtime()
    assert packed == reference.pack_runtime()
    source = tmp_path / "edge_runtime"
    shutil.copytree(reference.RUNTIME_SOURCE, source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "classifier.py").write_text((source / "classifier.py").read_text() + "\n# changed\n")
    (source / "extra.py").write_text("")
    assert reference.runtime_changes(packed, reference.pack_runtime(source)) == ["classifier.py (changed)",
                                                                                  "extra.py (new)"]
    assert reference.runtime_changes(packed, packed) == []


def test_pinned_runtime_imports_beside_todays_and_answers_the_same(tmp_path):
    """In a fresh process: the pinned runtime is its own package (edge_runtime_ref), with its own classes,
    and gives today's scores on the release's model."""
    pinned = tmp_path / "reference"
    reference.accept(RELEASE, ["model_int8.tflite"], pinned)
    code = f"""
import json, numpy as np
import edge_runtime.classifier
from benchmarks import reference
ref = reference.import_runtime({str(pinned)!r})
x = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
model = {str(pinned / 'model_int8.tflite')!r}
a = edge_runtime.classifier.Classifier(model).scores(x)
b = ref.classifier.Classifier(model).scores(x)
print(json.dumps({{"same": bool((a == b).all()), "ref_module": ref.classifier.__name__,
                   "distinct": ref.classifier.Classifier is not edge_runtime.classifier.Classifier}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=common.ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"same": True, "ref_module": "edge_runtime_ref.classifier",
                                                                "distinct": True}


@pytest.mark.parametrize("name", common.ARTIFACTS)
def test_graph_macs_match_the_macs_the_manifest_counted_from_keras(name):
    manifest = common.load_manifest(RELEASE)
    extra = 28 * 28 * 3 if name.endswith("_rgb.tflite") else 0   # the RGB model's luma 1×1 convolution
    assert sizes.graph_macs(RELEASE / name) == manifest["float_reference"]["macs"] + extra


def test_ratios_are_medians_over_rounds_of_block_medians():
    a = np.array([[1.0, 1.0, 9.0], [2.0, 2.0, 2.0], [1.0, 1.0, 1.0]])
    b = np.array([[0.5, 0.5, 0.5], [1.0, 1.0, 1.0], [0.1, 0.1, 0.1]])   # the last round: a burst on b alone
    assert timing.ratio({"a": a, "b": b}, "a", "b") == 2.0
    base = np.full((3, 3), 0.25)
    # (a − base) ÷ (b − base): rounds 0.75/0.25, 1.75/0.75, 0.75/(clamped ~0): median 3.0
    assert timing.excess_ratio({"a": a, "b": b, "base": base}, "a", "base", "b", "base") == pytest.approx(3.0)


def test_interleaved_runs_every_runner_in_every_round():
    calls = []
    runners = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    t = timing.interleaved(runners, {"a": 6, "b": 3, "c": 3}, rounds=3, warmup=0)
    assert {n: v.shape for n, v in t.items()} == {"a": (3, 2), "b": (3, 1), "c": (3, 1)}
    assert calls[:4] == ["a", "a", "b", "c"] and calls[4:8] == ["b", "c", "a", "a"]


def test_baseline_keeps_the_mcu_budgets_seeds_them_and_refuses_a_release_over_one():
    mcu_figures = {"model": "model_int8.tflite", "arena_bytes": 29_792, "flash_bytes": 58_962}
    previous = {"mcu": {"model": "model_int8.tflite", "max_arena_bytes": 32_768, "max_flash_bytes": 60_000}}
    kept = baseline.make({**_results(), "mcu": mcu_figures}, {}, previous)
    assert kept["mcu"] == previous["mcu"]
    assert kept["accepted"]["figures"]["mcu_arena_bytes"] == 29_792
    with pytest.raises(SystemExit, match="model_int8.tflite TFLite Micro arena 40,000 B > budget 32,768 B"):
        baseline.make({**_results(), "mcu": {**mcu_figures, "arena_bytes": 40_000}}, {}, previous)
    with pytest.raises(SystemExit, match="model_int8.tflite flash 61,000 B > budget 60,000 B"):
        baseline.make({**_results(), "mcu": {**mcu_figures, "flash_bytes": 61_000}}, {}, previous)
    with pytest.raises(SystemExit, match="arena and flash not measured .no kernel for op ATAN2."):
        baseline.make({**_results(), "mcu": {"model": "model_int8.tflite", "error": "no kernel for op ATAN2"}}, {}, previous)
    seeded = baseline.make({**_results(), "mcu": mcu_figures}, {}, None)   # 29,792 × 1.25 up to 4 KiB; the 64 KiB target
    assert seeded["mcu"] == {"model": "model_int8.tflite", "max_arena_bytes": 40_960, "max_flash_bytes": 65_536}
    assert baseline.make(_results(), {}, None)["mcu"] == {}              # no figures, no budgets yet: none made up


@pytest.mark.slow   # TensorFlow imported and a model converted: ~20 s
def test_a_wider_model_in_a_copy_of_the_release_fails_the_arena_and_flash_gates(tmp_path):
    """A deliberate regression: the compact family at widths 32-64-88 (2× the release's), int8 as the export makes
    it, in a copy of exported/; tests/test_regression.py's arena and flash gates fail on it, each with its line."""
    pytest.importorskip("tflite_micro", reason="the mcu extra: pip install 'fashion-edge[mcu]'")
    code = f"""
import numpy as np
import pipeline
from pipeline.config import ArchConfig
from pipeline.quantize import tflite
from pipeline.train import models
model = models.build("custom", 0.0, ArchConfig(widths=[32, 64, 88]))
images = np.random.default_rng(0).standard_normal((8, 28, 28, 1)).astype(np.float32)
open({str(tmp_path / 'wide.tflite')!r}, "wb").write(tflite.to_tflite_int8(model, images))
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=common.ROOT, capture_output=True)
    release = tmp_path / "exported"
    shutil.copytree(RELEASE, release)
    shutil.copy(tmp_path / "wide.tflite", release / "model_int8.tflite")
    gates = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_regression.py",
                            "-k", "mcu_bytes"], capture_output=True, text=True, cwd=common.ROOT,
                           env={**os.environ, "FASHION_EDGE_EXPORTED": str(release)})
    print(gates.stdout[-3000:])
    assert gates.returncode == 1 and "2 failed" in gates.stdout, gates.stdout[-3000:]
    for what, key in (("TFLite Micro arena", "max_arena_bytes"), ("flash", "max_flash_bytes")):
        assert re.search(rf"model_int8.tflite {what} [\d,]+ B > budget [\d,]+ B \(benchmarks/baseline.json mcu.{key}",
                         gates.stdout), what
