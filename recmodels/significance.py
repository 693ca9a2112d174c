"""Uncertainty of offline metrics over users: bootstrap intervals and paired tests.

A leaderboard's mean over a few hundred users moves with which users happened to
be held out, so every mean gets a 95% percentile-bootstrap interval (users are
resampled with replacement; every metric and every model shares the same
resamples), and every model is compared with the best one on the same users by a
two-sided paired sign-flip (randomisation) test of the mean per-user difference.

Why sign flips rather than a paired bootstrap: under the null hypothesis that the
two models are interchangeable for each user, flipping the sign of a user's
difference leaves its distribution unchanged, so the test is exact for any number
of users and any metric distribution (NDCG per user is mostly zeros and a few
spikes). Identical models get p = 1 exactly; a bootstrap test of the mean needs
re-centring and is anti-conservative on few users. Smucker, Allan and Carterette
(CIKM 2007) recommend the randomisation test for retrieval evaluation for these
reasons.

Comparing m models with the best is m claims at once, and the best is itself
picked from the data, so p-values are Holm-adjusted before the alpha cut: a model
is marked "not significantly different from the best" unless its adjusted p-value
is below alpha. Pure NumPy, seeded: the same inputs always give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

_SIGN_FLIP_CHUNK = 1_000  # sign vectors drawn at a time: [chunk, users] stays a few MB
_TIE_TOLERANCE = 1e-9  # relative: flipped statistics this close to the observed one count as reaching it


@dataclass(frozen=True)
class Interval:
    """A mean and its percentile-bootstrap interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    """One model against the best on the same users (``p_value`` is None for the best itself)."""

    mean_difference: float
    p_value: float | None
    p_value_holm: float | None
    tied_with_best: bool


