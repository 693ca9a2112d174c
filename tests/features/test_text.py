"""Title embeddings on real MovieLens-100K titles: shape, unit rows, determinism, missing titles, the cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recmodels.features.text import DIMENSION, FILE, aligned_titles, embed_titles


@pytest.fixture(scope="module")
def catalogue(ml100k_items: pd.DataFrame) -> np.ndarray:
    """Padding, 40 real items, and one id the item table does not know."""
    known = ml100k_items["item_id"].astype(str).to_numpy()[:40]
    return np.array(["<pad>", *known, "not-in-the-item-table"], dtype=object)


def test_real_titles_embed_to_unit_rows_and_missing_ones_to_zeros(encoder, ml100k_items, catalogue) -> None:
    titles = aligned_titles(ml100k_items, catalogue)
    assert titles[0] is None and titles[-1] is None and titles[1] == "Toy Story"
    embeddings = embed_titles(titles, encoder)
    assert embeddings.vectors.shape == (len(catalogue), DIMENSION)
    assert embeddings.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings.vectors[1:-1], axis=1), 1.0, atol=1e-5)
    assert not embeddings.vectors[[0, -1]].any()
    assert embeddings.present.tolist() == [False] + [True] * 40 + [False]
    assert embeddings.coverage == pytest.approx(40 / 41)


def test_embeddings_are_deterministic_and_carry_meaning(encoder, ml100k_items, catalogue) -> None:
    titles = aligned_titles(ml100k_items, catalogue)
    first, second = embed_titles(titles, encoder), embed_titles(titles, encoder)
    np.testing.assert_array_equal(first.vectors, second.vectors)
    assert first.fingerprint == second.fingerprint
    sequel, unrelated, original = encoder.encode(["Toy Story 2", "Schindler's List", "Toy Story"])
    assert float(original @ sequel) > float(original @ unrelated) + 0.2


def test_the_cache_is_reused_only_for_the_same_titles(encoder, ml100k_items, catalogue, tmp_path) -> None:
    titles = aligned_titles(ml100k_items, catalogue)
    computed = embed_titles(titles, encoder, cache=tmp_path)
    folder = tmp_path / computed.fingerprint
    assert (folder / FILE).exists() and not [path for path in tmp_path.iterdir() if path.name.startswith(".")]
    reread = embed_titles(titles, encoder, cache=tmp_path)
    np.testing.assert_array_equal(reread.vectors, computed.vectors)
    changed = embed_titles([*titles[:-1], "Toy Story"], encoder, cache=tmp_path)
    assert changed.fingerprint != computed.fingerprint and changed.present[-1]


def test_a_cache_file_under_a_name_that_is_not_its_fingerprint_is_refused(
    encoder, ml100k_items, catalogue, tmp_path
) -> None:
    titles = aligned_titles(ml100k_items, catalogue)
    other = embed_titles(titles[:5], encoder, cache=tmp_path)
    key = embed_titles(titles, encoder).fingerprint
    (tmp_path / key).mkdir()
    (tmp_path / other.fingerprint / FILE).rename(tmp_path / key / FILE)
    with pytest.raises(ValueError, match="does not name this file"):
        embed_titles(titles, encoder, cache=tmp_path)
