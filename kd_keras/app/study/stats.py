"""Statistics of the orthogonality study. Pure functions of numbers.

Gains are *paired by seed*: run ``s`` of technique T with KD and run ``s`` of T
without KD share the seed (initialization and data order), so the KD gain of
seed ``s`` is ``d_s = acc(T+KD, s) - acc(T, s)``. The interval is the paired
t-interval ``mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n)`` (sample sd, n - 1
degrees of freedom). With one seed there is no interval (NaN bounds).
"""

import math

import numpy as np
from scipy import stats as sp_stats


def mean_std(values):
    """(mean, sample std) of a list; std is 0 for one value."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        raise ValueError("mean_std needs at least one value.")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def paired_interval(a, b, confidence=0.95):
    """Mean of the paired differences a - b and its t confidence interval.

    Args:
      a, b: sequences of equal length, index i of each from the same seed.
      confidence: two-sided confidence level.

    Returns:
      dict with mean, low, high, n, sd.

    Raises:
      ValueError: the sequences are empty or of different lengths.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"paired_interval needs two non-empty sequences of equal length; got "
            f"{a.size} and {b.size} values."
        )
    d = a - b
    n = d.size
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": n, "sd": math.nan}
    sd = float(d.std(ddof=1))
    half = float(sp_stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n, "sd": sd}


def seeds_to_exclude_zero(mean, sd, confidence=0.95, max_seeds=1000):
    """Seeds a paired interval would need to exclude 0 if the gain and spread held.

    The smallest n >= 2 with ``t_{c, n-1} * sd / sqrt(n) < |mean|``: how many
    seeds the interval of :func:`paired_interval` needs to clear 0 when the
    paired differences keep the observed mean and sample sd. A planning
    figure, not a power calculation: the next seeds move both numbers.

    Args:
      mean, sd: mean and sample sd of the paired differences.
      confidence: two-sided confidence level of the interval.
      max_seeds: the largest n tried.

    Returns:
      int n, or None when no n <= max_seeds would do (a zero mean, or none
      large enough) or sd is not a finite number.
    """
    if not (math.isfinite(mean) and math.isfinite(sd)) or mean == 0:
        return None
    q = 0.5 + confidence / 2
    for n in range(2, int(max_seeds) + 1):
        if float(sp_stats.t.ppf(q, n - 1)) * sd / math.sqrt(n) < abs(mean):
            return n
    return None


def orthogonality_ratio(gain_t, gain_none):
    """Delta(T) / Delta(none); NaN when the plain KD gain is 0."""
    return gain_t / gain_none if gain_none else math.nan


def interaction(acc_base, acc_parts, acc_combined, confidence=0.95):
    """Whether the gains of separate changes add up when they are combined.

    All arguments are per-seed accuracies in the same seed order: the base
    (e.g. the plain student), each change alone (e.g. [pruned, distilled]) and
    all of them together (pruned and distilled). Per seed s::

        measured_s    = combined_s - base_s
        expected_s    = sum over parts p of (p_s - base_s)
        interaction_s = measured_s - expected_s

    and the interaction's 95% interval is the paired t-interval of
    ``interaction_s`` (:func:`paired_interval` of measured and expected).
    For two parts A, B it is ``AB - A - B + base``; with A = technique and
    B = KD it equals the technique's KD gain minus the plain student's.

    Returns:
      dict: measured (mean), expected (mean), interaction (paired interval
      dict: mean, low, high, n, sd).

    Raises:
      ValueError: sequences of different lengths.
    """
    base = np.asarray(acc_base, dtype=float)
    parts = [np.asarray(p, dtype=float) for p in acc_parts]
    combined = np.asarray(acc_combined, dtype=float)
    if any(a.shape != base.shape for a in parts + [combined]):
        raise ValueError(
            "interaction needs per-seed accuracies of equal length; got "
            f"{[a.size for a in [base] + parts + [combined]]}."
        )
    measured = combined - base
    expected = sum((p - base for p in parts), np.zeros_like(base))
    return {
        "measured": float(measured.mean()),
        "expected": float(expected.mean()),
        "interaction": paired_interval(measured, expected, confidence),
    }


