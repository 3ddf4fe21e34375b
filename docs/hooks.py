"""mkdocs hook: the docstrings' Sphinx roles (``:func:`~blendseg.x.load```) read as plain code in the API pages,
as they do in ``help()``: the role dropped, a ``~`` path shortened to its last name."""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:meth|func|class|mod|attr|data|exc|obj):(?=<code>)")
_TILDE = re.compile(r"<code>~\.?(?:\w+\.)*(\w+)</code>")


def on_page_content(html: str, **kwargs) -> str:
    return _TILDE.sub(r"<code>\1</code>", _ROLE.sub("", html))
