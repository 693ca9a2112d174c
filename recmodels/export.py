"""ONNX export of any model through the one serving contract, and a parity check.

Contract: input ``history int64 [batch, length]`` (0 = padding, most recent last),
outputs ``items int64 [batch, k]`` and ``scores float32 [batch, k]``. Padding and
the history's own items are masked inside the graph, top-k is inside the graph,
batch and length are dynamic. Every family exports its ``scorer()``, the module
``score`` runs, so the check compares the same function in two runtimes.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from recmodels.evaluation import mask_seen
from recmodels.models.base import Recommender
from recmodels.registry import EXPLAIN_FILE, popularity_ranking, register

OPSET = 18
INPUT_NAME = "history"
OUTPUT_NAMES = ("items", "scores")


class TopKHead(nn.Module):
    """Scores -> the k best unseen items: ``evaluation.mask_seen`` (padding and every item of
    the history given, however much of it the scorer reads), then top-k.

    ONNX TopK hands ties to the lower index, the same rule as ``evaluation.top_k``.
    """

    def __init__(self, scorer: nn.Module, k: int) -> None:
        super().__init__()
        self.scorer = scorer
        self.k = k

    def forward(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, items = torch.topk(mask_seen(self.scorer(history).float(), history), self.k, dim=1)
        return items, values


@dataclass(frozen=True)
class ExportSpec:
    """What a downstream service needs to call the file; stored in the registry manifest."""

    opset: int
    k: int
    n_items: int
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)


def export_onnx(model: Recommender, path: Path, k: int = 100) -> ExportSpec:
    """Trace ``model``'s scorer with a top-k head into one self-contained ``.onnx`` file."""
    n_items = model._require_fitted()
    if not 1 <= k <= n_items:
        raise ValueError(f"k must be in [1, {n_items}], got {k}")
    scorer = model.scorer()
    if not getattr(scorer, "exportable", True):
        raise ValueError(f"{type(model).__name__} with this config cannot be traced: {type(scorer).exportable.__doc__}")
    head = TopKHead(scorer, k).cpu().eval()
    example = torch.randint(1, n_items + 1, (2, 8), generator=torch.Generator().manual_seed(0))
    dims = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("length", min=1)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on optional torchvision ops
        program = torch.onnx.export(
            head,
            (example,),
            dynamo=True,
            verbose=False,  # its progress lines went to stdout, into the benchmarks' one JSON line
            dynamic_shapes={INPUT_NAME: dims},
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=OPSET,
            external_data=False,
        )
    program.save(str(path), external_data=False)
    _drop_debug_metadata(path)
    return ExportSpec(
        opset=OPSET,
        k=k,
        n_items=n_items,
        inputs={INPUT_NAME: {"dtype": "int64", "shape": ["batch", "length"], "padding": 0}},
        outputs={
            "items": {"dtype": "int64", "shape": ["batch", k]},
            "scores": {"dtype": "float32", "shape": ["batch", k]},
        },
    )


EXPLAIN_INPUTS = ("history", "items")
EXPLAIN_OUTPUT = "contributions"


def explains(model: Recommender) -> bool:
    """Whether the family has an explanation graph (``explainer()``: per-modality contributions to scores)."""
    return callable(getattr(model, "explainer", None))


def export_explainer(model: Recommender, path: Path) -> dict[str, Any]:
    """The model's ``explainer()`` (``history int64 [batch, length]``, ``items int64 [batch, k]`` ->
    ``contributions float32 [batch, k, modalities]``) into one ``.onnx`` file; returns its spec."""
    n_items = model._require_fitted()
    explainer = model.explainer().cpu().eval()
    generator = torch.Generator().manual_seed(0)
    example = (torch.randint(1, n_items + 1, (2, 8), generator=generator), torch.randint(1, n_items + 1, (2, 3)))
    batch = torch.export.Dim("batch", min=1)
    dims = {
        "history": {0: batch, 1: torch.export.Dim("length", min=1)},
        "items": {0: batch, 1: torch.export.Dim("k", min=1)},
    }
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            explainer,
            example,
            dynamo=True,
            verbose=False,
            dynamic_shapes=dims,
            input_names=list(EXPLAIN_INPUTS),
            output_names=[EXPLAIN_OUTPUT],
            opset_version=OPSET,
            external_data=False,
        )
    program.save(str(path), external_data=False)
    _drop_debug_metadata(path)
    modalities = list(explainer.modality_names)
    return {
        "file": EXPLAIN_FILE,
        "modalities": modalities,
        "inputs": {
            "history": {"dtype": "int64", "shape": ["batch", "length"], "padding": 0},
            "items": {"dtype": "int64", "shape": ["batch", "k"]},
        },
        "outputs": {EXPLAIN_OUTPUT: {"dtype": "float32", "shape": ["batch", "k", len(modalities)]}},
    }


def explainer_parity(model: Recommender, session: Any, histories: np.ndarray, k: int = 10) -> float:
    """Largest absolute difference between PyTorch's and ONNX Runtime's contributions on real ``histories``,
    explaining each history's top ``k`` items (``k`` capped at the catalogue)."""
    history = np.ascontiguousarray(histories).astype(np.int64)
    k = min(k, model._require_fitted())
    with torch.inference_mode():
        items = TopKHead(model.scorer(), k).cpu().eval()(torch.from_numpy(history))[0]
        expected = model.explainer().cpu().eval()(torch.from_numpy(history), items).numpy()
    (served,) = session.run([EXPLAIN_OUTPUT], {"history": history, "items": items.numpy()})
    return float(np.abs(served - expected).max(initial=0.0))


