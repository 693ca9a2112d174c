"""The title encoder, loaded once for the feature tests (about 10 s)."""

from __future__ import annotations

import pytest

from recmodels.features.text import TitleEncoder


@pytest.fixture(scope="session")
def encoder() -> TitleEncoder:
    return TitleEncoder()
