"""Paddle-free facts about the two SE-ResNet-50 layouts: names, depths, widths, files.

Everything here is plain data, so analysis, plots, the command line and the app can
describe a network without importing Paddle. The network itself is written once, in
`se_viz.engine.model`; block names and channel counts here are the ones it builds.

Blocks are named as in the paper: ``SE_{stage}_{block}`` with stages 2..5 and blocks from 1
(PaddleClas's ``bb_{s}_{i}`` is ``SE_{s+2}_{i+1}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .images import PADDLECLAS_EVAL, TIMM_EVAL, Preprocessing

ARCHS = ("se_resnet50_vd", "se_resnet50")
SE_IMPLS = ("linear", "conv")  # the SE block's two fully connected layers: nn.Linear or 1x1 conv
DEPTHS = (3, 4, 6, 3)
EXPANSION = 4
FULL_WIDTH = 64  # first stage's bottleneck width of SE-ResNet-50 (tests use 8)
BN_EPS = 1e-5
BN_MOMENTUM = 0.9
DEFAULT_REDUCTION = 16

# the layout a weights file has -> the arch it belongs to
LAYOUT_ARCH = {"paddleclas": "se_resnet50_vd", "se_viz": "se_resnet50", "timm": "se_resnet50"}


def paper_name(stage: int, index: int) -> str:
    """Paper block name for stage ``stage`` (0..3) and block ``index`` (0-based)."""
    return f"SE_{stage + 2}_{index + 1}"


def module_path(stage: int, index: int) -> str:
    """Module path of a bottleneck in the network (PaddleClas's names): ``bb_{stage}_{index}``."""
    return f"bb_{stage}_{index}"


BLOCK_NAMES = tuple(paper_name(s, i) for s, d in enumerate(DEPTHS) for i in range(d))
STAGES = {f"stage {s + 2}": tuple(paper_name(s, i) for i in range(d))
          for s, d in enumerate(DEPTHS)}


def stage_of(block: str) -> int:
    """Paper stage (2..5) of a block name such as ``SE_3_4``."""
    parts = block.split("_")
    if len(parts) != 3 or parts[0] != "SE" or not parts[1].isdigit():
        raise ValueError(f"not a block name: {block!r}; use names like SE_2_1 ... SE_5_3")
    return int(parts[1])


def block_channels(width: int = FULL_WIDTH) -> dict[str, int]:
    """Block name -> channels C of its SE gates (256 x3, 512 x4, 1024 x6, 2048 x3 at 64)."""
    return {paper_name(s, i): width * 2 ** s * EXPANSION
            for s, d in enumerate(DEPTHS) for i in range(d)}


def hidden_width(channels: int, reduction: float) -> int:
    """Width of the SE bottleneck: int(C / r), at least 1 (PaddleClas's rule)."""
    if not reduction >= 1:
        raise ValueError(f"reduction ratio r must be >= 1, got {reduction!r}")
    return max(1, int(channels / reduction))


def preprocessing_for(layout: str) -> Preprocessing:
    """The evaluation preprocessing that goes with weights of ``layout``."""
    return TIMM_EVAL if layout == "timm" else PADDLECLAS_EVAL


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


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    return arch


def check_se_impl(se_impl: str) -> str:
    if se_impl not in SE_IMPLS:
        raise ValueError(f"unknown se_impl {se_impl!r}; choose one of {', '.join(SE_IMPLS)}")
    return se_impl