def bootstrap_weights(n_users: int, n_resamples: int = 1_000, seed: int = 0) -> np.ndarray:
    """[n_resamples, n_users] counts: how often each user is drawn in each resample with replacement.

    Counts instead of index lists turn every resampled mean into one matrix product.
    """
    if n_users < 1:
        raise ValueError(f"need at least one user to resample, got {n_users}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=n_resamples).astype(np.float64)


def _stack(per_user: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    names = list(per_user)
    if not names:
        raise ValueError("no per-user metric to summarise")
    columns = [np.asarray(per_user[name], dtype=np.float64) for name in names]
    lengths = {name: column.shape for name, column in zip(names, columns)}
    if len(set(lengths.values())) != 1 or columns[0].ndim != 1:
        raise ValueError(f"per-user metrics must be 1-D arrays over the same users, got shapes {lengths}")
    values = np.stack(columns, axis=1)
    if np.isinf(values).any():
        bad = [name for name, column in zip(names, columns) if np.isinf(column).any()]
        raise ValueError(f"per-user metrics {bad} contain infinite values")
    return names, values


def confidence_intervals(
    per_user: Mapping[str, np.ndarray], confidence: float = 0.95, n_resamples: int = 1_000, seed: int = 0
) -> dict[str, Interval]:
    """Mean of each per-user metric (NaN users left out, as in ``evaluate``) with its percentile interval.

    All metrics are resampled with the same user draws. A resample in which a metric has no
    defined user is skipped for that metric.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    names, values = _stack(per_user)
    defined = np.isfinite(values)
    if not defined.any(axis=0).all():
        empty = [name for name, column in zip(names, defined.T) if not column.any()]
        raise ValueError(f"per-user metrics {empty} have no defined (non-NaN) user")
    filled = np.where(defined, values, 0.0)
    weights = bootstrap_weights(len(values), n_resamples, seed)
    counts = weights @ defined
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (weights @ filled) / counts  # NaN where a resample drew no defined user
    tail = (1 - confidence) / 2
    low, high = np.nanquantile(means, [tail, 1 - tail], axis=0)
    point = filled.sum(axis=0) / defined.sum(axis=0)
    return {name: Interval(float(point[j]), float(low[j]), float(high[j])) for j, name in enumerate(names)}


def sign_flip_p_values(differences: np.ndarray, n_permutations: int = 10_000, seed: int = 0) -> np.ndarray:
    """Two-sided paired randomisation test of mean difference = 0, one column of ``differences`` per test.

    ``differences`` is [n_users, n_tests]; NaN entries (a metric undefined for that user) count as no
    difference, which gives the same p-value as leaving the user out. The p-value
    ``(1 + #{|flipped sum| >= |observed sum|}) / (1 + n_permutations)`` is never 0 and is 1 for
    all-zero differences.
    """
    differences = np.asarray(differences, dtype=np.float64)
    if differences.ndim != 2 or differences.shape[0] < 1:
        raise ValueError(f"differences must be [n_users >= 1, n_tests], got shape {differences.shape}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    differences = np.nan_to_num(differences, nan=0.0, posinf=np.inf, neginf=-np.inf)
    if np.isinf(differences).any():
        raise ValueError("differences contain infinite values")
    observed = np.abs(differences.sum(axis=0))
    threshold = observed - _TIE_TOLERANCE * np.maximum(observed, np.abs(differences).sum(axis=0))
    rng = np.random.default_rng(seed)
    reached = np.zeros(differences.shape[1], dtype=np.int64)
    for start in range(0, n_permutations, _SIGN_FLIP_CHUNK):
        size = min(_SIGN_FLIP_CHUNK, n_permutations - start)
        signs = rng.integers(0, 2, size=(size, differences.shape[0]), dtype=np.int8) * 2 - 1
        flipped = np.abs(signs.astype(np.float64) @ differences)
        reached += (flipped >= threshold).sum(axis=0)
    return (1 + reached) / (1 + n_permutations)


def holm_adjust(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values: family-wise error at most alpha when cut at alpha."""
    p_values = np.asarray(p_values, dtype=np.float64)
    m = p_values.size
    order = np.argsort(p_values, kind="stable")
    stepped = np.maximum.accumulate(p_values[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def compare_with_best(
    per_user: Mapping[str, np.ndarray], alpha: float = 0.05, n_permutations: int = 10_000, seed: int = 0
) -> tuple[str, dict[str, Comparison]]:
    """The model with the highest mean and every model's paired test against it.

    ``per_user`` maps model name to its per-user values of one metric (higher is better), all
    over the same users in the same order. Returns the best model's name and one ``Comparison``
    per model; the best is tied with itself.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    names, values = _stack(per_user)
    means = np.nanmean(values, axis=0)
    if np.isnan(means).any():
        raise ValueError(f"models {[n for n, m in zip(names, means) if np.isnan(m)]} have no defined user")
    best = int(np.argmax(means))  # ties go to the first listed
    others = [j for j in range(len(names)) if j != best]
    differences = values[:, [best]] - values[:, others]
    p_values = sign_flip_p_values(differences, n_permutations, seed) if others else np.empty(0)
    adjusted = holm_adjust(p_values)
    comparisons = {names[best]: Comparison(0.0, None, None, True)}
    for column, j in enumerate(others):
        comparisons[names[j]] = Comparison(
            mean_difference=float(np.nanmean(values[:, j] - values[:, best])),
            p_value=float(p_values[column]),
            p_value_holm=float(adjusted[column]),
            tied_with_best=bool(adjusted[column] >= alpha),
        )
    return names[best], {name: comparisons[name] for name in names}


def paired_test(
    candidate: np.ndarray, reference: np.ndarray, n_permutations: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Mean per-user difference (candidate - reference) and its two-sided sign-flip p-value."""
    candidate, reference = np.asarray(candidate, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if candidate.shape != reference.shape or candidate.ndim != 1:
        raise ValueError(f"need two 1-D arrays over the same users, got {candidate.shape} and {reference.shape}")
    difference = candidate - reference
    [p_value] = sign_flip_p_values(difference[:, None], n_permutations, seed)
    return float(np.nanmean(difference)), float(p_value)
