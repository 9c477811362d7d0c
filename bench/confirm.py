"""The result of a declared confirmation: KD's paired gain over its seeds.

Reads one pipeline ``results.json`` per seed and prints, per technique chain,
each seed's KD gain (``<chain>-kd`` minus ``<chain>-nokd``, Keras test
accuracy, in points), the mean, the paired 95% t-interval and the exact
Wilcoxon signed-rank p (two-sided), then whether the declared criterion (the
interval's lower end above zero) is met for the chains named in --claim.

    python bench/confirm.py docs/confirmations/quickstart/seed_*.json --claim=none
"""

import argparse
import json
import sys

import numpy as np

from kd_keras.app.study import stats


def gains(paths):
    """{chain: [gain in points per file]} from pipeline results files."""
    out = {}
    for path in paths:
        with open(path) as f:
            models = {m["name"]: m for m in json.load(f)["models"]}
        for name, row in sorted(models.items()):
            if not name.endswith("-nokd-s" + name.rsplit("-s", 1)[-1]):
                continue
            twin = models.get(name.replace("-nokd-", "-kd-"))
            if twin is not None:
                chain = name.split("-nokd-")[0]
                gain = 100 * (twin["test_accuracy"] - row["test_accuracy"])
                out.setdefault(chain, []).append(gain)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="one results.json per seed")
    parser.add_argument("--claim", default="none", help="chains the criterion is declared for")
    args = parser.parse_args(argv)
    met = True
    for chain, values in gains(args.results).items():
        d = np.asarray(values)
        ci = stats.paired_interval(d, np.zeros_like(d))
        rank = stats.wilcoxon(d)
        claimed = chain in args.claim.split(",")
        verdict = ("met" if ci["low"] > 0 else "MISSED") if claimed else "not declared"
        print(
            f"{chain}: gains {', '.join(f'{v:+.2f}' for v in d)} pts; mean {ci['mean']:+.2f} "
            f"[{ci['low']:+.2f}, {ci['high']:+.2f}] (95% paired t, n={ci['n']}); Wilcoxon "
            f"p {rank['p']:.4f} (smallest possible {rank['min_p']:.4f}); criterion: {verdict}"
        )
        met &= ci["low"] > 0 or not claimed
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
