"""What the study's numbers support: tests and verdicts from a declared design.

A pure function of a results dict (``results.json``), so an old study's report
can be rendered again without training. The design (seeds, primary metric,
alpha, equivalence margin) is declared in the study's flagfile and stored in
``results["config"]["study"]``; results written before it was declared get
the defaults below, and the report says so.

The rules, for one technique T and seeds s (paired by seed):

* KD's gain ``d_s = m(T+KD, s) - m(T, s)`` (m the primary metric): the
  ``1 - alpha`` paired t-interval, the two-sided paired t-test and the
  Wilcoxon signed-rank test beside it; both tests' p-values Holm-adjusted
  across the techniques (each test its own family).
* KD x T additivity: the interaction ``i_s = d_s(T) - d_s(none)`` (and for a
  composition A+B, ``AB - A - B + base`` per seed): the two-sided t-test that
  it is 0 and the two one-sided tests (TOST) that it lies within ±margin,
  each Holm-adjusted across the pairs. :func:`stats.verdict` words it:
  "interaction" when only the t-test rejects, "additive within ±m" when only
  TOST does, "interaction within ±m" when both do, otherwise "inconclusive".
  An interval that merely contains 0 is never read as "additive".
* The bagging figures (disagreement between seeds, what averaging the seeds
  adds, the bag's accuracy): percentile bootstrap intervals resampling seeds
  and test images (``stats.bootstrap``, 2000 resamples, seed 0), computed
  by the runner where the per-image predictions exist and stored in
  ``results["bagging_intervals"]``; results without them get intervals over
  seeds only where the stored numbers allow, and the report says which.
"""

import dataclasses
import math

import numpy as np

from kd_keras.app.study import stats

PRIMARY_METRICS = ("test_accuracy", "int8_accuracy")
# The share of a bag's gain one KD student must reach for the bagging sign.
BAG_SHARE = 0.25


@dataclasses.dataclass(frozen=True)
class Design:
    """The study's statistical design.

    Attributes:
      seeds: the seeds, fixed before the runs.
      primary_metric: 'test_accuracy' (Keras, full test split) or
        'int8_accuracy' (the int8 TFLite file's, one thread).
      alpha: the level of every test (family-wise, by Holm, within a family).
      equivalence_margin: the margin of "no difference", in accuracy points.
      resamples, bootstrap_seed: of the bootstrap intervals.
      declared: whether the results declared alpha and the margin (False:
        the defaults were used).
    """

    seeds: tuple
    primary_metric: str = "test_accuracy"
    alpha: float = 0.05
    equivalence_margin: float = 0.5
    resamples: int = 2000
    bootstrap_seed: int = 0
    declared: bool = True

    def __post_init__(self):
        if self.primary_metric not in PRIMARY_METRICS:
            raise ValueError(
                f"primary_metric must be one of {PRIMARY_METRICS}, got {self.primary_metric!r}."
            )
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}.")
        if self.equivalence_margin <= 0:
            raise ValueError(
                f"equivalence_margin must be > 0 points, got {self.equivalence_margin}."
            )

    @property
    def margin(self):
        """The margin as an accuracy fraction."""
        return self.equivalence_margin / 100


def design_of(results):
    """The Design a results dict declares (defaults for what it does not)."""
    study = results.get("config", {}).get("study", {})
    declared = "alpha" in study and "equivalence_margin" in study
    return Design(
        seeds=tuple(results["seeds"]),
        primary_metric=study.get("primary_metric", "test_accuracy"),
        alpha=study.get("alpha", 0.05),
        equivalence_margin=study.get("equivalence_margin", 0.5),
        declared=declared,
    )


def metric(row, name):
    """A run's value of the primary metric (None when the run lacks it)."""
    if name == "test_accuracy":
        return row["test_accuracy"]
    for e in row.get("export") or []:
        if e["format"] == "int8" and e.get("threads") == 1:
            return e.get("accuracy")
    return None


def _tested(d, design):
    """Interval, t-test, rank test and TOST of paired differences `d`."""
    interval = stats.paired_interval(d, np.zeros(len(d)), 1 - design.alpha)
    return {
        "per_seed": [float(x) for x in d],
        "interval": interval,
        "p": stats.paired_t_p(d),
        "wilcoxon": stats.wilcoxon(d),
        "tost": stats.tost(d, design.margin, design.alpha),
    }


def _adjust(entries, design):
    """Holm-adjusts the family's p-values in place and words each outcome."""
    for key, get in (
        ("p_holm", lambda e: e["p"]),
        ("wilcoxon_p_holm", lambda e: e["wilcoxon"]["p"]),
        ("tost_p_holm", lambda e: e["tost"]["p"]),
    ):
        for e, p in zip(entries, stats.holm([get(e) for e in entries])):
            e[key] = p
    for e in entries:
        e["outcome"], e["sign"] = stats.verdict(
            e["interval"]["mean"], e["p_holm"], e["tost_p_holm"], design.alpha
        )


