"""Known answers for se_viz.images: preprocessing, geometry, EXIF, colour modes and formats.

Refusals (bad bytes, bad paths) are in test_image_refusals.py; the seeded fuzz corpus in
test_fuzz_images.py.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from se_viz.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PADDLECLAS_EVAL,
    TIMM_EVAL,
    Preprocessing,
    center_crop,
    decode_image,
    denormalize,
    image_digest,
    preprocess,
    to_batch,
    to_rgb,
)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def rgb_of(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


# ---------------------------------------------------------------- Preprocessing


def test_preprocessing_defaults_and_describe() -> None:
    assert PADDLECLAS_EVAL == Preprocessing(256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD)
    assert TIMM_EVAL.interpolation == "bicubic" and (TIMM_EVAL.resize, TIMM_EVAL.crop) == (256, 224)
    assert PADDLECLAS_EVAL.describe() == (
        "RGB, resize short side 256 (bilinear), centre crop 224, /255, ImageNet mean/std, CHW")
    assert "mean (0.5, 0.5, 0.5)" in Preprocessing(mean=(0.5, 0.5, 0.5)).describe()


@pytest.mark.parametrize("kwargs", [{"interpolation": "nearest"}, {"crop": 0},
                                    {"std": (1.0, 0.0, 1.0)}, {"mean": (0.5, 0.5)}])
def test_preprocessing_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Preprocessing(**kwargs)


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (12, 200, 77)])
@pytest.mark.parametrize("size", [(640, 480), (1, 1), (33, 1000), (224, 224)])
def test_preprocess_constant_colour_is_exact(colour: tuple, size: tuple) -> None:
    x = preprocess(Image.new("RGB", size, colour))
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    for channel, (c, m, s) in enumerate(zip(colour, IMAGENET_MEAN, IMAGENET_STD)):
        expected = (np.float32(c) / np.float32(255) - np.float32(m)) / np.float32(s)
        assert np.all(x[channel] == expected)


@pytest.mark.parametrize("pre", [PADDLECLAS_EVAL, TIMM_EVAL])
def test_denormalize_round_trips_the_crop(pre: Preprocessing) -> None:
    img = noise(300, 260)
    back = denormalize(preprocess(img, pre), pre)
    assert back.shape == (224, 224, 3) and back.dtype == np.uint8
    assert np.abs(back.astype(int) - rgb_of(center_crop(img, pre))).max() <= 1


def test_denormalize_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        denormalize(np.zeros((224, 224, 3), np.float32))


@pytest.mark.parametrize(("size", "resized", "offset"), [
    ((640, 480), (341, 256), (58, 16)),
    ((480, 640), (256, 341), (16, 58)),
    ((1000, 257), (996, 256), (386, 16)),
    ((100, 50), (512, 256), (144, 16)),
])
def test_center_crop_matches_resize_then_crop(size: tuple, resized: tuple, offset: tuple) -> None:
    img = noise(*size)
    left, top = offset
    reference = img.resize(resized, Image.Resampling.BILINEAR).crop(
        (left, top, left + 224, top + 224))
    out = center_crop(img)
    assert out.size == (224, 224) and out.mode == "RGB"
    assert np.abs(rgb_of(out) - rgb_of(reference)).max() <= 1  # one resample vs two: rounding


def test_center_crop_when_resize_is_smaller_than_crop() -> None:
    out = center_crop(noise(640, 480), Preprocessing(resize=100, crop=224))
    assert out.size == (224, 224)


@pytest.mark.parametrize("size", [(1, 1), (1, 5000), (5000, 1), (2, 3)])
def test_tiny_and_thin_images_give_full_crops(size: tuple) -> None:
    img = decode_image(encode(noise(*size), "PNG"), "thin.png")
    assert img.size == size
    x = preprocess(img)
    assert x.shape == (3, 224, 224) and np.isfinite(x).all()


def test_to_batch_stacks_preprocess() -> None:
    imgs = [noise(300, 200, seed=1), Image.new("L", (50, 90), 7), noise(224, 224, seed=2)]
    batch = to_batch(imgs)
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == np.float32
    assert batch.flags.c_contiguous
    for i, img in enumerate(imgs):
        np.testing.assert_array_equal(batch[i], preprocess(img))
    assert to_batch([], TIMM_EVAL).shape == (0, 3, 224, 224)


def test_image_digest_is_sha256() -> None:
    assert image_digest(b"abc") == hashlib.sha256(b"abc").hexdigest()


# ---------------------------------------------------------------- EXIF orientation


def test_exif_orientation_6_rotates_clockwise() -> None:
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img = decode_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()), "phone.jpg")
    assert img.size == (20, 40)
    top, bottom = img.getpixel((10, 5)), img.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_unreadable_exif_keeps_pixels() -> None:
    img = Image.new("RGB", (8, 4), (0, 128, 0))
    out = decode_image(encode(img, "JPEG", exif=b"Exif\x00\x00garbage-not-tiff"), "odd.jpg")
    assert out.size == (8, 4)


# ---------------------------------------------------------------- colour modes


def test_rgba_half_transparent_red_over_white() -> None:
    img = Image.new("RGBA", (3, 2), (255, 0, 0, 128))
    # round((c * a + 255 * (255 - a)) / 255): R = 255, G = B = round(32385 / 255) = 127
    for out in (to_rgb(img), decode_image(encode(img, "PNG"), "a.png")):
        assert out.getpixel((1, 1)) == (255, 127, 127)


def test_la_and_pa_composite_on_white() -> None:
    la = Image.new("LA", (2, 2), (100, 128))
    grey = round((100 * 128 + 255 * 127) / 255)
    assert decode_image(encode(la, "PNG"), "la.png").getpixel((0, 0)) == (grey,) * 3
    pa = Image.new("P", (2, 2), 1)
    pa.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pa = pa.convert("PA")
    pa.putalpha(0)
    assert to_rgb(pa).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_and_without_transparency() -> None:
    pal = Image.new("P", (4, 1), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.putpixel((0, 0), 0)
    plain = decode_image(encode(pal, "PNG"), "p.png")
    assert plain.getpixel((0, 0)) == (0, 0, 0) and plain.getpixel((1, 0)) == (10, 20, 30)
    for fmt in ("PNG", "GIF"):
        see_through = decode_image(encode(pal, fmt, transparency=0), f"t.{fmt.lower()}")
        assert see_through.getpixel((0, 0)) == (255, 255, 255)
        assert see_through.getpixel((1, 0)) == (10, 20, 30)


def test_cmyk_pure_cyan() -> None:
    cyan = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    assert decode_image(encode(cyan, "TIFF"), "c.tif").getpixel((4, 4)) == (0, 255, 255)
    jpeg = rgb_of(decode_image(encode(cyan, "JPEG", quality=95), "c.jpg"))
    assert np.abs(jpeg - [0, 255, 255]).max() <= 3


def test_ycbcr_lab_hsv_convert_to_rgb() -> None:
    colour = (200, 30, 90)
    ycc = rgb_of(to_rgb(Image.new("RGB", (4, 4), colour).convert("YCbCr")))
    assert np.abs(ycc - colour).max() <= 2
    assert to_rgb(Image.new("HSV", (2, 2), (0, 255, 255))).getpixel((0, 0)) == (255, 0, 0)
    white = rgb_of(decode_image(encode(Image.new("LAB", (4, 4), (255, 128, 128)), "TIFF"), "l.tif"))
    assert white.min() >= 245
    blue = to_rgb(Image.new("LAB", (2, 2), (128, 188, 0))).getpixel((0, 0))
    assert blue[2] > blue[0] and blue[2] > blue[1]


def test_16_bit_gradient_keeps_full_range() -> None:
    values = (np.arange(256, dtype=np.uint16) * 257)[None, :].repeat(4, axis=0)  # 0..65535
    img16 = Image.fromarray(values)
    assert img16.mode == "I;16"
    out = decode_image(encode(img16, "PNG"), "g16.png")
    grey = np.asarray(out)[0, :, 0]
    np.testing.assert_array_equal(grey, np.arange(256))  # v * 257 -> v, monotonic, 0..255
    big_endian = Image.frombytes("I;16B", (256, 4), values.astype(">u2").tobytes())
    np.testing.assert_array_equal(np.asarray(to_rgb(big_endian))[0, :, 1], np.arange(256))


def test_int32_and_float_are_scaled_not_clipped() -> None:
    as_16_bit = Image.fromarray((np.arange(64, dtype=np.int32) * 1000)[None, :])
    assert as_16_bit.mode == "I"
    grey = np.asarray(decode_image(encode(as_16_bit, "TIFF"), "i.tif"))[0, :, 0].astype(int)
    assert np.all(np.diff(grey) >= 0) and grey[-1] == round(63000 / 257)
    signed = to_rgb(Image.fromarray(np.array([[-5, 0, 5]], np.int32)))
    assert [p[0] for p in np.asarray(signed)[0]] == [0, 128, 255]
    ramp = np.linspace(-1, 1, 11, dtype=np.float32)[None, :]
    ramp[0, 5] = np.nan
    out = np.asarray(decode_image(encode(Image.fromarray(ramp), "TIFF"), "f.tif"))[0, :, 0]
    assert out[0] == 0 and out[-1] == 255 and out[4] == round(0.4 * 255) and out[5] == 0


def test_bilevel_and_grey() -> None:
    bits = Image.new("1", (4, 1), 0)
    bits.putpixel((1, 0), 1)
    out = decode_image(encode(bits, "PNG"), "b.png")
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 0)) == (255, 255, 255)
    grey = decode_image(encode(Image.new("L", (2, 2), 77), "BMP"), "l.bmp")
    assert grey.getpixel((0, 0)) == (77,) * 3


@pytest.mark.parametrize("mode", sorted(Image.MODES))
def test_every_pillow_mode_preprocesses(mode: str) -> None:
    x = preprocess(Image.new(mode, (31, 17)))
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and np.isfinite(x).all()


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(("fmt", "params"), [
    ("PNG", {}), ("BMP", {}), ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"}),
    ("WEBP", {"lossless": True}),
])
def test_lossless_formats_round_trip(fmt: str, params: dict) -> None:
    img = noise(37, 23)
    out = decode_image(encode(img, fmt, **params), f"x.{fmt.lower()}")
    assert out.mode == "RGB" and getattr(out, "fp", None) is None and out.info == {}
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img))


def test_lossy_formats_are_close() -> None:
    smooth = Image.linear_gradient("L").resize((64, 48)).convert("RGB")
    for fmt in ("JPEG", "WEBP"):
        out = decode_image(encode(smooth, fmt, quality=95), f"x.{fmt.lower()}")
        assert np.abs(rgb_of(out) - rgb_of(smooth)).mean() < 3


def test_gif_palette_round_trip_and_first_frame() -> None:
    img = noise(20, 10).quantize(16).convert("RGB")
    np.testing.assert_array_equal(np.asarray(decode_image(encode(img, "GIF"), "s.gif")),
                                  np.asarray(img))
    frames = [Image.new("RGB", (12, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert decode_image(data, "anim.gif").getpixel((3, 3)) == (255, 0, 0)


def test_name_does_not_choose_the_decoder() -> None:
    out = decode_image(encode(noise(9, 9), "PNG"), "really_a_png.jpg")
    assert out.size == (9, 9)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode(noise(5, 5), "PNG")
    assert decode_image(bytearray(data)).size == decode_image(memoryview(data)).size == (5, 5)


def test_normalize_of_the_kept_crop_is_exactly_preprocess():
    from se_viz.images import TIMM_EVAL, center_crop, normalize, preprocess

    rng = np.random.default_rng(5)
    img = Image.fromarray(rng.integers(0, 256, (300, 410, 3), dtype=np.uint8))
    for pre in (PADDLECLAS_EVAL, TIMM_EVAL):
        crop = np.asarray(center_crop(img, pre), dtype=np.uint8)  # what the app keeps
        np.testing.assert_array_equal(normalize(crop, pre), preprocess(img, pre))
