"""The provider preset registry: built-ins register exactly as a third party would.

A preset is one module under ``presets/`` exposing ``PRESET``; ``DEFAULT_PRESETS`` lists
the built-in modules. Third parties add theirs with ``register`` or an entry point in the
``keyfob.presets`` group naming a ``Preset``. Built-ins always load first, whoever registers
first, so no third party can take a built-in name. ``resolve`` turns what an operator sends
(``{"preset": "openai"}`` plus optional overrides, or a full custom profile) into a
validated ``Profile``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
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
    "google",
    "google_service_account",
    "microsoft_graph",
    "slack_oauth",
    "github_oauth",
    "github_app",
    "oauth",
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
    # The variables the provider's own clients read, for ``keyfob run``: templates over
    # ``{proxy_url}`` (keyfob's route for the set) and ``{lease}``; never a key name.
    env: dict[str, str] = field(default_factory=dict)


def scope_list(value: Any, default: list[str]) -> list[str]:
    """Scopes from an option: a list, or text separated by spaces or commas (a form)."""
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part] or default
    return list(value) if value else default


ENTRY_POINT_GROUP = "keyfob.presets"

_REGISTRY: dict[str, Preset] = {}
# Which loading steps have run ("builtins", "entry_points"). A non-empty registry is no
# sign the built-ins are in: a third party may have registered first.
_LOADED: set[str] = set()


def register(preset: Preset) -> None:
    """Add a preset; a name already taken (a built-in's included) is refused."""
    _load_builtins()
    _add(preset)


def _add(preset: Preset) -> None:
    if preset.name in _REGISTRY:
        raise ValueError(f"preset {preset.name!r} is already registered")
    _REGISTRY[preset.name] = preset


def _load_builtins() -> None:
    if "builtins" in _LOADED:
        return
    _LOADED.add("builtins")
    for module in DEFAULT_PRESETS:
        _add(importlib.import_module(f"keyfob.profiles.presets.{module}").PRESET)


def _load_defaults() -> None:
    """Built-ins, then every ``keyfob.presets`` entry point (once per process)."""
    _load_builtins()
    if "entry_points" in _LOADED:
        return
    _LOADED.add("entry_points")
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        preset = entry.load()
        if not isinstance(preset, Preset):
            raise TypeError(f"entry point {entry.name!r} ({entry.value}) is not a Preset")
        # A plugin module may call register() itself when it is imported.
        if _REGISTRY.get(preset.name) is not preset:
            _add(preset)


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


def env_of(profile: Mapping[str, Any] | None) -> dict[str, str]:
    """The client variables a stored profile's preset declares ({} for a custom profile)."""
    name = profile.get("preset") if profile else None
    if not isinstance(name, str):
        return {}
    try:
        return dict(get_preset(name).env)
    except ValueError:  # a plug-in preset no longer installed
        return {}


def resolve(spec: Mapping[str, Any]) -> Profile:
    """A validated profile from a preset name plus overrides, or from a full spec."""
    data = dict(spec)
    name = data.pop("preset", None)
    if name is None:
        return Profile.model_validate(data)
    preset = get_preset(str(name))
    options = {k: data.pop(k) for k in preset.options if k in data}
    # Options that only the dashboard's connect flow reads (authorize_url) stay out.
    options.pop("authorize_url", None)
    merged = {**preset.defaults(options), **data, "preset": preset.name}
    return Profile.model_validate(merged)
