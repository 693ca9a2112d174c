"""Reading recpipe's registry folder without trusting it: plain names only, every file inside the
registry, and errors that name the file (relative to the registry, so no server path reaches a client).

Layout (what ``recmodels.registry`` writes): ``<registry>/<model>/<version>/model.onnx`` and
``manifest.json``, plus ``champion.json`` naming the model and version services load by default.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

CHAMPION_FILE = "champion.json"
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
EXPLAIN_FILE = "explain.onnx"  # optional: per-modality contributions, for families that have them
# A registry name is one path component: no separator, no "." or "..", nothing absolute.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
PLAIN_NAME_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"


class RegistryError(Exception):
    """A pointer or entry that cannot be served. The message names the file, relative to the registry."""


class NotRegistered(RegistryError):
    """The named model or version is not in the registry."""


class UnsafeName(RegistryError):
    """A model or version that is not a plain name, or a file that resolves outside the registry."""


def is_plain_name(value: object) -> bool:
    return isinstance(value, str) and PLAIN_NAME.fullmatch(value) is not None


def plain_name(value: object, what: str, source: str) -> str:
    if not is_plain_name(value):
        raise UnsafeName(f"{source}: {what} {value!r} is not a plain registry name ({PLAIN_NAME_RULE})")
    return value


def read_json(path: Path, shown: str) -> Any:
    """The JSON in ``path``; a missing, unreadable or malformed file is a ``RegistryError`` naming ``shown``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotRegistered(f"{shown} is missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RegistryError(f"{shown} cannot be read: {error}") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise RegistryError(
            f"{shown} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from error


def read_champion(registry: Path) -> tuple[str, str]:
    """The model and version ``champion.json`` names, both checked to be plain names."""
    if not (registry / CHAMPION_FILE).exists():
        raise NotRegistered(f"{CHAMPION_FILE} is missing: name a model (RECSERVE_MODEL) or register a champion")
    pointer = read_json(registry / CHAMPION_FILE, CHAMPION_FILE)
    if not isinstance(pointer, dict):
        raise RegistryError(f"{CHAMPION_FILE} must hold a JSON object with 'model' and 'version'")
    missing = [key for key in ("model", "version") if key not in pointer]
    if missing:
        raise RegistryError(f"{CHAMPION_FILE} has no {' and no '.join(repr(key) for key in missing)}")
    return (
        plain_name(pointer["model"], "model", CHAMPION_FILE),
        plain_name(pointer["version"], "version", CHAMPION_FILE),
    )


def _inside(registry: Path, path: Path) -> None:
    """Refuse ``path`` (a symlink, say) when it resolves outside the registry."""
    if not path.resolve().is_relative_to(registry.resolve()):
        raise UnsafeName(f"{path.relative_to(registry)} resolves outside the registry")


def _created_at(registry: Path, folder: Path) -> str:
    shown = str((folder / MANIFEST_FILE).relative_to(registry))
    manifest = read_json(folder / MANIFEST_FILE, shown)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("created_at"), str):
        raise RegistryError(f"{shown} has no 'created_at' string, so the newest version cannot be chosen")
    return manifest["created_at"]


def resolve(registry: Path, model: str | None, version: str | None, source: str = "request") -> Path:
    """The entry folder to serve: the named model and version, its newest version, or the champion.

    ``source`` names where the names came from in errors (``request``, ``RECSERVE_MODEL``...). The folder
    and its two files must resolve inside ``registry``; the names must be plain (``is_plain_name``).
    """
    registry = Path(registry)
    if model is None:
        model, champion_version = read_champion(registry)
        version = version or champion_version
    plain_name(model, "model", source)
    if version is not None:
        plain_name(version, "version", source)
    if not (registry / model).is_dir():
        raise NotRegistered(f"no registered version of {model!r}")
    _inside(registry, registry / model)
    if version is None:
        candidates = [
            entry
            for entry in (registry / model).iterdir()
            if is_plain_name(entry.name) and (entry / MANIFEST_FILE).is_file()
        ]
        if not candidates:
            raise NotRegistered(f"no registered version of {model!r}")
        for entry in candidates:
            _inside(registry, entry)
        version = max(candidates, key=lambda entry: (_created_at(registry, entry), entry.name)).name
    folder = registry / model / version
    if not (folder / MANIFEST_FILE).is_file():
        raise NotRegistered(f"{model}/{version} is not registered")
    for path in (folder, folder / MANIFEST_FILE, folder / MODEL_FILE):
        _inside(registry, path)
    return folder
