"""Large JPEGs decoded for a network in draft mode (DCT scaling): same crop within a measured
pixel bound, upright, and everything else decoded exactly as before."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from se_viz.errors import InvalidImageError
from se_viz.images import (
    DRAFT_FACTOR, PADDLECLAS_EVAL, TIMM_EVAL, Preprocessing, center_crop, decode_image,
    load_image,
)

ASSETS = sorted((Path(__file__).resolve().parents[1] / "assets").glob("*.jpg"))
# benchmarks/decode_bench.py, 12 MP collage of real photos at quality 92 (1/2 scale): the 224 crop
# differs from a full decode's by 0.14 on average and 3 at most (0..255); bounded with margin.
MEAN_BOUND, MAX_BOUND = 0.5, 8
# A small target, so that a 1024 x 768 JPEG is already large enough to draft (side 4 x 64).
SMALL = Preprocessing(resize=64, crop=56)


def jpeg(img: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, quality=92, **params)
    return buf.getvalue()


def collage(width: int, height: int) -> Image.Image:
    """The repo's photos tiled at their own pixel scale: real detail at every pixel."""
    tiles = [Image.open(p).convert("RGB").crop((0, 0, 450, 300)) for p in ASSETS]
    out = Image.new("RGB", (width, height))
    for i, (y, x) in enumerate((y, x) for y in range(0, height, 300) for x in range(0, width, 450)):
        out.paste(tiles[i % len(tiles)], (x, y))
    return out


def crop_diff(a: Image.Image, b: Image.Image, pre: Preprocessing) -> np.ndarray:
    ca, cb = center_crop(a, pre), center_crop(b, pre)
    assert ca.size == cb.size == (pre.crop, pre.crop) and ca.mode == cb.mode == "RGB"
    return np.abs(np.asarray(ca, np.int16) - np.asarray(cb, np.int16))


@pytest.fixture(scope="module")
def phone() -> bytes:
    return jpeg(collage(4032, 3024))


@pytest.mark.parametrize("pre", [PADDLECLAS_EVAL, TIMM_EVAL], ids=["bilinear", "bicubic"])
def test_12_mp_jpeg_drafts_to_half_and_crops_alike(phone: bytes, pre: Preprocessing) -> None:
    full, draft = decode_image(phone), decode_image(phone, draft_for=pre)
    assert DRAFT_FACTOR * pre.resize == 1024
    assert full.size == (4032, 3024) and draft.size == (2016, 1512) and draft.mode == "RGB"
    diff = crop_diff(full, draft, pre)
    assert diff.mean() <= MEAN_BOUND and diff.max() <= MAX_BOUND


def test_exif_rotated_12_mp_jpeg_comes_out_upright(phone: bytes) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; shown after a 90-degree clockwise turn
    upright = collage(3024, 4032)
    data = jpeg(upright.transpose(Image.Transpose.ROTATE_90), exif=exif)
    draft = decode_image(data, draft_for=PADDLECLAS_EVAL)
    assert draft.size == (1512, 2016)
    diff = crop_diff(decode_image(data), draft, PADDLECLAS_EVAL)
    assert diff.mean() <= MEAN_BOUND and diff.max() <= MAX_BOUND
    # and the pixels themselves are the upright photo's (JPEG noise aside), not a turned copy
    assert crop_diff(upright, draft, PADDLECLAS_EVAL).mean() < 3


@pytest.mark.parametrize("kind", ["RGB", "L", "CMYK", "progressive", "MPO"])
def test_every_kind_of_jpeg_drafts(kind: str) -> None:
    img = collage(1024, 768)
    data = {"L": lambda: jpeg(img.convert("L")), "CMYK": lambda: jpeg(img.convert("CMYK")),
            "progressive": lambda: jpeg(img, progressive=True),
            "MPO": lambda: jpeg(img, "MPO", save_all=True, append_images=[img.convert("L")]),
            "RGB": lambda: jpeg(img)}[kind]()
    draft = decode_image(data, draft_for=SMALL)
    assert draft.size == (512, 384) and draft.mode == "RGB"
    diff = crop_diff(decode_image(data), draft, SMALL)
    assert diff.mean() <= MEAN_BOUND and diff.max() <= MAX_BOUND


def test_draft_starts_at_twice_the_kept_side() -> None:
    """Kept side 4 x 64 = 256: short side 511 is decoded in full, 512 at 1/2, 1024 at 1/4,
    2048 at 1/8; the short side never drops below 256."""
    img = collage(700, 512)
    assert decode_image(jpeg(img.crop((0, 0, 700, 511))), draft_for=SMALL).size == (700, 511)
    assert decode_image(jpeg(img), draft_for=SMALL).size == (350, 256)
    assert decode_image(jpeg(collage(1100, 1024)), draft_for=SMALL).size == (275, 256)
    assert decode_image(jpeg(collage(2100, 2048)), draft_for=SMALL).size == (263, 256)


@pytest.mark.parametrize("path", ASSETS, ids=lambda p: p.name)
def test_small_jpegs_take_the_full_path_unchanged(path: Path) -> None:
    plain = np.asarray(load_image(path))
    for pre in (PADDLECLAS_EVAL, TIMM_EVAL):
        assert np.array_equal(np.asarray(load_image(path, draft_for=pre)), plain)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_other_formats_take_the_full_path_unchanged(fmt: str) -> None:
    data = jpeg(collage(1024, 768), fmt)
    plain = decode_image(data)
    assert plain.size == (1024, 768)
    assert np.array_equal(np.asarray(decode_image(data, draft_for=SMALL)), np.asarray(plain))


def test_bombs_are_refused_from_the_true_size_before_any_draft(
        phone: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> None:
        raise AssertionError("a refused image must not be drafted or decoded")

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", forbidden)
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", forbidden)
    # drafted, it would be 2016 x 1512, within the limit: the declared 4032 x 3024 is what counts
    with pytest.raises(InvalidImageError, match="4032 x 3024 = 12,192,768 pixels"):
        decode_image(phone, "phone.jpg", max_pixels=4032 * 3024 - 1, draft_for=PADDLECLAS_EVAL)
