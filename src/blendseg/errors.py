"""Error types that any layer may raise and the front doors (CLI, API) report in one line."""

from __future__ import annotations


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra to install
    (``pip install 'blendseg[onnx]'``)."""
