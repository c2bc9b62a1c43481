"""Seed statistics and the verdict rule (scipy.stats; the rule is documented in docs/statistics.md).

d = mean(ours) - published.  Its standard error combines our seed spread and the claim's own:

    SE^2 = s^2 / n  +  s_c^2 / n_c

where s, n are our sample std and number of seeds, s_c is the claim's published std (our s when the
source gives none) and n_c its number of runs (1 when not given, which makes the interval the
prediction interval for one more run). I = d ± t(0.975, df) * SE, with Welch-Satterthwaite df.
With tolerance tol and margin m:

    below        if  I.high < -tol              (significantly lower, by more than the tolerance)
    above        if  I.low  >  tol
    reproduced   if  I within [-(tol + m), tol + m]
    inconclusive otherwise (and with fewer than 2 seeds)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

MAX_SEEDS = 1000
# A conclusion reached by fewer than this share of simulated replications is marked fragile (docs/statistics.md).
STABLE = 0.9
REPLICATIONS = 2000


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    min: float
    max: float


def summarize(values, confidence: float = 0.95) -> Summary:
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else float("nan")
    if n > 1 and std > 0:
        lo, hi = stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    elif n > 1:
        lo = hi = mean
    else:
        lo, hi = float("nan"), float("nan")
    return Summary(n, mean, std, float(lo), float(hi), float(x.min()), float(x.max()))


@dataclass(frozen=True)
class Verdict:
    verdict: str
    difference: float
    low: float
    high: float
    df: float
    tolerance: float
    margin: float
    seeds_needed: int | None  # total seeds that would likely settle an inconclusive verdict
    reason: str

    def as_dict(self):
        return asdict(self)


def _interval(mean, s, n, value, claim_std, claim_n, confidence):
    d = mean - value
    n_c = claim_n or 1
    if claim_std is None:
        s_c, df = s, n - 1  # the published run is one more draw from our distribution
        se2 = s * s / n + s_c * s_c / n_c
    else:
        a, b = s * s / n, claim_std ** 2 / n_c
        se2 = a + b
        df_c = (n_c - 1) if n_c > 1 else math.inf
        denom = (a * a / (n - 1) if a > 0 else 0.0) + (b * b / df_c if (b > 0 and math.isfinite(df_c)) else 0.0)
        df = se2 * se2 / denom if denom > 0 else float(n - 1)
    se = math.sqrt(se2)
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se if se > 0 else 0.0
    return d, d - half, d + half, df


def _decide(lo, hi, tol, margin) -> str:
    if hi < -tol:
        return "below"
    if lo > tol:
        return "above"
    if -(tol + margin) <= lo and hi <= tol + margin:
        return "reproduced"
    return "inconclusive"


def verdict(values, value: float, *, std: float | None = None, n: int | None = None,
            tolerance: float = 0.0, margin: float = 2.0, confidence: float = 0.95) -> Verdict:
    """Compare our per-seed values with a published value (see the module docstring)."""
    x = np.asarray(values, dtype=float)
    k = len(x)
    if k < 2:
        return Verdict("inconclusive", float(x.mean() - value) if k else float("nan"), float("nan"), float("nan"),
                       float("nan"), tolerance, margin, 3, "fewer than 2 seeds: the seed spread is unknown")
    mean, s = float(x.mean()), float(x.std(ddof=1))
    d, lo, hi, df = _interval(mean, s, k, value, std, n, confidence)
    v = _decide(lo, hi, tolerance, margin)
    needed = None
    if v == "inconclusive":
        needed = _seeds_needed(mean, s, value, std, n, tolerance, margin, confidence, start=k + 1)
        if needed is None:
            reason = (f"the interval cannot shrink below ±{_floor(s, std, n, confidence):.3g} "
                      f"(the published value's own spread), wider than tolerance + margin = {tolerance + margin:.3g}")
        else:
            reason = f"the interval [{lo:+.3g}, {hi:+.3g}] straddles the decision bounds"
    else:
        reason = {"below": f"upper end {hi:+.3g} < -tolerance {-tolerance:.3g}",
                  "above": f"lower end {lo:+.3g} > tolerance {tolerance:.3g}",
                  "reproduced": f"[{lo:+.3g}, {hi:+.3g}] lies within ±{tolerance + margin:.3g}"}[v]
    return Verdict(v, d, lo, hi, float(df), tolerance, margin, needed, reason)


def _floor(s, claim_std, claim_n, confidence):
    s_c = s if claim_std is None else claim_std
    return float(stats.norm.ppf(0.5 + confidence / 2)) * s_c / math.sqrt(claim_n or 1)


def _seeds_needed(mean, s, value, claim_std, claim_n, tol, margin, confidence, start):
    """Smallest seed count at which the same mean and spread would give a decisive verdict.

    The interval only narrows as seeds are added (towards the claim's own spread), so a decision,
    once reached, stays: check the largest count, then bisect."""
    decided = lambda k: _decide(*_interval(mean, s, k, value, claim_std, claim_n, confidence)[1:3], tol, margin) != "inconclusive"  # noqa: E731
    if not decided(MAX_SEEDS):
        return None
    lo, hi = start, MAX_SEEDS
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decided(mid) else (mid + 1, hi)
    return lo


def stability(values, value: float, *, std: float | None = None, n: int | None = None, tolerance: float = 0.0,
              margin: float = 2.0, confidence: float = 0.95, draws: int = REPLICATIONS, seed: int = 0) -> float | None:
    """Share of simulated replications that give the same verdict as `values`.

    A replication draws as many seeds again from a normal distribution with our mean and std (what
    another machine, or another set of seeds, would give: same-seed runs already differ across CPUs)
    and applies the same rule. The observed verdict's own replication probability: near 1/2 when its
    interval just touches a bound. None with fewer than 2 seeds or no spread."""
    x = np.asarray(values, dtype=float)
    k = len(x)
    if k < 2 or not np.ptp(x) > 0:
        return None
    observed = verdict(x, value, std=std, n=n, tolerance=tolerance, margin=margin, confidence=confidence).verdict
    sims = np.random.default_rng(seed).normal(x.mean(), x.std(ddof=1), size=(draws, k))
    means, sds = sims.mean(axis=1), sims.std(axis=1, ddof=1)
    got = np.array([_decide(*_interval(m, sd, k, value, std, n, confidence)[1:3], tolerance, margin)
                    for m, sd in zip(means, sds)])
    return float(np.mean(got == observed))
