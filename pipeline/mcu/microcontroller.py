"""The MCU stage: the release's int8 model in TensorFlow Lite Micro — parity, arena, flash, ops, board fit and the
C source. A microcontroller is an extra target: a model TFLM cannot run is marked, not fatal, unless required."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from pipeline.errors import GateError, PipelineError
from pipeline.mcu import boards, csource, micro

MODEL = "model_int8.tflite"
SOURCE_DIR = "mcu"


def _int8_entry(manifest: dict) -> dict:
    return next(a for a in manifest["artifacts"] if a["file"] == MODEL)


def check_release(folder: Path, manifest: dict, x_test: np.ndarray, y_test: np.ndarray, min_agreement: float,
                  require: bool, log) -> dict:
    """Run `folder`/model_int8.tflite in TFLite Micro on the test images, measure its arena and flash, write the C
    source to `folder`/mcu/ and return the manifest's `mcu` block. A model TFLM cannot run, or whose top-1
    agreement with LiteRT's built-in kernels is below `min_agreement`, is marked "not for microcontrollers"
    (no mcu/ folder); with `require` it raises instead (MicroUnsupportedError / GateError)."""
    model = (folder / MODEL).read_bytes()
    try:
        tflm = micro.version()   # first: a missing extra is named, not a bare ImportError
    except PipelineError as e:
        if require:
            raise
        log("mcu", f"skipped: {e}")
        return {"tflite_micro": None, "model": MODEL, "for_microcontrollers": False, "why_not": str(e), "source": None}
    ops = micro.model_ops(model)
    block = {"tflite_micro": tflm, "model": MODEL, "model_bytes": len(model), "ops": ops,
             "for_microcontrollers": False, "why_not": None, "source": None}
    shutil.rmtree(folder / SOURCE_DIR, ignore_errors=True)   # never leave C source of an earlier model behind

    bad = micro.unsupported(model)
    if bad is not None:
        block["why_not"] = bad.sentence()
        block["unsupported_op"] = bad.op
        if require:
            raise micro.MicroUnsupportedError(f"{MODEL}: {bad.sentence()} (--require-mcu)")
        log("mcu", f"not for microcontrollers: {bad.sentence()}")
        return block

    entry, norm = _int8_entry(manifest), manifest["input"]["normalization"]
    scale, zero_point = entry["input"]["scale"], entry["input"]["zero_point"]
    inputs = micro.int8_inputs(x_test, norm["mean"], norm["std"], scale, zero_point)
    try:
        arena = micro.smallest_arena(model)
        breakdown = micro.arena_breakdown(model, arena)
        agreement = micro.compare(model, inputs, np.asarray(y_test), arena)
    except micro.MicroCrashError as e:       # the wrapper crashed its (forked) process: this export goes on
        if require:
            raise micro.MicroCrashError(f"{MODEL}: {e} (--require-mcu)") from None
        block["why_not"] = f"{e} while measuring the model"
        log("mcu", f"not for microcontrollers: {block['why_not']}")
        return block
    log("mcu", f"TFLite Micro {block['tflite_micro']} on {agreement['images']} images: accuracy "
               f"{agreement['accuracy']:.2%} (LiteRT reference kernels {agreement['reference_accuracy']:.2%}), "
               f"top-1 agreement {agreement['top1_agreement']:.2%}, {agreement['outputs_differ']} int8 output vectors "
               f"differ; {agreement['tflm_ms_per_image']} ms/image; arena {arena} B")

    csource.write(folder / SOURCE_DIR, model, labels=manifest["labels"], mean=norm["mean"], std=norm["std"],
                  scale=scale, zero_point=zero_point, ops=ops, arena_bytes=arena,
                  height=manifest["input"]["height"], width=manifest["input"]["width"])
    flash, flash_what = csource.flash_bytes(model)   # the figure the benchmark gates (benchmarks/mcu.py)
    reserve = csource.arena_to_reserve(arena)
    block.update(
        arena_bytes=arena, arena_reserve_bytes=reserve, arena_breakdown=breakdown,
        flash_bytes=flash, flash_what=flash_what,
        agreement=agreement, min_agreement=min_agreement,
        fits=boards.fit(reserve, flash), app_share=boards.APP_SHARE, source=f"{SOURCE_DIR}/")

    if agreement["top1_agreement"] < min_agreement:
        why = (f"top-1 agreement with LiteRT's built-in kernels {agreement['top1_agreement']:.2%} is below the gate "
               f"{min_agreement:.2%}")
        if require:
            raise GateError(f"{MODEL} in TFLite Micro: {why} (--require-mcu)")
        block["why_not"] = why
        block["source"] = None
        shutil.rmtree(folder / SOURCE_DIR, ignore_errors=True)
        log("mcu", f"not for microcontrollers: {why}")
        return block
    block["for_microcontrollers"] = True
    return block
