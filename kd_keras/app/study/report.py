"""The study's report: results.json, report.md and plots, from the results dict.

A study's report can be written again from its results.json alone, with no
training (the tests and verdicts are recomputed from the runs)::

    python -m kd_keras.app.study.report W/results.json            # W/report.md
    python -m kd_keras.app.study.report docs/orthogonality/results.json \
        --into=docs/orthogonality/report.md    # the generated part of a results doc
"""

import argparse
import json
import math
import os
import sys

import numpy as np

from kd_keras import runs
from kd_keras.app import kd_selection
from kd_keras.app.study import evidence as evidence_lib
from kd_keras.app.study import findings, pool, stats


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


def orthogonality_table(summary, ev=None):
    """The Markdown table of KD gains per technique, with intervals and additivity
    (and, given the analysis `ev` of ``evidence.analyze``, each test's outcome)."""
    lines = [
        "| technique | acc no KD (%) | acc KD (%) | KD gain Δ (pts) [95% CI] | gain, tested | "
        "Δ(T)/Δ(none) | "
        "T+KD gain vs plain: measured / sum of parts (pts) [95% CI of the difference] | "
        "additivity, tested | int8 TFLite acc no KD / KD (%) | val acc no KD / KD (%) | "
        "params | int8 gzip bytes | int8 TFLM arena bytes | int8 latency µs | over budget |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, e in summary.items():
        tested = (ev or {}).get("gains", {}).get(label)
        inter = evidence_lib.interaction_of(ev, label) if ev else None
        val = e.get("val_accuracy") or {}
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
            f"| {100 * g['mean']:+.2f}{ci} | {tested['words'] if tested else ''} "
            f"| {_num(e['orthogonality_ratio'], '{:.2f}')} "
            f"| {add_txt} | {inter['words'] if inter else ''} "
            f"| {_ms(t8['nokd'])} / {_ms(t8['kd'])} "
            f"| {_ms(val.get('nokd')) or '–'} / {_ms(val.get('kd')) or '–'} | {e['params']:,} "
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


def augmentation_section(summary, ev=None):
    """KD against explicit data augmentation, and both together, for each
    form of augmentation the study has (with the tested outcomes of `ev`)."""
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
            f"{100 * add['expected']:+.2f} pts, difference {_interval(add['interaction'])} pts"
            + (
                f": {evidence_lib.interaction_of(ev, key)['words']}."
                if ev and evidence_lib.interaction_of(ev, key)
                else "."
            )
        )
    return lines + [""]


def _ci(iv, scale=100, fmt="{:+.2f}"):
    """'[low, high]' of an interval dict, scaled (points by default)."""
    return f"[{fmt.format(scale * iv['low'])}, {fmt.format(scale * iv['high'])}]"


def _tested(text, intervals, key, words, signs):
    """`text` with KD-minus-no-KD's interval of `key` and the words its sign
    earns ("for", "against", or the interval containing 0); records the sign
    in `signs` ("untested" without an interval)."""
    if key not in intervals:
        signs[key] = "untested"
        return text + " (no interval: not tested)."
    diff = intervals[key]["kd_minus_nokd"]
    signs[key] = _sign_of(diff, "below 0")
    words = dict(words, inconclusive="the interval contains 0.")
    return text + f"; KD minus no KD {_ci(diff)} pts: " + words[signs[key]]


def _sign_of(interval, predicted):
    """'for' / 'against' / 'inconclusive' from an interval of a difference the
    bagging view predicts to be `predicted` ('below 0' or 'above 0')."""
    where = evidence_lib.outcome_of(interval)
    if where == "contains 0":
        return "inconclusive"
    return "for" if where == predicted else "against"


