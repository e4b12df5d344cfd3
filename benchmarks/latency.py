"""Batch-1 latency: each artifact against its pinned reference, the runtime's own overhead against the pinned
runtime's, and (information only) every artifact against model_float.tflite and Keras.

Gated figures are ratios of the same work before and after a change, timed together (see timing.py):
- artifact: the bare interpreter call on today's file ÷ the same call on its pinned copy;
- overhead: what `Classifier.scores` adds to the bare call (normalize, quantize, dequantize, calibrate),
  today's runtime ÷ the pinned runtime's, both on the pinned model.
With nothing changed both sides run the same instructions, so the ratio is 1 on any CPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from . import reference, timing

REFERENCE = "model_float.tflite"     # the informational ratios are taken against this one
OVERHEAD_MODELS = ("model_int8.tflite", "model_int8.onnx")   # what users run; one per backend


def sample_images(n: int, seed: int = 0) -> np.ndarray:
    """Random uint8 images: timing does not depend on the pixels (dense kernels, no early exit)."""
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def bare_runner(path: Path, batch: int = 1, threads: int = 1) -> Callable[[], np.ndarray]:
    """The interpreter alone, opened as edge_runtime.backends opens it (LiteRT with its default XNNPACK
    kernels, or onnxruntime's CPU provider), on a random input of the model's own shape and type."""
    path = Path(path)
    rng = np.random.default_rng(0)

    def sample(shape, dtype):
        shape = (batch, *[max(int(d), 1) for d in list(shape)[1:]])
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    if path.suffix == ".tflite":
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
        except ModuleNotFoundError:
            from tflite_runtime.interpreter import Interpreter, OpResolverType
        interp = Interpreter(model_path=str(path), num_threads=threads,
                             experimental_op_resolver_type=OpResolverType.AUTO)
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        if batch != inp["shape"][0]:
            interp.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]], strict=False)
        interp.allocate_tensors()
        x, i_in, i_out = sample(inp["shape"], inp["dtype"]), inp["index"], out["index"]

        def run():
            interp.set_tensor(i_in, x)
            interp.invoke()
            return interp.get_tensor(i_out)
        return run
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    dtype = {"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}[inp.type]
    feed, names = {inp.name: sample([d if isinstance(d, int) else 1 for d in inp.shape], dtype)}, [out.name]
    return lambda: session.run(names, feed)[0]


def edge_runner(path: Path, images: np.ndarray, runtime=None, threads: int = 1) -> Callable[[], np.ndarray]:
    """`Classifier.scores` of `runtime` (today's edge_runtime by default, or the pinned one) on uint8 images."""
    if runtime is None:
        import edge_runtime as runtime
    clf = runtime.classifier.Classifier(str(path), num_threads=threads)
    return lambda: clf.scores(images)


def artifacts_vs_reference(release: Path, names: list[str], calls: int = 3000, rounds: int = 20,
                           pinned: Path = reference.REFERENCE_DIR) -> dict:
    """Each artifact's bare batch-1 call ÷ its pinned copy's, all timed in one interleaved run."""
    runners = {}
    for name in names:
        runners[name] = bare_runner(Path(release) / name)
        runners["pinned " + name] = bare_runner(reference.path(name, pinned))
    t = timing.interleaved(runners, calls, rounds)
    return {name: {"ratio": timing.ratio(t, name, "pinned " + name),
                   "release": timing.summary(t[name]), "pinned": timing.summary(t["pinned " + name])}
            for name in names}


def overhead_vs_reference(calls: int = 3000, rounds: int = 20, pinned: Path = reference.REFERENCE_DIR) -> dict:
    """What `Classifier.scores` on one 28×28 image adds to the bare interpreter call, today's runtime ÷ the
    pinned runtime's, on the pinned models: the runtime's own per-call cost, whatever the model costs."""
    import edge_runtime
    import edge_runtime.classifier  # noqa: F401
    ref = reference.import_runtime(pinned)
    one = sample_images(1)
    out = {}
    for name in OVERHEAD_MODELS:
        model = reference.path(name, pinned)
        runners = {"bare": bare_runner(model), "today": edge_runner(model, one, edge_runtime),
                   "pinned": edge_runner(model, one, ref)}
        t = timing.interleaved(runners, calls, rounds)
        bare = np.median(t["bare"], axis=1)
        excess = {side: float(np.median(np.median(t[side], axis=1) - bare) * 1e6) for side in ("today", "pinned")}
        out[name] = {
            "ratio": timing.excess_ratio(t, "today", "bare", "pinned", "bare"),
            "today_over_bare": timing.ratio(t, "today", "bare"),
            "pinned_over_bare": timing.ratio(t, "pinned", "bare"),
            "today_overhead_us": excess["today"], "pinned_overhead_us": excess["pinned"],   # medians over rounds
            "bare": timing.summary(t["bare"]), "today": timing.summary(t["today"]),
        }
    return out


# --- information about the machine (make bench; never gated: these move with the CPU) ------------------

KERAS = "keras_float"    # the row of the float Keras model
BATCH = 64               # throughput batch size


def informational(release: Path, names: list[str], keras_run_b1=None, keras_run_batch=None, calls: int = 2000,
                  keras_calls: int = 1000, batch_calls: int = 200, keras_batch_calls: int = 60,
                  rounds: int = 20) -> dict:
    """Per artifact: batch-1 `Classifier.scores` and bare-call latency, the ratio to model_float.tflite's,
    batch-64 throughput; and Keras predict (its runners given) for the same images. The RGB model is timed
    bare only (edge_runtime reads grayscale models)."""
    edge = [n for n in names if not n.endswith("_rgb.tflite")]
    one, many = sample_images(1), sample_images(BATCH, seed=1)
    b1 = {n: edge_runner(Path(release) / n, one) for n in edge}
    calls_b1 = {n: calls for n in edge}
    if keras_run_b1 is not None:
        b1[KERAS], calls_b1[KERAS] = keras_run_b1, keras_calls
    lat = timing.interleaved(b1, calls_b1, rounds)
    bare = timing.interleaved({n: bare_runner(Path(release) / n) for n in names}, calls, rounds)
    b64 = {n: edge_runner(Path(release) / n, many) for n in edge}
    calls_b64 = {n: batch_calls for n in edge}
    if keras_run_batch is not None:
        b64[KERAS], calls_b64[KERAS] = keras_run_batch, keras_batch_calls
    thr = timing.interleaved(b64, calls_b64, rounds, warmup=3)
    rows = {}
    for n in [*names, *([KERAS] if KERAS in lat else [])]:
        row = {}
        if n in lat:
            row["latency_b1"] = timing.summary(lat[n])
            row["ratio_vs_float_tflite"] = timing.ratio(lat, n, REFERENCE) if REFERENCE in lat else None
            row["throughput_b64_ips"] = BATCH / float(np.median(thr[n]))
        if n in bare:
            row["invoke_b1"] = timing.summary(bare[n])
            if n in lat:
                row["classifier_over_bare"] = timing.ratio({"a": lat[n], "b": bare[n]}, "a", "b")
        rows[n] = row
    ratios = {f"int8_over_float_{fmt}": timing.ratio(lat, f"model_int8.{fmt}", f"model_float.{fmt}")
              for fmt in ("tflite", "onnx") if f"model_int8.{fmt}" in lat and f"model_float.{fmt}" in lat}
    if KERAS in lat:
        ratios["keras_predict_over_edge"] = {n: timing.ratio(lat, KERAS, n) for n in edge}
    return {"rows": rows, "ratios": ratios}
