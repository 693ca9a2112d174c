"""Bootstrap intervals over users and the paired sign-flip test, on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from recmodels.significance import (
    bootstrap_weights,
    compare_with_best,
    confidence_intervals,
    holm_adjust,
    paired_test,
    sign_flip_p_values,
)


def test_bootstrap_weights_draw_every_resample_with_replacement():
    weights = bootstrap_weights(50, n_resamples=200, seed=3)
    assert weights.shape == (200, 50)
    np.testing.assert_array_equal(weights.sum(axis=1), 50)
    assert (weights == 0).any(axis=1).all()  # with replacement: some users are left out of each resample
    np.testing.assert_array_equal(weights, bootstrap_weights(50, n_resamples=200, seed=3))
    assert not np.array_equal(weights, bootstrap_weights(50, n_resamples=200, seed=4))


def test_interval_of_a_constant_metric_has_zero_width():
    [interval] = confidence_intervals({"ndcg@10": np.full(40, 0.25)}).values()
    assert interval.value == interval.low == interval.high == pytest.approx(0.25)


def test_interval_covers_the_mean_and_is_seeded():
    values = np.random.default_rng(0).random(300)
    intervals = confidence_intervals({"a": values, "b": values**2}, seed=7)
    for name, column in {"a": values, "b": values**2}.items():
        interval = intervals[name]
        assert interval.value == pytest.approx(column.mean())
        assert interval.low < interval.value < interval.high
        # the normal approximation agrees to a few percent at 300 users
        half_width = 1.96 * column.std(ddof=1) / np.sqrt(len(column))
        assert (interval.high - interval.low) / 2 == pytest.approx(half_width, rel=0.15)
    assert intervals == confidence_intervals({"a": values, "b": values**2}, seed=7)


def test_interval_covers_the_true_mean_in_about_95_percent_of_samples():
    rng = np.random.default_rng(1)
    true_mean = 0.3
    covered = 0
    repetitions = 300
    for repetition in range(repetitions):
        sample = (rng.random(200) < true_mean).astype(float)  # hit rate of 200 users
        interval = confidence_intervals({"hr": sample}, seed=repetition)["hr"]
        covered += interval.low <= true_mean <= interval.high
    assert 0.90 <= covered / repetitions <= 0.98


def test_interval_leaves_undefined_users_out_like_the_evaluation_mean():
    values = np.array([0.1, np.nan, 0.5, 0.3, np.nan, 0.7])
    interval = confidence_intervals({"ild@20": values})["ild@20"]
    assert interval.value == pytest.approx(np.nanmean(values))
    assert 0.1 <= interval.low <= interval.value <= interval.high <= 0.7
    with pytest.raises(ValueError, match="no defined"):
        confidence_intervals({"ild@20": np.full(3, np.nan)})


def test_interval_inputs_are_checked():
    with pytest.raises(ValueError, match="same users"):
        confidence_intervals({"a": np.zeros(3), "b": np.zeros(4)})
    with pytest.raises(ValueError, match="infinite"):
        confidence_intervals({"a": np.array([0.0, np.inf])})
    with pytest.raises(ValueError, match="confidence"):
        confidence_intervals({"a": np.zeros(3)}, confidence=1.0)


def test_identical_models_are_never_significantly_different():
    values = np.random.default_rng(2).random(100)
    difference, p_value = paired_test(values, values.copy())
    assert difference == 0.0 and p_value == 1.0
    best, comparisons = compare_with_best({"first": values, "copy": values.copy()})
    assert best == "first"
    assert comparisons["copy"].p_value == 1.0 and comparisons["copy"].tied_with_best


def test_a_model_better_on_every_user_is_significantly_different():
    rng = np.random.default_rng(3)
    worse = rng.random(60) * 0.5
    better = worse + 0.01 + rng.random(60) * 0.01
    difference, p_value = paired_test(better, worse, n_permutations=5_000)
    assert difference > 0.01
    assert p_value == pytest.approx(1 / 5_001)  # no sign vector but all-plus and all-minus reaches it
    best, comparisons = compare_with_best({"worse": worse, "better": better})
    assert best == "better"
    assert not comparisons["worse"].tied_with_best and comparisons["worse"].mean_difference < 0
    assert comparisons["better"].tied_with_best and comparisons["better"].p_value is None


def test_sign_flip_p_value_matches_the_exact_distribution():
    # three users each +1: of the 8 sign vectors, two (all + and all -) reach |sum| = 3, so p = 0.25
    [p_value] = sign_flip_p_values(np.ones((3, 1)), n_permutations=20_000, seed=5)
    assert p_value == pytest.approx(0.25, abs=0.01)
    # a user without a difference changes nothing; NaN counts as no difference
    [with_zero] = sign_flip_p_values(np.array([[1.0], [1.0], [1.0], [0.0]]), n_permutations=20_000, seed=5)
    [with_nan] = sign_flip_p_values(np.array([[1.0], [np.nan], [1.0], [1.0]]), n_permutations=20_000, seed=5)
    assert with_zero == pytest.approx(0.25, abs=0.01) and with_nan == pytest.approx(0.25, abs=0.01)


def test_sign_flip_test_rejects_about_alpha_of_true_null_hypotheses():
    rng = np.random.default_rng(6)
    # 400 tests at once: per-user differences symmetric around 0, skewed magnitudes like NDCG gaps
    differences = rng.choice([-1.0, 1.0], size=(40, 400)) * rng.exponential(size=(40, 400))
    p_values = sign_flip_p_values(differences, n_permutations=2_000, seed=6)
    assert 0.025 <= np.mean(p_values < 0.05) <= 0.085
    assert 0.4 <= np.median(p_values) <= 0.6


def test_holm_adjustment_by_hand():
    np.testing.assert_allclose(holm_adjust(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm_adjust(np.array([0.5, 0.9])), [1.0, 1.0])
    assert holm_adjust(np.empty(0)).size == 0


def test_compare_with_best_applies_holm_across_the_models():
    rng = np.random.default_rng(7)
    best = rng.random(100)
    clearly_worse = best - 0.2 - 0.05 * rng.random(100)
    signs = np.tile([1.0, -1.0], 50)
    # two models each 0.22 below the best with spread 1: z about 2.2, raw p about 0.03 each
    marginal = {name: best - 0.22 - rng.permutation(signs) for name in ("marginal_a", "marginal_b")}
    models = {"marginal_a": marginal["marginal_a"], "best": best, "marginal_b": marginal["marginal_b"]}
    name, comparisons = compare_with_best({**models, "clearly_worse": clearly_worse}, seed=1)
    assert name == "best"
    assert list(comparisons) == ["marginal_a", "best", "marginal_b", "clearly_worse"]  # input order kept
    assert not comparisons["clearly_worse"].tied_with_best
    for marginal_name in ("marginal_a", "marginal_b"):
        comparison = comparisons[marginal_name]
        assert comparison.mean_difference == pytest.approx(-0.22)
        # significant alone, not once three claims are made at the same time
        assert comparison.p_value < 0.05 <= comparison.p_value_holm and comparison.tied_with_best
    raw = np.array([comparisons[n].p_value for n in ("marginal_a", "marginal_b", "clearly_worse")])
    holm = [comparisons[n].p_value_holm for n in ("marginal_a", "marginal_b", "clearly_worse")]
    np.testing.assert_allclose(holm, holm_adjust(raw))
    assert compare_with_best({**models, "clearly_worse": clearly_worse}, seed=1)[1] == comparisons


def test_compare_with_best_checks_its_inputs():
    with pytest.raises(ValueError, match="same users"):
        compare_with_best({"a": np.zeros(3), "b": np.zeros(2)})
    with pytest.raises(ValueError, match="alpha"):
        compare_with_best({"a": np.zeros(3)}, alpha=0.0)
    best, comparisons = compare_with_best({"only": np.ones(3)})
    assert best == "only" and comparisons["only"].tied_with_best
