"""The preset registry: built-ins are always there, whoever registers first."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Any

import pytest

from keyfob.profiles import registry
from keyfob.profiles.registry import DEFAULT_PRESETS, Field, Preset

ACME = Preset(
    name="acme",
    title="Acme (third party)",
    fields=(Field("ACME_TOKEN", "API token"),),
    defaults=lambda _: {
        "base_url": "https://api.acme.example",
        "hosts": ["api.acme.example"],
        "inject": {"kind": "bearer", "key": "ACME_TOKEN"},
    },
)
FAKE_OPENAI = Preset(name="openai", title="Not OpenAI", fields=(), defaults=lambda _: {})


@dataclass
class FakeEntryPoint:
    """An installed plugin's entry point; loading imports the plugin, which may register."""

    name: str
    preset: object
    registers_on_load: bool = True
    imported: bool = False

    @property
    def value(self) -> str:
        return f"acme_keyfob:{self.name}"

    def load(self) -> object:
        # A module runs once: the second load finds it imported and registers nothing.
        if self.registers_on_load and not self.imported and isinstance(self.preset, Preset):
            registry.register(self.preset)
        self.imported = True
        return self.preset


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry as at process start-up; the real one is restored afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_LOADED", set())


def install(monkeypatch: pytest.MonkeyPatch, *entries: FakeEntryPoint) -> None:
    def entry_points(**select: Any) -> list[FakeEntryPoint]:
        return list(entries) if select == {"group": "keyfob.presets"} else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def names() -> list[str]:
    return [p.name for p in registry.all_presets()]


def test_builtins_load_when_a_third_party_registers_first():
    registry.register(ACME)

    assert registry.get_preset("openai").title == "OpenAI"
    assert names() == [*DEFAULT_PRESETS, "acme"]


def test_an_entry_point_that_registers_before_any_lookup_sits_beside_the_builtins(
    monkeypatch: pytest.MonkeyPatch,
):
    install(monkeypatch, FakeEntryPoint("acme", ACME))
    # The plugin is imported (and registers itself) before keyfob looks at any preset.
    importlib.metadata.entry_points(group="keyfob.presets")[0].load()

    assert registry.get_preset("acme") is ACME
    assert names() == [*DEFAULT_PRESETS, "acme"]


def test_an_entry_point_naming_a_preset_is_loaded_after_the_builtins(
    monkeypatch: pytest.MonkeyPatch,
):
    install(monkeypatch, FakeEntryPoint("acme", ACME, registers_on_load=False))

    assert names() == [*DEFAULT_PRESETS, "acme"]
    assert registry.resolve({"preset": "acme"}).hosts == ["api.acme.example"]


def test_a_third_party_cannot_take_a_builtin_name():
    with pytest.raises(ValueError, match="'openai' is already registered"):
        registry.register(FAKE_OPENAI)

    assert registry.get_preset("openai").title == "OpenAI"


def test_an_entry_point_that_is_not_a_preset_is_refused_by_name(monkeypatch: pytest.MonkeyPatch):
    install(monkeypatch, FakeEntryPoint("broken", {"name": "broken"}))

    with pytest.raises(TypeError, match="'broken'"):
        registry.all_presets()
