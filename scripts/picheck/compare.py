"""Running and comparing: the test images, the installed edge-classify in the root against x86, and timing."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import statistics
import struct
import subprocess
import time
from pathlib import Path

from .common import CheckError

DATA_DIRS = ["/usr/share/datasets/fashion-mnist"]
PHOTO_SIZE = 300        # px: photo.jpg is a test image drawn as a photo (dark garment on a light ground)


def find_data_dir(explicit: str | None) -> Path:
    candidates = [explicit] if explicit else [os.environ.get("FASHION_MNIST_DIR"), *DATA_DIRS]
    for d in candidates:
        if d and (Path(d) / "t10k-images-idx3-ubyte.gz").is_file() and (Path(d) / "t10k-labels-idx1-ubyte.gz").is_file():
            return Path(d)
    raise CheckError("Fashion-MNIST test set not found (t10k-*-ubyte.gz in $FASHION_MNIST_DIR or "
                     f"{DATA_DIRS[0]}): run `make data` (Debian package dataset-fashion-mnist)")


def read_test_set(data_dir: Path, n: int):
    import numpy as np

    with gzip.open(data_dir / "t10k-images-idx3-ubyte.gz", "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051 or (rows, cols) != (28, 28):
            raise CheckError(f"{data_dir}/t10k-images-idx3-ubyte.gz: not an IDX image file (magic {magic})")
        images = np.frombuffer(f.read(min(n, count) * 784), np.uint8).reshape(-1, 28, 28)
    with gzip.open(data_dir / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        magic, count = struct.unpack(">II", f.read(8))
        if magic != 2049:
            raise CheckError(f"{data_dir}/t10k-labels-idx1-ubyte.gz: not an IDX label file (magic {magic})")
        labels = np.frombuffer(f.read(min(n, count)), np.uint8)
    return images, labels


def write_pngs(images, out_dir: Path) -> list[str]:
    from PIL import Image

    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    names = []
    for i, img in enumerate(images):
        im = Image.fromarray(img)
        assert im.mode == "L" and im.size == (28, 28)
        name = f"t10k_{i:05d}.png"
        im.save(out_dir / name)
        names.append(name)
    return names



def write_photo(image, path: Path) -> None:
    """A dataset image as a phone photo would show it: upscaled, dark on light, RGB, JPEG. It takes the photo
    path of the runtime (cut-out and the paper's conversion), not the 28x28 passthrough."""
    from PIL import Image

    Image.fromarray(255 - image).resize((PHOTO_SIZE, PHOTO_SIZE), Image.Resampling.BICUBIC).convert("RGB") \
        .save(path, "JPEG", quality=90)


def classify_photo(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    """The label `edge-classify photo.jpg` prints (its plain output: path<TAB>label score, ...)."""
    res = subprocess.run(cmd, text=True, capture_output=True, cwd=cwd)
    if res.returncode != 0 or "\t" not in res.stdout:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        raise CheckError(f"{what}: `edge-classify photo.jpg` exited {res.returncode}\n{tail}")
    best = res.stdout.strip().splitlines()[-1].split("\t", 1)[1].split(",")[0]
    return best.rsplit(" ", 1)[0]


def parse_json_lines(text: str, what: str) -> dict[str, dict]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        if "top_k" not in obj or not obj["top_k"]:
            raise CheckError(f"{what}: a result line without top_k: {line}")
        out[Path(obj["path"]).name] = obj["top_k"][0]
    return out


def classify_cli(cmd: list[str], what: str, expected: int, cwd: Path | None = None) -> tuple[dict, float]:
    t = time.monotonic()
    res = subprocess.run(cmd, text=True, capture_output=True, cwd=cwd)
    wall = time.monotonic() - t
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        raise CheckError(f"{what}: `edge-classify --json` exited {res.returncode}\n{tail}")
    results = parse_json_lines(res.stdout, what)
    if len(results) != expected:
        raise CheckError(f"{what}: {len(results)} results for {expected} images\n{res.stderr[-2000:]}")
    return results, wall


# Run inside the root with the installed venv's Python (and on the host for reference): cold start and
# per-image latency through the API.
TIMING_SNIPPET = r"""
import json, sys, time
t0 = time.perf_counter()
from edge_runtime.classifier import Classifier
t1 = time.perf_counter()
model, files = sys.argv[1], sys.argv[2:]
clf = Classifier(model, num_threads=1)
t2 = time.perf_counter()
clf.classify(files[0], top_k=1)
t3 = time.perf_counter()
first_done = time.time()
lat = []
for f in files:
    s = time.perf_counter()
    clf.classify(f, top_k=1)
    lat.append(time.perf_counter() - s)
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_s": t3 - t2, "first_done": first_done,
                  "lat_s": lat}))
"""


def timing(cmd: list[str], what: str, cwd: Path | None = None) -> dict:
    spawn = time.time()
    res = subprocess.run(cmd, text=True, capture_output=True, cwd=cwd)
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        raise CheckError(f"{what}: timing run exited {res.returncode}\n{tail}")
    d = json.loads(res.stdout.strip().splitlines()[-1])
    lat = sorted(x * 1000 for x in d.pop("lat_s"))
    return {
        "cold_start_s": round(d["first_done"] - spawn, 3),  # process start -> first answer
        "import_s": round(d["import_s"], 3), "load_s": round(d["load_s"], 3), "first_s": round(d["first_s"], 3),
        "per_image_ms_median": round(statistics.median(lat), 2),
        "per_image_ms_p90": round(lat[int(0.9 * (len(lat) - 1))], 2),
        "images": len(lat),
    }

