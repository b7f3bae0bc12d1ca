"""Safe decoding of user bytes -> RGB PIL image -> normalised (3, H, W) float32 array.

Pillow + numpy only. Every failure to use an image is an `InvalidImageError` whose message
names the file, the reason and what to do next. Pixel data is only decoded after the
declared size has been checked against a pixel budget (decompression bombs).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from se_viz.errors import InvalidImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MAX_PIXELS = 50_000_000
MAX_BYTES = 50 * 1024 * 1024

#: A JPEG decoded for a network (`decode_image(..., draft_for=pre)`) is scaled by 1/2, 1/4 or
#: 1/8 in the DCT domain (Pillow's draft mode) only as far as its short side stays at least
#: this many times the side `pre` resizes to; the antialiased resize that follows then hides
#: the difference (measured in benchmarks/decode_bench.py, stated in the README).
DRAFT_FACTOR = 4

#: Pillow format ids tried by `decode_image`; nothing else is ever parsed (no EPS/PS, no PDF).
SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
SUPPORTED_TEXT = "PNG, JPEG, WebP, BMP, TIFF or GIF"

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}

# Exceptions Pillow's parsers and decoders are known to raise on hostile or broken bytes.
# Warnings are listed because they are turned into errors while decoding.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, AttributeError,
    ArithmeticError, EOFError, struct.error, RecursionError, Warning,
    Image.DecompressionBombError,
)

# `warnings.catch_warnings` swaps process-wide state; serialise our own uses of it so that
# concurrent decodes (one per Streamlit session thread) cannot leak a filter to each other.
_WARNINGS_LOCK = threading.Lock()

# Magic numbers of common non-supported files, for a more helpful message. Never parsed.
_KNOWN_OTHER = (
    (b"%PDF", "a PDF document"),
    (b"%!PS", "a PostScript/EPS file"),
    (b"\xc5\xd0\xd3\xc6", "an EPS file"),
    (b"<svg", "an SVG drawing"),
    (b"<?xml", "an XML/SVG file"),
    (b"PK\x03\x04", "a ZIP archive"),
)
_SUPPORTED_MAGIC = (
    (b"\x89PNG", "PNG"), (b"\xff\xd8", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"RIFF", "WebP"),
)


@dataclass(frozen=True)
class Preprocessing:
    """Eval-time preprocessing: resize short side, centre crop, /255, mean/std, CHW."""

    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.resize < 1 or self.crop < 1:
            raise ValueError(f"resize and crop must be >= 1, got {self.resize}, {self.crop}")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, "
                             f"got {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise ValueError("mean and std need 3 values each, and std must be non-zero")

    def describe(self) -> str:
        """Human one-liner, e.g. 'RGB, resize short side 256 (bilinear), centre crop 224, ...'."""
        if tuple(self.mean) == IMAGENET_MEAN and tuple(self.std) == IMAGENET_STD:
            norm = "ImageNet mean/std"
        else:
            norm = f"mean {tuple(self.mean)}, std {tuple(self.std)}"
        return (f"RGB, resize short side {self.resize} ({self.interpolation}), "
                f"centre crop {self.crop}, /255, {norm}, CHW")


PADDLECLAS_EVAL = Preprocessing()
TIMM_EVAL = Preprocessing(interpolation="bicubic")  # timm seresnet50: crop_pct 0.875 -> 256/224


# ---------------------------------------------------------------- decoding


def decode_image(data: bytes, name: str = "image", *, max_pixels: int = MAX_PIXELS,
                 max_bytes: int = MAX_BYTES,
                 draft_for: Preprocessing | None = None) -> Image.Image:
    """Decode untrusted bytes into a fully loaded, detached RGB image (EXIF orientation applied).

    draft_for: the preprocessing the image is decoded for. A large JPEG is then decoded at
    1/2, 1/4 or 1/8 of its size (DCT scaling), keeping its short side at least `DRAFT_FACTOR`
    x the side that preprocessing resizes to; other images are decoded in full, as without it.

    Raises `InvalidImageError` (and nothing else for bytes input) when the data is empty, larger
    than `max_bytes`, not a supported format, corrupt or truncated, declares more than
    `max_pixels` pixels (checked from the header before decoding) or has a zero size.
    Pillow's own global bomb limit (`Image.MAX_IMAGE_PIXELS`) still applies on top.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image expects bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidImageError(f"'{name}' is empty (0 bytes). Choose an image file "
                                f"({SUPPORTED_TEXT}).")
    if len(data) > max_bytes:
        raise InvalidImageError(_too_many_bytes(name, len(data), max_bytes))
    with _pillow_warnings_as_errors():
        try:
            return _decode(data, name, max_pixels, draft_for)
        except InvalidImageError:
            raise
        except Image.UnidentifiedImageError as exc:
            raise InvalidImageError(_not_an_image(name, data)) from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidImageError(
                f"'{name}' is too large to decode safely ({exc}). "
                "Downscale the image and try again.") from exc
        except MemoryError as exc:
            raise InvalidImageError(f"'{name}' needs more memory to decode than is available. "
                                    "Downscale the image and try again.") from exc
        except _DECODE_ERRORS as exc:
            raise InvalidImageError(
                f"'{name}' could not be decoded; the file is truncated or corrupt "
                f"({type(exc).__name__}: {exc}). Re-export or re-download it and try again."
            ) from exc