def bagging_verdict(results, bagging=None):
    """Plain sentences on whether the numbers support "KD acts like bagging".

    Three signs of the mechanism, each read off an interval, never a point
    estimate: (1) KD students of different seeds disagree less than plain
    ones (the interval of KD minus no-KD disagreement lies below 0); (2)
    averaging the seeds gains less with KD (the interval of the difference
    of ensemble gains lies below 0); (3) one KD student gains over the plain
    student at least evidence_lib.BAG_SHARE of what a bag that beats it
    gains (the interval of kd_gain - share * bag_gain lies above 0). Each
    sign is 'for', 'against' (the interval lies on the other side) or
    'inconclusive' (it contains 0); a sign without an interval (no per-image
    predictions stored) is 'untested' and its numbers are only described.

    Args:
      results: the study's results dict.
      bagging: ``evidence.bagging_evidence`` of the results (default:
        computed from them).

    Returns:
      dict: signs ({name: 'for' | 'against' | 'inconclusive' | 'untested'}),
      sentences (list of str), verdict (one sentence).

    Length: each sign's rule sits beside the words of its every outcome, so
    the sentences cannot drift from the rule.
    """
    if bagging is None:
        bagging = evidence_lib.bagging_evidence(results, evidence_lib.design_of(results))
    iv = bagging["intervals"]
    signs, sentences = {}, []
    var = results.get("variance")
    if var:
        d0, d1 = var["nokd"]["disagreement"], var["kd"]["disagreement"]
        text = (
            f"Students of different seeds disagree on {100 * d0:.2f}% of test images "
            f"without KD and {100 * d1:.2f}% with KD"
        )
        words = {
            "for": "lower with KD, as a bagging-like averaging predicts.",
            "against": "higher with KD.",
        }
        sentences.append(_tested(text, iv, "disagreement", words, signs))
        g0, g1 = var["nokd"]["ensemble_gain"], var["kd"]["ensemble_gain"]
        text = (
            f"Averaging the seeds' predictions gains {100 * g0:+.2f} pts without KD and "
            f"{100 * g1:+.2f} pts with KD"
        )
        words = {
            "for": "smaller with KD (KD had added part of what the ensemble adds).",
            "against": "larger with KD.",
        }
        sentences.append(_tested(text, iv, "ensemble_gain", words, signs))
    for budget, bag in sorted((results.get("bagging") or {}).items()):
        name = "equal total" if budget == "total" else "equal per-member"
        b = iv.get("bags", {}).get(budget)
        if not b:
            signs[f"bag_{budget}"] = "untested"
            sentences.append(
                f"The bag at {name} budget: {100 * bag['bag_accuracy']:.2f}% (no interval: "
                "not tested)."
            )
            continue
        bag_gain, kd_gain, share = b["bag_gain"], b["kd_gain"], b["share_test"]
        where = evidence_lib.outcome_of(bag_gain)
        head = (
            f"The bag at {name} budget against the plain students: {_ci(bag_gain)} pts; "
            f"one KD student: {_ci(kd_gain)} pts"
        )
        if where != "above 0":
            sentences.append(
                head
                + (
                    ". The bag does not beat the plain student, so it says nothing of KD."
                    if where == "below 0"
                    else ". Whether the bag beats the plain student is inconclusive."
                )
            )
            continue
        signs[f"bag_{budget}"] = _sign_of(share, "above 0")
        share_pct = f"{100 * evidence_lib.BAG_SHARE:.0f}%"
        sentences.append(
            head
            + f"; KD gain − {share_pct} of the bag's gain {_ci(share)} pts: "
            + {
                "for": f"one KD student reaches at least {share_pct} of the bag's gain.",
                "against": f"one KD student reaches less than {share_pct} of the bag's gain.",
                "inconclusive": "the interval contains 0.",
            }[signs[f"bag_{budget}"]]
        )
    tested = {k: v for k, v in signs.items() if v != "untested"}
    by = {o: [k for k, v in tested.items() if v == o] for o in ("for", "against", "inconclusive")}
    untested = [k for k, v in signs.items() if v == "untested"]
    rest = f" Not tested (no interval): {', '.join(untested)}." if untested else ""
    if not tested:
        verdict = "Not tested: no sign of the bagging view has an interval." + (
            f" Described only: {', '.join(untested)}." if untested else ""
        )
    elif len(by["for"]) == len(tested):
        verdict = f"Supported on the {len(tested)} sign(s) tested ({', '.join(by['for'])}).{rest}"
    elif len(by["against"]) == len(tested):
        verdict = f"Not supported: every sign tested points the other way.{rest}"
    else:
        verdict = (
            "Not settled: "
            + "; ".join(f"{o}: {', '.join(ks)}" for o, ks in by.items() if ks)
            + f".{rest}"
        )
    if bagging.get("note"):
        sentences.append(bagging["note"])
    return {"signs": signs, "sentences": sentences, "verdict": verdict}


def variance_section(var, n_seeds, intervals=None):
    """Disagreement, prediction variance and what averaging the seeds adds."""
    lines = [
        "## Disagreement between seeds, without and with KD (the bagging view)",
        "",
        "| | top-1 disagreement between seeds | prediction variance | one student (%) | "
        f"ensemble of the {n_seeds} seeds (%) | ensemble gain (pts) |",
        "|---|---|---|---|---|---|",
    ]
    iv = intervals or {}
    for kd, name in (("nokd", "no KD"), ("kd", "KD"), ("kd_minus_nokd", "KD − no KD")):
        if kd == "kd_minus_nokd":
            if "disagreement" in iv:
                lines.append(
                    f"| {name} | {_ci(iv['disagreement'][kd])} pts | | | | "
                    f"{_ci(iv['ensemble_gain'][kd])} |"
                )
            continue
        v = var[kd]
        dis = f"{100 * v['disagreement']:.2f}%"
        gain = f"{100 * v['ensemble_gain']:+.2f}"
        if "disagreement" in iv:
            dis += f" {_ci(iv['disagreement'][kd], fmt='{:.2f}')}"
            gain += f" {_ci(iv['ensemble_gain'][kd])}"
        lines.append(
            f"| {name} | {dis} | "
            f"{v['prediction_variance']:.5f} | {_ms(v['member_accuracy'])} | "
            f"{_pct(v['ensemble_accuracy'])} | {gain} |"
        )
    if "disagreement" in iv:
        lines += ["", "Brackets: 95% bootstrap intervals over seeds and test images."]
    else:
        lines += [
            "",
            "No intervals: these results hold no per-image predictions, so disagreement and "
            "ensemble gain are single numbers.",
        ]
    return lines + [""]


