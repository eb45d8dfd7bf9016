"""Strings drawn by matplotlib as they are: a class name like ``$\\frac{a}{b}$`` is a label, not maths.

Why: matplotlib reads any text with a pair of unescaped ``$`` as mathtext, so a dataset whose folder names
contain dollars either renders them as formulae or, with an unknown command, fails the whole figure.
"""

from __future__ import annotations

__all__ = ["plain"]


def plain(text: object) -> str:
    """``text`` as a string matplotlib draws literally (every ``$`` escaped; nothing else changes).

    Matplotlib treats ``\\$`` as a literal dollar and never enters maths mode without an unescaped pair,
    so escaping each dollar is enough and keeps backslashes and other characters as typed.
    """
    return str(text).replace("$", r"\$")
