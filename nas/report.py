"""What a search leaves in its project directory, written from the oracle's trials.

``write_outputs(tuner)`` writes, into ``<directory>/<project_name>/``:

* ``trials.json`` and ``trials.csv``: one row per trial (failed ones too) with
  its status, hyperparameters, validation accuracy, latency, bytes,
  parameters, feasibility, score and whether it is on a front;
* ``pareto.json``: the non-dominated trials, accuracy vs latency and accuracy
  vs bytes (all trials, float32 figures), and the Pareto sets of the search:
  accuracy vs int8 latency and accuracy vs int8 bytes among the feasible
  architectures (:func:`architectures`: one row per architecture, its
  highest-fidelity trial);
* ``accuracy_vs_latency.png``: every trial, feasible and not, with the front;
* ``best_model.keras`` and ``best_hyperparameters.json``: the most accurate
  feasible trial's trained model and what :func:`nas.load_student` needs to
  rebuild it untrained.

Everything is read from the oracle (trial metrics are reported to it, also by
distributed workers), so the outputs are the same whether the search ran in
one process, was resumed, or ran on a chief and workers.
"""

import csv
import io
import json
import logging
import math
import os
import shutil

from kd_keras import runs
from nas import hand as hand_lib
from nas import pareto
from nas.objective import METRICS, Budget
from nas.search import MODEL_FILE
from nas.space import BEST_HPS_FILE

INT_METRICS = (
    "file_bytes",
    "gzip_bytes",
    "params",
    "tflite_params",
    "macs",
    "epochs",
    "arena_bytes",
    "int8_file_bytes",
)
COLUMNS = (
    "trial_id",
    "status",
    "feasible",
    "score",
    "val_accuracy",
    "latency_us",
    "latency_us_p90",
    "file_bytes",
    "gzip_bytes",
    "params",
    "tflite_params",
    "macs",
    "arena_bytes",
    "int8_latency_us",
    "int8_file_bytes",
    "epochs",
    "train_time_s",
    "violations",
    "on_latency_front",
    "on_bytes_front",
    "on_int8_latency_front",
    "on_int8_bytes_front",
)


def trial_rows(oracle):
    """One dict per trial of `oracle`, in start order.

    Returns:
      list of dicts: trial_id, status, hyperparameters (dict), the METRICS
      (None when the trial reported none), feasible (bool), violations (the
      budgets it exceeded, '' when none) and message (failed trials).
    """
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        row = {
            "trial_id": trial.trial_id,
            "status": str(trial.status),
            "hyperparameters": {
                k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")
            },
            "hyperband": {
                k: v for k, v in trial.hyperparameters.values.items() if k.startswith("tuner/")
            },
        }
        for name in METRICS:
            value = trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None
            if value is not None:
                value = int(round(value)) if name in INT_METRICS else float(value)
            row[name] = value
        row["feasible"] = bool(row["feasible"]) if row["feasible"] is not None else False
        row["violations"] = ";".join(
            f"{f}+{row[f'over_{f}'] * 100:.0f}%" for f, _ in Budget.LIMITS if row.get(f"over_{f}")
        )
        lines = (trial.message or "").strip().splitlines()
        row["message"] = lines[-1] if lines else None
        rows.append(row)
    return rows


def architecture_key(values):
    """A hashable identity of an architecture (its hyperparameter values)."""
    return json.dumps(
        {k: v for k, v in values.items() if not k.startswith("tuner/")}, sort_keys=True
    )


def architectures(rows):
    """The completed feasible trials, one per architecture: the one trained
    longest (Hyperband trains an architecture at several budgets; its
    highest-fidelity row is what the search knows best about it)."""
    best = {}
    for r in rows:
        if r["status"] != "COMPLETED" or not r["feasible"] or r["val_accuracy"] is None:
            continue
        key = architecture_key(r["hyperparameters"])
        if key not in best or (r["epochs"] or 0) > (best[key]["epochs"] or 0):
            best[key] = r
    return sorted(best.values(), key=lambda r: r["trial_id"])


