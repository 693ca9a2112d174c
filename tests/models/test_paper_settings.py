"""The eSASRec paper's settings table: typed rows that round-trip, what the benchmark trains and records, the
paper's stopping rule on a small real run, and the presets the ML-1M figures were measured with unchanged."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recmodels.data.interactions import Interactions
from recmodels.data.splits import leave_one_out_split
from recmodels.evaluation import stage_metric
from recmodels.models.paper_settings import PaperSetting, paper_settings
from recmodels.models.sasrec import SASRec, SASRecConfig, esasrec, rectools_training, sasrec_ss

ROOT = Path(__file__).resolve().parents[2]
BEAUTY = "amazon-yelp-seq/Beauty.txt"
# The run behind the README's ML-1M eSASRec figures (0.3162 / 0.1814 over 3 seeds): the preset and the
# benchmark's ML-1M sizes, 100 epochs, patience 50, stopping on validation NDCG@10.
ML1M_ESASREC_RESULT = ROOT / "benchmarks/results/sequential_ml1m_esasrec_rectools_training_seed0.json"


def _benchmark():
    sys.path[:0] = [str(ROOT / "benchmarks")]
    try:
        import sequential
    finally:
        del sys.path[0]
    return sequential


def test_every_row_round_trips_and_every_dataset_has_both_variants_and_a_file():
    table = paper_settings()
    for row in table.rows:
        assert PaperSetting.from_dict(json.loads(json.dumps(row.to_dict()))) == row
    datasets = {row.dataset for row in table.rows}
    assert datasets == {"ml-1m", "beauty", "beauty_readme", "sports", "toys"}
    assert {(row.dataset, row.variant) for row in table.rows} == {
        (d, v) for d in datasets for v in ("sasrec_ss", "esasrec")
    }
    assert set(table.files) == datasets
    assert table.dataset_of(BEAUTY) == "beauty_readme"  # the README's d 64, the row that reproduces
    assert table.row("beauty", "esasrec_gnno") == table.row("beauty", "esasrec")


def _toml_row(values: dict) -> str:
    return "[[setting]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


def test_a_row_with_an_unknown_or_missing_field_or_a_repeated_key_fails_naming_it(tmp_path):
    good = paper_settings().row("toys", "esasrec").to_dict()
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(_toml_row(good) + _toml_row({**good, "variant": "sasrec_ss", "n_factors": 256}))
    with pytest.raises(ValueError, match=r"setting 2 \(toys, sasrec_ss\).*n_factors"):
        paper_settings(unknown)
    missing = tmp_path / "missing.toml"
    missing.write_text(_toml_row({k: v for k, v in good.items() if k != "patience"}))
    with pytest.raises(ValueError, match=r"setting 1 \(toys, esasrec\).*patience"):
        paper_settings(missing)
    mistyped = tmp_path / "mistyped.toml"
    mistyped.write_text(_toml_row({**good, "dim": 256.0}))
    with pytest.raises(ValueError, match=r"setting 1 \(toys, esasrec\): dim must be int, got 256.0"):
        paper_settings(mistyped)
    repeated = tmp_path / "repeated.toml"
    repeated.write_text(_toml_row(good) + _toml_row(good))
    with pytest.raises(ValueError, match="appear twice.*toys"):
        paper_settings(repeated)
    with pytest.raises(KeyError, match="no paper setting for dataset 'yelp'"):
        paper_settings().row("yelp", "esasrec")
    lone_start = tmp_path / "lone_start.toml"
    lone_start.write_text(_toml_row({**good, "rectools_training": False, "xavier_as_rectools": True}))
    with pytest.raises(ValueError, match=r"setting 1 \(toys, esasrec\): xavier_as_rectools .* needs rectools_training"):
        paper_settings(lone_start)


def test_the_beauty_readme_esasrec_row_starts_over_rectools_shapes_and_ml1m_keeps_its_start():
    """The start that lifted Beauty's eSASRec past 97% of the published NDCG@10 is the row's, GNNO's too;
    ML-1M's rows and the 256-d Beauty row keep the start their figures were measured with."""
    table = paper_settings()
    for variant in ("esasrec", "esasrec_gnno"):
        assert table.row("beauty_readme", variant).apply(esasrec()).backbone.xavier_as_rectools
    for dataset, variant in [("ml-1m", "esasrec"), ("beauty", "esasrec"), ("beauty_readme", "sasrec_ss")]:
        row = table.row(dataset, variant)
        preset = esasrec() if variant == "esasrec" else sasrec_ss()
        assert not row.apply(preset).backbone.xavier_as_rectools