def gain_words(e, margin_pts):
    """A KD gain's outcome in words."""
    m = f"±{margin_pts:g} pts"
    return {
        "difference": "KD gains" if e["sign"] > 0 else "KD costs",
        "small difference": ("KD gains" if e["sign"] > 0 else "KD costs") + f", within {m}",
        "equivalent": f"no difference within {m}",
        "inconclusive": "inconclusive",
    }[e["outcome"]]


def interaction_words(e, margin_pts):
    """An interaction's outcome in words."""
    m = f"±{margin_pts:g} pts"
    side = "more than additive" if e["sign"] > 0 else "less than additive"
    return {
        "difference": f"interaction ({side})",
        "small difference": f"interaction within {m} ({side})",
        "equivalent": f"additive within {m}",
        "inconclusive": "inconclusive",
    }[e["outcome"]]


def analyze(results, design=None):
    """Every test of the study from its runs.

    Args:
      results: the study's results dict (``runs``, ``seeds``, ``techniques``).
      design: a Design; default :func:`design_of` the results.

    Returns:
      dict: design (dict), gains ({technique: tested gain}), interactions
      (list, one per additivity pair), bagging (see :func:`bagging_evidence`).
      A tested entry holds per_seed, interval, p, wilcoxon, tost, their
      Holm-adjusted p-values (p_holm, wilcoxon_p_holm, tost_p_holm), outcome,
      sign and words.
    """
    design = design or design_of(results)
    seeds = list(design.seeds)
    runs = results.get("runs") or []
    by = {(r["label"], bool(r["kd"]), r["seed"]): r for r in runs}
    # The study's order; runs outside the grid (bag members, ensemble teachers)
    # lack an arm or a seed and drop out.
    labels = list(results.get("techniques", [])) + [r["label"] for r in runs]
    labels = [
        t for t in dict.fromkeys(labels) if all((t, k, s) in by for k in (0, 1) for s in seeds)
    ]

    def m(label, kd):
        vals = [metric(by[(label, kd, s)], design.primary_metric) for s in seeds]
        return None if any(v is None for v in vals) else np.asarray(vals, dtype=float)

    gains = {}
    for t in labels:
        kd, nokd = m(t, True), m(t, False)
        if kd is not None and nokd is not None:
            gains[t] = _tested(kd - nokd, design)
    _adjust(list(gains.values()), design)
    for e in gains.values():
        e["words"] = gain_words(e, design.equivalence_margin)

    interactions = []
    if "none" in gains:
        for t in gains:
            if t != "none":
                d = np.asarray(gains[t]["per_seed"]) - np.asarray(gains["none"]["per_seed"])
                interactions.append(dict(_tested(d, design), pair=["KD", t], kd=None))
    for t in labels:
        parts = t.split("+")
        if len(parts) < 2 or not all(p in labels for p in parts):
            continue
        for kd in (False, True):
            vals = [m(x, kd) for x in ["none", t] + parts]
            if any(v is None for v in vals):
                continue
            base, both, *each = vals
            d = (both - base) - sum(x - base for x in each)
            interactions.append(dict(_tested(d, design), pair=parts, kd=kd))
    _adjust(interactions, design)
    for e in interactions:
        e["words"] = interaction_words(e, design.equivalence_margin)
    return {
        "design": dataclasses.asdict(design),
        "gains": gains,
        "interactions": interactions,
        "bagging": bagging_evidence(results, design),
    }


def interaction_of(evidence, technique):
    """The KD x technique entry of an analysis, or None."""
    for e in evidence["interactions"]:
        if e["kd"] is None and e["pair"] == ["KD", technique]:
            return e
    return None


def _mean_accuracy(correct, counts, images):
    """Count-weighted mean over seeds of each seed's accuracy on `images`."""
    per_seed = correct[:, images].mean(1) if images is not None else correct.mean(1)
    return float(counts @ per_seed / counts.sum())


