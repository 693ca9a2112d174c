"""Typed configs: a part is accepted only in a field whose type admits it; round trips keep the types."""

import pytest

from recmodels.config import part_of_kind, part_types
from recmodels.models.diffrec import BinaryHistory, DiffRecConfig, TimeWeightedHistory, t_diffrec
from recmodels.models.sasrec import GNNOConfig, SASRecConfig, esasrec, with_gnno
from recmodels.nn.layers import LiGRBlockConfig


def test_part_types_lists_the_parts_a_field_admits():
    assert part_types(GNNOConfig | None) == (GNNOConfig,)
    assert part_types(BinaryHistory | TimeWeightedHistory) == (BinaryHistory, TimeWeightedHistory)
    assert part_types(int) == () and part_types(int | None) == ()
    assert part_of_kind("gnno") is GNNOConfig
    with pytest.raises(ValueError, match="unknown part kind 'nope'"):
        part_of_kind("nope")


def test_presets_round_trip_through_plain_values():
    for config in (with_gnno(esasrec()), t_diffrec()):
        assert type(config).from_dict(config.to_dict()) == config


def test_a_part_in_a_field_that_does_not_admit_it_is_refused():
    values = esasrec().to_dict()
    values["loss"] = {"kind": "ligr_block", "final_norm": False}
    with pytest.raises(
        ValueError, match=r"SASRecConfig.loss takes a part of kind \['bce', 'full_softmax', 'sampled_softmax'\]"
    ):
        SASRecConfig.from_dict(values)
    values = t_diffrec().to_dict()
    values["history"] = {"kind": "gnno"}
    with pytest.raises(ValueError, match="DiffRecConfig.history takes a part of kind"):
        DiffRecConfig.from_dict(values)
    assert SASRecConfig.from_dict(esasrec().to_dict()).backbone.block == LiGRBlockConfig()
