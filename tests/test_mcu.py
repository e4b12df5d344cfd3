"""The release on a microcontroller (pipeline/mcu): TensorFlow Lite Micro's interpreter on the shipped int8 model,
the arena search, the C source compiled on the host and compared with the .tflite and edge_runtime, and a model
with an op TFLM lacks."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite_micro", reason="the mcu extra: pip install 'fashion-edge[mcu]'")

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.mcu import csource, micro, microcontroller  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RELEASE = REPO / "exported"
SUBSET = 1000
GATE = 0.999


@pytest.fixture(scope="module")
def release():
    manifest = json.loads((RELEASE / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["file"] == "model_int8.tflite")
    return (RELEASE / "model_int8.tflite").read_bytes(), manifest, entry


@pytest.fixture(scope="module")
def test_images():
    from pipeline.data import fashion_mnist
    _, _, xt, yt, _ = fashion_mnist.load_raw()
    return xt, yt


def _inputs(images, manifest, entry):
    norm = manifest["input"]["normalization"]
    return micro.int8_inputs(images, norm["mean"], norm["std"], entry["input"]["scale"], entry["input"]["zero_point"])


def test_release_in_tflite_micro_agrees_with_litert_reference_kernels(release, test_images):
    model, manifest, entry = release
    xt, yt = test_images
    inputs = _inputs(xt, manifest, entry)
    # The inputs are the ones the manifest's figures came from: LiteRT's built-in kernels count the same on all 10,000.
    reference = micro.reference_outputs(model, inputs)
    assert int((reference.argmax(1) == yt).sum()) == entry["kernels"]["reference"]["correct"]

    r = micro.compare(model, inputs[:SUBSET], yt[:SUBSET], micro.smallest_arena(model))
    print(f"\nTFLM on {SUBSET} images: {r}")
    assert r["top1_agreement"] >= GATE
    ref_correct = int((reference[:SUBSET].argmax(1) == yt[:SUBSET]).sum())
    assert r["reference_correct"] == ref_correct
    assert abs(r["correct"] - ref_correct) <= r["top1_differ"]


def test_smallest_arena_allocates_and_64_bytes_less_does_not(release):
    model, _, _ = release
    arena = micro.smallest_arena(model)
    assert micro.load(model, arena) is not None
    assert micro.load(model, arena - 64) is None
    b = micro.arena_breakdown(model, arena)
    print(f"\narena {arena} B: {b}")
    assert b["head"] + b["tail"] == b["total"] <= arena
    assert sum(r["bytes"] for r in b["persistent"].values()) <= b["tail"]


def test_op_list_is_read_from_the_flatbuffer(release):
    model, _, _ = release
    ops = micro.model_ops(model)
    assert ops["CONV_2D"] >= 1 and ops["SOFTMAX"] == 1
    assert [csource.add_method(op) for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "PADV2", "CUMSUM")] == [
        "AddConv2D", "AddDepthwiseConv2D", "AddMaxPool2D", "AddPadV2", "AddCumSum"]


# The TFLM methods a stub resolver offers (names as in tflite-micro's micro_mutable_op_resolver.h): the generated
# op_resolver.h must call real method names, and the headers are not on this machine.
_TFLM_ADD_METHODS = (
    "Abs Add AddN ArgMax ArgMin AveragePool2D BatchToSpaceNd BatchMatMul Cast Ceil Concatenation Conv2D Cos CumSum "
    "DepthToSpace DepthwiseConv2D Dequantize Elu Equal Exp ExpandDims Fill Floor FloorDiv FloorMod FullyConnected "
    "Gather GatherNd Greater GreaterEqual HardSwish L2Normalization L2Pool2D LeakyRelu Less LessEqual Log LogicalAnd "
    "LogicalNot LogicalOr Logistic LogSoftmax Maximum MaxPool2D Mean Minimum Mul Neg NotEqual Pack Pad PadV2 Prelu "
    "Quantize ReduceMax Relu Relu6 Reshape ResizeBilinear ResizeNearestNeighbor Round Rsqrt SelectV2 Shape Sin Slice "
    "Softmax SpaceToBatchNd SpaceToDepth Split SplitV Sqrt Square SquaredDifference Squeeze StridedSlice Sub Sum Svdf "
    "Tanh Transpose TransposeConv UnidirectionalSequenceLSTM Unpack ZerosLike").split()

_STUB = """// Test stub, not TFLM: the resolver's shape only, so that op_resolver.h is compiled without TFLM's headers.
#pragma once
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
namespace tflite {
template <unsigned int tOpCount>
class MicroMutableOpResolver {
 public:
  unsigned int added = 0;
%s
};
}  // namespace tflite
"""

_MAIN = r"""// Test program (not shipped): writes g_model_data back out and quantizes raw 28x28 images with fe_preprocess.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "model_data.h"
#include "model_settings.h"
#include "op_resolver.h"
#include "preprocess.h"

