"""The provider preset registry: built-ins register exactly as a third party would.

A preset is one module under ``presets/`` exposing ``PRESET``; ``DEFAULT_PRESETS`` lists
the built-in modules. ``resolve`` turns what an operator sends (``{"preset": "openai"}``
plus optional overrides, or a full custom profile) into a validated ``Profile``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keyfob.profiles.model import Profile

DEFAULT_PRESETS = (
    "openai",
    "anthropic",
    "stripe",
    "github",
    "slack",
    "twilio",
    "aws",
    "generic",
)


@dataclass(frozen=True)
class Field:
    """One value the dashboard asks for; ``secret`` fields are write-only inputs."""

    key: str
    label: str
    secret: bool = True
    required: bool = True


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    fields: tuple[Field, ...]
    defaults: Callable[[Mapping[str, Any]], dict[str, Any]]
    options: tuple[str, ...] = ()
    docs_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, Preset] = {}


def register(preset: Preset) -> None:
    if preset.name in _REGISTRY:
        raise ValueError(f"preset {preset.name!r} is already registered")
    _REGISTRY[preset.name] = preset


def _load_defaults() -> None:
    if _REGISTRY:
        return
    for module in DEFAULT_PRESETS:
        register(importlib.import_module(f"keyfob.profiles.presets.{module}").PRESET)


def all_presets() -> list[Preset]:
    _load_defaults()
    return list(_REGISTRY.values())


def get_preset(name: str) -> Preset:
    _load_defaults()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None


def resolve(spec: Mapping[str, Any]) -> Profile:
    """A validated profile from a preset name plus overrides, or from a full spec."""
    data = dict(spec)
    name = data.pop("preset", None)
    if name is None:
        return Profile.model_validate(data)
    preset = get_preset(str(name))
    options = {k: data.pop(k) for k in preset.options if k in data}
    merged = {**preset.defaults(options), **data, "preset": preset.name}
    return Profile.model_validate(merged)
