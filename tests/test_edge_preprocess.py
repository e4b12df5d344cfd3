"""edge_runtime.preprocess: dataset passthrough and photo conversion (files and their refusal: test_edge_decode.py)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edge_runtime.errors import EdgeError
from edge_runtime.preprocess import load_image, normalize, to_model_input

try:
    from edge_models import fashion_mnist
except ImportError:  # tests/ collected as a package
    from tests.edge_models import fashion_mnist

MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
         "I", "I;16", "I;16B", "I;16L", "F"]  # fmt: skip


@pytest.fixture(scope="module")
def dataset_images():
    return fashion_mnist("t10k", 20)[0]


def photo_of(garment: np.ndarray, size=(120, 200), background=(245, 243, 240)) -> Image.Image:
    """A dark garment (the dataset image negated, scaled up) on a light RGB canvas."""
    h = min(size) * 3 // 4
    dark = Image.fromarray(255 - garment).resize((h, h), Image.Resampling.BICUBIC)
    canvas = np.empty((size[1], size[0], 3), np.uint8)
    canvas[:] = background
    y0, x0 = (size[1] - h) // 2, (size[0] - h) // 2
    region = canvas[y0 : y0 + h, x0 : x0 + h]
    canvas[y0 : y0 + h, x0 : x0 + h] = np.minimum(region, np.asarray(dark)[..., None])
    return Image.fromarray(canvas)


def test_dataset_image_passes_through_bit_exact(dataset_images, tmp_path):
    for img in dataset_images:
        assert np.array_equal(to_model_input(img), img)
        assert np.array_equal(to_model_input(Image.fromarray(img)), img)
        assert np.array_equal(to_model_input(img[..., None]), img)
    path = tmp_path / "dataset.png"
    Image.fromarray(dataset_images[0]).save(path)
    assert np.array_equal(to_model_input(load_image(path)), dataset_images[0])


def test_passthrough_returns_a_copy(dataset_images):
    img = dataset_images[0].copy()
    out = to_model_input(img)
    out[:] = 0
    assert img.any()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16", "CMYK", "LA", "1"])
def test_other_modes_give_28x28_uint8(dataset_images, mode):
    photo = photo_of(dataset_images[1])
    img = photo.convert("L").convert(mode) if mode in ("I;16", "LA", "1") else photo.convert(mode)
    out = to_model_input(img)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out.max() > 100, "the garment should come out light"


def test_photo_conversion_makes_light_garment_on_black(dataset_images):
    out = to_model_input(photo_of(dataset_images[0]))
    assert out[0, 0] == 0 and out[-1, -1] == 0
    # the garment fills the longest edge, as in the dataset
    rows = np.flatnonzero((out > 30).any(axis=1))
    cols = np.flatnonzero((out > 30).any(axis=0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 >= 26


def test_transparent_pixels_count_as_white_background():
    rgba = np.zeros((50, 40, 4), np.uint8)
    rgba[..., :3] = 7  # dark colour under full transparency must not show
    rgba[10:40, 10:30] = (30, 30, 30, 255)  # an opaque dark garment
    out = to_model_input(Image.fromarray(rgba))
    assert out[0, 0] == 0
    assert out[14, 14] > 200  # the garment, negated


def test_16_bit_images_use_their_full_range():
    a = np.full((40, 30), 60000, np.uint16)
    a[5:35, 5:25] = 3000
    out = to_model_input(Image.fromarray(a))
    assert out[0, 0] == 0 and out[20, 14] > 200


def test_exif_rotated_photo_matches_the_manually_rotated_one(dataset_images, tmp_path):
    upright = photo_of(dataset_images[3], size=(90, 160))  # portrait, so a wrong rotation shows
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    stored.save(tmp_path / "exif.png", exif=exif)
    upright.save(tmp_path / "upright.png")
    stored.save(tmp_path / "exif.jpg", exif=exif, quality=95)
    upright.save(tmp_path / "upright.jpg", quality=95)

    assert load_image(tmp_path / "exif.png").size == upright.size
    expected = to_model_input(load_image(tmp_path / "upright.png"))
    assert np.array_equal(to_model_input(load_image(tmp_path / "exif.png")), expected)
    # also when given the PIL image straight from Image.open, EXIF tag still on it
    assert np.array_equal(to_model_input(Image.open(tmp_path / "exif.png")), expected)
    # JPEG: the two files are compressed differently, so close rather than equal
    a = to_model_input(load_image(tmp_path / "exif.jpg")).astype(int)
    b = to_model_input(load_image(tmp_path / "upright.jpg")).astype(int)
    assert np.abs(a - b).mean() < 4
    assert np.abs(a - np.rot90(b)[:, :]).mean() > np.abs(a - b).mean()


def test_normalize_adds_channel_axis_and_scales():
    x = np.array([[[0, 255] * 14] * 28], np.uint8)
    out = normalize(x, 0.5, 0.25)
    assert out.shape == (1, 28, 28, 1) and out.dtype == np.float32
    assert out[0, 0, 0, 0] == pytest.approx(-2.0) and out[0, 0, 1, 0] == pytest.approx(2.0)
    assert normalize(x[0], 0, 1).shape == (1, 28, 28, 1)
    with pytest.raises(EdgeError):
        normalize(x.astype(np.float32), 0, 1)


def test_unsupported_inputs_raise_edge_error():
    with pytest.raises(EdgeError, match="expected a PIL image"):
        to_model_input("not an image object")
    with pytest.raises(EdgeError, match="uint8"):
        to_model_input(np.zeros((28, 28), np.float32))
    with pytest.raises(EdgeError, match="empty"):
        to_model_input(np.zeros((0, 5), np.uint8))


# --- property: any size, any mode → (28, 28) uint8 or EdgeError, never anything else -----------


@st.composite
def any_image(draw):
    mode = draw(st.sampled_from(MODES))
    size = (draw(st.integers(1, 300)), draw(st.integers(1, 300)))
    n_bytes = len(Image.new(mode, (1, 1)).tobytes()) * size[0] * size[1] + size[1]  # "1" packs rows
    kind = draw(st.sampled_from(["noise", "constant", "blob"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "noise":
        data = rng.integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    elif kind == "constant":
        data = bytes([draw(st.integers(0, 255))]) * n_bytes
    else:
        data = np.where(rng.random(n_bytes) < 0.2, 30, 240).astype(np.uint8).tobytes()
    img = Image.frombytes(mode, size, data)
    if mode in ("P", "RGB", "L") and draw(st.booleans()):
        img.info["transparency"] = 0 if mode != "RGB" else (0, 0, 0)
    return img


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_image())
def test_any_image_gives_28x28_uint8_or_edge_error(img):
    try:
        out = to_model_input(img)
    except EdgeError:
        return
    assert out.shape == (28, 28) and out.dtype == np.uint8


# --- real photos: foreground cut-out -------------------------------------------------------------------

def cluttered_photo(garment: np.ndarray, seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """A coloured garment on a busy, multicoloured 'bedspread' that reaches every edge; and its true mask."""
    rng = np.random.default_rng(seed)
    h, w = 300, 240
    yy, xx = np.mgrid[:h, :w]
    stripes = ((xx // 17 + yy // 23) % 3).astype(np.uint8)
    palette = np.array([[200, 170, 120], [150, 120, 80], [180, 150, 100]], np.uint8)
    canvas = palette[stripes] + rng.integers(0, 12, (h, w, 3)).astype(np.uint8)
    side = 200
    shape = np.asarray(Image.fromarray(garment).resize((side, side), Image.Resampling.BILINEAR)) > 40
    y0, x0 = (h - side) // 2, (w - side) // 2
    region = canvas[y0 : y0 + side, x0 : x0 + side]
    region[shape] = (40, 60, 150)  # a blue garment
    truth = np.zeros((h, w), bool)
    truth[y0 : y0 + side, x0 : x0 + side] = shape
    return Image.fromarray(canvas), truth


def test_foreground_mask_finds_the_garment_on_a_busy_background(dataset_images):
    from edge_runtime.preprocess import foreground_mask
    photo, truth = cluttered_photo(dataset_images[1])          # a trouser
    mask = foreground_mask(np.asarray(photo))
    assert mask is not None and mask.shape == truth.shape
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.8, f"IoU {iou:.2f}"


def test_cluttered_photo_comes_out_as_garment_on_black(dataset_images):
    photo, _ = cluttered_photo(dataset_images[1])
    out = to_model_input(photo)
    assert out[0, 0] == 0 and out[-1, -1] == 0 and out[:, 0].max() < 30   # the bedspread is gone
    reference = np.asarray(Image.fromarray(dataset_images[1]))
    corr = np.corrcoef((out > 30).ravel(), (reference > 30).ravel())[0, 1]
    assert corr > 0.6, f"silhouette correlation {corr:.2f}"


def test_cut_out_is_repeatable(dataset_images):
    photo, _ = cluttered_photo(dataset_images[0], seed=3)
    assert np.array_equal(to_model_input(photo), to_model_input(photo))


def test_cut_out_needs_no_opencv(dataset_images, monkeypatch):
    """The device install without OpenCV (no `camera` extra) gets the same cut-out, and no warning."""
    monkeypatch.setitem(sys.modules, "cv2", None)        # what `import cv2` sees when it is not installed
    photo, _ = cluttered_photo(dataset_images[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = to_model_input(photo)
    assert out[0, 0] == 0 and out[:, 0].max() < 30       # the bedspread is gone: the cut-out ran


def test_conversion_reports_its_time_and_the_cut_out_share(dataset_images):
    photo, _ = cluttered_photo(dataset_images[1])
    timings: dict = {}
    to_model_input(photo, timings)
    assert 0 < timings["cutout"] < timings["conversion"] < 1.0
    plain: dict = {}
    to_model_input(Image.fromarray(255 - dataset_images[1]).resize((200, 200)).convert("RGB"), plain)
    assert "cutout" not in plain and plain["conversion"] > 0    # a product shot on white is not cut out


def test_reconstruct_follows_a_winding_path_and_stays_4_connected():
    from edge_runtime.preprocess import _reconstruct
    mask = np.zeros((9, 9), bool)
    mask[1, 1:8] = mask[1:8, 7] = mask[7, 1:8] = mask[3:8, 1] = mask[3, 1:6] = True   # a spiral
    mask[0, 0] = True                    # touches the spiral only diagonally
    seed = np.zeros_like(mask)
    seed[3, 5] = True                    # the spiral's inner end
    got = _reconstruct(seed, mask)
    expected = mask.copy()
    expected[0, 0] = False
    assert np.array_equal(got, expected)
