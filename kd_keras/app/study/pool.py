"""Pools studies of one configuration run on different seeds, paired by seed.

A study too long for one sitting can be run a few seeds at a time, each batch
in its own workdir::

    python -m kd_keras.main --flagfile=F --seeds=5,6,7,8,9 --workdir=W5
    python -m kd_keras.main --flagfile=F --seeds=10,11,12,13,14 --workdir=W10

Each workdir's ``results.json`` holds its runs. This module checks that the
files describe the same study (their configs agree except for the workdir, the
seeds and how the KD setting was arrived at: ``--kd_select`` writes its choice
into the KD setting, which is compared; the teachers' weights agree), that no
seed appears in two files, and gives each technique's KD gain over all seeds
with the paired interval of :func:`kd_keras.app.study.stats.paired_interval`,
beside the gain over each file's seeds apart. A file whose study had seeds
added after its results were written (the runner's ``--extend_seeds``) is
split into its declared and its added seeds, and the output says that the
pooled interval is then not a pre-declared analysis::

    python -m kd_keras.app.study.pool W0/results.json W5/results.json W10/results.json
"""

import argparse
import copy
import json
import os
import sys

from kd_keras import runs
from kd_keras.app.study import stats

# Config entries allowed to differ between the pooled files.
_FREE = (
    ("pipeline", "workdir"),
    ("pipeline", "kd_select"),
    ("study", "seeds"),
    ("study", "extend_seeds"),
)


def comparable(results):
    """The parts of a results.json that must agree for its runs to be pooled."""
    config = copy.deepcopy(results["config"])
    for section, key in _FREE:
        config.get(section, {}).pop(key, None)
    teachers = [t.get("weights_digest") for t in results.get("teacher", [])]
    return {"config": config, "teacher_weights": teachers}


