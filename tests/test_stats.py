"""The statistics behind every verdict (plugins/stats.py), on hand-computed cases and by simulation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from plugins.stats import binom_cdf, clopper_pearson, cluster_bootstrap, holm, mcnemar, mcnemar_p, verdict


def test_binomial_cdf_equals_the_sum_of_exact_terms():
    for n, p in ((1, 0.5), (7, 0.3), (40, 0.5), (25, 0.9)):
        for k in range(n + 1):
            exact = sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))
            assert binom_cdf(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-15)


def test_mcnemar_on_a_hand_computed_two_by_two_table():
    # 20 questions: 10 only the method gets right (b), 2 only the reference (c), 8 both.
    method = [True] * 10 + [False] * 2 + [True] * 8
    reference = [False] * 10 + [True] * 2 + [True] * 8
    e = mcnemar(method, reference)
    assert e.discordant == (10, 2)
    assert e.effect == pytest.approx(8 / 20)
    # two-sided exact p = 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert e.p == pytest.approx(2 * 79 / 4096)
    # Clopper-Pearson for 10 of 12 (Beta quantiles 0.51586 and 0.97914), mapped to (2t - 1) * 12 / 20
    assert e.low == pytest.approx((2 * 0.515862 - 1) * 12 / 20, abs=1e-5)
    assert e.high == pytest.approx((2 * 0.979137 - 1) * 12 / 20, abs=1e-5)
    assert e.test == "mcnemar-exact" and e.n_items == 20


def test_mcnemar_is_symmetric_and_says_nothing_without_discordant_pairs():
    assert mcnemar_p(3, 9) == mcnemar_p(9, 3)
    e = mcnemar([True, False, True], [True, False, True])
    assert (e.effect, e.low, e.high, e.p) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="equal non-empty"):
        mcnemar([True], [True, False])


@pytest.mark.parametrize("x,n,lo,hi", [(7, 10, 0.3475, 0.9333), (10, 12, 0.5159, 0.9791), (1, 20, 0.0013, 0.2487)])
def test_clopper_pearson_matches_published_values(x, n, lo, hi):
    got = clopper_pearson(x, n)
    assert got[0] == pytest.approx(lo, abs=1e-4) and got[1] == pytest.approx(hi, abs=1e-4)


def test_the_mcnemar_interval_excludes_zero_exactly_when_p_is_below_five_percent():
    for b in range(0, 30):
        for c in range(0, 30):
            e = mcnemar([True] * b + [False] * c + [True] * 5, [False] * b + [True] * c + [True] * 5)
            excludes = e.low > 0 or e.high < 0
            assert excludes == (e.p < 0.05), (b, c, e)


def test_the_bootstrap_is_seeded_paired_and_a_ratio_of_sums():
    rng = np.random.default_rng(1)
    den = rng.integers(1, 6, size=40).astype(float)
    ref = np.minimum(den, rng.integers(0, 4, size=40))
    met = np.minimum(den, ref + rng.integers(0, 2, size=40))
    a = cluster_bootstrap(met, den, ref, den, n_boot=300, seed=7)
    b = cluster_bootstrap(met, den, ref, den, n_boot=300, seed=7)
    assert a == b  # same seed, same replicates
    assert a.effect == pytest.approx(met.sum() / den.sum() - ref.sum() / den.sum())  # a ratio of sums, not a mean of ratios
    assert a.low <= a.effect <= a.high and a.replicates == 300 and a.n_clusters == 40
    assert cluster_bootstrap(met, den, ref, den, n_boot=300, seed=8) != a


def test_identical_arms_give_no_evidence_and_a_sure_effect_gives_the_smallest_p():
    den = np.full(30, 6.0)
    same = cluster_bootstrap(den / 2, den, den / 2, den, n_boot=100)
    assert (same.effect, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0)
    sure = cluster_bootstrap(den, den, den / 2, den, n_boot=100)
    assert sure.p == pytest.approx(2 / 101) and sure.low == pytest.approx(0.5)


def test_one_greedy_reference_seed_is_set_against_every_method_seed():
    den = np.ones((3, 20))
    met = np.zeros((3, 20))
    met[0, :10] = met[1, :12] = met[2, :14] = 1
    ref = np.zeros(20)
    ref[:10] = 1
    e = cluster_bootstrap(met, den, ref, den[0], n_boot=200)
    assert e.n_seeds == 3 and e.effect == pytest.approx(np.mean([0.0, 0.1, 0.2]))
    broadcast = cluster_bootstrap(met, den, np.tile(ref, (3, 1)), den, n_boot=200)
    assert broadcast.effect == e.effect and broadcast.low == e.low and broadcast.high == e.high
    with pytest.raises(ValueError, match="1 or the same number"):
        cluster_bootstrap(met, den, np.zeros((2, 20)), np.ones((2, 20)))


def test_bootstrap_intervals_cover_the_true_difference_about_95_percent_of_the_time():
    """Simulated paired accuracy on 60 images x 6 questions, true difference +0.05."""
    rng = np.random.default_rng(0)
    covered, trials = 0, 150
    for t in range(trials):
        ease = rng.uniform(0.5, 0.95, size=60)  # images differ in difficulty: answers cluster
        ref = rng.binomial(6, ease).astype(float)
        met = rng.binomial(6, np.minimum(1.0, ease + 0.05)).astype(float)
        true = float(np.mean(np.minimum(1.0, ease + 0.05) - ease))
        e = cluster_bootstrap(met, np.full(60, 6.0), ref, np.full(60, 6.0), n_boot=400, seed=t)
        covered += e.low <= true <= e.high
    assert 0.88 <= covered / trials <= 0.995


def test_holm_on_a_hand_computed_family():
    # sorted p: 0.001 (x4), 0.02 (x3), 0.04 (x2), 0.5 (x1), each at least the one before
    assert holm([0.04, 0.001, 0.5, 0.02]) == [0.08, 0.004, 0.5, 0.06]
    assert holm([0.3, 0.3]) == [0.6, 0.6]
    assert holm([0.9, 0.01]) == [0.9, 0.02]


def test_a_verdict_reads_the_adjusted_p_and_the_direction_of_the_metric():
    assert verdict(0.02, 0.049, higher_is_better=True) == "better"
    assert verdict(0.02, 0.05, higher_is_better=True) == "no detectable change"
    assert verdict(0.02, 0.01, higher_is_better=False) == "worse"  # more hallucination
    assert verdict(-0.02, 0.01, higher_is_better=False) == "better"
