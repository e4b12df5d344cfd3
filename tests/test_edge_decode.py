"""edge_runtime.decode: which files are read, at what size, and what is refused (one line naming the file)."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from PIL import Image

from edge_runtime import decode, preprocess
from edge_runtime.decode import decode_image, load_image
from edge_runtime.errors import EdgeError

try:
    from edge_models import REPO
    from phone_photos import scene as phone_photo_scene
except ImportError:  # tests/ collected as a package
    from tests.edge_models import REPO
    from tests.phone_photos import scene as phone_photo_scene


def garment_photo(size=(800, 600)) -> Image.Image:
    """The phone photos' scene (a dark trouser on a light table) as an RGB photo of `size`."""
    return phone_photo_scene().resize(size)


# --- files that must be refused, naming the file -------------------------------------------------


def test_truncated_jpeg_names_the_file(tmp_path):
    buf = io.BytesIO()
    garment_photo((200, 150)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(EdgeError, match="cut.jpg.*truncated"):
        load_image(path)


def test_empty_file_names_the_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(EdgeError, match=r"empty.png: empty file \(0 bytes\)"):
        load_image(path)


def test_non_image_names_the_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n")
    with pytest.raises(EdgeError, match="notes.png: not an image"):
        load_image(path)


def test_missing_file_and_folder_name_the_path(tmp_path):
    with pytest.raises(EdgeError, match="nope.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(EdgeError, match="is a directory"):
        load_image(tmp_path)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width×height 8-bit gray pixels, with a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_without_allocating(tmp_path, phone_photos):
    """Run with the address space capped ~200 MB above the start: decoding any bomb (10 GB, 81 MB, 268 MB
    and 324 MB of pixels or coefficients) would fail with MemoryError instead of the 'refused' EdgeError,
    while the 200 Mpx baseline JPEG, decoded at 1/8 scale, fits."""
    (tmp_path / "huge.png").write_bytes(_png_header_only(100_000, 100_000))  # PIL's own limit trips
    (tmp_path / "big.png").write_bytes(_png_header_only(9_000, 9_000))  # under PIL's, over ours (64 Mpx)
    Image.fromarray(np.zeros((1000, 1000), np.uint8)).save(tmp_path / "fine.png")
    code = textwrap.dedent(
        """
        import resource, sys
        from edge_runtime.decode import load_image
        from edge_runtime.errors import EdgeError
        vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 200 * 2**20, resource.RLIM_INFINITY))
        for path in sys.argv[1:]:
            try:
                print(path, "LOADED", load_image(path).size)
            except EdgeError as e:
                print(e)
        """
    )
    paths = [tmp_path / "huge.png", tmp_path / "big.png", phone_photos / "bomb-65500x65500.jpg",
             phone_photos / "progressive-12000x9000.jpg", tmp_path / "fine.png", phone_photos / "photo-16320x12240.jpg"]
    done = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{paths[0]}: refused, image declares 10000 Mpx, over the 64 Mpx limit")
    assert lines[1].startswith(f"{paths[1]}: refused, PNG image declares 9000×9000 = 81 Mpx, over the 64 Mpx limit")
    assert lines[2] == (f"{paths[2]}: refused, JPEG declares 65500×65500 = 4290 Mpx; decoded at 1/8 scale it would "
                        "still be 8188×8188 = 67 Mpx, over the 64 Mpx limit (possible decompression bomb)")
    assert lines[3].startswith(f"{paths[3]}: refused, progressive JPEG declares 12000×9000 = 108 Mpx, over the 64 Mpx")
    assert lines[4] == f"{paths[4]} LOADED (1000, 1000)"
    assert lines[5] == f"{paths[5]} LOADED (2040, 1530)"


# --- JPEGs are judged by what libjpeg decodes ------------------------------------------------------


def test_phone_jpegs_over_pillows_limit_decode_at_reduced_scale(phone_photos):
    sizes = {(4000, 3000): (500, 375), (12000, 9000): (1500, 1125), (16320, 12240): (2040, 1530)}
    for (w, h), decoded in sizes.items():
        path = phone_photos / f"photo-{w}x{h}.jpg"
        assert load_image(path).size == decoded
        assert decode_image(path.read_bytes(), "upload").size == decoded
    # Pillow's own check stays as it was for everything else in the process
    assert Image.MAX_IMAGE_PIXELS == 89_478_485
    with pytest.raises(Image.DecompressionBombError):
        Image.open(phone_photos / "photo-16320x12240.jpg")


def test_a_png_over_the_limit_is_refused_though_it_is_a_real_picture(phone_photos):
    path = phone_photos / "plain-12000x9000.png"
    with pytest.raises(EdgeError) as refused:
        load_image(path)
    assert str(refused.value) == (f"{path}: refused, image declares 108 Mpx, over the 64 Mpx limit (possible "
                                  "decompression bomb)")
    with pytest.raises(EdgeError, match=r"^upload: refused, image declares 108 Mpx"):
        decode_image(path.read_bytes(), "upload")


def test_progressive_jpeg_under_the_limit_still_decodes_small(tmp_path):
    path = tmp_path / "progressive.jpg"
    garment_photo((2000, 1500)).save(path, quality=80, progressive=True)
    assert load_image(path).size == (250, 188)


def test_the_reduced_decode_keeps_what_the_conversion_uses():
    assert decode.DRAFT_SIZE == preprocess.WORK_SIZE


# --- HEIC / HEIF ----------------------------------------------------------------------------------


def test_heic_is_decoded_from_its_thumbnail_when_it_has_one(heic_files):
    assert load_image(heic_files / "thumbnail.heic").size == (320, 240)
    assert load_image(heic_files / "plain.heic").size == (800, 600)
    assert decode_image((heic_files / "thumbnail.heic").read_bytes()).size == (320, 240)


def test_truncated_heic_names_the_file_in_one_line(heic_files, tmp_path):
    data = (heic_files / "plain.heic").read_bytes()
    path = tmp_path / "cut.heic"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgeError) as refused:
        load_image(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: cannot decode image, the file is truncated or corrupt") and "\n" not in message


def test_avif_is_not_taken_for_heic(tmp_path):
    from PIL import features
    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    garment_photo((160, 120)).save(tmp_path / "photo.avif")
    assert not decode._is_heif((tmp_path / "photo.avif").read_bytes()[:64])
    assert load_image(tmp_path / "photo.avif").size == (160, 120)


def test_a_broken_pillow_heif_says_so_rather_than_asking_for_the_extra(heic_files, monkeypatch):
    class BrokenLibrary:                  # what a pillow-heif whose shared library fails to load raises
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "pillow_heif":
                raise ImportError("libheif.so.1: cannot open shared object file")
            return None

    monkeypatch.setattr(decode, "_heif_class", None)
    monkeypatch.delitem(sys.modules, "pillow_heif", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenLibrary, *sys.meta_path])
    path = heic_files / "plain.heic"
    with pytest.raises(EdgeError) as refused:
        load_image(path)
    assert str(refused.value) == (f"{path}: HEIC/HEIF photo, but pillow-heif is installed and cannot be imported "
                                  "(libheif.so.1: cannot open shared object file)")
