"""All of an item's modalities in one container: real MovieLens-100K metadata, missing items, disk round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recmodels.features.modalities import ItemModalities


def _catalogue(items: pd.DataFrame) -> np.ndarray:
    return np.array(["<pad>", *items["item_id"].astype(str).to_numpy()[:30], "unknown-item"], dtype=object)


def test_every_modality_is_aligned_and_an_unknown_item_has_none(encoder, ml100k_items) -> None:
    catalogue = _catalogue(ml100k_items)
    modalities = ItemModalities.from_items(ml100k_items, catalogue, encoder)
    assert modalities.names == ("text", "genres", "year")
    presence = modalities.presence()
    for name, mask in presence.items():
        assert mask.shape == (len(catalogue),), name
        assert not mask[0] and not mask[-1], name
        assert mask[1:-1].all(), name
    assert modalities.coverage() == {name: 30 / 31 for name in ("text", "genres", "year")}
    toy_story = modalities.side.genres[1].indices
    assert {modalities.side.vocabulary[g] for g in toy_story} == {"Animation", "Children's", "Comedy"}


def test_a_dataset_without_an_item_table_has_no_modality(encoder) -> None:
    modalities = ItemModalities.from_items(None, np.array(["<pad>", "a", "b"], dtype=object), encoder)
    assert modalities.names == () and modalities.coverage() == {}


def test_modalities_round_trip_through_a_folder(encoder, ml100k_items, tmp_path) -> None:
    modalities = ItemModalities.from_items(ml100k_items, _catalogue(ml100k_items), encoder)
    modalities.save(tmp_path)
    loaded = ItemModalities.load(tmp_path)
    np.testing.assert_array_equal(loaded.text.vectors, modalities.text.vectors)
    assert loaded.text.fingerprint == modalities.text.fingerprint
    assert (loaded.side.genres != modalities.side.genres).nnz == 0
    np.testing.assert_array_equal(loaded.side.years, modalities.side.years)
    assert loaded.coverage() == modalities.coverage()
