import numpy as np
import pytest
from scipy import stats

from reprozoo.ablation_stats import compare_rows


def seeds(values):
    return dict(enumerate(values))


def test_paired_difference_and_ci_match_scipy():
    ref = [90.0, 91.0, 89.5, 90.5, 90.2]
    arm = [91.0, 91.8, 90.9, 91.2, 91.1]
    (row,) = compare_rows([("ema", "base", seeds(arm), seeds(ref))])
    t = stats.ttest_rel(arm, ref)
    assert row.difference == pytest.approx(np.mean(np.subtract(arm, ref)))
    assert (row.ci_low, row.ci_high) == pytest.approx(tuple(t.confidence_interval()))
    assert row.p_value == pytest.approx(t.pvalue) and row.prob_improvement == 1.0
    assert row.boot_low <= row.difference <= row.boot_high


def test_pairing_by_seed_not_by_position():
    ref = {0: 90.0, 1: 80.0, 2: 70.0}
    arm = {2: 71.0, 0: 91.0, 1: 81.0, 7: 0.0}  # seed 7 has no partner: ignored
    (row,) = compare_rows([("a", "b", arm, ref)])
    assert row.seeds == (0, 1, 2) and row.difference == pytest.approx(1.0) and row.ci_low == pytest.approx(1.0)


def test_lower_is_better_flips_the_sign():
    (row,) = compare_rows([("a", "b", seeds([5.0, 5.1, 4.9]), seeds([6.0, 6.2, 5.9]))], higher_is_better=False)
    assert row.difference > 0 and row.prob_improvement == 1.0


def test_zero_effect_is_rarely_significant_after_holm():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(300):
        rows = [(f"t{i}", "base", seeds(rng.normal(90, 1, 5)), seeds(rng.normal(90, 1, 5))) for i in range(4)]
        hits += any(r.p_holm < 0.05 for r in compare_rows(rows, bootstrap_seed=1))
    assert hits / 300 < 0.07  # family-wise error stays near the nominal 5%


def test_large_effect_is_adopted_and_harm_rejected():
    rng = np.random.default_rng(2)
    base = rng.normal(90, 0.3, 8)
    good = base + 2 + rng.normal(0, 0.2, 8)
    bad = base - 2 + rng.normal(0, 0.2, 8)
    noise = base + rng.normal(0, 0.3, 8)
    rows = compare_rows([("good", "base", seeds(good), seeds(base)), ("bad", "base", seeds(bad), seeds(base)),
                         ("noise", "base", seeds(noise), seeds(base))])
    assert [r.adopt for r in rows] == ["yes", "no", "unclear"]


def test_needs_two_paired_seeds():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        compare_rows([("a", "b", {0: 1.0}, {0: 2.0, 1: 3.0})])


def test_holm_vectorised_equals_statsmodels_and_adopt_stability():
    from statsmodels.stats.multitest import multipletests

    from reprozoo.ablation_stats import _holm, adopt_stability

    p = np.random.default_rng(0).uniform(0, 0.2, size=(50, 4))
    p[7, 2] = p[7, 0]  # a tie
    assert np.array_equal(_holm(p), [multipletests(row, method="holm")[1] for row in p])  # bit for bit
    big = np.array([5.0, 5.5, 4.5, 5.2, 4.8])  # a clear gain, far above a reference std of 1
    none = np.array([0.3, -0.4, 0.1, -0.2, 0.2])  # no effect
    edge = np.array([0.2, 1.5, 0.4, 1.2, 0.9])  # borderline
    st = adopt_stability([big, none, edge], [1.0, 1.0, 0.3], ["yes", "unclear", "yes"])
    assert st[0] == 1.0 and st[1] > 0.9 and 0.2 < st[2] < 0.9
    assert adopt_stability([np.array([1.0, 1.0])], [0.1], ["yes"]) == [None]
    rows = compare_rows([("a", "b", dict(enumerate(10 + big)), dict(enumerate(np.full(5, 10.0) + none)))])
    assert rows[0].adopt == "yes" and rows[0].stability == 1.0