def additivity(acc_plain, acc_t, acc_kd, acc_t_kd, confidence=0.95):
    """Measured gain of T+KD over the plain student vs the sum of separate gains.

    All arguments are per-seed accuracies (same seed order):
    ``measured = acc_t_kd - acc_plain``; ``expected = (acc_t - acc_plain) +
    (acc_kd - acc_plain)``; ``interaction = measured - expected`` with its
    paired interval (0 inside the interval: the gains add up). See
    :func:`interaction`.
    """
    return interaction(acc_plain, [acc_t, acc_kd], acc_t_kd, confidence)


def disagreement(predictions):
    """Mean pairwise top-1 disagreement among models.

    Args:
      predictions: array (models, examples) of predicted classes.

    Returns:
      Fraction of (model pair, example) combinations that disagree.
    """
    p = np.asarray(predictions)
    m = p.shape[0]
    if m < 2:
        raise ValueError(f"disagreement needs at least 2 models, got {m}.")
    total, pairs = 0.0, 0
    for i in range(m):
        for j in range(i + 1, m):
            total += float(np.mean(p[i] != p[j]))
            pairs += 1
    return total / pairs


def prediction_variance(probabilities):
    """Variance across models of the predicted probabilities, averaged over
    examples and classes. `probabilities`: array (models, examples, classes)."""
    p = np.asarray(probabilities, dtype=float)
    if p.shape[0] < 2:
        raise ValueError(f"prediction_variance needs at least 2 models, got {p.shape[0]}.")
    return float(p.var(axis=0, ddof=1).mean())


def _t_test(d):
    """(mean, standard error, degrees of freedom) of paired differences `d`."""
    d = np.asarray(d, dtype=float)
    n = d.size
    if n < 2:
        return float(d.mean()) if n else math.nan, math.nan, 0
    return float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n), n - 1


def paired_t_p(d):
    """Two-sided p-value of the paired t-test that the mean difference is 0.

    Args:
      d: per-seed paired differences.

    Returns:
      float p; NaN with fewer than 2 differences; 0 or 1 when the differences
      do not vary (a nonzero or a zero mean).
    """
    mean, se, df = _t_test(d)
    if df == 0:
        return math.nan
    if se == 0:
        return 0.0 if mean != 0 else 1.0
    return float(2 * sp_stats.t.sf(abs(mean) / se, df))


def wilcoxon(d):
    """Two-sided Wilcoxon signed-rank test that the differences centre on 0.

    Zero differences are dropped (Wilcoxon's convention); without ties among
    the rest the p-value is exact (scipy's table of the 2^n sign patterns).
    With n nonzero differences the smallest p the test can give is
    ``2 / 2^n`` (every difference of one sign): 0.0625 for 5 seeds, so with
    5 seeds the rank test cannot reach 0.05 whatever the data.

    Returns:
      dict: p (NaN with no nonzero difference), n (nonzero differences),
      min_p (the smallest attainable two-sided p, 2 / 2^n capped at 1).
    """
    d = np.asarray(d, dtype=float)
    nz = d[d != 0]
    n = int(nz.size)
    if n == 0:
        return {"p": math.nan, "n": 0, "min_p": 1.0}
    p = float(sp_stats.wilcoxon(nz, alternative="two-sided").pvalue)
    return {"p": min(p, 1.0), "n": n, "min_p": min(1.0, 2.0 / 2**n)}


