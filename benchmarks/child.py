"""The fresh process the timing gates run in, as on a device: no TensorFlow loaded (its thread pools would
share the cores), one BLAS and OpenCV thread. `in_fresh_process(task, **args)` runs one task here."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import device_env, run_json


def _against_references(release: str, names: list[str], pinned: str, calls: int, rounds: int,
                        photo_rounds: int) -> dict:
    from . import latency, photo
    photo.one_thread_opencv()
    out = {"artifacts": latency.artifacts_vs_reference(Path(release), names, calls, rounds, Path(pinned)),
           "overhead": latency.overhead_vs_reference(2 * calls, rounds, Path(pinned)), "photo": None}
    photos = photo.dev_photos()
    if photos and photo_rounds:
        out["photo"] = photo.photo_path_vs_reference(photos, photo_rounds, Path(pinned))
    return out


def _photo_info(model: str, rounds: int, camera_frames: int) -> dict:
    from . import photo
    photo.one_thread_opencv()
    photos = photo.dev_photos()
    if not photos:
        return {"stages": None, "camera": None}
    return {"stages": photo.photo_stages(Path(model), photos, rounds),
            "camera": photo.camera_fps(Path(model), photos, camera_frames) if camera_frames else None}


TASKS = {"against_references": _against_references, "photo_info": _photo_info}


def in_fresh_process(task: str, **args) -> dict:
    """TASKS[task](**args) in a fresh device-like process; its JSON result."""
    out = run_json([sys.executable, "-m", "benchmarks.child", task, json.dumps(args)], device_env(), task)
    out.pop("process_s", None)
    return out


if __name__ == "__main__":
    print(json.dumps(TASKS[sys.argv[1]](**json.loads(sys.argv[2]))))
