"""Typed, JSON round-trippable configuration with swappable parts chosen by type.

A part (transformer block, loss, negative sampler) is a frozen dataclass with a
``kind`` tag; ``build()`` turns it into the object it configures. Serialised
parts carry their ``kind`` so a config reads back into the same types: parts
are looked up in a registry, never chosen through string if/elif chains.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, Self


class PartConfig:
    """Base of every swappable part's config; subclasses are frozen dataclasses with a ``kind``."""

    kind: ClassVar[str]
    _kinds: ClassVar[dict[str, type["PartConfig"]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            if cls.kind in PartConfig._kinds:
                raise ValueError(f"part kind {cls.kind!r} is registered twice")
            PartConfig._kinds[cls.kind] = cls


def part_types(hint: Any) -> tuple[type[PartConfig], ...]:
    """The registered parts a field typed ``hint`` admits: ``A | B | None`` -> ``(A, B)``; () for other fields."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return tuple(
        member
        for member in members
        if isinstance(member, type) and PartConfig._kinds.get(getattr(member, "kind", None)) is member
    )


def to_plain(value: Any) -> Any:
    """Dataclasses to dicts (parts tagged with ``kind``), recursively."""
    if isinstance(value, PartConfig):
        return {"kind": value.kind, **{f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    return value


def part_of_kind(kind: str) -> type[PartConfig]:
    if kind not in PartConfig._kinds:
        raise ValueError(f"unknown part kind {kind!r}; known: {sorted(PartConfig._kinds)}")
    return PartConfig._kinds[kind]


def from_plain(value: Any) -> Any:
    """Inverse of ``to_plain`` for tagged parts; other values pass through."""
    if isinstance(value, dict) and "kind" in value:
        cls = part_of_kind(value["kind"])
        return build_dataclass(cls, {k: v for k, v in value.items() if k != "kind"})
    return value


def build_dataclass(cls: type, values: dict[str, Any]) -> Any:
    """``cls(**values)`` with tagged parts and nested plain dataclasses rebuilt from dicts."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    hints = typing.get_type_hints(cls)
    rebuilt = {}
    for name, value in values.items():
        hint = hints[name]
        if isinstance(value, dict) and "kind" not in value and dataclasses.is_dataclass(hint):
            rebuilt[name] = build_dataclass(hint, value)
        elif isinstance(value, dict) and "kind" in value:
            part, admitted = from_plain(value), part_types(hint)
            if not isinstance(part, admitted):
                kinds = sorted(part_class.kind for part_class in admitted)
                raise ValueError(f"{cls.__name__}.{name} takes a part of kind {kinds}, got {value['kind']!r}")
            rebuilt[name] = part
        elif isinstance(value, list) and typing.get_origin(hint) is tuple:  # JSON has no tuples
            rebuilt[name] = tuple(value)
        else:
            rebuilt[name] = from_plain(value)
    return cls(**rebuilt)


class Configurable:
    """Mixin for top-level configs: ``to_dict`` / ``from_dict`` through JSON-safe values."""

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        return build_dataclass(cls, values)