def load_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS,
               max_bytes: int = MAX_BYTES,
               draft_for: Preprocessing | None = None) -> Image.Image:
    """Read an image file and decode it with `decode_image` (RGB, EXIF orientation applied)."""
    where = os.fspath(path)
    try:
        info = os.stat(where)
    except FileNotFoundError as exc:
        raise InvalidImageError(f"'{where}' does not exist. Check the path.") from exc
    except OSError as exc:
        raise InvalidImageError(f"'{where}' cannot be read ({exc.strerror or exc}). "
                                "Check the path and its permissions.") from exc
    if stat.S_ISDIR(info.st_mode):
        raise InvalidImageError(f"'{where}' is a directory, not an image. "
                                "Pass the path of an image file.")
    if not stat.S_ISREG(info.st_mode):
        raise InvalidImageError(f"'{where}' is not a regular file. Pass an image file.")
    if info.st_size > max_bytes:
        raise InvalidImageError(_too_many_bytes(where, info.st_size, max_bytes))
    try:
        with open(where, "rb") as handle:
            data = handle.read(max_bytes + 1)  # bounded even if the file grows meanwhile
    except OSError as exc:
        raise InvalidImageError(f"'{where}' cannot be read ({exc.strerror or exc}). "
                                "Check the path and its permissions.") from exc
    name = Path(where).name or where
    return decode_image(data, name, max_pixels=max_pixels, max_bytes=max_bytes,
                        draft_for=draft_for)


def image_digest(data: bytes) -> str:
    """SHA-256 hex digest of the raw bytes (cache key)."""
    return hashlib.sha256(data).hexdigest()


@contextmanager
def _pillow_warnings_as_errors() -> Iterator[None]:
    """Within the block, Pillow's warnings (bomb, malformed data) raise instead of printing."""
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("error", RuntimeWarning)  # includes DecompressionBombWarning
        yield


def _decode(data: bytes, name: str, max_pixels: int,
            draft_for: Preprocessing | None) -> Image.Image:
    """Open with the allowed formats only, check the header size, then decode and convert."""
    with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as img:
        _check_declared_size(img.size, name, max_pixels)  # the true size, before any draft
        if draft_for is not None:
            _draft(img, draft_for)
        img.load()  # first frame only (GIF, TIFF, WebP)
        oriented = _exif_oriented(img)
    rgb = to_rgb(oriented)
    rgb.info = {}
    return rgb