def bagging_bootstrap(plain, kd, labels, bags=None, resamples=2000, seed=0, confidence=0.95):
    """Bootstrap intervals of the bagging figures, resampling seeds and test images.

    Args:
      plain, kd: arrays (seeds, images, classes) of the plain and the KD
        students' test probabilities, seed i of each from the same seed.
      labels: the test labels (images,).
      bags: {budget: array (members, images, classes)} of bag members'
        probabilities; each bag is one fixed model (its members are not
        resampled), evaluated on the resampled images.
      resamples, seed, confidence: of :func:`stats.bootstrap`.

    Returns:
      dict of interval dicts (estimate, low, high, resamples, seed, over):
      disagreement and ensemble_gain, each {nokd, kd, kd_minus_nokd}; and per
      budget, bag_accuracy, bag_gain (bag minus the plain students' mean),
      kd_gain (KD students' mean minus plain students' mean) and share_test
      (kd_gain - BAG_SHARE * bag_gain).

    Disagreement counts only pairs of resampled seeds that are different
    seeds (a seed drawn twice would otherwise agree with itself).
    """
    labels = np.asarray(labels)
    arms = {"nokd": np.asarray(plain, dtype=float), "kd": np.asarray(kd, dtype=float)}
    n_seeds, n_images = arms["nokd"].shape[:2]
    pairs = [(i, j) for i in range(n_seeds) for j in range(i + 1, n_seeds)]
    pred = {k: p.argmax(-1) for k, p in arms.items()}
    correct = {k: (p == labels).astype(float) for k, p in pred.items()}
    mismatch = {
        k: np.stack([p[i] != p[j] for i, j in pairs]).astype(float) for k, p in pred.items()
    }
    bags = {
        b: np.asarray(p, dtype=float).mean(0).argmax(-1) == labels for b, p in (bags or {}).items()
    }
    names = ["disagreement", "ensemble_gain"]

    def statistic(s, i):
        counts = np.bincount(s, minlength=n_seeds).astype(float)
        idx = slice(None) if i is None else i
        out = {}
        for k in ("nokd", "kd"):
            w = np.array([counts[a] * counts[b] for a, b in pairs])
            dis = float(w @ mismatch[k][:, idx].mean(1) / w.sum()) if w.sum() else math.nan
            ens = np.tensordot(counts / counts.sum(), arms[k][:, idx], axes=1)
            member = _mean_accuracy(correct[k], counts, idx)
            out[k] = (dis, float(np.mean(ens.argmax(-1) == labels[idx])) - member, member)
        vals = [out["nokd"][0], out["kd"][0], out["kd"][0] - out["nokd"][0]]
        vals += [out["nokd"][1], out["kd"][1], out["kd"][1] - out["nokd"][1]]
        for b in sorted(bags):
            bag_acc = float(bags[b][idx].mean())
            bag_gain = bag_acc - out["nokd"][2]
            kd_gain = out["kd"][2] - out["nokd"][2]
            vals += [bag_acc, bag_gain, kd_gain, kd_gain - BAG_SHARE * bag_gain]
        return np.array(vals)

    boot = stats.bootstrap(statistic, n_seeds, n_images, resamples, seed, confidence)

    def pick(k):
        return {key: boot[key][k] if isinstance(boot[key], list) else boot[key] for key in boot}

    out = {
        name: {arm: pick(3 * n + a) for a, arm in enumerate(("nokd", "kd", "kd_minus_nokd"))}
        for n, name in enumerate(names)
    }
    out["bags"] = {
        b: {
            key: pick(6 + 4 * n + j)
            for j, key in enumerate(("bag_accuracy", "bag_gain", "kd_gain", "share_test"))
        }
        for n, b in enumerate(sorted(bags))
    }
    return out


def bagging_evidence(results, design):
    """The bagging figures' intervals: those the runner stored (seeds and
    images), else over seeds only from the per-seed accuracies of the plain
    and KD students (the bag's share test; disagreement and the ensemble
    gain need per-image predictions, so they get no interval).

    Returns:
      dict: over ('seeds and images', 'seeds' or None), intervals (as
      :func:`bagging_bootstrap`, possibly without disagreement and
      ensemble_gain), note (a sentence on what was resampled).
    """
    stored = results.get("bagging_intervals")
    if stored:
        return {
            "over": "seeds and images",
            "intervals": stored,
            "note": f"Bootstrap intervals resample seeds and test images "
            f"({_resamples(stored)} resamples, fixed seed).",
        }
    bags = results.get("bagging") or {}
    seeds = list(design.seeds)
    acc = {
        (r["label"], bool(r["kd"]), r["seed"]): r["test_accuracy"] for r in results.get("runs", [])
    }
    if not bags or len(seeds) < 2 or not all(("none", k, s) in acc for k in (0, 1) for s in seeds):
        return {"over": None, "intervals": {}, "note": ""}
    plain = np.array([acc[("none", False, s)] for s in seeds])
    kd = np.array([acc[("none", True, s)] for s in seeds])
    intervals = {"bags": {}}
    for b, bag in sorted(bags.items()):
        bag_acc = bag["bag_accuracy"]

        def statistic(s, _, bag_acc=bag_acc):
            bag_gain = bag_acc - plain[s].mean()
            kd_gain = (kd[s] - plain[s]).mean()
            return np.array([bag_gain, kd_gain, kd_gain - BAG_SHARE * bag_gain])

        boot = stats.bootstrap(statistic, len(seeds), None, design.resamples, design.bootstrap_seed)
        intervals["bags"][b] = {
            key: {k: boot[k][j] if isinstance(boot[k], list) else boot[k] for k in boot}
            for j, key in enumerate(("bag_gain", "kd_gain", "share_test"))
        }
    return {
        "over": "seeds",
        "intervals": intervals,
        "note": "These results hold no per-image predictions, so the bootstrap "
        f"resamples seeds only ({design.resamples} resamples, seed {design.bootstrap_seed}): "
        "the bag's gain and the share test get intervals over seeds (the bag itself is "
        "one fixed model on one test split); the disagreement and the ensemble gain are "
        "single numbers without an interval.",
    }


def _resamples(intervals):
    first = intervals["disagreement"]["nokd"]
    return first["resamples"]


def outcome_of(interval):
    """'above 0', 'below 0' or 'contains 0' for an interval dict (low, high)."""
    if interval is None or any(math.isnan(interval[k]) for k in ("low", "high")):
        return None
    if interval["low"] > 0:
        return "above 0"
    if interval["high"] < 0:
        return "below 0"
    return "contains 0"
