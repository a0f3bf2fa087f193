"""The audit hash chain and its signed checkpoints (pure: no SQL, no keys of its own)."""

from keyfob.audit.chain import (
    GENESIS,
    STORED_COLUMNS,
    ChainVerifier,
    Event,
    canonical,
    event_hash,
    parse_details,
    record_hash,
    stored_event,
)
from keyfob.audit.checkpoint import Checkpoint, CheckpointFile
from keyfob.audit.shipping import ShippedChain

__all__ = [
    "GENESIS",
    "STORED_COLUMNS",
    "ChainVerifier",
    "Checkpoint",
    "CheckpointFile",
    "Event",
    "ShippedChain",
    "canonical",
    "event_hash",
    "parse_details",
    "record_hash",
    "stored_event",
]