def header_section(results, summary, seeds, ev=None):
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
        "test split (val: the validation split; – where the results predate it). "
        "Δ(T) = acc(T+KD) − acc(T), paired by seed, with a 95% paired "
        "t-interval (n − 1 degrees of freedom). Additivity compares the measured gain "
        "of T+KD over the plain student with (gain of T) + (gain of KD). The 'tested' "
        "columns are the outcomes of [the tests](#the-statistical-design).",
        "",
        orthogonality_table(summary, ev),
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


def extension_section(results, ev):
    """When seeds were added to the finished study (``--extend_seeds``): which
    seeds the first design declared, which were added, and KD's gain over
    each batch apart beside the pooled one."""
    ext = results.get("seed_extension")
    if not ext:
        return []
    name = ev["design"]["primary_metric"]
    rows = [dict(r, primary=evidence_lib.metric(r, name)) for r in results.get("runs", [])]
    rows = [r for r in rows if r["primary"] is not None]
    seeds = list(results["seeds"])
    batches = [
        ("declared", [s for s in seeds if s in ext["declared"]]),
        ("added", [s for s in seeds if s in ext["added"]]),
        ("pooled", seeds),
    ]
    lines = [
        "## Seeds added after an interim look",
        "",
        f"The study's first design declared seeds {list(ext['declared'])}; its results "
        f"were written, and seeds {list(ext['added'])} were added afterwards "
        "(`--extend_seeds`). The pooled intervals and tests of this report are therefore "
        "not a pre-declared analysis: how many seeds to run was decided with results in "
        "view. The declared seeds' own gain is the pre-declared one; the added seeds' gain "
        "is an independent replication.",
        "",
        f"| technique | KD gain, declared seeds (pts) [95% CI] | added seeds | pooled ({name}) |",
        "|---|---|---|---|",
    ]
    for label, parts in pool.batch_gains(rows, batches, metric="primary").items():
        cells = {b["batch"]: pool.gain_text(b["kd_gain"]) for b in parts}
        lines.append(
            f"| {label} | {cells.get('declared', '–')} | {cells.get('added', '–')} "
            f"| {cells.get('pooled', '–')} |"
        )
    return lines + [""]


def markdown(results):
    """The whole study report (Markdown) from the study's results dict."""
    seeds = results["seeds"]
    summary = ordered_summary(results)
    ev = evidence_lib.analyze(results)
    verdict = bagging_verdict(results, ev["bagging"]) if results.get("variance") else None
    parts = header_section(results, summary, seeds, ev)
    parts += findings.findings_section(ev, verdict and verdict["verdict"])
    parts += findings.design_section(ev, results.get("seed_extension"))
    parts += extension_section(results, ev)
    parts += findings.gains_section(ev)
    parts += zero_gain_note(summary)
    parts += compression_section(summary)
    parts += findings.additivity_section(ev)
    parts += augmentation_section(summary, ev)
    var = results.get("variance")
    if var:
        parts += variance_section(var, len(seeds), ev["bagging"]["intervals"])
    parts += bagging_section(results.get("bagging") or {}, seeds)
    parts += teacher_ensemble_section(results.get("teacher_ensemble"))
    if results.get("kd_selection"):
        parts += ["## The KD setting", "", kd_selection.markdown(results["kd_selection"]), ""]
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


GENERATED_MARKER = "# The generated report"


def embed(doc, text):
    """`doc` with everything after its GENERATED_MARKER line replaced by the
    report `text` without its title line.

    Raises:
      ValueError: `doc` has no line starting with GENERATED_MARKER.
    """
    lines = doc.split("\n")
    at = [i for i, line in enumerate(lines) if line.startswith(GENERATED_MARKER)]
    if not at:
        raise ValueError(f"no line starting with {GENERATED_MARKER!r} to put the report after.")
    body = text.split("\n", 1)[1] if text.startswith("# ") else text
    return "\n".join(lines[: at[0] + 1]) + "\n\n" + body.lstrip("\n")


def main(argv=None):
    """Writes a study's report.md again from its results.json (no training)."""
    parser = argparse.ArgumentParser(
        prog="python -m kd_keras.app.study.report",
        description="Writes a study's report from its results.json, without training.",
    )
    parser.add_argument("results", help="the study's results.json")
    parser.add_argument("--out", help="report file (default: report.md beside results.json)")
    parser.add_argument(
        "--into", help="a results doc whose part after its generated-report heading is replaced"
    )
    args = parser.parse_args(argv)
    try:
        with open(args.results) as f:
            results = json.load(f)
        text = markdown(results)
        if args.into:
            with open(args.into) as f:
                text_out, path = embed(f.read(), text), args.into
        else:
            text_out = text
            path = args.out or os.path.join(os.path.dirname(args.results), "report.md")
    except (OSError, json.JSONDecodeError, KeyError, ValueError) as e:
        print(f"error: cannot render {args.results}: {e!r}", file=sys.stderr)
        return 2
    runs.write_text(path, text_out)
    print(f"Report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
