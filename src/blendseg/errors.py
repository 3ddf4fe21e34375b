"""Error types that any layer may raise and the front doors (CLI, API) report in one line."""

from __future__ import annotations


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra to install
    (``pip install 'blendseg[onnx]'``)."""


class DataError(ValueError):
    """Broken data: annotations (the message lists every problem found, ``blendseg data check``) or an image that
    cannot be read (the message names the file). Also importable from :mod:`blendseg.data.check`."""