def average_ranks(values):
    """Ranks 1..n of `values` (ascending), ties getting the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x, y):
    """Spearman's rank correlation of two equal-length sequences.

    The Pearson correlation of their average ranks (ties share the mean rank).

    Returns:
      A float in [-1, 1], or NaN when either sequence is constant.

    Raises:
      ValueError: lengths differ or fewer than 2 points.
    """
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(
            f"spearman needs two sequences of equal length >= 2, got {len(x)}, {len(y)}."
        )
    rx, ry = average_ranks(list(x)), average_ranks(list(y))
    n = len(rx)
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


def best_feasible(rows):
    """The most accurate completed feasible row (ties: lower latency), or None."""
    candidates = [
        r
        for r in rows
        if r["status"] == "COMPLETED" and r["feasible"] and r["val_accuracy"] is not None
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda r: (r["val_accuracy"], -(r["latency_us"] or 0.0)))


def _flat(row):
    out = {c: row.get(c) for c in COLUMNS}
    out.update({f"hp.{k}": v for k, v in sorted(row["hyperparameters"].items())})
    out.update({f"hp.{k}": v for k, v in sorted(row["hyperband"].items())})
    return out


def csv_text(rows):
    """The trials table as CSV: COLUMNS, then one ``hp.<name>`` column per hyperparameter."""
    flat = [_flat(r) for r in rows]
    hp_columns = sorted({k for f in flat for k in f if k.startswith("hp.")})
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(COLUMNS) + hp_columns, restval="", lineterminator="\n"
    )
    writer.writeheader()
    for f in flat:
        writer.writerow({k: "" if v is None else v for k, v in f.items()})
    return buffer.getvalue()


def cost_keys(int8):
    """The (latency, bytes) row keys a budget is checked on: the int8 file's
    when `int8` (``--budget_int8``), else the float32 file's."""
    return ("int8_latency_us", "int8_file_bytes") if int8 else ("latency_us", "file_bytes")


