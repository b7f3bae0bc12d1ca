"""Shared fixtures: tiny seeded models (fast) and an isolated weights cache."""

from __future__ import annotations

import numpy as np
import pytest

TINY = dict(width=8, num_classes=10)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test ever reads or writes the real ~/.cache/se_viz, the real Hugging Face cache or
    the network (HF_ENDPOINT points at a closed local port unless a test sets a mirror)."""
    home = tmp_path_factory.mktemp("se_viz_home")
    monkeypatch.setenv("SE_VIZ_HOME", str(home))
    monkeypatch.delenv("SE_VIZ_MIRROR", raising=False)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home / "huggingface"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return home


def make_tiny(arch: str = "se_resnet50_vd", seed: int = 0, **kw):
    from se_viz.engine.build import build_model

    opts = dict(TINY)
    opts.update(kw)
    return build_model(arch, None, width=opts.pop("width"), seed=seed, **opts)


@pytest.fixture(scope="session")
def tiny_vd():
    return make_tiny("se_resnet50_vd")


@pytest.fixture(scope="session")
def tiny_canonical():
    return make_tiny("se_resnet50")


def batch(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, 3, size, size) float32, a deterministic normalised-looking input."""
    return np.random.default_rng(seed).normal(0, 1, (n, 3, size, size)).astype(np.float32)