int main(int argc, char** argv) {
  if (argc != 5) return 2;
  FILE* f = std::fopen(argv[1], "wb");
  if (!f || std::fwrite(g_model_data, 1, g_model_data_len, f) != g_model_data_len) return 3;
  std::fclose(f);
  const long n = std::atol(argv[4]);
  FILE* in = std::fopen(argv[2], "rb");
  FILE* out = std::fopen(argv[3], "wb");
  if (!in || !out) return 4;
  uint8_t gray[FE_INPUT_HEIGHT * FE_INPUT_WIDTH];
  int8_t input[FE_INPUT_HEIGHT * FE_INPUT_WIDTH];
  for (long i = 0; i < n; ++i) {
    if (std::fread(gray, 1, sizeof gray, in) != sizeof gray) return 5;
    fe_preprocess(gray, input);
    if (std::fwrite(input, 1, sizeof input, out) != sizeof input) return 6;
  }
  std::fclose(in);
  std::fclose(out);
  fashion_edge::OpResolver resolver;
  if (fashion_edge::RegisterOps(resolver) != kTfLiteOk) return 7;
  std::printf("ops %u of %u, arena %d, labels %s .. %s, array address %% 16 = %u\n", resolver.added,
              fashion_edge::kNumOps, kArenaSize, kLabels[0], kLabels[kNumClasses - 1],
              (unsigned)((uintptr_t)g_model_data % 16));
  return 0;
}
"""

C_FLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2"]
CXX_FLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-O2"]


def _compile(cmd, cwd):
    print("$", " ".join(cmd))
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# The release's input scale is 1/(255 std) to 6 digits, so every pixel value lands within 0.07 of an int8 step and
# neither rounding nor clamping is exercised by it; "off-grid" settings (steps between integers, clamping at both
# ends) check the C formula where it can go wrong.
@pytest.mark.parametrize("settings", ["release", "off-grid"])
def test_c_source_compiles_and_matches_the_tflite_and_edge_runtime(release, test_images, tmp_path, settings):
    if not (shutil.which("gcc") and shutil.which("g++")):
        pytest.skip("no host gcc/g++")
    model, manifest, entry = release
    xt, _ = test_images
    ops = micro.model_ops(model)
    norm = dict(manifest["input"]["normalization"])
    entry = {"input": dict(entry["input"])}
    if settings == "off-grid":
        norm.update(mean=0.5, std=0.25)
        entry["input"].update(scale=0.0137, zero_point=7)
    src = tmp_path / "mcu"
    csource.write(src, model, labels=manifest["labels"], mean=norm["mean"], std=norm["std"],
                  scale=entry["input"]["scale"], zero_point=entry["input"]["zero_point"], ops=ops, arena_bytes=29792)
    stub = tmp_path / "stub" / "tensorflow" / "lite" / "micro"
    stub.mkdir(parents=True)
    methods = "\n".join(f"  TfLiteStatus Add{m}() {{ return added < tOpCount ? (++added, kTfLiteOk) : kTfLiteError; }}"
                        for m in _TFLM_ADD_METHODS)
    (stub / "micro_mutable_op_resolver.h").write_text(_STUB % methods)
    (tmp_path / "main.cc").write_text(_MAIN)

    for tool in ("gcc", "g++"):
        print(subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.splitlines()[0])
    _compile(["gcc", *C_FLAGS, "-c", str(src / "preprocess.c"), "-o", "preprocess.o"], tmp_path)
    _compile(["g++", *CXX_FLAGS, "-c", str(src / "model_data.cc"), "-o", "model_data.o"], tmp_path)
    _compile(["g++", *CXX_FLAGS, f"-I{src}", f"-I{tmp_path / 'stub'}", "-c", "main.cc", "-o", "main.o"], tmp_path)
    _compile(["g++", "main.o", "model_data.o", "preprocess.o", "-lm", "-o", "check"], tmp_path)

    # 200 real test images, and one image holding every pixel value 0..255: the conversion is per pixel, so the
    # latter pins it for every possible input value.
    every_value = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(1, 28, 28)
    images = np.concatenate([xt[:200], every_value])
    images.tofile(tmp_path / "images.raw")
    run = subprocess.run([str(tmp_path / "check"), "model.out", "images.raw", "inputs.out", str(len(images))],
                         cwd=tmp_path, capture_output=True, text=True)
    print(run.stdout.strip())
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "model.out").read_bytes() == model
    ours = np.fromfile(tmp_path / "inputs.out", np.int8).reshape(len(images), 28, 28, 1)
    theirs = micro.int8_inputs(images, norm["mean"], norm["std"], entry["input"]["scale"], entry["input"]["zero_point"])
    assert np.array_equal(ours, theirs), f"{int((ours != theirs).sum())} int8 inputs differ"
    if settings == "off-grid":
        assert {-128, 127} <= set(np.unique(ours).tolist())   # clamped at both ends
    assert f"ops {len(ops)} of {len(ops)}," in run.stdout and "% 16 = 0" in run.stdout
    assert f"arena {csource.arena_to_reserve(29792)}," in run.stdout


def test_check_release_writes_the_source_and_the_manifest_block(release, test_images, tmp_path):
    model, manifest, _ = release
    xt, yt = test_images
    (tmp_path / "model_int8.tflite").write_bytes(model)
    lines = []
    block = microcontroller.check_release(tmp_path, manifest, xt[:300], yt[:300], min_agreement=GATE, require=False,
                                log=lambda s, m: lines.append(m))
    print(json.dumps({k: v for k, v in block.items() if k != "fits"}, indent=1))
    assert block["for_microcontrollers"] and block["why_not"] is None
    assert block["agreement"]["images"] == 300 and block["source"] == "mcu/"
    assert block["model_bytes"] <= block["flash_bytes"] < block["model_bytes"] + 64
    # the written model_data.cc compiles to the figure the benchmark's flash gate measures from the model alone
    assert csource.object_bytes(tmp_path / "mcu") == block["flash_bytes"]
    assert csource.flash_bytes(model) == (block["flash_bytes"], block["flash_what"])
    assert sorted(p.name for p in (tmp_path / "mcu").iterdir()) == sorted(csource.FILES)
    assert any(row["board"].startswith("Arduino Nano 33") and row["fits"] for row in block["fits"])
    json.dumps(block)   # goes into the manifest as it is


@pytest.fixture(scope="module")
def atan2_model():
    """A float Fashion-MNIST-shaped tf_keras model with ATAN2, an op TFLite Micro has no kernel for."""
    import tensorflow as tf
    import tf_keras as keras
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Lambda(lambda t: tf.math.atan2(t, 1.0 + t))(inp)
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    return tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out)).convert()


def test_model_with_an_op_tflite_micro_lacks_is_marked_not_for_microcontrollers(atan2_model, release, tmp_path):
    assert micro.unsupported(atan2_model).op == "ATAN2"
    _, manifest, _ = release
    (tmp_path / "model_int8.tflite").write_bytes(atan2_model)
    (tmp_path / "mcu").mkdir()   # an earlier release's source must not survive
    images, labels = np.zeros((3, 28, 28), np.uint8), np.zeros(3, np.int64)
    lines = []
    block = microcontroller.check_release(tmp_path, manifest, images, labels, GATE, require=False,
                                log=lambda s, m: lines.append(m))
    assert block["for_microcontrollers"] is False and block["unsupported_op"] == "ATAN2"
    assert "ATAN2" in block["why_not"] and block["source"] is None and not (tmp_path / "mcu").exists()
    assert lines == ["not for microcontrollers: TFLite Micro has no kernel for op ATAN2"]

    with pytest.raises(micro.MicroUnsupportedError) as e:
        microcontroller.check_release(tmp_path, manifest, images, labels, GATE, require=True, log=lambda s, m: None)
    assert isinstance(e.value, PipelineError) and "ATAN2" in str(e.value) and "\n" not in str(e.value)


def test_report_section_names_the_figures_and_the_boards(release, tmp_path):
    from pipeline.release.report import mcu_section
    model, manifest, _ = release
    (tmp_path / "model_int8.tflite").write_bytes(model)
    from pipeline.data import fashion_mnist
    _, _, xt, yt, _ = fashion_mnist.load_raw()
    block = microcontroller.check_release(tmp_path, manifest, xt[:50], yt[:50], GATE, require=False, log=lambda s, m: None)
    text = "\n".join(mcu_section(block))
    print(text)
    assert text.startswith("## On a microcontroller") and f"{block['arena_bytes']:,} bytes" in text
    assert "| Arduino Nano 33 BLE Sense |" in text and "not built for or run on a board" in text
    bad = {"tflite_micro": block["tflite_micro"], "ops": {"ATAN2": 1}, "why_not": "TFLite Micro has no kernel for op ATAN2"}
    assert "**Not for microcontrollers:** TFLite Micro has no kernel for op ATAN2" in "\n".join(mcu_section(bad))


def _crash():
    import os
    import signal
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_crash_of_the_tflm_wrapper_is_an_error_of_the_stage_not_the_end_of_the_export():
    """TFLM's wrapper segfaulted on a tutorial model's allocation: everything TFLM runs goes through a forked
    child, whose crash (here a real SIGSEGV) is a MicroCrashError in the caller, which lives on."""
    with pytest.raises(micro.MicroCrashError, match="crashed \\(SIGSEGV\\)"):
        micro.isolated(_crash)
    assert micro.isolated(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        micro.isolated(divmod, 1, 0)
