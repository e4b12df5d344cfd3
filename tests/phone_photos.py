"""Photos as big as phones take them, made for the tests in a process of their own.

Run as a script (`python tests/phone_photos.py OUT_DIR`) it writes one scene (a Fashion-MNIST trouser, dark on a
light, slightly uneven background) as baseline JPEGs of 4000×3000 (12 Mpx), 12000×9000 (a phone's 108 Mpx mode)
and 16320×12240 (200 Mpx), quality 70, plus files the runtime must refuse: a 12000×9000 PNG, a JPEG whose header
declares 65500×65500 and a progressive JPEG whose header declares 12000×9000. The 200 Mpx image is 800 MB in
memory while it is written: the tests call this in a subprocess so that the test process never holds it.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

SIZES = ((4000, 3000), (12000, 9000), (16320, 12240))
LABEL = 1                                   # Trouser
BASE = (1020, 765)                          # the scene is drawn at 1/16 of 16320×12240, then scaled up


def jpeg_name(size: tuple[int, int]) -> str:
    return f"photo-{size[0]}x{size[1]}.jpg"


def make_all(out_dir: Path) -> Path:
    """Write every file into `out_dir` in a fresh process; returns `out_dir`."""
    repo = str(Path(__file__).resolve().parents[1])      # this checkout's edge_runtime, as in the test process
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(out_dir)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": path})
    if done.returncode != 0:
        raise RuntimeError(f"making the phone-sized photos failed:\n{done.stderr[-4000:]}")
    return out_dir


def scene() -> Image.Image:
    """The trouser on its background at BASE size (RGB)."""
    try:
        from edge_models import fashion_mnist
    except ImportError:  # run from the repository root as tests/phone_photos.py
        from tests.edge_models import fashion_mnist
    images, labels = fashion_mnist("t10k", 200)
    garment = images[np.flatnonzero(labels == LABEL)[0]]
    w, h = BASE
    rng = np.random.default_rng(0)
    # A light table, lit unevenly: low-frequency noise of a few levels, as in a phone's photo of a plain surface.
    noise = Image.fromarray(rng.normal(0, 4, (h // 32, w // 32)).astype(np.float32), "F")
    shade = np.asarray(noise.resize(BASE, Image.Resampling.BICUBIC))
    canvas = (np.array([236, 232, 226], np.float32) + shade[..., None]).clip(0, 255)
    side = h * 3 // 4
    cloth = np.asarray(Image.fromarray(255 - garment).resize((side, side), Image.Resampling.BICUBIC)
                       .filter(ImageFilter.GaussianBlur(2)), np.float32)[..., None] / 255   # 1 = table, 0 = cloth
    y0, x0 = (h - side) // 2, (w - side) // 2
    region = canvas[y0 : y0 + side, x0 : x0 + side]
    canvas[y0 : y0 + side, x0 : x0 + side] = region * cloth + np.array([40, 48, 70], np.float32) * (1 - cloth)
    return Image.fromarray(np.rint(canvas).astype(np.uint8))


def jpeg_declaring(width: int, height: int, progressive: bool = False) -> bytes:
    """A small real JPEG whose frame header (SOF) is rewritten to declare width×height: a decoder that
    trusted it would allocate for that size before finding the data short."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 180, 160)).save(buf, "JPEG", progressive=progressive)
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def write(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    base = scene()
    for w, h in SIZES:
        # Smooth up to a quarter of the size, then blocks of 4×4 pixels: the same JPEG to the eye, in half the time.
        big = base.resize((w // 4, h // 4), Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.NEAREST)
        big.save(out_dir / jpeg_name((w, h)), quality=70)
        del big
    Image.new("1", (12000, 9000), 1).save(out_dir / "plain-12000x9000.png")     # 1 bit per pixel: quick to write
    (out_dir / "bomb-65500x65500.jpg").write_bytes(jpeg_declaring(65500, 65500))
    (out_dir / "progressive-12000x9000.jpg").write_bytes(jpeg_declaring(12000, 9000, progressive=True))


if __name__ == "__main__":
    write(Path(sys.argv[1]))
