"""The result of a declared confirmation: KD's paired gain over its seeds.

Reads one pipeline ``results.json`` per seed and prints, per technique chain,
each seed's KD gain (``<chain>-kd`` minus ``<chain>-nokd``, Keras test
accuracy, in points), the mean, the paired 95% t-interval and the exact
Wilcoxon signed-rank p (two-sided), then whether the declared criterion (the
interval's lower end above zero) is met for the chains named in --claim. With
--accuracy_above=P it also prints the distilled runs' mean test accuracy of
each claimed chain with its 95% t-interval, and the criterion is met only if
that interval's lower end lies above P percent too. Pipeline results
(``models``) and study results (``runs``) are both read.

    python bench/confirm.py docs/confirmations/quickstart/seed_*.json --claim=none
    python bench/confirm.py docs/confirmations/fmnist_19k/results.json \
        --claim=none --accuracy_above=92.5
"""

import argparse
import json
import sys

import numpy as np

from kd_keras.app.study import stats


def pairs(paths):
    """{chain: [(no-KD, KD) test accuracy in percent, one per seed]} from results files."""
    out = {}
    for path in paths:
        with open(path) as f:
            results = json.load(f)
        rows = results["models"] if "models" in results else results["runs"]
        models = {m["name"]: m for m in rows}
        for name, row in sorted(models.items()):
            if not name.endswith("-nokd-s" + name.rsplit("-s", 1)[-1]):
                continue
            twin = models.get(name.replace("-nokd-", "-kd-"))
            if twin is not None:
                chain = name.split("-nokd-")[0]
                pair = (100 * row["test_accuracy"], 100 * twin["test_accuracy"])
                out.setdefault(chain, []).append(pair)
    return out


def gains(paths):
    """{chain: [gain in points per seed]} from pipeline or study results files."""
    return {chain: [kd - plain for plain, kd in v] for chain, v in pairs(paths).items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="one results.json per seed")
    parser.add_argument("--claim", default="none", help="chains the criterion is declared for")
    parser.add_argument(
        "--accuracy_above",
        type=float,
        default=None,
        help="also require the claimed chains' distilled mean test accuracy (percent) "
        "to have its 95%% t-interval above this",
    )
    args = parser.parse_args(argv)
    met = True
    for chain, values in pairs(args.results).items():
        d = np.asarray([kd - plain for plain, kd in values])
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
        if claimed and args.accuracy_above is not None:
            kd = np.asarray([v[1] for v in values])
            acc = stats.paired_interval(kd, np.zeros_like(kd))
            above = acc["low"] > args.accuracy_above
            print(
                f"{chain} with KD: accuracy {', '.join(f'{v:.2f}' for v in kd)}%; mean "
                f"{acc['mean']:.3f}% [{acc['low']:.3f}, {acc['high']:.3f}] (95% t, n={acc['n']}); "
                f"above {args.accuracy_above}%: {'met' if above else 'MISSED'}"
            )
            met &= above
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
