"""Non-dominated sets: the accuracy / cost trade-off of a search.

A point dominates another when it is at least as good in every objective and
strictly better in one. The fronts reported by a search are accuracy (higher
is better) against latency and against file bytes (lower is better): over
every completed trial (FRONTS, float32 figures) and over the feasible
architectures only (FEASIBLE_FRONTS, int8 figures: what gets deployed).
"""

import math

FRONTS = {
    "accuracy_vs_latency": ("val_accuracy", "latency_us"),
    "accuracy_vs_bytes": ("val_accuracy", "file_bytes"),
}
FEASIBLE_FRONTS = {
    "accuracy_vs_int8_latency": ("val_accuracy", "int8_latency_us"),
    "accuracy_vs_int8_bytes": ("val_accuracy", "int8_file_bytes"),
}


def costs_no_more(a, b):
    """True if row `a` has no more int8 bytes and no higher int8 latency than row `b`."""
    return (
        a["int8_file_bytes"] <= b["int8_file_bytes"]
        and a["int8_latency_us"] <= b["int8_latency_us"]
    )


def covers(a, b, accuracy_key="test_accuracy"):
    """True if row `a` is at least as accurate as row `b` with no more int8
    bytes and no higher int8 latency (weak dominance on all three figures)."""
    return a[accuracy_key] >= b[accuracy_key] and costs_no_more(a, b)


def dominates(a, b, maximize):
    """True if point `a` dominates point `b`.

    Args:
      a, b: sequences of numbers of equal length.
      maximize: one bool per coordinate (True = higher is better).
    """
    better = False
    for x, y, up in zip(a, b, maximize):
        if (x < y) if up else (x > y):
            return False
        if x != y:
            better = True
    return better


def non_dominated(points, maximize):
    """Indices of the points no other point dominates, in input order.

    Duplicated points are all kept (none dominates the other).

    Args:
      points: list of equal-length sequences of numbers.
      maximize: one bool per coordinate.

    Returns:
      list of int indices into `points`.

    Raises:
      ValueError: points of a different length than `maximize`, or NaNs.
    """
    for p in points:
        if len(p) != len(maximize):
            raise ValueError(
                f"Every point needs {len(maximize)} coordinates (one per entry of "
                f"maximize={list(maximize)}); got {list(p)}."
            )
        if any(isinstance(v, float) and math.isnan(v) for v in p):
            raise ValueError(f"Points must not hold NaN; got {list(p)}.")
    return [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p, maximize) for j, q in enumerate(points) if j != i)
    ]


def front(rows, accuracy_key="val_accuracy", cost_key="latency_us"):
    """The rows on the accuracy-versus-cost front, sorted by increasing cost.

    Rows lacking either figure (failed trials) are ignored.

    Args:
      rows: list of dicts (trial rows).
      accuracy_key: the figure to maximize.
      cost_key: the figure to minimize.

    Returns:
      list of the non-dominated rows.
    """
    usable = [r for r in rows if r.get(accuracy_key) is not None and r.get(cost_key) is not None]
    keep = non_dominated([(r[accuracy_key], r[cost_key]) for r in usable], (True, False))
    return sorted((usable[i] for i in keep), key=lambda r: (r[cost_key], -r[accuracy_key]))


def fronts(rows, which=None):
    """Every front of `which` (default FRONTS): {name: [rows]}."""
    which = FRONTS if which is None else which
    return {name: front(rows, acc, cost) for name, (acc, cost) in which.items()}
