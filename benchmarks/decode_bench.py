"""Draft-mode JPEG decoding: what it changes in what the network sees, and what it saves.

    python benchmarks/decode_bench.py [--photos A.jpg ...] [--repeats 15] [--factors 2 4]

Large JPEGs are made from the repo's real photos (assets/*.jpg), saved at quality 92 with
4:2:0 chroma as phones do: a collage of the photos at their own pixel scale (real detail at
every pixel, the hard case), the coffee photo upsampled with sensor-like noise, one
progressive and one stored sideways with EXIF orientation 6; 12, 6, 3 and 2 MP. ``--photos``
adds real photos. For every photo and draft factor K (short side kept >= K x the resize
target): the 224 crop's pixel difference against a full decode (0..255), then the gates of
SE-ResNet-50-vd (seeded, and the live-gate reference fixture weights) against the full decode's,
next to the 8-bit floor (the full crop plus uniform +-0.5 level noise), and top-5 agreement.
Then decode and decode + crop times of a 4032 x 3024 JPEG, full and draft, and one upload's
server time (decode, crop, capture with every block's maps).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import interleaved, machine, median_ms, spread  # noqa: E402
from se_viz import images  # noqa: E402
from se_viz.arch import SPECS  # noqa: E402

ARCH = "se_resnet50_vd"
SIZES = ((4032, 3024), (3000, 2000), (2048, 1536), (1632, 1224))


def _assets() -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted((ROOT / "assets").glob("*.jpg"))]


def collage(size: tuple[int, int]) -> Image.Image:
    """The asset photos tiled at their own pixel scale (with a few mirrored) over `size`."""
    tiles, out, i = _assets(), Image.new("RGB", size), 0
    for y in range(0, size[1], 300):
        for x in range(0, size[0], 450):
            tile = tiles[i % len(tiles)].crop((0, 0, 450, 300))
            out.paste(tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 3 else tile, (x, y))
            i += 1
    return out


def upsampled(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """The coffee photo resized to `size` (bicubic) plus Gaussian noise of 4 levels."""
    img = Image.open(ROOT / "assets" / "coffee_cup.jpg").convert("RGB")
    arr = np.asarray(img.resize(size, Image.Resampling.BICUBIC), np.float32)
    arr += np.random.default_rng(seed).normal(0.0, 4.0, arr.shape)
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))


def jpeg(img: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, **options)
    return buf.getvalue()


def sideways(img: Image.Image) -> bytes:
    """An upright photo stored rotated, with EXIF orientation 6 (as a phone held upright)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg(img.transpose(Image.Transpose.ROTATE_90), exif=exif)


def photos(extra: list[str]) -> list[tuple[str, bytes]]:
    out = []
    for w, h in SIZES:
        out.append((f"collage {w}x{h}", jpeg(collage((w, h)))))
        out.append((f"upsampled {w}x{h}", jpeg(upsampled((w, h)))))
    out.append(("collage 4032x3024 progressive", jpeg(collage(SIZES[0]), progressive=True)))
    out.append(("collage 3024x4032 EXIF 6", sideways(collage((3024, 4032)))))
    out += [(Path(p).name, Path(p).read_bytes()) for p in extra]
    return out


@contextmanager
def factor(k: int):
    old, images.DRAFT_FACTOR = images.DRAFT_FACTOR, k
    try:
        yield
    finally:
        images.DRAFT_FACTOR = old


def crop(data: bytes, pre, k: int | None) -> np.ndarray:
    """(224, 224, 3) uint8: full decode when k is None, else draft with factor k."""
    if k is None:
        return np.asarray(images.center_crop(images.decode_image(data), pre))
    with factor(k):
        return np.asarray(images.center_crop(images.decode_image(data, draft_for=pre), pre))


def models() -> dict:
    from se_viz import build_model
    from se_viz.engine.networks import build
    from se_viz.engine.weights import load_arrays
    from tests.reference.draw import fixture_state, read_fixture

    ref = build(ARCH, num_classes=1000)
    load_arrays(ref, fixture_state(read_fixture(ROOT / "tests/reference" / f"{ARCH}.npz")), ARCH)
    return {"seeded": build_model(ARCH), "reference weights": ref}


def gates_and_top5(model, crops: np.ndarray, pre) -> tuple[np.ndarray, np.ndarray]:
    """crops (N, 224, 224, 3) float in 0..255 -> all gates (N, sum C), top-5 classes (N, 5)."""
    import se_viz

    batch = np.stack([images.normalize(c.astype(np.float32), pre) for c in crops])
    cap = se_viz.capture(model, batch, engine="eager")
    gates = np.concatenate([cap.gates[b] for b in cap.gates], axis=1)
    return gates, np.argsort(-cap.logits, axis=1)[:, :5]


