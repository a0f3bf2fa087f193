"""The audit hash chain and its signed checkpoints (pure: no SQL, no keys of its own)."""

from keyfob.audit.chain import (
    GENESIS,
    ChainVerifier,
    Event,
    canonical,
    event_hash,
    record_hash,
)
from keyfob.audit.checkpoint import Checkpoint, CheckpointFile

__all__ = [
    "GENESIS",
    "ChainVerifier",
    "Checkpoint",
    "CheckpointFile",
    "Event",
    "canonical",
    "event_hash",
    "record_hash",
]
