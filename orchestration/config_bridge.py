"""Dagster launchpad config generated from a model's config dataclass.

Plain fields become typed Dagster fields, nested plain dataclasses become
nested config sections, and swappable parts (loss, block, hard negatives) a
JSON string with their ``kind``. Defaults come from the asset's preset, so each
setting keeps one source of truth: the dataclass.
"""

import dataclasses
import json
import types
import typing
from typing import Any

import dagster as dg
import pydantic

from recmodels.config import to_plain

_PLAIN = (int, float, str, bool)


def _is_plain(hint: Any) -> bool:
    if hint in _PLAIN:
        return True
    args = typing.get_args(hint)
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return union and all(arg in _PLAIN or arg is type(None) for arg in args)


def _plain_sequence_item(hint: Any) -> Any | None:
    """``int`` for ``tuple[int, ...]`` (a launchpad list of ints), else None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _PLAIN:
        return args[0]
    return None


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint) and not hasattr(hint, "kind")


def launchpad_config(name: str, preset: Any, extra: dict[str, tuple[Any, Any]] | None = None) -> type[dg.Config]:
    """A ``dg.Config`` class mirroring ``preset``'s dataclass, with ``preset``'s values as defaults."""
    hints = typing.get_type_hints(type(preset))
    fields: dict[str, tuple[Any, Any]] = {}
    for field in dataclasses.fields(preset):
        hint, value = hints[field.name], getattr(preset, field.name)
        if _is_plain(hint):
            fields[field.name] = (hint, value)
        elif _plain_sequence_item(hint) is not None:
            fields[field.name] = (
                list[_plain_sequence_item(hint)],
                pydantic.Field(default_factory=lambda v=value: list(v)),
            )
        elif _is_section(hint):
            section = launchpad_config(f"{name}_{field.name}", value)
            fields[field.name] = (section, pydantic.Field(default_factory=section))
        else:
            description = f"JSON of a swappable part with its 'kind'; default {type(value).__name__}"
            fields[field.name] = (str, pydantic.Field(default=json.dumps(to_plain(value)), description=description))
    fields.update(extra or {})
    return pydantic.create_model(f"{name}_config", __base__=dg.Config, **fields)


def dataclass_values(preset_type: type, config: dg.Config) -> dict[str, Any]:
    """The launchpad values back as plain values that ``preset_type.from_dict`` reads."""
    hints = typing.get_type_hints(preset_type)
    values = {}
    for field in dataclasses.fields(preset_type):
        hint, value = hints[field.name], getattr(config, field.name)
        if _is_plain(hint):
            values[field.name] = value
        elif _plain_sequence_item(hint) is not None:
            values[field.name] = tuple(value)
        elif _is_section(hint):
            values[field.name] = dataclass_values(hint, value)
        else:
            values[field.name] = json.loads(value)
    return values