def _draft(img: Image.Image, pre: Preprocessing) -> None:
    """Ask a not yet loaded JPEG (or MPO's first frame) to decode at the smallest DCT scale
    whose short side is still >= `DRAFT_FACTOR` x the side `pre` resizes to; the mode is kept.

    The request is square, so it holds for either orientation (EXIF transposes afterwards)."""
    side = DRAFT_FACTOR * max(pre.resize, pre.crop)
    if img.format in ("JPEG", "MPO") and min(img.size) >= 2 * side:
        img.draft(None, (side, side))


def _exif_oriented(img: Image.Image) -> Image.Image:
    """A detached copy of a loaded image with its EXIF orientation applied.

    Unreadable EXIF metadata does not refuse readable pixels: they are kept as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except _DECODE_ERRORS:
        return img.copy()


def _check_declared_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    """Refuse zero-size images and images declaring more than `max_pixels` pixels."""
    width, height = size
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"'{name}' has a zero size ({width} x {height} pixels). "
                                "Choose a non-empty image.")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"'{name}' declares {width} x {height} = {width * height:,} pixels, more than the "
            f"limit of {max_pixels:,} (a possible decompression bomb). "
            "Downscale the image and try again.")


def _too_many_bytes(name: str, size: int, limit: int) -> str:
    mib = 1024 * 1024
    return (f"'{name}' is {size:,} bytes ({size / mib:.1f} MiB), more than the "
            f"{limit / mib:g} MiB limit ({limit:,} bytes). Use a smaller file (re-save it as "
            "JPEG or downscale it).")


def _not_an_image(name: str, data: bytes) -> str:
    head = data[:16].lstrip()
    what = next((desc for magic, desc in _KNOWN_OTHER if head.startswith(magic)), None)
    fmt = next((fmt for magic, fmt in _SUPPORTED_MAGIC if data.startswith(magic)), None)
    if what:
        found = f"it looks like {what}"
    elif fmt:
        found = f"it starts like a {fmt} file but its header is damaged or unsupported"
    else:
        found = "it is not an image in a supported format"
    return (f"'{name}' cannot be used: {found}. Supported formats: {SUPPORTED_TEXT}. "
            "Convert the file to one of these and try again.")


# ---------------------------------------------------------------- colour modes


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> mode "RGB". Alpha is composited onto white; 16-bit/int/float data is
    scaled to 8 bits (not clipped). Returns `img` itself when it is already RGB."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_uint8(img), "L").convert("RGB")
    if mode in ("RGBa", "La"):
        return _premultiplied_on_white(img)
    if mode in ("RGBA", "LA", "PA", "P") or "transparency" in img.info:
        return _alpha_on_white(img.convert("RGBA"))
    return img.convert("RGB")  # 1, L, CMYK, YCbCr, LAB (via ImageCms), HSV, RGBX


def _alpha_on_white(rgba: Image.Image) -> Image.Image:
    """RGBA -> RGB over white: round((c * a + 255 * (255 - a)) / 255) per channel."""
    arr = np.asarray(rgba, dtype=np.uint32)
    alpha = arr[..., 3:4]
    out = (arr[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(out.astype(np.uint8), "RGB")


def _premultiplied_on_white(img: Image.Image) -> Image.Image:
    """Premultiplied RGBa / La -> RGB over white: c_premult + (255 - a), clipped."""
    arr = np.asarray(img, dtype=np.int32)
    colour = arr[..., :-1] + (255 - arr[..., -1:])
    out = np.clip(colour, 0, 255).astype(np.uint8)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(out), "RGB")


def _scale_to_uint8(img: Image.Image) -> np.ndarray:
    """(H, W) uint8 from I;16* (divide by 257), I (by bit depth of the data) or F (by range)."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        return np.round(arr.astype(np.float32) / 257.0).astype(np.uint8)
    if img.mode == "I":
        low, high = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if low >= 0 and high <= 255:
            return arr.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return np.round(arr.astype(np.float32) / 257.0).astype(np.uint8)
    return _scale_by_range(arr.astype(np.float64))


