"""The study's report: results.json, report.md and plots, from the results dict."""

import math
import os

import numpy as np

from kd_keras import runs
from kd_keras.app import kd_selection
from kd_keras.app.study import stats


def _pct(x):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _ms(pair):
    return "" if pair is None else f"{100 * pair[0]:.2f} ± {100 * pair[1]:.2f}"


def _interval(g):
    """'+0.12 [-0.30, +0.54]' in points from a paired-interval dict (no
    brackets with one seed)."""
    ci = "" if math.isnan(g["low"]) else f" [{100 * g['low']:+.2f}, {100 * g['high']:+.2f}]"
    return f"{100 * g['mean']:+.2f}{ci}"


def _num(x, fmt="{:,.0f}"):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def ordered_summary(results):
    """The summary in the study's technique order (results.json stores keys sorted)."""
    summary = results["summary"]
    order = [t for t in results.get("techniques", []) if t in summary]
    return {t: summary[t] for t in order + sorted(set(summary) - set(order))}


def orthogonality_table(summary):
    """The Markdown table of KD gains per technique, with intervals and additivity."""
    lines = [
        "| technique | acc no KD (%) | acc KD (%) | KD gain Δ (pts) [95% CI] | Δ(T)/Δ(none) | "
        "T+KD gain vs plain: measured / sum of parts (pts) [95% CI of the difference] | "
        "int8 TFLite acc no KD / KD (%) | "
        "params | int8 gzip bytes | int8 TFLM arena bytes | int8 latency µs | over budget |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, e in summary.items():
        g = e["kd_gain"]
        ci = "" if math.isnan(g["low"]) else f" [{100 * g['low']:+.2f}, {100 * g['high']:+.2f}]"
        add = e.get("additivity")
        add_txt = (
            ""
            if add is None
            else f"{100 * add['measured']:+.2f} / {100 * add['expected']:+.2f}"
            f" (interaction {_interval(add['interaction'])})"
        )
        t8 = e["tflite_accuracy"]["int8"]
        lines.append(
            f"| {label} | {_ms(e['keras_accuracy']['nokd'])} | {_ms(e['keras_accuracy']['kd'])} "
            f"| {100 * g['mean']:+.2f}{ci} | {_num(e['orthogonality_ratio'], '{:.2f}')} "
            f"| {add_txt} | {_ms(t8['nokd'])} / {_ms(t8['kd'])} | {e['params']:,} "
            f"| {_num(e.get('int8_gzip_bytes'))} | {_num(e.get('int8_arena_bytes'))} "
            f"| {_num(e.get('int8_latency_us_median'), '{:.1f}')} "
            f"| {', '.join(e.get('over_budget') or []) or '-'} |"
        )
    return "\n".join(lines)


def setup_line(p):
    """One sentence on the student's budget and the KD settings (from the config)."""
    if not p:
        return ""
    t, kd = p["student_train"], p["kd"]
    # Configs written before the data and compression settings were nested keep them flat.
    batch = p["data"]["batch_size"] if "data" in p else p["batch_size"]
    compress = p.get("compress") or {
        "epochs": p.get("compress_epochs"),
        "mode": p.get("compress_mode", "finetune"),
    }
    return (
        f"Student `{p['student']}` {p['student_kwargs']}: {t['epochs']} epochs, "
        f"{t['optimizer']} lr {t['learning_rate']:g}, batch {batch}. KD: losses "
        f"{list(kd['losses'])}, T = {kd['temperature']:g}, alpha = {kd['alpha']:g} "
        f"(weight of the label loss). "
        + (
            f"Compression: one fine-tuning stage of {compress['epochs']} epoch(s) at "
            "lr/10 per technique, from the trained student of the same seed and KD setting."
            if compress["mode"] == "finetune"
            else "Compression: the first technique wraps the fresh student from the start."
        )
    )


AUGMENT_FORMS = (
    ("augment", "augmentation"),
    ("augment_consistent", "augmentation, teacher sees the same view (consistent)"),
    ("augment_inconsistent", "augmentation, teacher sees the clean image (inconsistent)"),
)


def augmentation_section(summary):
    """KD against explicit data augmentation, and both together, for each
    form of augmentation the study has."""
    forms = [(k, name) for k, name in AUGMENT_FORMS if k in summary]
    if not forms or "none" not in summary:
        return []
    none = summary["none"]
    g_kd = none["kd_gain"]
    lines = [
        "## KD against explicit data augmentation",
        "",
        "| student | no KD (%) | KD (%) | KD gain Δ (pts) [95% CI] |",
        "|---|---|---|---|",
        f"| no augmentation | {_ms(none['keras_accuracy']['nokd'])} | "
        f"{_ms(none['keras_accuracy']['kd'])} | {_interval(g_kd)} |",
    ]
    for key, name in forms:
        aug = summary[key]
        lines.append(
            f"| {name} | {_ms(aug['keras_accuracy']['nokd'])} | "
            f"{_ms(aug['keras_accuracy']['kd'])} | {_interval(aug['kd_gain'])} |"
        )
    lines.append("")
    for key, name in forms:
        add = summary[key]["additivity"]
        lines.append(
            f"{name[0].upper() + name[1:]} and KD together against the plain student: "
            f"measured {100 * add['measured']:+.2f} pts, sum of the separate effects "
            f"{100 * add['expected']:+.2f} pts, difference {_interval(add['interaction'])} pts."
        )
    return lines + [""]


def additivity_section(pairs):
    """Every pair's measured gain, sum of parts and the interval of their difference."""
    if not pairs:
        return []
    lines = [
        "## Additivity, pair by pair",
        "",
        "Per seed: measured = acc(both) − acc(base); sum of parts = Σ (acc(one) − "
        "acc(base)); interaction = measured − sum of parts, with its 95% paired "
        "t-interval over seeds. For KD × T the base is the plain student and the "
        "interaction equals Δ(T) − Δ(none). An interval that contains 0 means the "
        "gains add up as far as these seeds can tell.",
        "",
        "| pair | setting | measured (pts) | sum of parts (pts) | interaction (pts) [95% CI] "
        "| adds up |",
        "|---|---|---|---|---|---|",
    ]
    for e in pairs:
        g = e["interaction"]
        setting = "vs plain student" if e["kd"] is None else ("with KD" if e["kd"] else "no KD")
        verdict = (
            ""
            if math.isnan(g["low"])
            else "yes"
            if g["low"] <= 0 <= g["high"]
            else "more than additive"
            if g["low"] > 0
            else "less than additive"
        )
        lines.append(
            f"| {' × '.join(e['pair'])} | {setting} | {100 * e['measured']:+.2f} "
            f"| {100 * e['expected']:+.2f} | {_interval(g)} | {verdict} |"
        )
    return lines + [""]


def bagging_verdict(results):
    """Plain sentences on whether the numbers support "KD acts like bagging".

    Three signs of the paper's mechanism, each read off the study's numbers:
    (1) KD students of different seeds disagree less than plain ones (KD
    already averages over label noise, as a bag averages members); (2)
    averaging the seeds gains less with KD (part of what an ensemble adds,
    KD has added already); (3) a single KD student gains over the plain
    student a sizeable part of what a bag gains. Each sign is 'for',
    'against' or absent (not measured).

    Returns:
      dict: signs ({name: 'for' | 'against'}), sentences (list of str),
      verdict (one sentence).
    """
    signs, sentences = {}, []
    var = results.get("variance")
    if var:
        d0, d1 = var["nokd"]["disagreement"], var["kd"]["disagreement"]
        signs["disagreement"] = "for" if d1 < d0 else "against"
        sentences.append(
            f"Students of different seeds disagree on {100 * d0:.2f}% of test images "
            f"without KD and {100 * d1:.2f}% with KD ("
            + ("lower with KD, as a bagging-like averaging predicts" if d1 < d0 else "not lower")
            + ")."
        )
        g0, g1 = var["nokd"]["ensemble_gain"], var["kd"]["ensemble_gain"]
        signs["ensemble_gain"] = "for" if g1 < g0 else "against"
        sentences.append(
            f"Averaging the seeds' predictions gains {100 * g0:+.2f} pts without KD and "
            f"{100 * g1:+.2f} pts with KD ("
            + (
                "smaller with KD: part of what the ensemble adds, KD had added already"
                if g1 < g0
                else "not smaller with KD"
            )
            + ")."
        )
    for budget, bag in sorted((results.get("bagging") or {}).items()):
        plain = bag["student_accuracy_seeds"][0]
        kd = bag["kd_student_accuracy_seeds"][0]
        bag_gain, kd_gain = bag["bag_accuracy"] - plain, kd - plain
        name = "equal total" if budget == "total" else "equal per-member"
        if bag_gain > 0:
            share = kd_gain / bag_gain
            signs[f"bag_{budget}"] = "for" if share >= 0.25 else "against"
            sentences.append(
                f"The bag at {name} budget gains {100 * bag_gain:+.2f} pts over the plain "
                f"student (mean over seeds); one KD student gains {100 * kd_gain:+.2f} pts, "
                f"{100 * share:.0f}% of that with one member's cost."
            )
        else:
            sentences.append(
                f"The bag at {name} budget does not beat the plain student "
                f"({100 * bag_gain:+.2f} pts); a KD student gains {100 * kd_gain:+.2f} pts."
            )
    n_for = sum(v == "for" for v in signs.values())
    if not signs:
        verdict = "Not measured: the study had no seed ensemble and no bag."
    elif n_for == len(signs):
        verdict = (
            f"Supported: all {len(signs)} signs point the way 'KD acts like bagging' predicts."
        )
    elif n_for == 0:
        verdict = f"Not supported: none of the {len(signs)} signs points that way."
    else:
        against = [k for k, v in signs.items() if v == "against"]
        verdict = (
            f"Partly supported: {n_for} of {len(signs)} signs point that way; against: "
            f"{', '.join(against)}."
        )
    sentences.append(
        "These are single numbers on one test split (no interval across seeds for an "
        "ensemble); read them with the seed spread of the tables above."
    )
    return {"signs": signs, "sentences": sentences, "verdict": verdict}


def variance_section(var, n_seeds):
    """Disagreement, prediction variance and what averaging the seeds adds."""
    lines = [
        "## Disagreement between seeds, without and with KD (the bagging view)",
        "",
        "| | top-1 disagreement between seeds | prediction variance | one student (%) | "
        f"ensemble of the {n_seeds} seeds (%) | ensemble gain (pts) |",
        "|---|---|---|---|---|---|",
    ]
    for kd, name in (("nokd", "no KD"), ("kd", "KD")):
        v = var[kd]
        lines.append(
            f"| {name} | {100 * v['disagreement']:.2f}% | "
            f"{v['prediction_variance']:.5f} | {_ms(v['member_accuracy'])} | "
            f"{_pct(v['ensemble_accuracy'])} | {100 * v['ensemble_gain']:+.2f} |"
        )
    return lines + [""]


def header_section(results, summary, seeds):
    """The title, the interim notice, the teachers, the setup and the main table."""
    parts = [f"# Orthogonality study: {results['dataset']}", ""]
    interim = results.get("interim")
    if interim:
        parts += [
            f"**Interim report: seeds {interim['seeds_done']} of the planned "
            f"{interim['seeds_planned']}.** The study was still training the other seeds when "
            "this was written (or was stopped); the bagging and teacher-ensemble views wait "
            "for the full report, written to the workdir once every run has ended.",
            "",
        ]
    for t in results.get("teacher", []):
        parts.append(
            f"Teacher `{t['model']}`: test accuracy {100 * t['test_accuracy']:.2f}%, "
            f"{t['params']:,} parameters."
        )
    setup = setup_line(results.get("config", {}).get("pipeline"))
    if setup:
        parts += ["", setup]
    parts += [
        "",
        f"Seeds: {seeds}. Accuracy is mean ± sample std over seeds on the full "
        "test split. Δ(T) = acc(T+KD) − acc(T), paired by seed, with a 95% paired "
        "t-interval (n − 1 degrees of freedom). Additivity compares the measured gain "
        "of T+KD over the plain student with (gain of T) + (gain of KD).",
        "",
        orthogonality_table(summary),
        "",
    ]
    return parts


def zero_gain_note(summary):
    """A note when the plain student's KD gain has an interval containing 0."""
    parts = []
    g_none = summary.get("none", {}).get("kd_gain")
    if g_none and not math.isnan(g_none["low"]) and g_none["low"] <= 0 <= g_none["high"]:
        parts += [
            "Δ(none)'s interval contains 0, so the ratio Δ(T)/Δ(none) divides by a "
            "gain that is not distinguishable from 0: read the gains and their "
            "intervals, not the ratio.",
            "",
        ]
        need = stats.seeds_to_exclude_zero(g_none["mean"], g_none["sd"])
        if need is not None:
            parts += [
                f"If the gain ({100 * g_none['mean']:+.2f} pts) and the paired spread "
                f"(sd {100 * g_none['sd']:.2f} pts) of these {g_none['n']} seeds held, "
                f"about {need} seeds would give an interval that excludes 0 "
                "(stats.seeds_to_exclude_zero; a planning figure: more seeds move both).",
                "",
            ]
    return parts


def compression_section(summary):
    """What the techniques left after stripping (sparsity, unique values, QAT layers)."""
    parts = []
    measured = [
        (label, e)
        for label, e in summary.items()
        if "pruned_sparsity" in e or "max_unique_values" in e or "qat_layers" in e
    ]
    if measured:
        parts += [
            "## Compression, measured after stripping",
            "",
            "| technique | zeros in pruned kernels (%) | max unique values per clustered "
            "kernel | QAT layers present |",
            "|---|---|---|---|",
        ]
        for label, e in measured:
            parts.append(
                f"| {label} | {_ms(e.get('pruned_sparsity'))} | "
                f"{_num(e.get('max_unique_values'))} | {e.get('qat_layers', '')} |"
            )
        parts.append("")
    return parts


def bagging_section(bags, seeds):
    """The bagging baselines, one table per budget."""
    parts = []
    if "members" in bags:  # One bag, as older results stored it.
        bags = {"total": bags}
    for budget, bag in sorted(bags.items()):
        name = "equal total budget" if budget == "total" else "equal per-member budget"
        parts += [
            f"## Bagging baseline, {name}",
            "",
            f"{bag['members']} students, each trained {bag['epochs_per_member']} epoch(s) "
            f"on a bootstrap resample (total {bag['total_epochs']} epochs, against "
            f"{bag['student_epochs']} for one student), probabilities averaged.",
            "",
            "| model | test acc (%) | params deployed |",
            "|---|---|---|",
            f"| one member (mean ± std) | {_ms(bag['member_accuracy'])} | "
            f"{bag['student_params']:,} |",
            f"| bag of {bag['members']} | {_pct(bag['bag_accuracy'])} | {bag['bag_params']:,} |",
            f"| plain student (seed {seeds[0]}) | {_pct(bag['student_accuracy'])} | "
            f"{bag['student_params']:,} |",
            f"| KD student (seed {seeds[0]}) | {_pct(bag['kd_student_accuracy'])} | "
            f"{bag['student_params']:,} |",
        ]
        if "student_accuracy_seeds" in bag:
            parts += [
                f"| plain student (mean ± std over seeds) | "
                f"{_ms(bag['student_accuracy_seeds'])} | {bag['student_params']:,} |",
                f"| KD student (mean ± std over seeds) | "
                f"{_ms(bag['kd_student_accuracy_seeds'])} | {bag['student_params']:,} |",
            ]
        parts.append("")
    return parts


def teacher_ensemble_section(ens):
    """KD from an ensemble of teachers against KD from the teacher alone."""
    if not ens:
        return []
    g = ens["gain"]
    ci = "" if math.isnan(g["low"]) else f" [{100 * g['low']:+.2f}, {100 * g['high']:+.2f}]"
    et = ens["extra_teacher"]
    return [
        "## An ensemble of teachers as the teacher",
        "",
        (
            f"Second teacher loaded from `{et['kwargs']['path']}`: "
            if "path" in et["kwargs"]
            else f"Second teacher {et['kwargs']} ({et['epochs']} epochs): "
        )
        + f"{100 * et['test_accuracy']:.2f}%, {et['params']:,} parameters; ensemble "
        f"averages {ens['ensemble_mode']}.",
        "",
        f"KD from the teacher alone: {_ms(ens['kd_single_teacher'])}%; from the "
        f"ensemble: {_ms(ens['kd_teacher_ensemble'])}%; paired difference "
        f"{100 * g['mean']:+.2f} pts{ci}.",
        "",
    ]


def markdown(results):
    """The whole study report (Markdown) from the study's results dict."""
    seeds = results["seeds"]
    summary = ordered_summary(results)
    parts = header_section(results, summary, seeds)
    parts += zero_gain_note(summary)
    parts += compression_section(summary)
    parts += additivity_section(results.get("additivity"))
    parts += augmentation_section(summary)
    var = results.get("variance")
    if var:
        parts += variance_section(var, len(seeds))
    parts += bagging_section(results.get("bagging") or {}, seeds)
    parts += teacher_ensemble_section(results.get("teacher_ensemble"))
    if results.get("kd_selection"):
        parts += ["## The KD setting", "", kd_selection.markdown(results["kd_selection"]), ""]
    verdict = results.get("kd_as_bagging")
    if verdict:
        parts += ["## Does KD act like bagging?", "", *verdict["sentences"], ""]
        parts += [f"**{verdict['verdict']}**", ""]
    parts += [
        "## Plots",
        "",
        "![accuracy vs gzip bytes](acc_vs_gzip.png)",
        "![accuracy vs latency](acc_vs_latency.png)",
        "![KD gain](kd_gain.png)",
        "",
    ]
    return "\n".join(parts)


def plots(results, directory):
    """Writes acc_vs_gzip.png, acc_vs_latency.png and kd_gain.png; returns paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = ordered_summary(results)
    paths = []
    for key, name, xlabel in (
        ("int8_gzip_bytes", "acc_vs_gzip.png", "int8 .tflite gzip bytes"),
        ("int8_latency_us_median", "acc_vs_latency.png", "int8 latency, median µs (1 thread)"),
    ):
        pts = {
            label: (
                e[key],
                100 * e["keras_accuracy"]["nokd"][0],
                100 * e["keras_accuracy"]["kd"][0],
            )
            for label, e in summary.items()
            if e.get(key)
        }
        if not pts:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
        best = max(max(a, b) for _, a, b in pts.values())
        for ax, zoom in zip(axes, (False, True)):
            _cost_panel(ax, pts)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test accuracy (%, mean over seeds)")
            if zoom:
                ax.set_ylim(best - 4.0, best + 0.6)
                ax.set_title("Zoom: within 4 points of the best")
            else:
                ax.set_title("All techniques (dashed: Pareto fronts)")
        axes[0].legend(loc="lower right")
        fig.tight_layout()
        path = os.path.join(directory, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths + [_gain_plot(plt, summary, directory)]


def _cost_panel(ax, pts):
    """One technique = a no-KD dot joined to its KD star; Pareto front of each."""
    for label, (x, acc_nokd, acc_kd) in pts.items():
        ax.plot(
            [x, x],
            [acc_nokd, acc_kd],
            color="tab:red" if acc_kd >= acc_nokd else "tab:gray",
            lw=1.2,
            alpha=0.7,
        )
        ax.annotate(
            label,
            (x, max(acc_nokd, acc_kd)),
            fontsize=7,
            xytext=(4, 2),
            textcoords="offset points",
            clip_on=True,
        )
    for i, (marker, color, name) in enumerate((("o", "tab:gray", "no KD"), ("*", "tab:red", "KD"))):
        xy = [(x, accs[i], label) for label, (x, *accs) in pts.items()]
        ax.scatter(
            [p[0] for p in xy],
            [p[1] for p in xy],
            marker=marker,
            s=70,
            color=color,
            label=name,
            zorder=3,
        )
        front = _front(xy)
        ax.plot([p[0] for p in front], [p[1] for p in front], color=color, lw=1, ls="--")


def _gain_plot(plt, summary, directory):
    """Forest plot of the KD gain per technique with its 95% interval.

    Intervals much wider than the typical one are clipped at the axis (an arrow
    marks the clipped end); every interval is also written out in full.
    """
    labels = list(summary)
    g = [summary[t]["kd_gain"] for t in labels]
    means = np.array([100 * x["mean"] for x in g])
    lows = np.array([100 * x["low"] for x in g])
    highs = np.array([100 * x["high"] for x in g])
    half = (highs - lows) / 2
    finite = half[np.isfinite(half)]
    cap = max(3 * float(np.median(finite)), 1.0) if finite.size else 1.0
    shown_low = np.where(np.isfinite(lows), np.maximum(lows, means - cap), means)
    shown_high = np.where(np.isfinite(highs), np.minimum(highs, means + cap), means)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.6))
    y = np.arange(len(labels))[::-1]
    ax.errorbar(
        means, y, xerr=[means - shown_low, shown_high - means], fmt="o", color="tab:blue", capsize=3
    )
    for yi, lo, hi, slo, shi in zip(y, lows, highs, shown_low, shown_high):
        if np.isfinite(lo) and lo < slo:
            ax.annotate("", (slo - 0.05 * cap, yi), (slo, yi), arrowprops={"arrowstyle": "->"})
        if np.isfinite(hi) and hi > shi:
            ax.annotate("", (shi + 0.05 * cap, yi), (shi, yi), arrowprops={"arrowstyle": "->"})
    ax.axvline(0, color="black", lw=0.8)
    if "none" in summary:
        ax.axvline(
            100 * summary["none"]["kd_gain"]["mean"],
            color="tab:blue",
            lw=0.8,
            ls=":",
            label="Δ(none)",
        )
        ax.legend(loc="lower right", fontsize=8)
    texts = [
        f"{m:+.2f}" + ("" if not np.isfinite(lo) else f" [{lo:+.2f}, {hi:+.2f}]")
        for m, lo, hi in zip(means, lows, highs)
    ]
    ax.set_yticks(y, [f"{t}   {txt}" for t, txt in zip(labels, texts)], fontsize=8)
    ax.set_xlabel("KD gain Δ = acc(T+KD) − acc(T), accuracy points")
    ax.set_title("KD gain per technique, 95% paired t-interval")
    fig.tight_layout()
    path = os.path.join(directory, "kd_gain.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _front(points):
    """Points not dominated in (lower cost, higher accuracy), by cost."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda q: (q[0], -q[1])):
        if p[1] > best:
            front.append(p)
            best = p[1]
    return front


def write(workdir, results):
    """results.json, report.md and the plots into `workdir`."""
    runs.write_json(os.path.join(workdir, "results.json"), results)
    plots(results, workdir)
    text = markdown(results)
    runs.write_text(os.path.join(workdir, "report.md"), text)
    return text