def test_a_row_replaces_the_papers_fields_and_trains_as_rectools_where_it_says_so():
    beauty = paper_settings().row("beauty", "esasrec")
    config = beauty.apply(esasrec())
    backbone = config.backbone
    assert (backbone.dim, backbone.blocks, backbone.heads, backbone.max_len, backbone.ff_mult) == (256, 1, 1, 50, 4)
    assert backbone.dropout == backbone.attention_dropout == backbone.item_dropout == 0.2
    assert backbone.xavier_init and not backbone.scale_embeddings  # what the authors' files leave to RecTools
    assert (config.trainer.epochs, config.trainer.patience, config.trainer.lr, config.trainer.batch_size) == (
        200,
        50,
        0.001,
        128,
    )
    assert config.loss.n_negatives == 256 and config.loss.per_position
    assert config.valid_metric == "recall@10"
    assert config == beauty.apply(config)  # the eSASRec preset already trains as RecTools does
    vanilla = paper_settings().row("beauty", "sasrec_ss").apply(sasrec_ss()).backbone
    assert (vanilla.ff_mult, vanilla.attention_dropout, vanilla.item_dropout, vanilla.xavier_init) == (
        1,
        0.2,
        0.2,
        True,
    )
    assert vanilla.block.attend_to_padding and not vanilla.block.attention_output_dropout  # RecTools' SASRec layer
    assert all(row.rectools_training for row in paper_settings().rows)  # ML-1M SASRec+SS: 0.2840 -> 0.3049 R@10
    ml1m = dataclasses.replace(paper_settings().row("ml-1m", "sasrec_ss"), rectools_training=False)
    preset = ml1m.apply(sasrec_ss())
    assert preset.backbone.block == sasrec_ss().backbone.block and not preset.backbone.xavier_init
    assert preset.trainer.adam_betas == sasrec_ss().trainer.adam_betas and preset.group_by_length


def test_rectools_training_refuses_unmasked_padding_on_ligr_blocks():
    with pytest.raises(ValueError, match="ligr_block blocks always mask padded keys"):
        rectools_training(esasrec(), key_padding_mask=False)


def test_without_the_table_the_benchmark_trains_the_run_behind_the_ml1m_figures():
    """``--paper-setting none`` gives, field for field, the config of the measured ML-1M run; the table's ML-1M
    row differs from it only in what the authors' trainer says: the stopping metric."""
    sequential = _benchmark()
    measured = json.loads(ML1M_ESASREC_RESULT.read_text())["results"][0]["config"]
    presets = sequential.variant_config("esasrec", 200, 0, 100, 50, 0.1)
    assert presets == SASRecConfig.from_dict(measured)
    paper = sequential.variant_config("esasrec", 200, 0, None, None, 0.1, paper_settings().row("ml-1m", "esasrec"))
    assert dataclasses.replace(paper, valid_metric="ndcg@10") == presets
    assert paper.valid_metric == "recall@10"


@pytest.mark.needs_shared_data(BEAUTY)
def test_the_benchmark_records_the_row_it_trained_with(data_dir, tmp_path):
    command = [sys.executable, "benchmarks/sequential.py", "--data-dir", str(data_dir), "--dataset", BEAUTY]
    command += ["--model", "sasrec_ss", "--quick", "--epochs", "1"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])["results"][0]
    row = paper_settings().row("beauty_readme", "sasrec_ss")  # auto: the first name of the file
    assert result["paper_setting"] == row.to_dict()
    trained = SASRecConfig.from_dict(result["config"])
    assert trained == dataclasses.replace(
        row.apply(sasrec_ss()), seed=0, trainer=dataclasses.replace(row.apply(sasrec_ss()).trainer, epochs=1)
    )
    assert result["valid_metric"] == "recall@10"
    assert "test_targets_dropped_seen" in result["split_report"]


def _sequences(n_users: int, seed: int) -> Interactions:
    """Users walking a ring of 30 items with noise: enough signal for recall@10 to move between epochs."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        item = rng.integers(30)
        for step in range(12):
            item = (item + 1) % 30 if rng.random() < 0.8 else rng.integers(30)
            rows.append((f"u{user}", f"i{item}", step))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(rating=np.nan)
    return Interactions.from_frame(frame)


def test_the_papers_stopping_rule_keeps_the_best_validation_recall_and_stops_after_patience():
    split = leave_one_out_split(_sequences(120, seed=0))
    row = dataclasses.replace(paper_settings().row("beauty", "esasrec"), dim=16, max_len=12, patience=2, max_epochs=12)
    config = dataclasses.replace(row.apply(esasrec()), seed=0)
    model = SASRec(config).fit(split)
    history = model.history
    best = int(np.argmax(history.valid_score))  # the first best: a tie is no improvement
    assert history.best_epoch == best and history.best_score == max(history.valid_score)
    assert len(history.valid_score) == min(row.max_epochs, best + row.patience + 1)
    # the weights kept are the best epoch's: recall@10 on validation again gives its score
    assert stage_metric(model, split.valid, "recall@10") == pytest.approx(history.best_score, abs=1e-9)


def test_a_runs_checkpoint_folder_is_a_valid_name_however_many_overrides_and_one_per_override_list():
    sequential = _benchmark()
    many = [f"backbone.block.attention_output_dropout_{i}=false" for i in range(20)]
    names = {sequential.run_name("sasrec_ss", overrides, 0) for overrides in ([], many, many[:-1], many[::-1])}
    assert len(names) == 4 and max(len(name) for name in names) < 64
    assert sequential.run_name("sasrec_ss", [], 0) != sequential.run_name("sasrec_ss", [], 1)
