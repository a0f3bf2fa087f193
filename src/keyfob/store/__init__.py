"""Storage: the only module that speaks SQL. It never decrypts and never imports crypto."""

from keyfob.store.engine import Database, Tx, async_url, redact
from keyfob.store.records import KekRow, KeyMeta, SetRow, TokenRow, VersionRow

__all__ = [
    "Database",
    "KekRow",
    "KeyMeta",
    "SetRow",
    "TokenRow",
    "Tx",
    "VersionRow",
    "async_url",
    "redact",
]
