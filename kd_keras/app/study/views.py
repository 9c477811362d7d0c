"""The study's views computed from its finished runs' rows and test
probabilities: the per-technique summary, the additivity pairs, the bagging
and variance views (no training, no model)."""

import numpy as np

from kd_keras.app.study import stats


def _accuracy(probs, labels):
    return float(np.mean(np.argmax(probs, -1) == labels))


def bagging_view(bag_rows, bag_probs, data, rows, config):
    """The bag's averaged-probability accuracy against single and KD students."""
    members = np.stack([bag_probs[r["name"]] for r in bag_rows])
    single = {r["name"]: r for r in rows}
    s0 = config.seeds[0]
    none_row = single[f"none-nokd-s{s0}"]
    kd_row = single[f"none-kd-s{s0}"]
    ens_acc = _accuracy(members.mean(0), data.y_test)
    return {
        "members": len(bag_rows),
        "epochs_per_member": bag_rows[0]["epochs"],
        "total_epochs": sum(r["epochs"] for r in bag_rows),
        "student_epochs": none_row["epochs"],
        "member_accuracy": stats.mean_std([r["test_accuracy"] for r in bag_rows]),
        "bag_accuracy": ens_acc,
        "bag_params": sum(r["params"] for r in bag_rows),
        "student_accuracy": none_row["test_accuracy"],
        "kd_student_accuracy": kd_row["test_accuracy"],
        "student_accuracy_seeds": stats.mean_std(
            [single[f"none-nokd-s{s}"]["test_accuracy"] for s in config.seeds]
        ),
        "kd_student_accuracy_seeds": stats.mean_std(
            [single[f"none-kd-s{s}"]["test_accuracy"] for s in config.seeds]
        ),
        "student_params": kd_row["params"],
        "member_disagreement": stats.disagreement(members.argmax(-1)),
    }


def variance_view(probs, seeds, labels):
    """How much students of different seeds disagree, without and with KD, and
    what averaging the seeds' probabilities adds: if KD already does what an
    ensemble does, the ensemble of KD students gains less over its members
    than the ensemble of plain students.
    """
    if len(seeds) < 2:
        return None
    out = {}
    for kd in ("nokd", "kd"):
        p = np.stack([probs[f"none-{kd}-s{s}"] for s in seeds])
        out[kd] = {
            "disagreement": stats.disagreement(p.argmax(-1)),
            "prediction_variance": stats.prediction_variance(p),
        }
        members = [_accuracy(m, labels) for m in p]
        ensemble = _accuracy(p.mean(0), labels)
        out[kd].update(
            member_accuracy=stats.mean_std(members),
            ensemble_accuracy=ensemble,
            ensemble_gain=ensemble - float(np.mean(members)),
        )
    return out


def _export_figure(row, fmt, key):
    for e in row.get("export") or []:
        if e["format"] == fmt and e.get("threads") == 1:
            return e.get(key)
    return None


def summarize(rows, seeds):
    """Per technique: accuracies, KD gain with paired CI, ratio, additivity, size."""
    by = {(r["label"], r["kd"], r["seed"]): r for r in rows}
    labels = list(dict.fromkeys(r["label"] for r in rows))
    acc = lambda label, kd: [by[(label, kd, s)]["test_accuracy"] for s in seeds]  # noqa: E731

    def tfl(label, kd, fmt):
        vals = [_export_figure(by[(label, kd, s)], fmt, "accuracy") for s in seeds]
        return stats.mean_std(vals) if all(v is not None for v in vals) else None

    def val(label, kd):  # None when a run has none (no split, or cached before it was kept).
        vals = [by[(label, kd, s)].get("val_accuracy") for s in seeds]
        return stats.mean_std(vals) if all(v is not None for v in vals) else None

    gain_none = stats.paired_interval(acc("none", True), acc("none", False))
    summary = {}
    for label in labels:
        gain = stats.paired_interval(acc(label, True), acc(label, False))
        entry = {
            "keras_accuracy": {
                "nokd": stats.mean_std(acc(label, False)),
                "kd": stats.mean_std(acc(label, True)),
            },
            "tflite_accuracy": {
                fmt: {"nokd": tfl(label, False, fmt), "kd": tfl(label, True, fmt)}
                for fmt in ("float32", "int8")
            },
            "val_accuracy": {"nokd": val(label, False), "kd": val(label, True)},
            "kd_gain": gain,
            "orthogonality_ratio": stats.orthogonality_ratio(gain["mean"], gain_none["mean"]),
            "params": by[(label, False, seeds[0])]["params"],
        }
        measured = [by[(label, kd, s)] for s in seeds for kd in (False, True)]
        pruned = [r["sparsity"]["pruned_overall"] for r in measured if r.get("sparsity")]
        if pruned:
            entry["pruned_sparsity"] = stats.mean_std(pruned)
        unique = [r["unique_values"]["max_unique"] for r in measured if r.get("unique_values")]
        if unique:
            entry["max_unique_values"] = int(max(unique))
        slimmed = [r["slim"]["macs_ratio"] for r in measured if r.get("slim")]
        if slimmed:  # Keras-layer MACs of the slimmed student over the unslimmed one's.
            entry["slim_macs_ratio"] = stats.mean_std(slimmed)
        if any("qat_layers" in r for r in measured):
            entry["qat_layers"] = all(r.get("qat_layers") for r in measured)
        if label != "none":
            entry["additivity"] = stats.additivity(
                acc("none", False), acc(label, False), acc("none", True), acc(label, True)
            )
        for fmt in ("float32", "int8"):
            for key in ("file_bytes", "gzip_bytes", "latency_us_median", "arena_bytes"):
                vals = [
                    _export_figure(by[(label, kd, s)], fmt, key)
                    for s in seeds
                    for kd in (False, True)
                ]
                vals = [v for v in vals if v is not None]
                if vals:
                    entry[f"{fmt}_{key}"] = float(np.median(vals))
        summary[label] = entry
    return summary


def additivity_pairs(rows, seeds):
    """Every pair of the study whose gains should add up, with its interval.

    * KD x T, for every technique T: base = plain student, parts = T alone
      and KD alone, combined = T with KD.
    * A composition 'A+B' whose parts are techniques of the study (e.g.
      prune50+qat): base = 'none', parts = A and B, combined = A+B; once
      without KD and once with KD.

    Returns:
      list of dicts: pair (e.g. ['KD', 'prune50']), kd (None for KD x T, else
      the setting of a composition), measured, expected, interaction (see
      ``stats.interaction``).
    """
    by = {(r["label"], r["kd"], r["seed"]): r["test_accuracy"] for r in rows}
    labels = list(dict.fromkeys(r["label"] for r in rows))
    acc = lambda label, kd: [by[(label, kd, s)] for s in seeds]  # noqa: E731
    out = []
    for label in labels:
        if label == "none":
            continue
        entry = stats.interaction(
            acc("none", False), [acc(label, False), acc("none", True)], acc(label, True)
        )
        out.append(dict(entry, pair=["KD", label], kd=None))
    for label in labels:
        parts = label.split("+")
        if len(parts) < 2 or not all(p in labels for p in parts):
            continue
        for kd in (False, True):
            entry = stats.interaction(acc("none", kd), [acc(p, kd) for p in parts], acc(label, kd))
            out.append(dict(entry, pair=parts, kd=kd))
    return out
