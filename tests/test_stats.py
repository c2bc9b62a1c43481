import math

import numpy as np
import pytest
from scipy import stats as st

from reprozoo.stats import summarize, verdict


def test_summary_matches_scipy():
    x = [93.1, 94.0, 93.6, 94.4, 93.9]
    s = summarize(x)
    assert s.n == 5 and s.mean == pytest.approx(np.mean(x)) and s.std == pytest.approx(np.std(x, ddof=1))
    lo, hi = st.t.interval(0.95, 4, loc=np.mean(x), scale=st.sem(x))
    assert (s.ci_low, s.ci_high) == pytest.approx((lo, hi))


def test_reproduced_below_above():
    assert verdict([94.1, 93.9, 94.0, 94.2, 93.8], 94, tolerance=0.5).verdict == "reproduced"
    v = verdict([90.0, 90.2, 89.8, 90.1, 89.9], 94, tolerance=0.5)
    assert v.verdict == "below" and v.difference == pytest.approx(-4.0) and v.high < -0.5
    assert verdict([98.0, 98.2, 97.8, 98.1, 97.9], 94, tolerance=0.5).verdict == "above"


def test_single_published_run_uses_prediction_interval():
    x = [93.0, 95.0, 94.0, 93.5, 94.5]
    v = verdict(x, 94)
    half = st.t.ppf(0.975, 4) * np.std(x, ddof=1) * math.sqrt(1 + 1 / 5)
    assert (v.low, v.high) == pytest.approx((np.mean(x) - 94 - half, np.mean(x) - 94 + half))
    assert v.df == 4


def test_inconclusive_says_how_many_seeds_settle_it():
    v = verdict([93.0, 95.0, 94.0], 94, tolerance=0.5, margin=2.0)
    assert v.verdict == "inconclusive"
    # the smallest k with t(0.975, k-1) * s * sqrt(1 + 1/k) <= 2.5 for s = 1
    k = next(k for k in range(4, 100) if st.t.ppf(0.975, k - 1) * math.sqrt(1 + 1 / k) <= 2.5)
    assert v.seeds_needed == k == 9
    assert verdict(np.r_[[93.0, 95.0, 94.0] * 3], 94, tolerance=0.5, margin=2.0).verdict == "reproduced"


def test_inconclusive_forever_when_the_published_run_is_noisier_than_the_margin():
    v = verdict([90.0, 98.0], 94, tolerance=0.5, margin=2.0)
    assert v.verdict == "inconclusive" and v.seeds_needed is None and "cannot shrink" in v.reason


def test_published_mean_and_std_use_welch():
    ours = [6.7, 6.6, 6.8, 6.7, 6.6]
    v = verdict(ours, 6.61, std=0.16, n=5)
    t = st.ttest_ind_from_stats(np.mean(ours), np.std(ours, ddof=1), 5, 6.61, 0.16, 5, equal_var=False)
    se = math.sqrt(np.var(ours, ddof=1) / 5 + 0.16**2 / 5)
    assert v.difference / se == pytest.approx(t.statistic)
    assert v.high - v.difference == pytest.approx(st.t.ppf(0.975, v.df) * se)
    assert 4 < v.df < 8 and v.verdict == "reproduced"


def test_too_few_seeds():
    v = verdict([94.0], 94)
    assert v.verdict == "inconclusive" and "fewer than 2 seeds" in v.reason and v.seeds_needed == 3


def test_no_effect_is_rarely_called_a_difference():
    """When the published run comes from our own distribution, below/above happens ~5% of the time."""
    rng = np.random.default_rng(0)
    trials = 2000
    wrong = sum(verdict(rng.normal(90, 2, 5), rng.normal(90, 2)).verdict in ("below", "above") for _ in range(trials))
    assert 0.03 < wrong / trials < 0.07


def test_a_real_gap_is_found():
    rng = np.random.default_rng(1)
    found = sum(verdict(rng.normal(86, 1, 5), 94, tolerance=0.5).verdict == "below" for _ in range(200))
    assert found == 200


def test_stability_is_the_replication_probability_of_the_verdict():
    from reprozoo.stats import stability

    far = [60.0, 60.5, 59.5, 60.2, 59.8]  # 10 points under 70 with a tiny spread: below, every time
    assert verdict(far, 70.0).verdict == "below" and stability(far, 70.0) == 1.0
    # an interval that just reaches the bound: about as likely to flip as not
    x = np.array([-0.5, -0.25, 0.0, 0.25, 0.5])
    half = st.t.ppf(0.975, 4) * x.std(ddof=1) * math.sqrt(1 / 5 + 1)
    edge = x + 2.0 - half - 1e-6  # the interval's upper end sits just under tolerance + margin = 2
    assert verdict(edge, 0.0).verdict == "reproduced"
    assert 0.3 < stability(edge, 0.0) < 0.7
    assert stability(edge, 0.0, seed=1) != stability(edge, 0.0, seed=2)  # simulated, from a seed
    assert stability(edge, 0.0) == stability(edge, 0.0)
    assert stability([1.0], 0.0) is None and stability([1.0, 1.0], 0.0) is None
