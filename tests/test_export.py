"""ONNX export: every family through the one contract, checked against PyTorch on real histories."""

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from recmodels.data.interactions import Interactions
from recmodels.data.splits import leave_one_out_split
from recmodels.export import check_parity, export_onnx
from recmodels.models.baselines import EASE, ItemKNN, MostPopular
from recmodels.models.diffrec import ClusteredLatentConfig, DiffRec, l_diffrec, t_diffrec
from recmodels.models.efficientrec import ClusterScoringConfig, EfficientRec, EfficientRecConfig, ItemEncoderConfig
from recmodels.models.sasrec import SASRec, esasrec
from recmodels.nn.denoiser import DenoiserConfig
from recmodels.nn.diffusion import DiffusionConfig
from recmodels.train import TrainerConfig

K = 10
SHAPES = [(1, 5), (7, 50), (32, 200), (3, 1)]
SHORT = TrainerConfig(epochs=1, batch_size=64, validate_every=1)


def _small_lt_diffrec():
    config = t_diffrec(l_diffrec())
    return dataclasses.replace(
        config,
        diffusion=DiffusionConfig(steps=5, noise_max=0.02, beta_fixed=False),
        denoiser=DenoiserConfig(hidden=(16,)),
        space=ClusteredLatentConfig(latent_dim=16),
        trainer=SHORT,
    )


FAMILIES = {
    "most_popular": lambda: MostPopular(),
    "item_knn": lambda: ItemKNN(),
    "ease": lambda: EASE(),
    "esasrec": lambda: SASRec(dataclasses.replace(esasrec(dim=16, max_len=50), trainer=SHORT)),
    "lt_diffrec": lambda: DiffRec(_small_lt_diffrec()),
    "efficientrec_clusters": lambda: EfficientRec(
        EfficientRecConfig(
            items=ItemEncoderConfig(dim=16, hidden=32), scoring=ClusterScoringConfig(top_clusters=3), trainer=SHORT
        )
    ),
}


@pytest.fixture(scope="module")
def split(ml100k_small_raw):
    return leave_one_out_split(Interactions.from_frame(ml100k_small_raw))


@pytest.fixture(scope="module")
def held_out_histories(split):
    """The test stage's real histories, left-padded to 200 items."""
    users = split.test.users[:32]
    items, _ = split.test.history.sequences().padded(users, 200)
    assert items.shape == (32, 200)
    return items


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_exports_and_matches_pytorch(family, split, held_out_histories, tmp_path):
    model = FAMILIES[family]().fit(split)
    spec = export_onnx(model, tmp_path / "model.onnx", k=K)
    assert spec.n_items == split.n_items and spec.outputs["items"]["shape"] == ["batch", K]
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    report = check_parity(model, session, held_out_histories, SHAPES)
    assert report.passed, report
    assert [(case.batch, case.length) for case in report.cases] == SHAPES

    items, scores = session.run(None, {"history": held_out_histories[:32]})
    assert items.dtype == np.int64 and scores.dtype == np.float32 and items.shape == (32, K)
    for row, history in zip(items, held_out_histories):
        assert 0 not in row
        assert not set(row) & set(history[history > 0]), "a history item was recommended"


def test_export_rejects_k_beyond_the_catalogue(split, tmp_path):
    model = MostPopular().fit(split)
    with pytest.raises(ValueError, match=r"k must be in \[1, "):
        export_onnx(model, tmp_path / "model.onnx", k=split.n_items + 1)


def test_diffrec_with_noised_inference_refuses_to_export(split, tmp_path):
    config = _small_lt_diffrec()
    model = DiffRec(dataclasses.replace(config, diffusion=dataclasses.replace(config.diffusion, inference_start=2)))
    model.fit(split)
    with pytest.raises(ValueError, match="cannot be traced"):
        export_onnx(model, tmp_path / "model.onnx", k=K)


def test_export_is_byte_identical_and_names_no_source_path(split, tmp_path):
    """The file is the model's version: it must not depend on where the checkout lives, on memory
    addresses or on when it ran (the exporter's per-node debug notes held all three)."""
    model = SASRec(dataclasses.replace(esasrec(dim=16, max_len=50), trainer=SHORT)).fit(split)
    export_onnx(model, tmp_path / "a.onnx", k=K)
    export_onnx(model, tmp_path / "b.onnx", k=K)
    content = (tmp_path / "a.onnx").read_bytes()
    assert content == (tmp_path / "b.onnx").read_bytes()
    graph = onnx.load(str(tmp_path / "a.onnx")).graph
    assert graph.node, "the export has no nodes"
    assert not [node.name for node in graph.node if node.metadata_props]
    assert str(Path(__file__).resolve().parents[1]).encode() not in content
    assert b" at 0x" not in content


def test_export_prints_nothing_to_stdout(split, tmp_path, capsys):
    """Benchmarks end with one JSON line on stdout; the exporter's progress lines used to land there too."""
    export_onnx(MostPopular().fit(split), tmp_path / "model.onnx", k=K)
    assert capsys.readouterr().out == ""
