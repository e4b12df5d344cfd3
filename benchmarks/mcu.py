"""model_int8.tflite on a microcontroller: the smallest TensorFlow Lite Micro arena that allocates it and the flash
its C array takes, measured from the file itself (not its manifest). Bytes, the same on any CPU: measured in this
process with the `mcu` extra, not in the TensorFlow-free device venvs the timing children run in."""
from __future__ import annotations

import time
from pathlib import Path

from .common import BenchError

MODEL = "model_int8.tflite"


def measure(path: Path) -> dict:
    """{arena_bytes, flash_bytes, flash_what, tflite_micro, model_bytes, seconds} of one .tflite; BenchError when
    tflite-micro is missing or cannot run the model (the message says which)."""
    from pipeline.errors import PipelineError
    from pipeline.mcu import csource, micro
    path = Path(path)
    t0 = time.perf_counter()
    model = path.read_bytes()
    try:
        version = micro.version()
    except PipelineError as e:
        raise BenchError(f"{path.name} arena and flash: {e}") from None
    bad = micro.unsupported(model)
    if bad is not None:
        raise BenchError(f"{path}: {bad.sentence()}: no arena to measure")
    arena = micro.smallest_arena(model)   # the MCU stage's figure (manifest mcu.arena_bytes)
    flash, what = csource.flash_bytes(model)
    return {"model": path.name, "tflite_micro": version, "model_bytes": len(model), "arena_bytes": arena,
            "flash_bytes": flash, "flash_what": what, "seconds": round(time.perf_counter() - t0, 2)}
