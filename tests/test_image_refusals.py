"""Every bad input to se_viz.images raises InvalidImageError naming the file and the reason."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from se_viz.errors import InvalidImageError
from se_viz.images import decode_image, load_image


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG with a valid IHDR (correct CRC) declaring width x height and almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def noisy(fmt: str) -> bytes:
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
       b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")

BAD_BYTES = {
    "empty": (b"", "empty"),
    "random": (np.random.default_rng(1).bytes(4096), "not an image in a supported format"),
    "text": (b"hello, this is a text file\n" * 20, "not an image in a supported format"),
    "pdf": (b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "PDF document"),
    "eps": (EPS, "PostScript/EPS"),
    "truncated png": (noisy("PNG")[:6000], "truncated or corrupt"),
    "truncated jpeg": (noisy("JPEG")[:1500], "truncated or corrupt"),
    "png cut in header": (noisy("PNG")[:20], "truncated or corrupt"),
    "png signature only": (noisy("PNG")[:10], "starts like a PNG file"),
    "bomb 100000x100000": (png_declaring(100_000, 100_000), "decompression bomb"),
    "over max_pixels 8000x8000": (png_declaring(8000, 8000), "decompression bomb"),
    "zero width": (png_declaring(0, 10), "header is damaged"),
}


@pytest.mark.parametrize("case", sorted(BAD_BYTES))
def test_bad_bytes_are_refused_clearly(case: str) -> None:
    data, reason = BAD_BYTES[case]
    name = f"upload_{case.replace(' ', '_')}.png"
    with pytest.raises(InvalidImageError) as info:
        decode_image(data, name)
    message = str(info.value)
    assert name in message and reason in message
    assert "PNG, JPEG, WebP, BMP, TIFF or GIF" in message or "try again" in message.lower() \
        or "Choose" in message


def test_decoder_errors_keep_their_cause() -> None:
    with pytest.raises(InvalidImageError) as info:
        decode_image(BAD_BYTES["truncated jpeg"][0], "cut.jpg")
    assert isinstance(info.value.__cause__, OSError)
    assert isinstance(info.value, ValueError)  # callers may catch ValueError


def test_over_max_bytes_is_refused_before_decoding() -> None:
    data = noisy("PNG")
    with pytest.raises(InvalidImageError, match=r"big\.png.*MiB limit"):
        decode_image(data, "big.png", max_bytes=len(data) - 1)
    assert decode_image(data, "big.png", max_bytes=len(data)).size == (64, 64)


def test_max_pixels_is_a_parameter() -> None:
    data = noisy("PNG")
    with pytest.raises(InvalidImageError, match="64 x 64 = 4,096 pixels"):
        decode_image(data, "small.png", max_pixels=4095)
    assert decode_image(data, "small.png", max_pixels=4096).size == (64, 64)


def test_eps_never_reaches_ghostscript(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("ghostscript must never be called")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", forbidden)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    with pytest.raises(InvalidImageError, match="PostScript/EPS"):
        decode_image(EPS, "drawing.png")


def test_global_state_is_left_alone() -> None:
    limit, filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    for data, _ in BAD_BYTES.values():
        with pytest.raises(InvalidImageError):
            decode_image(data, "x")
    assert Image.MAX_IMAGE_PIXELS == limit and warnings.filters == filters


def test_non_bytes_input_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        decode_image("not bytes", "x")  # type: ignore[arg-type]


# ---------------------------------------------------------------- paths


def test_load_image_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    path.write_bytes(noisy("PNG"))
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (64, 64)
    assert load_image(str(path)).size == (64, 64)


def test_load_image_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match=r"missing\.jpg' does not exist"):
        load_image(tmp_path / "missing.jpg")


def test_load_image_directory(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    with pytest.raises(InvalidImageError, match=r"photos' is a directory"):
        load_image(folder)


def test_load_image_names_the_file_in_decode_errors(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(InvalidImageError, match=r"'notes\.png'.*not an image"):
        load_image(path)


def test_load_image_refuses_large_files_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.bmp"
    with open(path, "wb") as handle:
        handle.truncate(2048)  # sparse: nothing to read
    with pytest.raises(InvalidImageError, match=r"huge\.bmp.*MiB limit"):
        load_image(path, max_bytes=1024)
