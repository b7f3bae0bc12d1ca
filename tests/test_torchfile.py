"""se_viz.engine.torchfile: PyTorch checkpoints read without torch, and never run.

Known answers: tests/data/torch/*.pth were written by real torch (tests/data/torch/make.py, run
by hand) and expected.npz holds the same tensors as numpy arrays. Hostile and broken files are
crafted here from pickle opcodes.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from se_viz.engine.torchfile import read_pth
from se_viz.errors import WeightsError

DATA = Path(__file__).parent / "data" / "torch"
LEGACY_HEADER = (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
                 + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2))


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(DATA / "expected.npz") as npz:
        return {key: npz[key] for key in npz.files}


def _check(arrays: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    for key, value in arrays.items():
        want = expected[key]
        assert value.dtype == want.dtype and value.shape == want.shape, key
        assert np.array_equal(value, want), key
        assert value.flags.c_contiguous and value.flags.writeable, key


# ---------------------------------------------------------------- pickle and zip crafting

def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _int(value: int) -> bytes:
    return b"J" + value.to_bytes(4, "little", signed=True)


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor_pkl(storage: str = "FloatStorage", numel: int = 6, offset: int = 0,
                size: tuple = (2, 3), stride: tuple = (3, 1)) -> bytes:
    """data.pkl of ``{'w': tensor}`` as torch writes it (protocol 2, _rebuild_tensor_v2)."""
    pid = _tuple(_str("storage"), _global("torch", storage), _str("0"), _str("cpu"), _int(numel))
    args = _tuple(pid + b"Q", _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)),
                  b"\x89", _global("collections", "OrderedDict") + b")R")
    return b"\x80\x02}" + _str("w") + _global("torch._utils", "_rebuild_tensor_v2") + args + b"Rs."


def _zip(records: dict[str, bytes], top: str = "archive") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in records.items():
            zf.writestr(f"{top}/{name}", data)
    return buf.getvalue()


def _records(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name.split("/", 1)[1]: zf.read(name) for name in zf.namelist()}


# ---------------------------------------------------------------- known answers

@pytest.mark.parametrize("name", ["state_zip.pth", "state_legacy.pth", "old_legacy.pth"])
def test_both_formats_read_exactly_what_torch_saved(name, expected):
    arrays = read_pth((DATA / name).read_bytes(), name)
    _check(arrays, expected)
    if name.startswith("state"):
        assert arrays["fc.weight_t"].shape == (5, 4)      # transposed view, shared storage
        assert np.array_equal(arrays["fc.slice"], arrays["fc.weight_t"].T[1:3, 2:])
        assert arrays["bn.num_batches_tracked"].dtype == np.int64
        assert arrays["bn.num_batches_tracked"] == 12345678901
        assert arrays["half"].dtype == np.float16 and arrays["bf16"].dtype == np.float32
    assert set(arrays) == {
        "state_zip.pth": set(expected) - {"old.weight"},
        "state_legacy.pth": set(expected) - {"old.weight", "u16"},
        "old_legacy.pth": {"old.weight"}}[name]


def test_a_training_checkpoint_unwraps_to_its_state_dict(expected):
    """timm-style: epoch, arch, optimizer, args (an argparse.Namespace) around 'state_dict'."""
    arrays = read_pth((DATA / "checkpoint_zip.pth").read_bytes(), "checkpoint_zip.pth")
    assert set(arrays) == set(expected) - {"old.weight"}
    _check(arrays, expected)


@pytest.mark.parametrize("nest", ["state_dict", "model", "state_dict_ema"])
def test_a_nested_state_dict_unwraps(nest, expected):
    records = _records(DATA / "state_zip.pth")
    inner = records["data.pkl"]
    assert inner[:2] == b"\x80\x02" and inner[-1:] == b"."
    records["data.pkl"] = b"\x80\x02}(" + _str("epoch") + _int(7) + _str(nest) + inner[2:-1] + b"u."
    arrays = read_pth(_zip(records), "nested.pth")
    assert set(arrays) == set(expected) - {"old.weight"}
    _check(arrays, expected)


def test_the_top_folder_name_does_not_matter(expected):
    data = _zip(_records(DATA / "state_zip.pth"), top="my_finetuned_model")
    _check(read_pth(data, "renamed.pth"), expected)


def test_big_endian_data_is_swapped():
    values = (np.arange(6) / 3).astype(">f4")
    data = _zip({"data.pkl": _tensor_pkl(), "byteorder": b"big", "data/0": values.tobytes()})
    out = read_pth(data, "big.pth")["w"]
    assert out.dtype == np.float32 and out.dtype.isnative
    assert np.array_equal(out, values.reshape(2, 3).astype("<f4"))


# ---------------------------------------------------------------- nothing is ever run

def _payload(marker: Path) -> bytes:
    class Exploit:
        def __reduce__(self):
            return os.system, (f"echo pwned > {marker}",)
    return pickle.dumps({"w": Exploit()}, protocol=2)


def test_the_exploit_payload_is_live(tmp_path):
    """Control: plain pickle does run it, so the refusals below are real."""
    marker = tmp_path / "control"
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=_payload(marker), check=True)
    assert marker.read_text().strip() == "pwned"


@pytest.mark.parametrize("where", ["zip", "legacy", "legacy header"])
def test_a_malicious_pickle_is_refused_and_not_run(where, tmp_path):
    marker = tmp_path / "pwned"
    payload = _payload(marker)
    data = {"zip": _zip({"data.pkl": payload}), "legacy": LEGACY_HEADER + payload,
            "legacy header": payload + LEGACY_HEADER}[where]
    with pytest.raises(WeightsError, match=r"evil\.pth: refused: .*'posix\.system'.*nothing in "
                                           r"it was run.*state_dict\(\).*safetensors"):
        read_pth(data, "evil.pth")
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("torch.nn.modules.conv", "Conv2d"),
                                         ("__builtin__", "getattr"), ("torch", "load")])
def test_any_other_name_is_refused(module, name):
    data = _zip({"data.pkl": b"\x80\x02" + _global(module, name) + b")R."})
    with pytest.raises(WeightsError, match="refused.*nothing in it was run"):
        read_pth(data, "model.pth")


def test_a_legacy_whole_model_pickle_is_refused():
    pid = _tuple(_str("module"), _str("Net"), _str("net.py"), _str("class Net: ..."))
    with pytest.raises(WeightsError, match="whole pickled model.*nothing in it was run"):
        read_pth(LEGACY_HEADER + b"\x80\x02" + pid + b"Q.", "net.pth")


def test_an_unsupported_tensor_type_says_so():
    data = _zip({"data.pkl": _tensor_pkl("ComplexFloatStorage"), "data/0": bytes(48)})
    with pytest.raises(WeightsError, match="torch.ComplexFloatStorage.*cannot read"):
        read_pth(data, "complex.pth")


# ---------------------------------------------------------------- broken files

@pytest.mark.parametrize("kw,match", [
    ({"size": (3, 3)}, "outside its data"),            # 9 elements from 6
    ({"offset": 4}, "outside its data"),
    ({"stride": (4, 1)}, "outside its data"),
    ({"stride": (-3, 1)}, "invalid size or offset"),
    ({"numel": 7}, "expected 28"),                      # record has 24 bytes
])
def test_a_tensor_outside_its_data_is_refused(kw, match):
    data = _zip({"data.pkl": _tensor_pkl(**kw), "data/0": np.ones(6, "<f4").tobytes()})
    with pytest.raises(WeightsError, match=f"bad.pth: .*{match}"):
        read_pth(data, "bad.pth")


@pytest.mark.parametrize("name,cut", [("state_zip.pth", 0.5), ("state_zip.pth", 0.98),
                                      ("state_legacy.pth", 0.5), ("state_legacy.pth", 0.95)])
def test_a_truncated_file_gives_a_clear_error(name, cut):
    data = (DATA / name).read_bytes()
    with pytest.raises(WeightsError, match=f"{name}: .*(truncated|corrupt)"):
        read_pth(data[:int(len(data) * cut)], name)


def test_a_flipped_byte_in_the_data_is_caught():
    data = bytearray((DATA / "state_zip.pth").read_bytes())
    at = data.index(_records(DATA / "state_zip.pth")["data/0"][:16])
    data[at + 3] ^= 0xFF
    with pytest.raises(WeightsError, match="truncated or corrupt.*Re-download"):
        read_pth(bytes(data), "flipped.pth")


@pytest.mark.parametrize("data,match", [
    (b"", "truncated or corrupt"),
    (b"<html>404 Not Found</html>", "truncated or corrupt"),
    (pickle.dumps([1, 2, 3], protocol=2), "not a PyTorch checkpoint"),
    (_zip({"weights.bin": b"x"}), "without data.pkl"),
    (_zip({"data.pkl": pickle.dumps([1, 2], protocol=2)}), "expected a state dict.*found list"),
    (_zip({"data.pkl": pickle.dumps({"epoch": 3}, protocol=2)}), "holds no tensors"),
])
def test_not_a_checkpoint_says_what_it_is(data, match):
    with pytest.raises(WeightsError, match=match):
        read_pth(data, "x.pth")


# ---------------------------------------------------------------- through read_file, no torch

@pytest.mark.parametrize("name", ["state_zip.pth", "state_legacy.pth", "checkpoint_zip.pth"])
def test_read_file_reads_pth_without_torch(name, tmp_path, monkeypatch, expected):
    from se_viz.engine.weights import read_file

    monkeypatch.setitem(sys.modules, "torch", None)      # `import torch` now fails
    path = tmp_path / name.replace(".pth", ".pt")
    path.write_bytes((DATA / name).read_bytes())
    arrays, meta, digest = read_file(path)
    assert meta == {} and len(digest) == 64
    _check(arrays, expected)


def test_read_file_refuses_a_malicious_pth(tmp_path, monkeypatch):
    from se_viz.engine.weights import read_file

    monkeypatch.setitem(sys.modules, "torch", None)
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(_zip({"data.pkl": _payload(marker)}))
    with pytest.raises(WeightsError, match="evil.pth: refused"):
        read_file(path)
    assert not marker.exists()
