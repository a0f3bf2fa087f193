"""Text checks every layer shares.

``str.isdigit`` is true for superscripts (``int()`` then raises) and for other scripts'
digits (which ``int()`` reads as numbers). The numbers keyfob parses from requests,
forms, cursors and settings are ASCII digits only.
"""

from __future__ import annotations


def digits(text: str, most: int = 18) -> bool:
    """True for 1 to ``most`` ASCII digits (so ``int(text)`` fits a 64-bit column)."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()
