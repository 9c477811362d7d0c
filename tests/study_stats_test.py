"""Study statistics checked against hand computations on fixed inputs."""

import math

import numpy as np
import pytest

from kd_keras.app.study import stats


def test_paired_interval_by_hand():
    a = [0.90, 0.92, 0.91]
    b = [0.88, 0.89, 0.90]
    # d = [0.02, 0.03, 0.01]; mean 0.02; sd 0.01; t(0.975, 2) = 4.302653
    got = stats.paired_interval(a, b)
    assert got["mean"] == pytest.approx(0.02)
    assert got["sd"] == pytest.approx(0.01)
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert got["low"] == pytest.approx(0.02 - half, abs=1e-6)
    assert got["high"] == pytest.approx(0.02 + half, abs=1e-6)


def test_pairing_matters():
    # Same values, different pairing: differences [0.01, 0.01] vs [-0.01, 0.03].
    paired = stats.paired_interval([0.5, 0.6], [0.49, 0.59])
    shuffled = stats.paired_interval([0.5, 0.6], [0.51, 0.57])
    assert paired["sd"] == pytest.approx(0.0) and shuffled["sd"] > 0.02


def test_single_seed_has_no_interval():
    got = stats.paired_interval([0.9], [0.8])
    assert got["mean"] == pytest.approx(0.1) and math.isnan(got["low"])


def test_bad_lengths():
    with pytest.raises(ValueError, match="equal length"):
        stats.paired_interval([1, 2], [1])


def test_ratio_and_additivity_by_hand():
    assert stats.orthogonality_ratio(0.01, 0.02) == pytest.approx(0.5)
    assert math.isnan(stats.orthogonality_ratio(0.01, 0.0))
    plain, t, kd, t_kd = [0.80, 0.82], [0.78, 0.80], [0.83, 0.84], [0.81, 0.83]
    got = stats.additivity(plain, t, kd, t_kd)
    # measured = [0.01, 0.01]; expected = [-0.02 + 0.03, -0.02 + 0.02] = [0.01, 0.00]
    assert got["measured"] == pytest.approx(0.01)
    assert got["expected"] == pytest.approx(0.005)
    assert got["interaction"]["mean"] == pytest.approx(0.005)


def test_disagreement_and_variance_by_hand():
    preds = np.array([[0, 1, 2, 3], [0, 1, 2, 0], [1, 1, 2, 3]])
    # pairs: (0,1) 1/4, (0,2) 1/4, (1,2) 2/4 -> mean 1/3
    assert stats.disagreement(preds) == pytest.approx(1 / 3)
    probs = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    # per class variance (ddof=1) of [1, 0] = 0.5
    assert stats.prediction_variance(probs) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 2"):
        stats.disagreement(preds[:1])


def test_mean_std():
    assert stats.mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert stats.mean_std([5.0]) == (5.0, 0.0)


def test_interaction_interval_by_hand():
    # Five seeds of the plain student, pruned, distilled, and pruned + distilled.
    base = [0.80, 0.81, 0.82, 0.80, 0.83]
    pruned = [0.79, 0.80, 0.80, 0.79, 0.81]
    kd = [0.82, 0.83, 0.83, 0.82, 0.85]
    both = [0.81, 0.83, 0.81, 0.80, 0.84]
    # Per seed: measured = both - base = [1, 2, -1, 0, 1] / 100;
    # sum of parts = (pruned - base) + (kd - base) = [1, 1, -1, 1, 0] / 100;
    # interaction = measured - sum = [0, 1, 0, -1, 1] / 100: mean 0.2, sd 0.83666 (pts).
    got = stats.interaction(base, [pruned, kd], both)
    assert got["measured"] == pytest.approx(0.006)
    assert got["expected"] == pytest.approx(0.004)
    sd = math.sqrt(((0 - 0.2) ** 2 + 0.8**2 + 0.2**2 + 1.2**2 + 0.8**2) / 4) / 100
    assert sd == pytest.approx(0.0083666, abs=1e-7)
    half = 2.776445 * sd / math.sqrt(5)  # t(0.975, 4)
    i = got["interaction"]
    assert i["mean"] == pytest.approx(0.002) and i["sd"] == pytest.approx(sd)
    assert i["low"] == pytest.approx(0.002 - half, abs=1e-6)
    assert i["high"] == pytest.approx(0.002 + half, abs=1e-6)
    # KD x T: the interaction is the technique's KD gain minus the plain one's.
    gain_t = stats.paired_interval(both, pruned)["mean"]
    gain_none = stats.paired_interval(kd, base)["mean"]
    assert i["mean"] == pytest.approx(gain_t - gain_none)
    assert stats.additivity(base, pruned, kd, both) == got
    with pytest.raises(ValueError, match="equal length"):
        stats.interaction(base, [pruned[:4]], both)


def test_seeds_to_exclude_zero_by_the_t_table():
    # t_{0.975, 5} = 2.571, t_{0.975, 6} = 2.447: with mean = sd, 6 seeds give a
    # half-width of 2.571 / sqrt(6) = 1.05 sd (> mean), 7 give 0.925 sd (< mean).
    assert stats.seeds_to_exclude_zero(0.01, 0.01) == 7
    assert stats.seeds_to_exclude_zero(-0.01, 0.01) == 7  # a loss is excluded alike
    # The 19k study's gain: +0.204 pt, sd 0.357 pt. t_{0.975, 13} = 2.160 and
    # t_{0.975, 14} = 2.145: 2.160 / sqrt(14) = 0.577 > 0.571 > 2.145 / sqrt(15) = 0.554.
    assert stats.seeds_to_exclude_zero(0.00204, 0.00357) == 15
    # The figure is the first n whose interval excludes 0 under paired_interval.
    n = stats.seeds_to_exclude_zero(0.003, 0.004)
    for m, clears in ((n - 1, False), (n, True)):
        d = 0.003 + 0.004 * _unit_sd(m)  # m differences with this exact mean and sd
        got = stats.paired_interval(d, np.zeros(m))
        assert (got["low"] > 0) is clears
    assert stats.seeds_to_exclude_zero(0.0, 0.01) is None
    assert stats.seeds_to_exclude_zero(0.001, math.nan) is None
    assert stats.seeds_to_exclude_zero(0.0001, 0.1, max_seeds=50) is None


def _unit_sd(m):
    """m numbers with mean 0 and sample sd 1."""
    x = np.arange(m, dtype=float)
    x -= x.mean()
    return x / x.std(ddof=1)