def accuracy_rows(shots, factors: list[int]) -> None:
    pre = SPECS[ARCH].preprocessing
    full = np.stack([crop(d, pre, None) for _, d in shots]).astype(np.float32)
    draft = {k: np.stack([crop(d, pre, k) for _, d in shots]).astype(np.float32) for k in factors}
    other = SPECS["se_resnet50"].preprocessing  # timm's bicubic beside PaddleClas's bilinear
    print(f"\n224 crop, draft vs full decode, |difference| in 0..255, mean / max: "
          f"{pre.interpolation} {pre.resize} [{other.interpolation} {other.resize}]")
    for i, (name, data) in enumerate(shots):
        cells = []
        for k in factors:
            d = np.abs(draft[k][i] - full[i])
            b = np.abs(crop(data, other, k).astype(np.float32) - crop(data, other, None))
            cells.append(f"K={k}: {d.mean():.2f} / {d.max():.0f} [{b.mean():.2f} / {b.max():.0f}]")
        print(f"  {name:32s} " + "   ".join(cells))
    floor = np.clip(full + np.random.default_rng(1).uniform(-0.5, 0.5, full.shape), 0, 255)
    drafted = {k: np.array([_drafted(d, pre, k) for _, d in shots]) for k in factors}
    print(f"\nGates of {ARCH} against the full decode's, over the photos each K drafts: "
          "max |difference| (mean), share of photos whose top-5 classes keep their order, top-1")
    for label, model in models().items():
        g_full, t_full = gates_and_top5(model, full, pre)
        cells = []
        for what, x, keep in (("8-bit floor", floor, np.ones(len(shots), bool)),
                              *((f"K={k}", draft[k], drafted[k]) for k in factors)):
            g, t = gates_and_top5(model, x[keep], pre)
            diff, same5 = np.abs(g - g_full[keep]), np.mean(np.all(t == t_full[keep], axis=1))
            cells.append(f"{what} ({keep.sum()} photos): {diff.max():.2e} ({diff.mean():.1e})"
                         f" top-5 {same5:.0%} top-1 {np.mean(t[:, 0] == t_full[keep, 0]):.0%}")
        print(f"  {label}:\n    " + "\n    ".join(cells))


def _drafted(data: bytes, pre, k: int) -> bool:
    with factor(k):
        return images.decode_image(data, draft_for=pre).size != images.decode_image(data).size


def timing_rows(factors: list[int], repeats: int) -> None:
    pre = SPECS[ARCH].preprocessing
    data = jpeg(collage(SIZES[0]))
    cases = {"full": lambda: images.decode_image(data)}
    for k in factors:
        cases[f"draft K={k}"] = (lambda k=k: crop_only(data, pre, k, decode_only=True))
    cases["full + crop"] = lambda: images.center_crop(images.decode_image(data), pre)
    for k in factors:
        cases[f"draft K={k} + crop"] = (lambda k=k: crop_only(data, pre, k))
    times = interleaved(cases, repeats)
    print(f"\n4032 x 3024 JPEG ({len(data) / 1e6:.1f} MB), decode_image (+ center_crop), "
          "median ms")
    for name, t in times.items():
        print(f"  {name:20s} {median_ms(t):7.1f} ms  ({spread(t)})")


def crop_only(data: bytes, pre, k: int, decode_only: bool = False):
    with factor(k):
        img = images.decode_image(data, draft_for=pre)
    return img if decode_only else images.center_crop(img, pre)


def upload_row(repeats: int) -> None:
    """decode_image(draft) + center_crop + capture with every block's maps (as run_image)."""
    import se_viz

    model = se_viz.build_model(ARCH)
    pre, data = model.preprocessing, jpeg(collage(SIZES[0]))
    blocks = [b.name for b in model.info.blocks]

    def upload():
        c = np.asarray(images.center_crop(images.decode_image(data, draft_for=pre), pre))
        return se_viz.capture(model, images.normalize(c, pre)[None], features=blocks)

    t = interleaved({"upload": upload}, repeats)["upload"]
    print(f"\nOne 12 MP upload, draft decode + crop + capture with all {len(blocks)} blocks' "
          f"maps: {median_ms(t):.0f} ms ({spread(t)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", nargs="*", default=[], help="real JPEGs to add")
    ap.add_argument("--factors", nargs="+", type=int, default=[2, images.DRAFT_FACTOR])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    factors = sorted(set(args.factors))
    print(f"machine: {machine()}; DRAFT_FACTOR = {images.DRAFT_FACTOR}")
    start = time.perf_counter()
    accuracy_rows(photos(args.photos), factors)
    timing_rows(factors, args.repeats)
    upload_row(args.repeats)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
