"""Seeded robustness corpus for decode_image + preprocess (damaged and odd inputs, in memory).

Every case must either give a finite (3, 224, 224) float32 array or raise InvalidImageError.
Case i is built by `make_case(i)` from its own RNG seeded with (SEED, i), so one failure can be
replayed alone: `make_case(i)` then `decode_image(data, name)`.
"""

from __future__ import annotations

import io
import random
import struct
import time
import zlib
from collections.abc import Callable
from functools import cache

import numpy as np
from PIL import Image

from se_viz.errors import InvalidImageError
from se_viz.images import decode_image, preprocess

SEED = 20_240_917
N_CASES = 600
NAMES = ("photo.jpg", "scan.png", "x.gif", "y.webp", "z.tiff", "w.bmp", "notes.txt", "noext",
         "archive.pdf", "image.eps", "ünïcödé name.PNG", "")


def _save(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _noise(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    return rgb.convert(mode)


def _odd_modes() -> dict[str, bytes]:
    ramp16 = Image.fromarray((np.arange(48 * 32, dtype=np.uint16) * 40).reshape(32, 48))
    ramp_f = Image.fromarray(np.linspace(-3, 7, 40 * 24, dtype=np.float32).reshape(24, 40))
    palette = _noise("RGB", (32, 32), 5).quantize(8)
    frames = [Image.new("RGB", (24, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return {
        "png-I;16": _save(ramp16, "PNG"),
        "tiff-F": _save(ramp_f, "TIFF"),
        "tiff-CMYK": _save(_noise("CMYK", (20, 30), 6), "TIFF"),
        "jpeg-CMYK": _save(_noise("CMYK", (20, 30), 7), "JPEG"),
        "png-P-transparent": _save(palette, "PNG", transparency=0),
        "gif-P-transparent": _save(palette, "GIF", transparency=1),
        "png-LA": _save(_noise("LA", (17, 33), 8), "PNG"),
        "png-1": _save(_noise("1", (40, 9), 9), "PNG"),
        "bmp-1": _save(_noise("1", (40, 9), 10), "BMP"),
        "gif-animated": _save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "webp-RGBA": _save(_noise("RGBA", (30, 20), 11), "WEBP", lossless=True),
        "tiff-LAB": _save(_noise("LAB", (16, 16), 12), "TIFF"),
        "tiff-I": _save(Image.fromarray(np.arange(-200, 200, dtype=np.int32).reshape(16, 25)),
                        "TIFF"),
    }


@cache
def seeds() -> dict[str, bytes]:
    """Valid small files in every supported format and odd mode: the mutation sources."""
    rgb = _noise("RGB", (48, 32), 1)
    valid = {
        "png": _save(rgb, "PNG"),
        "jpeg": _save(rgb, "JPEG", quality=90),
        "jpeg-progressive": _save(rgb, "JPEG", progressive=True),
        "gif": _save(rgb.quantize(32), "GIF"),
        "webp": _save(rgb, "WEBP", quality=80),
        "webp-lossless": _save(rgb, "WEBP", lossless=True),
        "tiff": _save(rgb, "TIFF"),
        "tiff-lzw": _save(rgb, "TIFF", compression="tiff_lzw"),
        "tiff-deflate": _save(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "bmp": _save(rgb, "BMP"),
        "bmp-rle8": _bmp_rle8(),
    }
    valid.update(_odd_modes())
    return valid


def _bmp_rle8() -> bytes:
    """A hand-made 4x2 8-bit RLE BMP (Pillow cannot write RLE): exercises the RLE decoder."""
    pixels = bytes([4, 1, 0, 0, 4, 2, 0, 1])  # run of 4 x index 1, EOL, 4 x index 2, EOF
    palette = bytes([0, 0, 0, 0, 0, 0, 255, 0, 0, 255, 0, 0]) + bytes(4 * 253)
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, 4, 2, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    header = struct.pack("<2sIHHI", b"BM", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


# ---------------------------------------------------------------- mutations


def bit_flips(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(len(out))
        out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


def overwrite(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(out))
        out[pos:pos + 4] = rng.choice([b"\x00", b"\xff\xff", b"\x7f\xff\xff\xff",
                                       rng.randbytes(rng.randint(1, 4))])
    return bytes(out[:len(data)])


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(1, len(data))]


def duplicate_chunk(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    chunk = data[start:start + rng.randint(1, 64)]
    at = rng.randrange(len(data))
    return data[:at] + chunk * rng.randint(1, 3) + data[at:]


def insert_garbage(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data))
    return data[:at] + rng.randbytes(rng.randint(1, 32)) + data[at:]


def huge_header(data: bytes, rng: random.Random) -> bytes:
    """Rewrite the declared width/height where the format keeps them (valid PNG CRC)."""
    width = rng.choice([0, 1, 2**15, 2**16 - 1, 2**24, 2**31 - 1, rng.randint(1, 100_000)])
    height = rng.choice([0, 1, 7, 2**16 - 1, 2**31 - 1, rng.randint(1, 100_000)])
    if data.startswith(b"\x89PNG"):
        body = struct.pack(">II", width, height) + data[24:29]
        return data[:16] + body + struct.pack(">I", zlib.crc32(b"IHDR" + body)) + data[33:]
    if data.startswith(b"BM"):
        return data[:18] + struct.pack("<ii", width, rng.choice([height, -height])) + data[26:]
    if data.startswith(b"GIF8"):
        return data[:6] + struct.pack("<HH", width & 0xFFFF, height & 0xFFFF) + data[10:]
    return overwrite(data, rng)


MUTATIONS: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    bit_flips, overwrite, truncate, duplicate_chunk, insert_garbage, huge_header)


def make_case(index: int) -> tuple[str, str, bytes]:
    """(description, name, data) of case `index`; deterministic given SEED."""
    rng = random.Random(f"{SEED}-{index}")
    name = rng.choice(NAMES)
    if index % 50 == 0:
        return "zero-length", name, b""
    if index % 50 == 1:
        return "random bytes", name, rng.randbytes(rng.randint(1, 2048))
    source = rng.choice(sorted(seeds()))
    data = seeds()[source]
    if index % 10 == 2:
        return f"valid {source}", name, data
    steps = [rng.choice(MUTATIONS) for _ in range(rng.randint(1, 2))]
    for step in steps:
        data = step(data, rng) if data else data
    return f"{source} + {'+'.join(s.__name__ for s in steps)}", name, data


def run_case(index: int) -> str | None:
    """None when the case is handled; otherwise a line describing the escape."""
    description, name, data = make_case(index)
    try:
        x = preprocess(decode_image(data, name))
    except InvalidImageError as exc:
        if name and name not in str(exc):
            return f"case {index} ({description}): message lacks the name: {exc}"
        return None
    except Exception as exc:  # noqa: BLE001 - the point of the test is to catch any escape
        return f"case {index} ({description}): {type(exc).__name__}: {exc}"
    if x.shape != (3, 224, 224) or x.dtype != np.float32 or not np.isfinite(x).all():
        return f"case {index} ({description}): bad array {x.shape} {x.dtype}"
    return None


def test_seed_files_are_valid() -> None:
    for source, data in seeds().items():
        assert preprocess(decode_image(data, source)).shape == (3, 224, 224), source


def test_fuzz_corpus_only_raises_invalid_image_error() -> None:
    start = time.perf_counter()
    failures = [line for line in map(run_case, range(N_CASES)) if line is not None]
    elapsed = time.perf_counter() - start
    assert not failures, f"SEED={SEED}: {len(failures)} escapes\n" + "\n".join(failures[:20])
    assert elapsed < 20, f"SEED={SEED}: corpus took {elapsed:.1f} s"


def test_corpus_mixes_successes_and_refusals() -> None:
    outcomes = {"ok": 0, "refused": 0}
    for index in range(0, N_CASES, 3):
        _, name, data = make_case(index)
        try:
            decode_image(data, name)
            outcomes["ok"] += 1
        except InvalidImageError:
            outcomes["refused"] += 1
    assert outcomes["ok"] > 20 and outcomes["refused"] > 20, outcomes
