"""Use cases: the only layer where plaintext secret values exist in memory."""

from keyfob.store import redact as redact_url
from keyfob.vault import backup as backup_file
from keyfob.vault import schema
from keyfob.vault.context import SYSTEM, Context, new_request_id
from keyfob.vault.operators import Principal
from keyfob.vault.proxying import ProxyRequest, ProxyUse
from keyfob.vault.tls_files import write_self_signed
from keyfob.vault.vault import Initialised, Vault

__all__ = [
    "SYSTEM",
    "Context",
    "Initialised",
    "Principal",
    "ProxyRequest",
    "ProxyUse",
    "Vault",
    "backup_file",
    "new_request_id",
    "redact_url",
    "schema",
    "write_self_signed",
]
