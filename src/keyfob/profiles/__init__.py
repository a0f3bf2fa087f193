"""Injection profiles (where a set's keys may go and how) and the provider presets."""

from keyfob.names import KEY_NAME_RE, SLUG_RE
from keyfob.profiles.model import Inject, Profile, check_key_name, check_slug
from keyfob.profiles.registry import Field, Preset, all_presets, get_preset, resolve

__all__ = [
    "KEY_NAME_RE",
    "SLUG_RE",
    "Field",
    "Inject",
    "Preset",
    "Profile",
    "all_presets",
    "check_key_name",
    "check_slug",
    "get_preset",
    "resolve",
]
