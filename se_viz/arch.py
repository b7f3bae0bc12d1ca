"""Paddle-free facts about the networks se_viz builds: names, families, files, preprocessing.

Everything here is plain data, so analysis, plots, the command line and the app can
describe a network without importing Paddle. The network itself is written once, in
`se_viz.engine.model`; block names and channel counts here are the ones it builds.

Blocks are named as in the paper: ``SE_{stage}_{block}`` with stages 2..5 and blocks from 1
(PaddleClas's ``bb_{s}_{i}`` is ``SE_{s+2}_{i+1}``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .blocks import AttentionBlock
from .images import IMAGENET_MEAN, IMAGENET_STD, PADDLECLAS_EVAL, TIMM_EVAL, Preprocessing

SE_IMPLS = ("linear", "conv")  # the SE block's two fully connected layers: nn.Linear or 1x1 conv
DEPTHS = (3, 4, 6, 3)
EXPANSION = 4
FULL_WIDTH = 64  # first stage's bottleneck width of SE-ResNet-50 (tests use 8)
BN_EPS = 1e-5
BN_MOMENTUM = 0.9
REDUCTION_RATIOS = (1, 2, 4, 8, 16, 32, 64)  # the r se_viz offers (the paper's Table 10 and more)

# the layout a weights file has -> the arch it belongs to
LAYOUT_ARCH = {"paddleclas": "se_resnet50_vd", "se_viz": "se_resnet50", "timm": "se_resnet50",
               "cadene": "legacy_seresnet50"}


def paper_name(stage: int, index: int) -> str:
    """Paper block name for stage ``stage`` (0..3) and block ``index`` (0-based)."""
    return f"SE_{stage + 2}_{index + 1}"


def module_path(stage: int, index: int) -> str:
    """Module path of a bottleneck in the network (PaddleClas's names): ``bb_{stage}_{index}``."""
    return f"bb_{stage}_{index}"


BLOCK_NAMES = tuple(paper_name(s, i) for s, d in enumerate(DEPTHS) for i in range(d))


def block_channels(width: int = FULL_WIDTH) -> dict[str, int]:
    """Block name -> channels C of its SE gates (256 x3, 512 x4, 1024 x6, 2048 x3 at 64)."""
    return {paper_name(s, i): width * 2 ** s * EXPANSION
            for s, d in enumerate(DEPTHS) for i in range(d)}


def hidden_width(channels: int, reduction: float) -> int:
    """Width of the SE bottleneck: int(C / r), at least 1 (PaddleClas's rule)."""
    if not reduction >= 1:
        raise ValueError(f"reduction ratio r must be >= 1, got {reduction!r}")
    return max(1, int(channels / reduction))


def preprocessing_for(layout: str, arch: str = "se_resnet50") -> Preprocessing:
    """The evaluation preprocessing that goes with ``arch``'s weights of ``layout``."""
    if arch in ("se_resnet50", "se_resnet50_vd"):  # either file loads into either layout
        return TIMM_EVAL if layout == "timm" else PADDLECLAS_EVAL
    return SPECS[arch].preprocessing


@dataclass(frozen=True)
class ModelInfo:
    """Static description of a built model, shown wherever results are shown."""

    arch: str
    reduction: float
    num_classes: int
    width: int = FULL_WIDTH
    weights: str = "untrained"          # "untrained", a file path, or "upload:<name>"
    layout: str = "se_viz"              # layout the weights file had
    sha256: str | None = None
    pretrained: bool = False
    se_impl: str = "linear"
    se_weights: str | None = None       # an SE-only file refit at another r (se_viz refit)
    blocks: tuple[AttentionBlock, ...] = ()  # the network's attention blocks, forward order
    class_names: tuple[str, ...] | None = None  # None: ImageNet-1k's names (1000 classes)
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def untrained(self) -> bool:
        return self.weights == "untrained"

    def key(self) -> str:
        """What identifies the numbers this network computes: arch, width, r, weights."""
        se = f"|se:{self.extra.get('se_sha256', '')[:16]}" if self.se_weights else ""
        return (f"{self.arch}|w{self.width}|r{self.reduction:g}|"
                f"{self.sha256 or 'seeded-' + str(self.extra.get('seed', 0))}{se}")


@dataclass(frozen=True)
class PretrainedFile:
    """Where a pretrained file comes from and how it is named in the cache."""

    arch: str
    url: str
    filename: str
    layout: str
    size: int | None
    sha256: str | None
    description: str
    hf_repo: str | None = None        # Hugging Face repo id, when it lives on the hub
    hf_filename: str | None = None
    hf_revision: str | None = None    # pinned commit


PRETRAINED: dict[str, PretrainedFile] = {
    "se_resnet50_vd": PretrainedFile(
        arch="se_resnet50_vd",
        url="https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/"
            "SE_ResNet50_vd_pretrained.pdparams",
        filename="SE_ResNet50_vd_pretrained.pdparams",
        layout="paddleclas",
        size=None,
        sha256=None,
        description="PaddleClas SE_ResNet50_vd, ImageNet-1k top-1 79.52% (native Paddle weights).",
    ),
    "se_resnet50": PretrainedFile(
        arch="se_resnet50",
        url="https://huggingface.co/timm/seresnet50.ra2_in1k/resolve/main/model.safetensors",
        filename="seresnet50.ra2_in1k.safetensors",
        layout="timm",
        size=None,
        sha256=None,
        description="timm seresnet50.ra2_in1k, ImageNet-1k top-1 80.26% @224 (safetensors).",
        hf_repo="timm/seresnet50.ra2_in1k",
        hf_filename="model.safetensors",
        # "main": its 40-hex commit could not be looked up from here. The content is still
        # checked: se_viz compares the bytes with the hub's ETag (the file's sha256).
        hf_revision="main",
    ),
}


@dataclass(frozen=True)
class ArchSpec:
    """One network se_viz can build: its family (the picker's group), the layout of its
    weight files ("paddleclas": PaddleClas keys, loaded unchanged; "timm": timm keys),
    the module under ``se_viz.engine.networks`` that builds it, its evaluation
    preprocessing and the ImageNet top-1 of its pretrained file."""

    arch: str
    family: str
    layout: str
    module: str
    title: str
    top1: float
    preprocessing: Preprocessing


def _timm(crop_pct: float = 0.875, interpolation: str = "bicubic", size: int = 224,
          mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD) -> Preprocessing:
    """timm's eval transform: resize short side floor(size / crop_pct), centre crop size
    (each file's ``pretrained_cfg`` in timm 1.0.31: input size, crop_pct, interpolation,
    mean, std)."""
    return Preprocessing(resize=int(math.floor(size / crop_pct)), crop=size,
                         interpolation=interpolation, mean=mean, std=std)


_RESNETS, _MOBILE, _REGNET = "SE-ResNet / ResNeXt / ECA", "EfficientNet / MobileNetV3 / LCNet", \
    "RegNetY"
SPECS: dict[str, ArchSpec] = {s.arch: s for s in (
    ArchSpec("se_resnet50_vd", _RESNETS, "paddleclas", "resnet", "PaddleClas SE_ResNet50_vd",
             79.52, PADDLECLAS_EVAL),
    ArchSpec("se_resnet50", _RESNETS, "timm", "resnet", "timm seresnet50 (ra2)", 80.26,
             TIMM_EVAL),
    ArchSpec("se_resnext50_vd_32x4d", _RESNETS, "paddleclas", "resnet_family",
             "PaddleClas SE_ResNeXt50_vd_32x4d", 80.24, PADDLECLAS_EVAL),
    ArchSpec("seresnext50_32x4d", _RESNETS, "timm", "resnet_family",
             "timm seresnext50_32x4d (racm)", 81.27, _timm()),
    ArchSpec("legacy_seresnet50", _RESNETS, "timm", "resnet_family",
             "SENet authors' SE-ResNet-50 (timm legacy_seresnet50)", 77.65,
             _timm(interpolation="bilinear")),
    ArchSpec("ecaresnet50d", _RESNETS, "timm", "resnet_family", "timm ecaresnet50d (miil, ECA)",
             80.63, _timm()),
    ArchSpec("efficientnet_b0", _MOBILE, "timm", "mobile", "timm efficientnet_b0 (ra)", 77.70,
             _timm()),
    ArchSpec("mobilenetv3_large_100", _MOBILE, "timm", "mobile",
             "timm mobilenetv3_large_100 (ra)", 75.78, _timm()),
    ArchSpec("lcnet_100", _MOBILE, "timm", "mobile", "timm lcnet_100 (ra2)", 72.13, _timm()),
    ArchSpec("mobilenetv3_large_x1_0", _MOBILE, "paddleclas", "mobile",
             "PaddleClas MobileNetV3_large_x1_0", 75.32, PADDLECLAS_EVAL),
    ArchSpec("pplcnet_x1_0", _MOBILE, "paddleclas", "mobile", "PaddleClas PPLCNet_x1_0", 71.32,
             PADDLECLAS_EVAL),
    ArchSpec("regnety_008", _REGNET, "timm", "regnet", "timm regnety_008 (pycls)", 76.33,
             _timm()),
    ArchSpec("regnety_032", _REGNET, "timm", "regnet", "timm regnety_032 (ra)", 81.95,
             _timm(crop_pct=0.95)),
)}
ARCHS = tuple(SPECS)
FAMILIES = tuple(dict.fromkeys(s.family for s in SPECS.values()))


def _paddleclas_file(arch: str, name: str, top1: float, legendary: bool = False
                     ) -> PretrainedFile:
    folder = "dygraph/legendary_models/" if legendary else "dygraph/"
    return PretrainedFile(
        arch=arch, url=f"https://paddle-imagenet-models-name.bj.bcebos.com/{folder}"
                       f"{name}_pretrained.pdparams",
        filename=f"{name}_pretrained.pdparams", layout="paddleclas", size=None, sha256=None,
        description=f"PaddleClas {name}, ImageNet-1k top-1 {top1:.2f}% (native Paddle weights).")


def _hub_file(arch: str, tag: str, top1: float) -> PretrainedFile:
    return PretrainedFile(
        arch=arch, url=f"https://huggingface.co/timm/{tag}/resolve/main/model.safetensors",
        filename=f"{tag}.safetensors", layout="timm", size=None, sha256=None,
        description=f"timm {tag}, ImageNet-1k top-1 {top1:.2f}% (safetensors).",
        hf_repo=f"timm/{tag}", hf_filename="model.safetensors", hf_revision="main")


PRETRAINED.update({
    "se_resnext50_vd_32x4d": _paddleclas_file("se_resnext50_vd_32x4d", "SE_ResNeXt50_vd_32x4d",
                                              80.24),
    "mobilenetv3_large_x1_0": _paddleclas_file("mobilenetv3_large_x1_0",
                                               "MobileNetV3_large_x1_0", 75.32, legendary=True),
    "pplcnet_x1_0": _paddleclas_file("pplcnet_x1_0", "PPLCNet_x1_0", 71.32, legendary=True),
    "seresnext50_32x4d": _hub_file("seresnext50_32x4d", "seresnext50_32x4d.racm_in1k", 81.27),
    "legacy_seresnet50": PretrainedFile(  # not on the hub: timm's senet.py names this URL
        arch="legacy_seresnet50",
        url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-cadene/"
            "se_resnet50-ce0d4300.pth",
        filename="se_resnet50-ce0d4300.pth", layout="timm", size=None, sha256=None,
        description="The SENet authors' SE-ResNet-50 (Caffe, via Cadene), timm "
                    "legacy_seresnet50.in1k, ImageNet-1k top-1 77.65% (PyTorch .pth)."),
    "ecaresnet50d": _hub_file("ecaresnet50d", "ecaresnet50d.miil_in1k", 80.63),
    "efficientnet_b0": _hub_file("efficientnet_b0", "efficientnet_b0.ra_in1k", 77.70),
    "mobilenetv3_large_100": _hub_file("mobilenetv3_large_100", "mobilenetv3_large_100.ra_in1k",
                                       75.78),
    "lcnet_100": _hub_file("lcnet_100", "lcnet_100.ra2_in1k", 72.13),
    "regnety_008": _hub_file("regnety_008", "regnety_008.pycls_in1k", 76.33),
    "regnety_032": _hub_file("regnety_032", "regnety_032.ra_in1k", 81.95),
})


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    return arch


def check_se_impl(se_impl: str) -> str:
    if se_impl not in SE_IMPLS:
        raise ValueError(f"unknown se_impl {se_impl!r}; choose one of {', '.join(SE_IMPLS)}")
    return se_impl
