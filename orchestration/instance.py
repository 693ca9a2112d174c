"""Write ``$DAGSTER_HOME/dagster.yaml``: ``orchestration/dagster.yaml`` with the storage of the profile that
``RECPIPE_INSTANCE`` names.

``sqlite`` (the default) keeps the file's own SQLite storage under ``$DAGSTER_HOME``; any other profile is an
``orchestration/dagster-<profile>.yaml`` whose top-level blocks replace the file's (``postgres``: its storage),
so the concurrency limits and run monitoring have one home whatever the storage. ``make run``, ``make ui`` and
``make release`` call ``python -m orchestration.instance`` first; the file is rewritten (atomically) only when
its content changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
BASE = HERE / "dagster.yaml"
DEFAULT_PROFILE = "sqlite"


def profiles() -> dict[str, Path | None]:
    """Profile name -> its overlay file (``None``: the base file as it is)."""
    found: dict[str, Path | None] = {DEFAULT_PROFILE: None}
    for overlay in sorted(HERE.glob("dagster-*.yaml")):
        found[overlay.stem.removeprefix("dagster-")] = overlay
    return found


def instance_config(profile: str = DEFAULT_PROFILE) -> dict[str, Any]:
    """The instance settings of ``profile``: the base file, its top-level blocks replaced by the overlay's."""
    known = profiles()
    if profile not in known:
        raise ValueError(f"RECPIPE_INSTANCE={profile!r}: not a profile; use one of {', '.join(known)}")
    config = yaml.safe_load(BASE.read_text())
    overlay = known[profile]
    if overlay is not None:
        config.update(yaml.safe_load(overlay.read_text()))
    return config


def write_instance(home: Path, profile: str = DEFAULT_PROFILE) -> bool:
    """Write ``home/dagster.yaml`` for ``profile``; returns whether the file changed."""
    config = instance_config(profile)
    text = f"# Written by `python -m orchestration.instance` (RECPIPE_INSTANCE={profile}); edit\n"
    text += "# orchestration/dagster.yaml and its dagster-<profile>.yaml files, not this copy.\n"
    text += yaml.safe_dump(config, sort_keys=False)
    target = Path(home) / "dagster.yaml"
    if target.exists() and target.read_text() == text:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    scratch.write_text(text)
    scratch.replace(target)
    return True


if __name__ == "__main__":
    chosen = os.environ.get("RECPIPE_INSTANCE", DEFAULT_PROFILE)
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise SystemExit("DAGSTER_HOME is not set: it names the folder the instance file goes to")
    if write_instance(Path(home), chosen):
        print(f"wrote {home}/dagster.yaml for the {chosen} instance profile")