def plot(rows, front_rows, path, budget=None):
    """Accuracy vs latency: feasible, infeasible and front trials; budget line.

    Args:
      rows: all trial rows.
      front_rows: the accuracy-vs-latency front (of the budget's file).
      path: PNG to write.
      budget: optional :class:`nas.objective.Budget`; its latency limit is drawn,
        and with ``budget.int8`` the latency axis is the int8 file's (else
        the float32 file's).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    int8 = budget is not None and budget.int8
    latency = cost_keys(int8)[0]
    done = [r for r in rows if r[latency] is not None and r["val_accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for feasible, style in (
        (True, dict(c="tab:blue", label="feasible")),
        (False, dict(c="tab:gray", marker="x", label="over budget")),
    ):
        pts = [r for r in done if r["feasible"] == feasible]
        if pts:
            ax.scatter(
                [r[latency] for r in pts], [r["val_accuracy"] for r in pts], alpha=0.8, **style
            )
    if front_rows:
        ax.plot(
            [r[latency] for r in front_rows],
            [r["val_accuracy"] for r in front_rows],
            "-o",
            color="tab:red",
            mfc="none",
            ms=10,
            drawstyle="steps-post",
            label="non-dominated",
        )
    for r in done:
        ax.annotate(
            r["trial_id"],
            (r[latency], r["val_accuracy"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    if budget is not None and budget.max_latency_us:
        ax.axvline(budget.max_latency_us, ls="--", color="tab:orange", label="latency budget")
    ax.set_xlabel(f"{'int8' if int8 else 'float32'} TFLite latency, median (µs)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"Architecture search: {len(done)} trials")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _copy_atomic(src, dst):
    tmp = dst + ".partial"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def write_outputs(tuner):
    """Writes the tables, fronts, plot and best model of a search.

    Args:
      tuner: a :class:`nas.search.StudentSearch` after (or during) ``search``;
        not a distributed worker (its oracle lives in the chief).

    Returns:
      dict: rows, fronts ({name: rows}), best (row or None), paths
      ({name: path of each file written}) and int8 (the budget is checked on
      the int8 file).

    Raises:
      ValueError: `tuner` is a distributed worker (its oracle is remote).
    """
    if not hasattr(tuner.oracle, "trials"):
        raise ValueError(
            "write_outputs needs the oracle's trials: call it on the chief (or a "
            "single process), not on a distributed worker."
        )
    project = tuner.project_dir
    rows = trial_rows(tuner.oracle)
    completed = [r for r in rows if r["status"] == "COMPLETED"]
    fronts = pareto.fronts(completed)
    fronts.update(pareto.fronts(architectures(rows), pareto.FEASIBLE_FRONTS))
    on = {name: {r["trial_id"] for r in front} for name, front in fronts.items()}
    for r in rows:
        r["on_latency_front"] = r["trial_id"] in on["accuracy_vs_latency"]
        r["on_bytes_front"] = r["trial_id"] in on["accuracy_vs_bytes"]
        r["on_int8_latency_front"] = r["trial_id"] in on["accuracy_vs_int8_latency"]
        r["on_int8_bytes_front"] = r["trial_id"] in on["accuracy_vs_int8_bytes"]
    paths = {
        name: os.path.join(project, name)
        for name in ("trials.json", "trials.csv", "pareto.json", "accuracy_vs_latency.png")
    }
    budget = tuner.budget
    runs.write_json(
        paths["trials.json"],
        {
            "objective": "score = val_accuracy if feasible else val_accuracy - 1 - total overshoot",
            "budget": {k: getattr(budget, k) for _, k in Budget.LIMITS},
            "budget_int8": budget.int8,
            "trials": rows,
        },
    )
    runs.write_text(paths["trials.csv"], csv_text(rows))
    runs.write_json(
        paths["pareto.json"],
        {name: [r["trial_id"] for r in front] for name, front in fronts.items()},
    )
    front = fronts["accuracy_vs_int8_latency" if budget.int8 else "accuracy_vs_latency"]
    plot(rows, front, paths["accuracy_vs_latency.png"], budget)
    best = best_feasible(rows)
    if best is not None:
        model_src = os.path.join(project, f"trial_{best['trial_id']}", MODEL_FILE)
        if os.path.exists(model_src):
            paths["best_model.keras"] = os.path.join(project, "best_model.keras")
            _copy_atomic(model_src, paths["best_model.keras"])
        else:  # A worker on another machine trained it: its file is not here.
            logging.warning(
                "Trial %s's model is not at %s; best_model.keras not written "
                "(nas.load_student needs only %s).",
                best["trial_id"],
                model_src,
                BEST_HPS_FILE,
            )
        paths[BEST_HPS_FILE] = os.path.join(project, BEST_HPS_FILE)
        runs.write_json(
            paths[BEST_HPS_FILE],
            {
                "trial_id": best["trial_id"],
                "values": best["hyperparameters"],
                "search_space": tuner.hypermodel.get_config(),
                "input_shape": list(tuner.hypermodel.input_shape),
                "num_classes": tuner.hypermodel.num_classes,
                "metrics": {k: best[k] for k in METRICS},
                "trained_epochs": best["epochs"],
            },
        )
    return {"rows": rows, "fronts": fronts, "best": best, "paths": paths, "int8": budget.int8}


def _fmt(row, keys):
    cells = []
    for k in keys:
        v = row.get(k)
        if isinstance(v, float):
            v = f"{v:.4f}" if k in ("score", "val_accuracy") else f"{v:.1f}"
        cells.append(str(v))
    return "| " + " | ".join(cells) + " |"


def summary_text(outputs, top=5):
    """A markdown summary: the top trials by score, the fronts, the best model.

    Latency and bytes are the figures the budget was checked on: the int8
    file's when ``outputs["int8"]`` (``--budget_int8``), else the float32 file's.
    """
    int8 = bool(outputs.get("int8"))
    latency, nbytes = cost_keys(int8)
    keys = (
        "trial_id",
        "status",
        "feasible",
        "val_accuracy",
        latency,
        nbytes,
        "arena_bytes",
        "params",
        "score",
        "violations",
    )
    header = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys)
    rows = outputs["rows"]
    ranked = sorted((r for r in rows if r["score"] is not None), key=lambda r: -r["score"])
    lines = [f"Top {min(top, len(ranked))} of {len(rows)} trials (by score):", header]
    lines += [_fmt(r, keys) for r in ranked[:top]]
    for name, front in outputs["fronts"].items():
        if ("int8" in name) != int8:
            continue  # a front of the other file's figures
        lines += ["", f"Non-dominated, {name.replace('_', ' ')}:", header]
        lines += [_fmt(r, keys) for r in front]
    best = outputs["best"]
    lines.append("")
    if best is None:
        lines.append("No feasible trial: no best_model.keras written (loosen the budget).")
    else:
        lines.append(
            f"Best feasible: trial {best['trial_id']} (val_accuracy "
            f"{best['val_accuracy']:.4f}, {'int8 ' if int8 else ''}"
            f"{best[latency]:.1f} us, {best[nbytes]} bytes, {best['params']} params): "
            f"{outputs['paths'].get('best_model.keras', 'model file not found')}, "
            f"architecture in {outputs['paths'][BEST_HPS_FILE]}"
        )
    return "\n".join(lines)


FINAL_COLUMNS = (
    ("name", "student"),
    ("source", "source"),
    ("params", "params"),
    ("proxy_val_accuracy", "proxy val acc"),
    ("val_accuracy", "val acc"),
    ("test_accuracy", "test acc"),
    ("int8_test_accuracy", "int8 test acc"),
    ("int8_file_bytes", "int8 bytes"),
    ("arena_bytes", "arena bytes"),
    ("int8_latency_us", "int8 latency µs (timed together)"),
    ("int8_latency_us_alone", "int8 latency µs (timed alone)"),
    ("feasible", "within budget"),
)


def _cell(value):
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1.0 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _choice_lines(result):
    """The final table's legend, its best student and the hand students left out."""
    rows = result["rows"]
    lines = [
        "",
        "Source: search = found by the search; hand = a hand-designed point of the search "
        "space; hand (registry) = a registry student; hand (own) = a student given by path "
        "or MODULE:FUNCTION (--final_hand).",
    ]
    if any(r.get("slim") for r in rows):
        lines.append(
            "Slimmed (`_slim`, --final_slim_epochs): a hand student over the budget, trained "
            "at full budget, its channels removed until it is within the budget, then "
            "fine-tuned; its proxy is none."
        )
    best = next((r for r in rows if r["name"] == result.get("best")), None)
    if best is None:
        lines.append("Best: none (no retrained student is within the budget).")
    else:
        flags = hand_lib.pipeline_flags(best)
        lines.append(
            f"Best: {best['name']} ({hand_lib.describe(best)}), the most accurate on the "
            f"validation split within the budget (val acc {best['val_accuracy']:.4f}; test "
            "figures are reported, never used to choose)."
            + (f" The pipeline trains it with {flags}." if flags else "")
        )
    if result.get("left_out"):
        lines.append(
            "Left out, over the search's budget: "
            + "; ".join(f"{n} ({why})" for n, why in result["left_out"].items())
            + "."
        )
    return lines