def holm(pvalues):
    """Holm's step-down adjustment of a family of p-values.

    Sorted ascending, the i-th smallest (i from 0) is multiplied by
    ``m - i``; the adjusted values are made non-decreasing in that order and
    capped at 1. Rejecting where the adjusted p <= alpha controls the
    family-wise error at alpha. NaN entries (no test) stay NaN and do not
    count in m.

    Returns:
      list of adjusted p-values, in the input order.
    """
    p = [float(x) for x in pvalues]
    idx = sorted((i for i, x in enumerate(p) if not math.isnan(x)), key=lambda i: p[i])
    m = len(idx)
    out = [math.nan] * len(p)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def tost(d, margin, alpha=0.05):
    """Two one-sided paired t-tests that the mean difference lies within ±margin.

    H0: mean <= -margin or mean >= +margin. The p-value is the larger of
    the two one-sided p-values, ``1 - F((mean + margin) / se)`` and
    ``F((mean - margin) / se)`` (F the t distribution with n - 1 d.o.f.);
    p <= alpha exactly when the ``1 - 2 alpha`` t-interval lies inside
    (-margin, +margin).

    Args:
      d: per-seed paired differences.
      margin: the equivalence margin (> 0), in the units of `d`.
      alpha: the test's level, used for the interval.

    Returns:
      dict: p (NaN with fewer than 2 differences), low, high (the
      ``1 - 2 alpha`` interval), margin.
    """
    if margin <= 0:
        raise ValueError(f"tost needs a margin > 0, got {margin}.")
    mean, se, df = _t_test(d)
    if df == 0:
        return {"p": math.nan, "low": math.nan, "high": math.nan, "margin": margin}
    if se == 0:
        p = 0.0 if abs(mean) < margin else 1.0
        return {"p": p, "low": mean, "high": mean, "margin": margin}
    p_low = float(sp_stats.t.sf((mean + margin) / se, df))
    p_high = float(sp_stats.t.cdf((mean - margin) / se, df))
    half = float(sp_stats.t.ppf(1 - alpha, df)) * se
    return {"p": max(p_low, p_high), "low": mean - half, "high": mean + half, "margin": margin}


def verdict(mean, p_difference, p_equivalence, alpha):
    """The one rule by which the study words a paired difference.

    * ``difference`` when the (Holm-adjusted) two-sided t-test's p <= alpha
      and not equivalent: the difference is not 0 and may be large;
    * ``equivalent`` when the (Holm-adjusted) TOST p <= alpha and not
      different: the difference lies within ±margin;
    * ``small difference`` when both hold: not 0, but within ±margin;
    * ``inconclusive`` otherwise (and with no test, NaN p-values): these
      seeds say neither.

    Returns:
      (outcome, sign): outcome as above, sign +1 / -1 of the mean for a
      difference, else 0.
    """
    diff = not math.isnan(p_difference) and p_difference <= alpha
    equiv = not math.isnan(p_equivalence) and p_equivalence <= alpha
    sign = (1 if mean > 0 else -1) if diff else 0
    if diff and equiv:
        return "small difference", sign
    if diff:
        return "difference", sign
    if equiv:
        return "equivalent", 0
    return "inconclusive", 0


def bootstrap(statistic, n_seeds, n_images=None, resamples=2000, seed=0, confidence=0.95):
    """Percentile bootstrap interval of statistics over seeds (and images).

    Each resample draws `n_seeds` seed indices with replacement and, when
    `n_images` is given, `n_images` test-image indices with replacement,
    independently (a two-way bootstrap: seed-to-seed and test-set
    variation), from a numpy Generator seeded with `seed`, so a given seed
    gives the same interval every time.

    Args:
      statistic: fn(seed_idx, image_idx) -> float or 1-D array of floats
        (several statistics from one resample); image_idx is None without
        `n_images`.
      n_seeds: seeds to resample.
      n_images: test images to resample, or None (seeds only).
      resamples: bootstrap resamples.
      seed: the generator's seed.
      confidence: two-sided level of the percentile interval.

    Returns:
      dict: estimate (the statistic on the data as they are), low, high (as
      floats or arrays like the statistic), resamples, seed, over ('seeds'
      or 'seeds and images').
    """
    rng = np.random.default_rng(seed)
    all_seeds = np.arange(n_seeds)
    all_images = None if n_images is None else np.arange(n_images)
    estimate = np.asarray(statistic(all_seeds, all_images), dtype=float)
    draws = np.empty((resamples,) + estimate.shape)
    for r in range(resamples):
        s = rng.integers(0, n_seeds, n_seeds)
        i = None if n_images is None else rng.integers(0, n_images, n_images)
        draws[r] = statistic(s, i)
    q = (1 - confidence) / 2
    low, high = np.nanquantile(draws, [q, 1 - q], axis=0)

    def out(x):
        return float(x) if np.ndim(x) == 0 else [float(v) for v in x]

    return {
        "estimate": out(estimate),
        "low": out(low),
        "high": out(high),
        "resamples": int(resamples),
        "seed": int(seed),
        "over": "seeds" if n_images is None else "seeds and images",
    }
