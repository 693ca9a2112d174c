"""Dagster launchpad config generated from a library dataclass.

Plain fields become typed Dagster fields, tuples lists, nested plain dataclasses
nested sections, and a swappable part (loss, block, hard negatives, history,
space) a discriminated union of the parts its field admits
(``recmodels.config.part_types``), one ``dg.Config`` per part generated from the
part's own dataclass. In the launchpad a part is its kind and its fields::

    loss:
      sampled_softmax:
        n_negatives: 128

so Dagster refuses an unknown kind or a wrongly typed field before a run starts;
an optional part left out is ``none: {}``. Defaults come from the given instance
(a model preset, a library settings dataclass), inside the preset's part too, so
each setting keeps one source of truth: the dataclass. A new part needs no change
here: its dataclass and the field's type annotation are all the launchpad reads.
"""

import dataclasses
import types
import typing
from typing import Any, Literal

import dagster as dg
import pydantic

from recmodels.config import PartConfig, part_of_kind, part_types

_PLAIN = (int, float, str, bool)
DISCRIMINATOR = "kind"
NO_PART = "none"  # the launchpad kind of an optional part that is left out


def _is_plain(hint: Any) -> bool:
    if hint in _PLAIN:
        return True
    args = typing.get_args(hint)
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return union and all(arg in _PLAIN or arg is type(None) for arg in args)


def _plain_sequence(hint: Any) -> tuple[Any, int | None] | None:
    """``(int, None)`` for ``tuple[int, ...]``, ``(float, 2)`` for ``tuple[float, float]`` (launchpad lists), else None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is not tuple or not args:
        return None
    if len(args) == 2 and args[1] is Ellipsis and args[0] in _PLAIN:
        return args[0], None
    if args[0] in _PLAIN and all(arg is args[0] for arg in args):
        return args[0], len(args)
    return None


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint) and not issubclass(hint, PartConfig)


def launchpad_config(
    name: str,
    preset: Any,
    extra: dict[str, tuple[Any, Any]] | None = None,
    only: tuple[str, ...] | None = None,
) -> type[dg.Config]:
    """A ``dg.Config`` class mirroring ``preset``'s dataclass, with ``preset``'s values as defaults.

    ``only`` keeps some of its fields (an asset that sets part of a library dataclass);
    ``extra`` adds fields the dataclass does not have.
    """
    names = {field.name for field in dataclasses.fields(preset)}
    missing = set(only or ()) - names
    if missing:
        raise ValueError(f"{type(preset).__name__} has no fields {sorted(missing)}")
    fields = _fields(name, type(preset), preset, only)
    fields.update(extra or {})
    return pydantic.create_model(f"{name}_config", __base__=dg.Config, **fields)


def _fields(name: str, cls: type, defaults: Any, only: tuple[str, ...] | None = None) -> dict[str, tuple[Any, Any]]:
    hints = typing.get_type_hints(cls)
    return {
        field.name: _launchpad_field(
            f"{name}_{field.name}", hints[field.name], getattr(defaults, field.name), field.metadata.get("doc")
        )
        for field in dataclasses.fields(cls)
        if only is None or field.name in only
    }


def _launchpad_field(name: str, hint: Any, value: Any, description: str | None) -> tuple[Any, Any]:
    """The pydantic annotation and field (default: ``value``) of one dataclass field."""
    if _is_plain(hint):
        return hint, pydantic.Field(default=value, description=description)
    sequence = _plain_sequence(hint)
    if sequence is not None:
        item, length = sequence
        return list[item], pydantic.Field(
            default_factory=lambda: list(value), min_length=length, max_length=length, description=description
        )
    if _is_section(hint):
        section = pydantic.create_model(name, __base__=dg.Config, **_fields(name, hint, value))
        return section, pydantic.Field(default_factory=section, description=description)
    parts = part_types(hint)
    if not parts:
        raise TypeError(f"{name}: a field of type {hint} has no launchpad form")
    members = {part.kind: _part_config(name, part, value) for part in parts}
    if type(None) in typing.get_args(hint):
        members[NO_PART] = pydantic.create_model(
            f"{name}_{NO_PART}", __base__=dg.Config, **{DISCRIMINATOR: (Literal[NO_PART], NO_PART)}
        )
    chosen = members[NO_PART if value is None else value.kind]
    kinds = ", ".join(members)
    if len(members) == 1:  # a slot of one kind: a plain section (a union needs two members)
        return chosen, pydantic.Field(default_factory=chosen, description=description or f"part: {kinds}")
    union = typing.Union[tuple(members.values())]
    return union, pydantic.Field(
        default_factory=chosen, discriminator=DISCRIMINATOR, description=description or f"one of: {kinds}"
    )


def _part_config(name: str, part: type[PartConfig], value: Any) -> type[dg.Config]:
    """One part's ``dg.Config``: its kind plus its fields, defaulting to ``value`` when it is that part."""
    if part.kind == NO_PART:
        raise ValueError(f"part kind {NO_PART!r} is the launchpad's word for no part; rename {part.__name__}")
    if not isinstance(value, part):
        try:
            value = part()
        except TypeError as error:
            raise TypeError(
                f"part {part.__name__} needs a default for every field to be offered in the launchpad"
            ) from error
    fields = {DISCRIMINATOR: (Literal[part.kind], part.kind), **_fields(f"{name}_{part.kind}", part, value)}
    return pydantic.create_model(f"{name}_{part.kind}", __base__=dg.Config, **fields)


def dataclass_values(preset_type: type, config: dg.Config) -> dict[str, Any]:
    """The launchpad values back as plain values that ``preset_type.from_dict`` reads."""
    hints = typing.get_type_hints(preset_type)
    return {
        field.name: _plain_value(hints[field.name], getattr(config, field.name))
        for field in dataclasses.fields(preset_type)
    }


def _plain_value(hint: Any, value: Any) -> Any:
    if _is_plain(hint):
        return value
    if _plain_sequence(hint) is not None:
        return tuple(value)
    if _is_section(hint):
        return dataclass_values(hint, value)
    kind = getattr(value, DISCRIMINATOR)
    if kind == NO_PART:
        return None
    return {DISCRIMINATOR: kind, **dataclass_values(part_of_kind(kind), value)}
