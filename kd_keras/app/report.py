"""results.json and results.md, written from the pipeline's result dicts."""

import os

from kd_keras import runs
from kd_keras.app import kd_selection

COLUMNS = (
    ("name", "run", "{}"),
    ("techniques", "techniques", "{}"),
    ("kd", "KD", "{}"),
    ("val_accuracy", "Keras val acc", "{:.4f}"),
    ("test_accuracy", "Keras test acc", "{:.4f}"),
    ("params", "params", "{:,}"),
    ("train_time_s", "train s", "{:.1f}"),
    ("sparsity_overall", "zeros", "{:.1%}"),
    ("slim_macs_ratio", "MACs kept", "{:.1%}"),
    ("format", "format", "{}"),
    ("accuracy", "TFLite acc", "{:.4f}"),
    ("file_bytes", "bytes", "{:,}"),
    ("gzip_bytes", "gzip bytes", "{:,}"),
    ("latency_us_median", "latency µs (median)", "{:.1f}"),
    ("threads", "threads", "{}"),
)


def flatten(models):
    """One table row per (model, exported format, thread count).

    A model without exports gives one row with blank export cells.
    """
    rows = []
    for model in models:
        base = {k: v for k, v in model.items() if k not in ("export", "history")}
        sparsity = model.get("sparsity") or {}
        if "overall" in sparsity:
            base["sparsity_overall"] = sparsity["overall"]
        slim = model.get("slim") or {}
        if slim.get("macs_ratio") is not None:  # Of the Keras layers, slimmed / unslimmed.
            base["slim_macs_ratio"] = slim["macs_ratio"]
        exports = model.get("export") or []
        if not exports:
            rows.append(base)
        for e in exports:
            rows.append(
                dict(
                    base,
                    **{
                        k: e.get(k)
                        for k in (
                            "format",
                            "accuracy",
                            "file_bytes",
                            "gzip_bytes",
                            "latency_us_median",
                            "threads",
                        )
                    },
                )
            )
    return rows


# Figures a row may lack (no validation split, or results written before it
# was kept): always a column, a dash where missing.
DASHED = ("val_accuracy",)


def markdown_table(rows, columns=COLUMNS):
    """A GitHub markdown table of `rows` (dicts); missing cells are blank
    (a dash for the DASHED figures).

    Columns that are blank in every row are left out, the DASHED ones kept.
    """

    def shown(key):
        return key in DASHED or any(r.get(key) is not None for r in rows)

    columns = [c for c in columns if shown(c[0])]
    lines = [
        "| " + " | ".join(title for _, title, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            blank = "–" if key in DASHED else ""
            cells.append(blank if value is None or value == "" else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kd_gains(models):
    """Per technique chain, the KD student's test accuracy minus the plain one's.

    Returns:
      list of dicts: techniques, no_kd, kd (Keras test accuracies) and
      gain_pts (percentage points), for every chain trained both ways.
    """
    by_key = {}
    for m in models:
        if m.get("role") == "student":
            by_key[(m.get("techniques"), m.get("seed"), bool(m.get("kd")))] = m
    out = []
    for (techniques, seed, kd), m in by_key.items():
        plain = by_key.get((techniques, seed, False))
        if kd and plain is not None:
            out.append(
                {
                    "techniques": techniques,
                    "no_kd": plain["test_accuracy"],
                    "kd": m["test_accuracy"],
                    "gain_pts": round(100 * (m["test_accuracy"] - plain["test_accuracy"]), 2),
                }
            )
    return out


def gains_markdown(gains):
    """What KD added per technique chain, as a Markdown table."""
    lines = [
        "| techniques | test acc no KD | test acc KD | KD gain (pts) |",
        "|---|---|---|---|",
    ]
    for g in gains:
        lines.append(
            f"| {g['techniques']} | {g['no_kd']:.4f} | {g['kd']:.4f} | {g['gain_pts']:+.2f} |"
        )
    return "\n".join(lines)


def write(workdir, results):
    """Writes results.json and results.md into `workdir` atomically."""
    runs.write_json(os.path.join(workdir, "results.json"), results)
    text = (
        f"# Results: {results.get('dataset', '')}\n\n"
        + (
            f"Classes ({len(results['class_names'])}): {', '.join(results['class_names'])}\n\n"
            if results.get("class_names")
            else ""
        )
        + markdown_table(flatten(results["models"]))
        + "\n"
    )
    together = [
        e.get("latency_timed_with")
        for m in results["models"]
        for e in m.get("export") or []
        if e.get("latency_timed_with")
    ]
    if together:
        text += (
            f"\nLatency: the run's {max(together)} TFLite files per thread count timed "
            "together at its end, interleaved in one process, so the rows compare "
            "(`latency_us_median_alone` in results.json: each file timed at its own export).\n"
        )
    gains = kd_gains(results["models"])
    if gains:
        text += "\n" + gains_markdown(gains) + "\n"
    if results.get("kd_selection"):
        text += "\n" + kd_selection.markdown(results["kd_selection"]) + "\n"
    runs.write_text(os.path.join(workdir, "results.md"), text)
    return text
