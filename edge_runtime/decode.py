"""Picture files and uploads → decoded Pillow images, refusing what would not fit in memory.

Every format Pillow reads is read (JPEG, PNG, WebP, AVIF, GIF, BMP, TIFF, PNM, ...), and HEIC/HEIF (an iPhone's
default) when pillow-heif, the `heic` extra, is installed. What is decoded may hold at most MAX_PIXELS pixels.

A picture is judged by what will actually be decoded. A baseline JPEG is decoded at 1/2, 1/4 or 1/8 scale by
libjpeg itself (`draft`), so a 200 Mpx phone photo decodes as 2040×1530, and that is what is judged. Pillow's own
decompression-bomb check (Image.MAX_IMAGE_PIXELS, 89.5 Mpx) runs inside `Image.open` on the size the header
declares, before `draft` can act: so JPEGs and HEIFs are opened with their format's own factory (the one
`Image.open` would call), reduced, then checked here. A progressive or multi-scan JPEG is held whole in memory
by libjpeg whatever the scale (its DCT coefficients), and is judged by its declared size. Every other format
goes through `Image.open`, Pillow's check included, then this module's stricter one.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from pathlib import Path
from typing import IO

from PIL import Image, ImageOps, JpegImagePlugin

from .errors import EdgeError

# Decoded pixels allowed per image: a 64 Mpx RGB image is 256 MB in Pillow. Far above any phone photo after
# reduced decoding (a 200 Mpx JPEG decodes as 3 Mpx), far below what a crafted header can declare.
MAX_PIXELS = 64_000_000
# JPEGs (and HEIFs with an embedded thumbnail) are decoded at the smallest size that keeps at least this many
# pixels on each side: preprocess.WORK_SIZE, the size the conversion works at (a test pins the two together).
DRAFT_SIZE = 96
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".avif", ".tif", ".tiff", ".pgm",
                              ".ppm", ".pnm", ".pbm", ".heic", ".heif", ".hif"})

# What Pillow raises on files it cannot decode: it has no single base class for this.
DECODE_ERRORS = (
    OSError,  # includes UnidentifiedImageError and "image file is truncated"
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,  # escalated to an error below
)

_JPEG_MAGIC = b"\xff\xd8\xff"
# ISO-BMFF brands of HEVC-coded HEIF (pillow-heif reads these; "mif1"/"msf1" are generic HEIF, also used by AVIF).
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
# SOF markers that libjpeg decodes in one pass (baseline, extended sequential, arithmetic sequential); the
# others are progressive or lossless, decoded from a whole-image buffer.
_SEQUENTIAL_SOF = frozenset({0xC0, 0xC1, 0xC9})
_LOSSLESS_SOF = frozenset({0xC3, 0xC7, 0xCB, 0xCF})


def load_image(path: str | Path) -> Image.Image:
    """Open and decode an image file, EXIF orientation applied; EdgeError naming the file if it cannot.

    Refuses an image whose decoding would hold more than MAX_PIXELS pixels, before decoding it. JPEGs are
    decoded at a reduced scale of at least DRAFT_SIZE pixels per side, HEIFs from their thumbnail when it is
    that big.
    """
    path = Path(path)
    if not path.exists():
        raise EdgeError(f"{path}: no such file")
    if path.is_dir():
        raise EdgeError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise EdgeError(f"{path}: empty file (0 bytes)")
    try:
        fp = open(path, "rb")
    except OSError as e:
        raise EdgeError(f"{path}: cannot read it ({e.strerror or e})") from e
    with fp:
        return _decode(fp, path)


def decode_image(data: bytes, name: str = "request body") -> Image.Image:
    """`load_image` for bytes in memory (an upload): the same limits and errors, `name` in place of a path."""
    if not data:
        raise EdgeError(f"{name}: empty (0 bytes)")
    return _decode(io.BytesIO(data), name)


def _decode(fp: IO[bytes], name) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1× and 2× its limit: an error here, so nothing is printed and the picture,
            # over MAX_PIXELS anyway, is refused in one line.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open_reduced(fp, name) as img:
                img.load()
                # exif_transpose returns a new image, which outlives the closed file.
                return ImageOps.exif_transpose(img)
    except EdgeError:
        raise
    except MemoryError as e:
        raise EdgeError(f"{name}: image too large to decode in the available memory") from e
    except Image.UnidentifiedImageError as e:
        raise EdgeError(f"{name}: not an image file (or a format Pillow cannot read)") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Raised by Image.open before the image exists: its message is the only place the size is given.
        found = re.search(r"\((\d+) pixels\)", str(e))
        declared = f"declares {int(found[1]) / 1e6:.0f} Mpx" if found else "is too large"
        raise EdgeError(f"{name}: refused, image {declared}, {_over_limit()}") from e
    except (*DECODE_ERRORS, RuntimeError) as e:    # RuntimeError: pillow-heif's decoder on a damaged file
        reason = " ".join(str(e).split())      # one line: libheif's messages end with a newline
        raise EdgeError(f"{name}: cannot decode image, the file is truncated or corrupt ({reason})") from e


def _open_reduced(fp: IO[bytes], name) -> Image.Image:
    """The image opened (not decoded), set to decode at the smallest size its format allows, and checked."""
    head = fp.read(64)
    fp.seek(0)
    if head.startswith(_JPEG_MAGIC):
        img = JpegImagePlugin.jpeg_factory(fp)
        return _checked(img, name, _jpeg_reduce(img, fp))
    if _is_heif(head):
        img = _heif_image_file(name)(fp)
        return _checked(img, name, _heif_reduce(img))
    img = Image.open(fp)
    too_big = f"{img.format} image declares {_size(img.size)}, {_over_limit()}"
    return _checked(img, name, too_big if _too_big(img.size) else None)


def _checked(img: Image.Image, name, what: str | None) -> Image.Image:
    """`img` if what it will decode fits MAX_PIXELS (`what` is None), else closed and an EdgeError saying `what`."""
    if what is None:
        return img
    img.close()
    raise EdgeError(f"{name}: refused, {what}")


def _over_limit() -> str:
    return f"over the {MAX_PIXELS / 1e6:.0f} Mpx limit (possible decompression bomb)"


def _size(size: tuple[int, int]) -> str:
    w, h = size
    return f"{w}×{h} = {w * h / 1e6:.0f} Mpx"


def _too_big(size: tuple[int, int]) -> bool:
    return size[0] * size[1] > MAX_PIXELS


def _jpeg_reduce(img: JpegImagePlugin.JpegImageFile, fp: IO[bytes]) -> str | None:
    """Set a JPEG to decode at reduced scale; None if what libjpeg will then hold fits, else why not."""
    declared = img.size
    position = fp.tell()
    sof, scan_components = _jpeg_frame(fp)
    fp.seek(position)
    if sof not in _SEQUENTIAL_SOF or scan_components != img.layers:
        if not _too_big(declared):
            img.draft(img.mode, (DRAFT_SIZE, DRAFT_SIZE))
            return None
        kind = ("progressive" if sof in (0xC2, 0xC6, 0xCA, 0xCE) else
                "lossless" if sof in _LOSSLESS_SOF else "multi-scan")
        return (f"{kind} JPEG declares {_size(declared)}, {_over_limit()}: libjpeg holds a {kind} JPEG whole in "
                "memory however small it decodes it (a baseline JPEG this big is read)")
    img.draft(img.mode, (DRAFT_SIZE, DRAFT_SIZE))
    if not _too_big(img.size):
        return None
    scale = round(declared[0] / img.size[0])
    return (f"JPEG declares {_size(declared)}; decoded at 1/{scale} scale it would still be {_size(img.size)}, "
            f"{_over_limit()}")


def _jpeg_frame(fp: IO[bytes]) -> tuple[int | None, int | None]:
    """The SOF marker of a JPEG (0xC0 = baseline, 0xC2 = progressive, ...) and the number of components in
    its first scan: libjpeg decodes it in one pass only when that scan holds every component. Reads only the
    headers; (None, None) where they end early."""
    sof = None
    fp.seek(2)
    for _ in range(10_000):
        marker = fp.read(2)
        while marker[:1] == b"\xff" and marker[1:2] == b"\xff":    # fill bytes before a marker
            marker = marker[1:] + fp.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            break
        code = marker[1]
        if code == 0x01 or 0xD0 <= code <= 0xD8:                    # markers without a length
            continue
        length = fp.read(2)
        if len(length) < 2:
            break
        if code == 0xDA:                                            # start of scan: Ns comes first
            components = fp.read(1)
            return sof, components[0] if components else None
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):
            sof = code
        fp.seek(struct.unpack(">H", length)[0] - 2, io.SEEK_CUR)
    return sof, None


def _is_heif(head: bytes) -> bool:
    """An ISO-BMFF file whose brands say HEVC-coded HEIF (HEIC), as an iPhone writes; not AVIF."""
    if head[4:8] != b"ftyp":
        return False
    box = int.from_bytes(head[:4], "big")
    major = head[8:12]
    brands = {major} | {head[i : i + 4] for i in range(16, min(box, len(head)) - 3, 4)}
    if brands & _HEVC_BRANDS:
        return True
    return major in (b"mif1", b"msf1") and not brands & {b"avif", b"avis"}


def _heif_reduce(img: Image.Image) -> str | None:
    """Set a HEIF to decode its embedded thumbnail when one is a scaled copy at least DRAFT_SIZE per side
    (pillow-heif's `draft`: HEVC has no reduced decoding); None if what will be decoded fits, else why not."""
    # pillow-heif's draft decodes the thumbnail it picks, so only when every candidate fits (the list holds
    # each thumbnail's long side).
    candidates = [side for side in img.info.get("thumbnails", []) if side >= DRAFT_SIZE]
    if candidates and max(candidates) ** 2 <= MAX_PIXELS:
        img.draft(img.mode, (DRAFT_SIZE, DRAFT_SIZE))
    if not _too_big(img.size):
        return None
    return (f"HEIF image declares {_size(img.size)}, {_over_limit()}, and has no thumbnail of at least {DRAFT_SIZE} px "
            "to decode instead")


_heif_class = None


def _heif_image_file(name):
    """pillow-heif's Pillow image class, registered with Pillow on first use (importing it costs start-up
    time, so only a HEIF pays it); EdgeError naming the `heic` extra when it is not installed."""
    global _heif_class
    if _heif_class is None:
        try:
            import pillow_heif
        except ImportError as e:
            if isinstance(e, ModuleNotFoundError) and e.name == "pillow_heif":
                message = ("HEIC/HEIF photo (an iPhone's default format); reading it needs the heic extra: "
                           "pip install '.[heic]' in the fashion-edge folder (it installs pillow-heif)")
            else:
                message = f"HEIC/HEIF photo, but pillow-heif is installed and cannot be imported ({e})"
            raise EdgeError(f"{name}: {message}") from e
        pillow_heif.register_heif_opener()
        _heif_class = pillow_heif.HeifImageFile
    return _heif_class
