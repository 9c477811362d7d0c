"""The result of a declared slim confirmation: latency cut, accuracy kept, KD's
gain on the slimmed student and the narrower student of about the same MACs.

Reads one pipeline ``results.json`` per seed of a ``--techniques=slim`` run
(rows ``none-kd``, ``slim-nokd``, ``slim-kd``) and, optionally, one per seed
of a ``--kd=on`` run of the narrower student (row ``none-kd``), matched by
seed. Prints per seed the int8 latencies of the unslimmed and the slimmed
distilled students (timed together in their run, so the ratio shares one
clock) and the Keras test accuracies; then the declared criteria:

- latency: every seed's slimmed/unslimmed int8 latency ratio at most
  --max_latency_ratio;
- accuracy: the mean of slimmed-distilled minus unslimmed-distilled at least
  -(--max_loss) points;
- KD: the paired 95% t-interval of slimmed-distilled minus slimmed-plain
  above zero;

and, with no criterion, slimmed-distilled minus narrower-distilled with its
paired interval.

    python bench/slim_confirm.py docs/confirmations/slim_rgb/slim_seed_*.json \\
        --narrow docs/confirmations/slim_rgb/narrow_seed_*.json
"""

import argparse
import json
import sys

import numpy as np

from kd_keras.app.study import stats


def rows(path):
    """(seed, {row name without its seed suffix: row}) of one results file."""
    with open(path) as f:
        models = json.load(f)["models"]
    seeds = {m["seed"] for m in models if "seed" in m}
    if len(seeds) != 1:
        raise ValueError(f"{path}: expected the rows of one seed, found seeds {sorted(seeds)}.")
    return seeds.pop(), {m["name"].rsplit("-s", 1)[0]: m for m in models if "seed" in m}


def int8_latency(row):
    """Median int8 latency (µs) of a row's export."""
    for export in row.get("export", []):
        if export["format"] == "int8":
            return export["latency_us_median"]
    raise ValueError(f"{row['name']} has no int8 export with a latency.")


def interval(diffs):
    """Paired 95% t-interval of `diffs` (points) as text."""
    d = np.asarray(diffs, dtype=float)
    ci = stats.paired_interval(d, np.zeros_like(d))
    return (
        ci,
        f"{ci['mean']:+.2f} [{ci['low']:+.2f}, {ci['high']:+.2f}] (95% paired t, n={ci['n']})",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="one slim results.json per seed")
    parser.add_argument(
        "--narrow", nargs="*", default=[], help="one narrower-student file per seed"
    )
    parser.add_argument("--max_latency_ratio", type=float, default=0.6)
    parser.add_argument("--max_loss", type=float, default=0.5, help="points")
    args = parser.parse_args(argv)
    runs = dict(rows(p) for p in args.results)
    narrow = dict(rows(p) for p in args.narrow)
    if narrow and set(narrow) != set(runs):
        raise SystemExit(f"--narrow seeds {sorted(narrow)} differ from {sorted(runs)}.")
    ratios, kept, gains, versus = [], [], [], []
    print(
        "| seed | int8 µs unslimmed | int8 µs slimmed | ratio | unslimmed KD | slimmed no KD "
        "| slimmed KD | narrower KD |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for seed, r in sorted(runs.items()):
        full, plain, slimmed = r["none-kd"], r["slim-nokd"], r["slim-kd"]
        ratio = int8_latency(slimmed) / int8_latency(full)
        acc = {
            k: 100 * v["test_accuracy"]
            for k, v in (("full", full), ("plain", plain), ("slim", slimmed))
        }
        ratios.append(ratio)
        kept.append(acc["slim"] - acc["full"])
        gains.append(acc["slim"] - acc["plain"])
        cell = ""
        if narrow:
            other = 100 * narrow[seed]["none-kd"]["test_accuracy"]
            versus.append(acc["slim"] - other)
            cell = f"{other:.2f}%"
        print(
            f"| {seed} | {int8_latency(full):.1f} | {int8_latency(slimmed):.1f} | {ratio:.2f} "
            f"| {acc['full']:.2f}% | {acc['plain']:.2f}% | {acc['slim']:.2f}% | {cell} |"
        )
    met = {}
    met["latency"] = max(ratios) <= args.max_latency_ratio
    print(
        f"\nlatency: ratios {', '.join(f'{x:.2f}' for x in ratios)}; criterion (every ratio "
        f"<= {args.max_latency_ratio}): {'met' if met['latency'] else 'MISSED'}"
    )
    ci, text = interval(kept)
    met["accuracy"] = ci["mean"] >= -args.max_loss
    print(
        f"accuracy: slimmed KD - unslimmed KD {text} pts; criterion (mean >= "
        f"-{args.max_loss}): {'met' if met['accuracy'] else 'MISSED'}"
    )
    ci, text = interval(gains)
    met["kd"] = ci["low"] > 0
    print(
        f"KD on the slimmed student: {text} pts; Wilcoxon p {stats.wilcoxon(gains)['p']:.4f}; "
        f"criterion (interval above zero): {'met' if met['kd'] else 'MISSED'}"
    )
    if versus:
        print(f"slimmed KD - narrower KD: {interval(versus)[1]} pts (no criterion)")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
