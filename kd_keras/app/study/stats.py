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
