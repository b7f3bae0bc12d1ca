"""Tests for se_viz.labels and the shipped ImageNet-1k label files."""

from __future__ import annotations

from importlib import resources

import pytest

from se_viz import labels
from se_viz.labels import imagenet_labels, label_for


def test_exactly_1000_labels():
    names = imagenet_labels()
    assert isinstance(names, tuple)
    assert len(names) == 1000


def test_cached():
    assert imagenet_labels() is imagenet_labels()


@pytest.mark.parametrize(
    ("index", "name"),
    [
        (0, "tench"),
        (1, "goldfish"),
        (134, "crane (bird)"),
        (207, "golden retriever"),
        (281, "tabby"),
        (517, "crane (machine)"),
        (638, "maillot"),
        (639, "maillot (tank suit)"),
        (817, "sports car"),
        (999, "toilet tissue"),
    ],
)
def test_known_answers(index, name):
    assert imagenet_labels()[index] == name
    assert label_for(index) == name


def test_no_empty_or_padded_names():
    for name in imagenet_labels():
        assert name
        assert name == name.strip()
        assert "\n" not in name


def test_names_unique():
    names = imagenet_labels()
    assert len(set(names)) == 1000
    # also unique ignoring case ("Cardigan" the corgi vs "cardigan" the sweater)
    assert len({n.casefold() for n in names}) == 1000


def test_wnids_file_matches_standard_order():
    text = (resources.files("se_viz") / "data" / "imagenet_wnids.txt").read_text(
        encoding="utf-8"
    )
    wnids = text.splitlines()
    assert len(wnids) == 1000
    assert wnids[0] == "n01440764"
    assert wnids[1] == "n01443537"
    assert wnids[999] == "n15075141"
    # the standard ImageNet-1k class order is the sorted order of the WordNet ids
    assert wnids == sorted(wnids)
    assert len(set(wnids)) == 1000


@pytest.mark.parametrize("num_classes", [2, 10, 100, 1001])
def test_label_for_fallback_other_head_sizes(num_classes):
    assert label_for(0, num_classes=num_classes) == "class 0"
    assert label_for(7, num_classes) == "class 7"


def test_label_for_accepts_integer_like():
    class IntLike:
        def __index__(self):
            return 1

    assert label_for(IntLike()) == "goldfish"


@pytest.mark.parametrize("index", [-1, 1000])
def test_label_for_out_of_range(index):
    with pytest.raises(IndexError):
        label_for(index)


def test_wrong_line_count_raises(monkeypatch):
    class FakeFile:
        def __truediv__(self, other):
            return self

        def read_text(self, encoding="utf-8"):
            return "tench\ngoldfish\n"

    monkeypatch.setattr(labels.resources, "files", lambda package: FakeFile())
    labels.imagenet_labels.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="1000"):
            labels.imagenet_labels()
    finally:
        monkeypatch.undo()
        labels.imagenet_labels.cache_clear()
    assert len(labels.imagenet_labels()) == 1000
