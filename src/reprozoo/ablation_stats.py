"""Paired statistics for ablations: each arm against its reference arm, matched by seed.

For every row: the mean paired difference (arm − reference, signed so that positive is better),
its 95% CI from the paired t distribution and from a paired BCa bootstrap (scipy.stats), the
probability of improvement (share of seeds where the arm beats the reference, ties counting half),
and a paired-t p-value corrected for the number of rows with Holm's method (`_holm`, statsmodels' values).

adopt: "yes" when the corrected test is significant, the gain is positive and it exceeds the
reference arm's seed-to-seed std (the tuning playbook: adopt only what clearly beats the noise);
"no" when the change is significantly harmful; otherwise "unclear". stability: the share of simulated
replications of the seeds that reach the same adopt (`adopt_stability`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedRow:
    arm: str
    reference: str
    seeds: tuple[int, ...]
    mean: float  # arm mean over the paired seeds
    reference_mean: float
    difference: float  # signed: positive = better
    ci_low: float
    ci_high: float
    boot_low: float
    boot_high: float
    p_value: float
    p_holm: float
    prob_improvement: float
    reference_std: float
    adopt: str
    stability: float | None = None  # share of simulated replications with the same `adopt` (see `adopt_stability`)


def pair(arm: dict[int, float], reference: dict[int, float]) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    seeds = tuple(sorted(set(arm) & set(reference)))
    return seeds, np.array([arm[s] for s in seeds], float), np.array([reference[s] for s in seeds], float)


def _bootstrap(d: np.ndarray, seed: int) -> tuple[float, float]:
    if len(d) < 3 or np.ptp(d) == 0:
        return (float(d.mean()),) * 2 if len(d) and np.ptp(d) == 0 else (math.nan, math.nan)
    res = stats.bootstrap((d,), np.mean, n_resamples=9999, method="BCa", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _adopt(p_holm, gain, ref_std, alpha):
    """The adopt rule, elementwise over arrays."""
    return np.where((p_holm < alpha) & (gain > 0) & (gain > ref_std), "yes",
                    np.where((p_holm < alpha) & (gain < 0), "no", "unclear"))


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values along the last axis (as statsmodels' multipletests(method='holm'))."""
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    ranked = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    out = np.empty_like(ranked)
    np.put_along_axis(out, order, ranked, axis=-1)
    return out


def adopt_decisions(diffs: list[np.ndarray], ref_stds: list[float], alpha: float) -> list[str]:
    """`compare_rows`' adopt rule alone (paired t, Holm over the rows, the reference-std threshold) on the
    rows' signed paired differences, without its intervals and bootstrap (what `reprozoo settle` needs at
    each look)."""
    p = [(0.0 if d.mean() != 0 else 1.0) if np.ptp(d) == 0 else float(stats.ttest_1samp(d, 0.0).pvalue) for d in diffs]
    gains = [float(d.mean()) for d in diffs]
    return [str(a) for a in _adopt(_holm(np.array(p)), np.array(gains), np.array(ref_stds), alpha)]


def adopt_stability(diffs: list[np.ndarray], ref_stds: list[float], observed: list[str], *, alpha: float = 0.05,
                    draws: int = 2000, seed: int = 0) -> list[float | None]:
    """Per row, the share of simulated replications whose `adopt` equals the observed one.

    A replication draws each row's paired differences again (as many seeds, normal with the observed
    mean and std of the differences), then applies the whole rule: paired t-test, Holm across the rows,
    the reference std threshold. Rows whose differences do not vary get None."""
    rng = np.random.default_rng(seed)
    R = len(diffs)
    p = np.ones((draws, R))
    gain = np.zeros((draws, R))
    for j, d in enumerate(diffs):
        n = len(d)
        if n < 2 or not np.ptp(d) > 0:
            gain[:, j] = d.mean() if len(d) else 0.0
            p[:, j] = 0.0 if len(d) and d.mean() != 0 else 1.0
            continue
        sim = rng.normal(d.mean(), d.std(ddof=1), size=(draws, n))
        m, sd = sim.mean(axis=1), sim.std(axis=1, ddof=1)
        t = m / (sd / math.sqrt(n))
        p[:, j] = 2 * stats.t.sf(np.abs(t), n - 1)
        gain[:, j] = m
    got = _adopt(_holm(p), gain, np.asarray(ref_stds)[None, :], alpha)
    return [None if len(d) < 2 or not np.ptp(d) > 0 else float(np.mean(got[:, j] == observed[j]))
            for j, d in enumerate(diffs)]


def compare_rows(rows: list[tuple[str, str, dict[int, float], dict[int, float]]], *, higher_is_better: bool = True,
                 alpha: float = 0.05, bootstrap_seed: int = 0) -> list[PairedRow]:
    """`rows`: (arm, reference, {seed: arm value}, {seed: reference value}); Holm-corrects across rows."""
    sign = 1.0 if higher_is_better else -1.0
    partial = []
    for arm, ref, a, r in rows:
        seeds, x, y = pair(a, r)
        if len(seeds) < 2:
            raise ValueError(f"{arm} vs {ref}: needs at least 2 seeds run by both, has {list(seeds)}")
        d = sign * (x - y)
        if np.ptp(d) == 0:  # identical differences: the t test is undefined, the effect is exact
            lo = hi = float(d.mean())
            p = 0.0 if d.mean() != 0 else 1.0
        else:
            t = stats.ttest_rel(sign * x, sign * y)
            ci = t.confidence_interval(1 - alpha)
            lo, hi, p = float(ci.low), float(ci.high), float(t.pvalue)
        blo, bhi = _bootstrap(d, bootstrap_seed)
        prob = float(np.mean((d > 0) + 0.5 * (d == 0)))
        partial.append((arm, ref, seeds, x, y, d, lo, hi, blo, bhi, p, prob))
    # `_holm` gives statsmodels' multipletests(method="holm") bit for bit (tested); that function also runs
    # gc.collect() on every call, 0.1-0.3 s in a process holding a study's or the test suite's objects
    p_holm = _holm(np.array([r[10] for r in partial]))
    adopts = [str(_adopt(ph, float(r[5].mean()), float(r[4].std(ddof=1)), alpha)) for r, ph in zip(partial, p_holm)]
    stable = adopt_stability([r[5] for r in partial], [float(r[4].std(ddof=1)) for r in partial], adopts, alpha=alpha,
                             seed=bootstrap_seed)
    out = []
    for (arm, ref, seeds, x, y, d, lo, hi, blo, bhi, p, prob), ph, adopt, st in zip(partial, p_holm, adopts, stable):
        out.append(PairedRow(arm, ref, seeds, float(x.mean()), float(y.mean()), float(d.mean()), lo, hi, blo, bhi, p,
                             float(ph), prob, float(y.std(ddof=1)), adopt, st))
    return out
