"""PyTorch peer for the benchmark: SE-ResNet-50 eager forward, ms per image.

Run by ``benchmarks/run.py`` in its own process (any interpreter that has torch); prints
one JSON line. Uses timm's ``seresnet50`` when timm imports, else the same network written
out below (timm's layout: 7x7 stem, SE after bn3 with 1x1 convolutions, r = 16).

    python benchmarks/torch_peer.py --batches 1 8 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch import nn


class SE(nn.Module):
    def __init__(self, c: int, r: int = 16) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(True),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes),
            nn.ReLU(True), nn.Conv2d(planes, cout, 1, bias=False), nn.BatchNorm2d(cout), SE(cout))
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))


def se_resnet50(num_classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(True), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for s, depth in enumerate((3, 4, 6, 3)):
        for i in range(depth):
            layers.append(Bottleneck(cin, 64 * 2 ** s, 2 if i == 0 and s > 0 else 1))
            cin = 64 * 2 ** s * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def build() -> tuple[nn.Module, str]:
    try:
        import timm
        model = timm.create_model("seresnet50", pretrained=False)
        return model, f"timm {timm.__version__} seresnet50"
    except Exception:  # timm missing, or its torchvision import failing beside this torch
        return se_resnet50(), "plain PyTorch SE-ResNet-50 (timm layout; timm not importable)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model, what = build()
    model.eval()
    result = {"engine": f"PyTorch {torch.__version__} eager, {what}",
              "threads": torch.get_num_threads(), "ms_per_image": {}}
    with torch.inference_mode():
        for n in args.batches:
            x = torch.randn(n, 3, 224, 224)
            for _ in range(args.warmup):
                model(x)
            times = []
            for _ in range(args.repeats if n == 1 else max(3, args.repeats // 2)):
                time.sleep(0.02)
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
            result["ms_per_image"][str(n)] = statistics.median(times) * 1e3 / n
    print(json.dumps(result))


if __name__ == "__main__":
    main()
