"""Make the .pth fixtures of tests/test_torchfile.py. Run by hand, once, with real PyTorch:

    /tmp/refenv/bin/python tests/data/torch/make.py    (torch 2.x; se_viz itself never needs torch)

Writes, next to this script:

* ``state_zip.pth`` / ``state_legacy.pth`` - one small state dict in the zip format (torch >= 1.6)
  and in the legacy format (``_use_new_zipfile_serialization=False``): float32 conv and BN
  tensors, a transposed view and an offset slice sharing one storage, an int64 0-d
  ``num_batches_tracked``, float16, bfloat16, int32, bool, uint16 (``_rebuild_tensor_v3``, zip
  only) and an ``nn.Parameter``.
* ``checkpoint_zip.pth`` - a timm-style training checkpoint around the same state dict
  (``epoch``, ``arch``, ``optimizer``, ``args`` as an ``argparse.Namespace``).
* ``old_legacy.pth`` - the legacy format with the torch <= 0.3 rebuild call
  ``torch._utils._rebuild_tensor(storage, offset, size, stride)``.
* ``expected.npz`` - the same tensors as numpy arrays (bfloat16 as float32), the known answer.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


class _OldTensor:
    """Pickles a tensor the way torch <= 0.3 did: _rebuild_tensor(storage, offset, size, stride)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __reduce__(self):
        t = self.tensor
        return torch._utils._rebuild_tensor, (t.storage(), t.storage_offset(), tuple(t.size()),
                                              t.stride())


def state_dict(with_uint16: bool) -> OrderedDict:
    torch.manual_seed(0)
    base = torch.arange(20, dtype=torch.float32).reshape(4, 5) / 7
    sd = OrderedDict()
    sd["conv.weight"] = torch.randn(4, 3, 3, 3)
    sd["fc.weight_t"] = base.t()              # non-contiguous view of `base`
    sd["fc.slice"] = base[1:3, 2:]            # same storage, offset 7
    sd["bn.weight"] = torch.randn(4)
    sd["bn.bias"] = torch.randn(4)
    sd["bn.running_mean"] = torch.randn(4)
    sd["bn.running_var"] = torch.rand(4) + 0.5
    sd["bn.num_batches_tracked"] = torch.tensor(12345678901, dtype=torch.int64)
    sd["half"] = torch.randn(2, 3).half()
    sd["bf16"] = torch.randn(5).bfloat16()
    sd["index"] = torch.tensor([[1, -2], [3, 2**31 - 1]], dtype=torch.int32)
    sd["mask"] = torch.tensor([True, False, True])
    sd["param"] = torch.nn.Parameter(torch.randn(3))
    if with_uint16:
        sd["u16"] = torch.tensor([0, 1, 65535], dtype=torch.uint16)
    return sd


def as_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()


def main() -> None:
    sd = state_dict(with_uint16=True)
    torch.save(sd, HERE / "state_zip.pth")
    torch.save(state_dict(with_uint16=False), HERE / "state_legacy.pth",
               _use_new_zipfile_serialization=False)
    checkpoint = {"epoch": 3, "arch": "tiny", "state_dict": sd, "version": 2,
                  "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2)}},
                                "param_groups": [{"lr": 0.1, "params": [0]}]},
                  "args": argparse.Namespace(model="tiny", lr=0.1, aa=None)}
    torch.save(checkpoint, HERE / "checkpoint_zip.pth")
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    old = {"old.weight": _OldTensor(base[:, 1:])}
    torch.save(old, HERE / "old_legacy.pth", _use_new_zipfile_serialization=False)

    expected = {k: as_numpy(v) for k, v in sd.items()}
    expected["old.weight"] = base[:, 1:].numpy().copy()
    np.savez(HERE / "expected.npz", **expected)

    # the fixtures load back in torch itself
    for name in ("state_zip.pth", "state_legacy.pth", "old_legacy.pth"):
        loaded = torch.load(HERE / name, weights_only=False)
        for key, value in loaded.items():
            assert np.array_equal(as_numpy(value), expected[key]), (name, key)


if __name__ == "__main__":
    main()