def _scale_by_range(arr: np.ndarray) -> np.ndarray:
    """(H, W) float -> uint8 mapping [min, max] of the finite values to [0, 255].

    Non-finite values are set to the nearest end; a constant image keeps its value, clipped."""
    finite = np.isfinite(arr)
    if not finite.any():
        return np.zeros(arr.shape, np.uint8)
    low, high = float(arr[finite].min()), float(arr[finite].max())
    arr = np.nan_to_num(arr, nan=low, posinf=high, neginf=low)
    if high == low:
        return np.full(arr.shape, np.clip(round(low), 0, 255), np.uint8)
    return np.round((arr - low) * (255.0 / (high - low))).astype(np.uint8)


# ---------------------------------------------------------------- geometry and arrays


def center_crop(img: Image.Image, pre: Preprocessing = PADDLECLAS_EVAL) -> Image.Image:
    """Resize the short side to `pre.resize` (long = round(long * ratio), >= 1) then take the centre
    `pre.crop` x `pre.crop` at offsets ((w - crop) // 2, (h - crop) // 2), as PaddleClas's
    ResizeImage(resize_short) + CropImage. Returns an RGB image of (crop, crop).

    The resize and crop are done in one `Image.resize(box=...)` call, so a 1 x 5000 image never
    becomes a 256 x 1,280,000 intermediate. If `pre.resize < pre.crop` the short side is resized
    to `pre.crop` instead, so the crop always fits (no padding).
    """
    img = to_rgb(img)
    width, height = img.size
    short = max(pre.resize, pre.crop)
    ratio = short / min(width, height)
    new_w = max(1, int(round(width * ratio)))
    new_h = max(1, int(round(height * ratio)))
    left, top = (new_w - pre.crop) // 2, (new_h - pre.crop) // 2
    scale_x, scale_y = width / new_w, height / new_h
    box = (left * scale_x, top * scale_y,
           min(width, (left + pre.crop) * scale_x), min(height, (top + pre.crop) * scale_y))
    return img.resize((pre.crop, pre.crop), _RESAMPLE[pre.interpolation], box=box)


def preprocess(img: Image.Image, pre: Preprocessing = PADDLECLAS_EVAL) -> np.ndarray:
    """PIL image (any mode) -> (3, crop, crop) float32: RGB, /255, minus mean, over std, CHW."""
    return normalize(center_crop(img, pre), pre)


def normalize(crop: Image.Image | np.ndarray, pre: Preprocessing = PADDLECLAS_EVAL
              ) -> np.ndarray:
    """An RGB crop ((H, W, 3) uint8 or PIL) -> (3, H, W) float32: /255, minus mean, over std,
    CHW. `preprocess` is `center_crop` then this, so a kept crop needs no second decode."""
    pixels = np.asarray(crop, dtype=np.float32) / 255.0
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    normalised = (pixels - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def to_batch(images: Sequence[Image.Image], pre: Preprocessing = PADDLECLAS_EVAL) -> np.ndarray:
    """N PIL images -> (N, 3, crop, crop) float32, C-contiguous (N may be 0)."""
    if len(images) == 0:
        return np.zeros((0, 3, pre.crop, pre.crop), np.float32)
    return np.ascontiguousarray(np.stack([preprocess(im, pre) for im in images]))


def denormalize(x: np.ndarray, pre: Preprocessing = PADDLECLAS_EVAL) -> np.ndarray:
    """(3, H, W) normalised float -> (H, W, 3) uint8 for display (inverse of `preprocess`)."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"denormalize expects a (3, H, W) array, got shape {x.shape}")
    mean = np.asarray(pre.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(pre.std, dtype=np.float32)[:, None, None]
    pixels = np.nan_to_num((x.astype(np.float32) * std + mean) * 255.0)
    rgb = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb.transpose(1, 2, 0))