def final_markdown(result):
    """The final step's report (``nas.final.run_final``'s result) as markdown."""
    rows = result["rows"]
    lines = [
        "| " + " | ".join(title for _, title in FINAL_COLUMNS) + " |",
        "|" + "---|" * len(FINAL_COLUMNS),
    ]
    for r in sorted(rows, key=lambda r: (r["source"] != "search", r["int8_latency_us"])):
        shown = dict(r, source=hand_lib.describe(r))
        if r.get("copy_of"):
            shown = dict(r, source=f"search (copy of {r['copy_of']})")
        if r["name"] == result.get("best"):
            shown["name"] = f"**{r['name']}** (best)"
        lines.append("| " + " | ".join(_cell(shown.get(k)) for k, _ in FINAL_COLUMNS) + " |")
    epochs = sorted({r["final_epochs"] for r in rows})
    proxy = sorted({r["proxy_epochs"] for r in rows})
    lines += _choice_lines(result)
    lines += [
        "",
        f"Final budget: {', '.join(map(str, epochs))} epochs; proxy: validation accuracy "
        f"after {', '.join(map(str, proxy))} epochs (the largest trial budget).",
    ]
    if result.get("latency_timings", 1) > 1:
        lines.append(
            f"int8 latency timed together: each file's median of {result['latency_timings']} "
            "joint timing processes (each process's figure: `int8_latency_us_timings` in "
            "final.json)."
        )
    for name, hand in result["dominated"].items():
        total = sum(r["source"] == "hand" for r in rows)
        lines.append(
            f"{name.replace('_', ' ')}: {len(hand)} of {total} hand-designed students "
            f"dominated by a found one ({', '.join(hand) or 'none'})."
        )
    covered = result.get("covered", {})
    if covered:
        lines.append("")
        lines.append(
            "Each hand-designed student and the most accurate found student at least as "
            "accurate with no more int8 bytes and no higher int8 latency:"
        )
        copies = {r["name"]: r["copy_of"] for r in rows if r.get("copy_of")}
        new = result.get("covered_without_copies", {})
        for h, f in covered.items():
            if f in copies:
                f = f"{f} (a same-cost copy of {copies[f]}; without copies: {new.get(h) or 'none'})"
            lines.append(f"- {h}: {f or 'none'}")
        lines.append("")
        lines.append(
            "Each found student's lead in test accuracy over the best hand-designed student "
            "with no more int8 bytes and no higher int8 latency:"
        )
        for name, (lead, over) in result["margins"].items():
            text = (
                "no hand-designed student costs that little"
                if lead is None
                else (f"{lead * 100:+.2f} pts over {over}")
            )
            lines.append(f"- {name}: {text}")
        lines.append("")
        verdict = "met" if result["beats_hand"] else "not met"
        lines.append(
            f"Found students dominate the hand-designed ones (every hand point covered and one "
            f"found student >= {result['target_margin'] * 100:.1f} pt ahead of every hand point "
            f"that costs no more): {verdict}."
        )
        if copies:
            n = sum(f is not None for f in new.values())
            named = ", ".join(f"{c} of {o}" for c, o in sorted(copies.items()))
            lines.append(
                "Covered by found students that are no same-cost copies of a hand point "
                f"({named}): {n} of {len(new)}."
            )
        lines.append("")
    for key, n in (("spearman_all", "n_all"), ("spearman_found", "n_found")):
        value = result[key]
        text = "n/a (fewer than 3 students)" if value is None else f"{value:.3f}"
        who = "all retrained students" if key == "spearman_all" else "found students only"
        lines.append(f"Spearman(proxy, test accuracy), {who} (n={result[n]}): {text}")
    return "\n".join(lines) + "\n"


