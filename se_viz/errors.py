"""Exceptions se_viz raises on purpose. Every message tells the user what to do next."""

from __future__ import annotations


class SEVizError(Exception):
    """Base class for errors se_viz raises deliberately (expected, user-facing)."""


class InvalidImageError(SEVizError, ValueError):
    """An image could not be used: empty, truncated, not an image, unsupported or too large."""


class WeightsError(SEVizError, ValueError):
    """A weights file is missing, unreadable, unsafe, or does not fit the model."""


class DatasetError(SEVizError, ValueError):
    """The folder, the output folder or the settings of a dataset run cannot be used."""


class StatsFileError(SEVizError, ValueError):
    """A stats file is missing, unreadable, or not a se_viz dataset stats file."""
