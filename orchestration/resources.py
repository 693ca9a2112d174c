"""Typed resources: where the data comes from and where versioned outputs go."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
from pydantic import Field

from orchestration import versioning

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class DatasetResource(dg.ConfigurableResource):
    """The raw dataset a run starts from and the rules its rows must pass."""

    data_dir: str = Field(
        default_factory=lambda: os.environ.get("RECPIPE_DATA_DIR", str(PROJECT_ROOT / "data" / "raw")),
        description="Folder holding datasets (env RECPIPE_DATA_DIR; default data/raw in the repo).",
    )
    dataset: str = Field(
        default_factory=lambda: os.environ.get("RECPIPE_DATASET", "ml-100k"),
        description="Path of the dataset inside data_dir: a RecBole folder, sequence file, split folder, CSV/Parquet.",
    )
    rating_min: float | None = Field(default=None, description="Lowest valid rating; None accepts any.")
    rating_max: float | None = Field(default=None, description="Highest valid rating; None accepts any.")
    max_quarantined_share: float = Field(
        default=0.01, description="The run stops when more than this share of rows is quarantined."
    )

    @property
    def source(self) -> Path:
        return Path(self.data_dir).expanduser() / self.dataset


class ArtifactStore(dg.ConfigurableResource):
    """``artifacts/<asset>/`` folders, each ``dvc add``-ed and pushed after it is written."""

    project_root: str = Field(
        default_factory=lambda: os.environ.get("RECPIPE_ROOT", str(PROJECT_ROOT)),
        description="Repository root holding artifacts/, data/ and .dvc/.",
    )
    dvc_remote: str | None = Field(
        default_factory=lambda: os.environ.get(
            "RECPIPE_DVC_REMOTE", str(Path("~/.cache/recpipe/dvc-remote").expanduser())
        ),
        description="Any DVC remote URL or a local folder (env RECPIPE_DVC_REMOTE); None keeps versions local.",
    )

    artifacts_url: str = Field(
        default_factory=lambda: os.environ.get("RECPIPE_ARTIFACTS_URL", "http://127.0.0.1:3001"),
        description="Where artifacts/ is served over HTTP (`make ui` serves it here), for report links in the UI.",
    )

    @property
    def root(self) -> Path:
        return Path(self.project_root).resolve()

    def url(self, path: Path) -> str:
        """The HTTP address of a file under ``artifacts/``, so the UI can open it."""
        relative = Path(path).resolve().relative_to(self.root / "artifacts")
        return f"{self.artifacts_url.rstrip('/')}/{relative.as_posix()}"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        versioning.ensure_repo(self.root, self.dvc_remote)

    def fresh_folder(self, asset: str) -> Path:
        """An empty ``artifacts/<asset>/`` for a new materialisation."""
        folder = self.root / "artifacts" / asset
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def folder(self, asset: str) -> Path:
        folder = self.root / "artifacts" / asset
        if not folder.exists():
            raise FileNotFoundError(f"{folder} is missing: materialise the asset {asset!r} first")
        return folder

    def snapshot_folder(self) -> Path:
        return self.root / "data"

    def version(self, path: Path) -> tuple[dg.DataVersion, dict[str, dg.MetadataValue]]:
        """Track ``path`` with DVC; its md5 becomes the Dagster data version."""
        tracked = versioning.track(self.root, path, push=self.dvc_remote is not None)
        metadata = {
            "dvc_md5": dg.MetadataValue.text(tracked.md5),
            "dvc_file": dg.MetadataValue.path(str(tracked.dvc_file.relative_to(self.root))),
            "dvc_pushed": dg.MetadataValue.bool(tracked.pushed),
            "bytes": dg.MetadataValue.int(tracked.size),
            "files": dg.MetadataValue.int(tracked.files),
        }
        return dg.DataVersion(tracked.md5), metadata