def plain_log_ticks(axis):
    """Labels a log-scaled matplotlib `axis` with plain numbers (``12``,
    ``20000``) instead of ``1.2x10^1``. Within one decade, where a log axis has
    at most one major tick, the minor ticks are labelled too, except, when the
    view spans more than a factor of 2.5, the ones at 4, 6, 7, 8 and 9 times a
    power of ten, which would crowd (7000 8000 9000 10000); across more than
    a decade, only the major ones."""
    from matplotlib import ticker

    def text(value):
        return f"{value:f}".rstrip("0").rstrip(".")

    low, high = sorted(axis.get_view_interval())

    def minor(value, _):
        mantissa = value / 10 ** math.floor(math.log10(value))
        crowded = round(mantissa, 6) in (4, 6, 7, 8, 9) and high > 2.5 * low
        return "" if crowded else text(value)

    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: text(value)))
    axis.set_minor_formatter(
        ticker.FuncFormatter(minor) if high < 10 * low else ticker.NullFormatter()
    )


def plot_final(rows, fronts, path):
    """Test accuracy vs int8 latency and vs int8 bytes: found and hand-designed
    students with their fronts (``nas.final.summarize``'s fronts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(fronts["found"])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5))
    for ax, name in zip(axes, names):
        cost = "int8_latency_us" if "latency" in name else "int8_file_bytes"
        for source, color, label in (
            ("search", "tab:blue", "found"),
            ("hand", "tab:orange", "hand"),
        ):
            pts = [r for r in rows if r["source"] == source]
            if pts:
                ax.scatter(
                    [r[cost] for r in pts], [r["test_accuracy"] for r in pts], c=color, label=label
                )
            front = fronts["found" if source == "search" else "hand"][name]
            if front:
                ax.plot(
                    [r[cost] for r in front],
                    [r["test_accuracy"] for r in front],
                    "-",
                    color=color,
                    drawstyle="steps-post",
                    alpha=0.7,
                )
        for r in rows:
            ax.annotate(
                r["name"],
                (r[cost], r["test_accuracy"]),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
        ax.set_xlabel("int8 latency, median (µs)" if "latency" in cost else "int8 .tflite bytes")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Full-budget students: found by the search vs hand-designed")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
