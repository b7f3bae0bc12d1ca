"""Export formats carry the same content and read back exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from se_viz import export


def _sample(n=2, seed=0):
    rng = np.random.default_rng(seed)
    gates = {"SE_2_1": rng.random((n, 8), dtype=np.float32),
             "SE_5_3": rng.random((n, 4), dtype=np.float32)}
    return [f"img{i}.png" for i in range(n)], rng.normal(size=(n, 6)).astype(np.float32), gates


@pytest.mark.parametrize("suffix", export.FORMATS)
def test_round_trip_is_exact(tmp_path, suffix):
    files, logits, gates = _sample()
    meta = {"arch": "se_resnet50_vd", "reduction": 16.0}
    path = export.write(tmp_path / f"x{suffix}", files, logits, gates, meta)
    f2, l2, g2, m2 = export.read(path)
    assert f2 == files and list(g2) == list(gates)
    np.testing.assert_array_equal(l2, logits)
    for k in gates:
        np.testing.assert_array_equal(g2[k], gates[k])
    assert m2["arch"] == "se_resnet50_vd"


def test_json_top5_is_sorted_and_labelled():
    files, logits, gates = _sample(1)
    doc = json.loads(export.to_json(files, logits, gates, labels=list("abcdef")))
    probs = [t["probability"] for t in doc["top5"][0]]
    assert probs == sorted(probs, reverse=True) and len(probs) == 5
    assert doc["top5"][0][0]["label"] == "abcdef"[int(np.argmax(logits[0]))]


def test_mismatched_lengths_and_unknown_suffix_are_refused(tmp_path):
    files, logits, gates = _sample()
    with pytest.raises(ValueError, match="same number"):
        export.to_npz(files[:1], logits, gates)
    with pytest.raises(ValueError, match=".npz"):
        export.write(tmp_path / "x.txt", files, logits, gates)