def _differences(a, b, path=""):
    """Dotted paths at which two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.append(where)
            else:
                out.extend(_differences(a[key], b[key], where))
        return out
    return [] if a == b else [path or "(top level)"]


def batch_gains(runs_, batches, metric="test_accuracy"):
    """Per technique, KD's gain over each batch of seeds apart.

    Args:
      runs_: a study's result rows (label, kd, seed and `metric`).
      batches: list of (name, seeds) pairs.
      metric: the row figure compared.

    Returns:
      {technique: [{"batch": name, "seeds": seeds, "kd_gain": paired
      interval}]}, a batch left out of a technique missing one of its runs.
    """
    by = {(r["label"], bool(r["kd"]), r["seed"]): r[metric] for r in runs_}
    out = {}
    for label in dict.fromkeys(r["label"] for r in runs_):
        for name, seeds in batches:
            if seeds and all((label, kd, s) in by for s in seeds for kd in (False, True)):
                gain = stats.paired_interval(
                    [by[(label, True, s)] for s in seeds], [by[(label, False, s)] for s in seeds]
                )
                out.setdefault(label, []).append(
                    {"batch": name, "seeds": list(seeds), "kd_gain": gain}
                )
    return out


def seed_extension(workdir, seeds, extend=False):
    """The seeds `seeds` add to a finished study in `workdir`, as the report
    states them.

    A finished study has written ``<workdir>/results.json``; its intervals
    and tests were then there to be read. Seeds added afterwards make the
    pooled analysis one chosen after an interim look, so adding them needs
    `extend` (``--extend_seeds``) and is recorded: the report names the first design's
    seeds and the added ones, and gives each batch's gain apart.

    Returns:
      {"declared": the first design's seeds, "added": every seed added
      since, in order} when the study has been extended (now or before), or
      None.

    Raises:
      ValueError: seeds added to a finished study without `extend`.
    """
    path = os.path.join(workdir, "results.json")
    finished = runs.read_valid_json(
        path, lambda value: runs.missing_keys(value, ("seeds",)), then="it is written again"
    )
    if finished is None:
        return None
    record = finished.get("seed_extension")
    before = list(finished["seeds"])
    added = [s for s in seeds if s not in before]
    if not added:
        if record and all(s in seeds for s in record["added"]):
            return record
        return None
    if not extend:
        raise ValueError(
            f"{path} is a finished study of seeds {before}; --seeds adds {added} after its "
            "results were written: pass --extend_seeds to extend it (the report then says so), "
            "or give a new --workdir."
        )
    declared = record["declared"] if record else before
    return {"declared": declared, "added": [s for s in seeds if s not in declared]}


def extension_of(results):
    """A results.json's seed extension: {"declared": the first design's
    seeds, "added": the seeds added after its results were written} (the
    study runner's ``--extend_seeds``), or None."""
    return results.get("seed_extension")


def gain_text(g):
    """'+0.12 [-0.30, +0.54]' in points (no interval with one seed)."""
    if g["n"] < 2:
        return f"{100 * g['mean']:+.2f} (one seed, no interval)"
    return f"{100 * g['mean']:+.2f} [{100 * g['low']:+.2f}, {100 * g['high']:+.2f}]"


def pool(named_results):
    """Per technique, the KD gain over the seeds of every file, paired by seed.

    Args:
      named_results: list of (name, results dict) pairs, the dicts as
        ``kd_keras.app.study`` writes them to results.json; names are for errors.

    Returns:
      dict: technique -> {"seeds", "nokd", "kd" (test accuracy per seed, in
      seed order), "source" (file name per seed), "nokd_accuracy",
      "kd_accuracy" ((mean, sd)), "kd_gain" (paired interval over all the
      seeds), "batches" (:func:`batch_gains`: the gain over each file's seeds
      apart, and over each seed extension's declared and added seeds apart),
      "extended" (per file with a seed extension, {"file", "declared",
      "added"}: the pooled interval is then no pre-declared analysis),
      "seeds_to_exclude_zero" (planning figure, None when the interval
      already excludes 0 or no count would do)}.

    Raises:
      ValueError: fewer than one file, configs that differ (naming the first
        differing entries), a seed in two files, or a seed with only one arm.
    """
    if not named_results:
        raise ValueError("pool needs at least one results.json.")
    first_name, first = named_results[0]
    ref = comparable(first)
    for name, results in named_results[1:]:
        diff = _differences(ref, comparable(results))
        if diff:
            shown = ", ".join(diff[:5]) + (" ..." if len(diff) > 5 else "")
            raise ValueError(f"{name} is not the study of {first_name}: they differ at {shown}.")
    arms, source = {}, {}
    for name, results in named_results:
        for run in results["runs"]:
            key = (run["label"], run["seed"])
            if key in source and source[key] != name:
                raise ValueError(
                    f"seed {run['seed']} of {run['label']} is in both {source[key]} and {name}."
                )
            source[key] = name
            arms.setdefault(key, {})[bool(run["kd"])] = run["test_accuracy"]
    all_runs = [run for _, results in named_results for run in results["runs"]]
    batches, extended = [], []
    for name, results in named_results:
        seeds = sorted({run["seed"] for run in results["runs"]})
        ext = extension_of(results)
        if ext:
            extended.append({"file": name, "declared": ext["declared"], "added": ext["added"]})
            batches += [
                (f"{name} (declared)", [s for s in seeds if s in ext["declared"]]),
                (f"{name} (added)", [s for s in seeds if s in ext["added"]]),
            ]
        else:
            batches.append((name, seeds))
    by_batch = batch_gains(all_runs, batches)
    pooled = {}
    for label in dict.fromkeys(label for label, _ in arms):
        seeds = sorted(s for lab, s in arms if lab == label)
        for s in seeds:
            if len(arms[(label, s)]) != 2:
                raise ValueError(f"seed {s} of {label} has a run with or without KD, not both.")
        nokd = [arms[(label, s)][False] for s in seeds]
        kd = [arms[(label, s)][True] for s in seeds]
        gain = stats.paired_interval(kd, nokd)
        clear = gain["n"] > 1 and (gain["low"] > 0 or gain["high"] < 0)
        pooled[label] = {
            "seeds": seeds,
            "source": [source[(label, s)] for s in seeds],
            "nokd": nokd,
            "kd": kd,
            "nokd_accuracy": stats.mean_std(nokd),
            "kd_accuracy": stats.mean_std(kd),
            "kd_gain": gain,
            "batches": by_batch.get(label, []),
            "extended": extended,
            "seeds_to_exclude_zero": None
            if clear
            else stats.seeds_to_exclude_zero(gain["mean"], gain["sd"]),
        }
    return pooled


def markdown(pooled):
    """A per-seed table and the pooled line of each technique, each batch's
    gain apart when there are several, and which seeds were added after an
    interim look."""
    lines = []
    for e in next(iter(pooled.values()), {}).get("extended", []):
        lines += [
            f"**Seeds added after an interim look** ({e['file']}): its first design "
            f"declared seeds {e['declared']}; seeds {e['added']} were added after that "
            "design's results were written (`--extend_seeds`). The pooled interval is "
            "therefore not a pre-declared analysis; the declared seeds' own line is.",
            "",
        ]
    for label, p in pooled.items():
        g = p["kd_gain"]
        lines += [
            f"### {label}: {g['n']} paired seeds",
            "",
            "| seed | no KD, test acc (%) | KD, test acc (%) | KD gain (pts) | file |",
            "|---|---|---|---|---|",
        ]
        for s, a, b, src in zip(p["seeds"], p["nokd"], p["kd"], p["source"]):
            lines.append(f"| {s} | {100 * a:.2f} | {100 * b:.2f} | {100 * (b - a):+.2f} | {src} |")
        (mn, sn), (mk, sk) = p["nokd_accuracy"], p["kd_accuracy"]
        lines.append(
            f"| mean ± sd | {100 * mn:.2f} ± {100 * sn:.2f} | {100 * mk:.2f} ± {100 * sk:.2f} | "
            f"**{100 * g['mean']:+.2f} [{100 * g['low']:+.2f}, {100 * g['high']:+.2f}]** "
            f"(95% paired t-interval, {g['n'] - 1} d.o.f.) | |"
        )
        if len(p["batches"]) > 1 or p["extended"]:
            lines += ["", "| batch | seeds | KD gain (pts) [95% CI] |", "|---|---|---|"]
            for b in p["batches"]:
                seeds = ", ".join(map(str, b["seeds"]))
                lines.append(f"| {b['batch']} | {seeds} | {gain_text(b['kd_gain'])} |")
            lines.append(f"| pooled | all {g['n']} | {gain_text(g)} |")
        if p["seeds_to_exclude_zero"] is not None:
            lines += [
                "",
                f"At this mean gain and spread an interval clear of zero would need about "
                f"{p['seeds_to_exclude_zero']} seeds.",
            ]
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m kd_keras.app.study.pool",
        description="Pools the KD gains of studies of one configuration run on different seeds.",
    )
    parser.add_argument("results", nargs="+", help="results.json files of the studies")
    parser.add_argument("--json", help="also write the pooled figures to this file")
    args = parser.parse_args(argv)
    named = []
    for path in args.results:
        try:
            with open(path) as f:
                named.append((path, json.load(f)))
        except (OSError, json.JSONDecodeError) as e:
            print(f"error: cannot read {path}: {e}", file=sys.stderr)
            return 2
    try:
        pooled = pool(named)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(pooled))
    if args.json:
        runs.write_json(args.json, pooled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
