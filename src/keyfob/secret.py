"""Masking by construction: ``Secret`` for one value, ``Masked`` for types that hold secrets.

``Secret`` prints as ``Secret('**********')`` wherever it ends up. ``Masked`` is the one base
class for every type that holds a ``Secret``, a token, a lease or key material: it writes the
type's ``repr`` and ``str`` itself, from dataclass fields (a field marked
``field(metadata=SECRET)`` prints as ``<hidden>``) or, for a plain class, from the attributes
it names in ``shown`` (everything else is hidden). A subclass cannot write its own.
"""

from __future__ import annotations

import dataclasses
import reprlib
from types import MappingProxyType
from typing import Any, ClassVar, Generic, TypeVar

T = TypeVar("T")

HIDDEN = "<hidden>"
# Dataclass field metadata for a value Masked never prints: ``field(metadata=SECRET)``.
SECRET: MappingProxyType[str, bool] = MappingProxyType({"secret": True})


class Secret(Generic[T]):
    """Wraps key material or a secret value; only ``reveal()`` hands it out."""

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def reveal(self) -> T:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Secret values are not picklable")


def is_secret_field(f: dataclasses.Field[Any]) -> bool:
    return bool(f.metadata.get("secret"))


class Masked:
    """Base for types holding secrets: ``repr``/``str`` print only what is safe to log."""

    __slots__ = ()
    # A plain (non-dataclass) subclass names the attributes or properties safe to print.
    shown: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("__repr__", "__str__"):
            own = vars(cls).get(name)
            if own is not None and own is not Masked.__repr__:
                raise TypeError(f"{cls.__qualname__} defines {name}; Masked types print as Masked")
            # Set on the subclass itself, so @dataclass (which never replaces a method the
            # class defines) keeps this one instead of generating a repr of every field.
            setattr(cls, name, Masked.__repr__)

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        parts: list[str] = []
        if dataclasses.is_dataclass(self):
            for f in dataclasses.fields(self):
                shown = HIDDEN if is_secret_field(f) else repr(getattr(self, f.name))
                parts.append(f"{f.name}={shown}")
        for name in self.shown:
            parts.append(f"{name}={getattr(self, name)!r}")
        if not dataclasses.is_dataclass(self):
            parts.append(HIDDEN)
        return f"{type(self).__name__}({', '.join(parts)})"