def _drop_debug_metadata(path: Path) -> None:
    """Remove the exporter's per-node debug notes (Python stack traces with the checkout's absolute
    paths, reprs with memory addresses): with them, identical weights exported from two clones, or
    twice, gave different files and so different versions. The graph itself is untouched."""
    model = onnx.load(str(path))
    for graph in [model.graph, *model.functions]:
        for node in graph.node:
            del node.metadata_props[:]
    onnx.save(model, str(path))


@dataclass(frozen=True)
class ParityCase:
    batch: int
    length: int
    max_abs_score_diff: float
    items_agree: bool
    swapped_near_ties: int


@dataclass(frozen=True)
class ParityReport:
    tolerance: float
    cases: list[ParityCase]

    @property
    def passed(self) -> bool:
        return all(case.max_abs_score_diff <= self.tolerance and case.items_agree for case in self.cases)


def check_parity(
    model: Recommender,
    session: Any,
    histories: np.ndarray,
    shapes: list[tuple[int, int]],
    tolerance: float = 1e-4,
) -> ParityReport:
    """ONNX Runtime ``session`` against PyTorch on real histories, at several (batch, length) shapes.

    ``histories`` are left-padded real histories; each shape takes the first rows and
    the most recent ``length`` items. Top-k must agree item for item, except where
    the two runtimes' scores at that rank are within ``tolerance`` (near-equal items
    can swap when float summation order differs); such swaps are counted in
    ``swapped_near_ties``.
    """
    head = TopKHead(model.scorer(), _session_k(session)).cpu().eval()
    cases = []
    for batch, length in shapes:
        if batch > len(histories):
            raise ValueError(f"asked for batch {batch}, only {len(histories)} histories given")
        history = np.ascontiguousarray(histories[:batch, -length:]).astype(np.int64)
        with torch.inference_mode():
            torch_items, torch_scores = (tensor.numpy() for tensor in head(torch.from_numpy(history)))
        onnx_items, onnx_scores = session.run(list(OUTPUT_NAMES), {INPUT_NAME: history})
        finite = np.isfinite(torch_scores)
        if not np.array_equal(finite, np.isfinite(onnx_scores)):
            raise AssertionError(f"batch {batch}, length {length}: runtimes disagree on which slots are masked")
        difference = float(np.abs(torch_scores[finite] - onnx_scores[finite]).max(initial=0.0))
        differs = torch_items != onnx_items
        near_tie = np.abs(torch_scores - onnx_scores) <= tolerance
        swapped = int(np.sum(differs & near_tie))
        cases.append(ParityCase(batch, length, difference, bool(np.all(~differs | near_tie)), swapped))
    return ParityReport(tolerance, cases)


def _session_k(session: Any) -> int:
    return int(session.get_outputs()[0].shape[1])


def serving_fields(
    spec: ExportSpec,
    model: Recommender,
    *,
    name: str,
    item_ids: Any,
    training_data_version: str,
    metrics: dict[str, float],
    parity: dict[str, Any],
    item_popularity: Any = None,
    explain: dict[str, Any] | None = None,
    explain_onnx: bytes | None = None,
) -> dict[str, Any]:
    """The manifest fields of an exported ``model``: from the model and its export, so every caller records
    the same ones. ``item_popularity`` (distinct training users per internal item id, as
    ``Interactions.item_user_counts`` gives) becomes the cold-start list ``popularity``; without it the list
    is empty and a service has no cold-start answer. ``explain`` (``export_explainer``'s spec) with the
    explanation graph's bytes becomes ``explain``, with the bytes' SHA-256 a service checks them against."""
    if (explain is None) != (explain_onnx is None):
        raise ValueError("an explanation graph needs both its spec and its bytes")
    explanation = {} if explain is None else {**explain, "sha256": hashlib.sha256(explain_onnx).hexdigest()}
    popularity = [] if item_popularity is None else popularity_ranking(item_ids, item_popularity, spec.k)
    return {
        "model": name,
        "family": model.family,
        "config": model.config.to_dict(),
        "upstream": model.upstream,
        "training_data_version": training_data_version,
        "metrics": metrics,
        "item_ids": [str(item) for item in item_ids],
        "max_history_length": model.max_history_length,
        "opset": spec.opset,
        "k": spec.k,
        "inputs": spec.inputs,
        "outputs": spec.outputs,
        "parity": parity,
        "popularity": popularity,
        "explain": explanation,
    }


def register_model(
    root: Path,
    onnx_file: Path,
    spec: ExportSpec,
    model: Recommender,
    explain_file: Path | None = None,
    explain: dict[str, Any] | None = None,
    **serving: Any,
) -> Path:
    """Register an exported ``model`` under ``root`` (``registry.register``) with ``serving_fields``, with its
    explanation graph where one was exported (``export_explainer``'s file and spec); returns its folder."""
    explain_onnx = None if explain_file is None else Path(explain_file).read_bytes()
    fields = serving_fields(spec, model, explain=explain, explain_onnx=explain_onnx, **serving)
    return register(root, onnx_file, explain_file, **fields)
