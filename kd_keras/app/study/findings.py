"""The report's tested sections: the design, KD's gain and additivity tested,
and the findings in words, each word from a test's outcome
(``kd_keras.app.study.evidence``), never from a point estimate."""

import math


def _p(x):
    if x is None or math.isnan(x):
        return "–"
    return "<0.0001" if x < 1e-4 else f"{x:.4f}"


def _iv(e):
    """'+1.75 [+1.15, +2.35]' in points of a tested entry's interval."""
    g = e["interval"]
    if math.isnan(g["low"]):
        return f"{100 * g['mean']:+.2f}"
    return f"{100 * g['mean']:+.2f} [{100 * g['low']:+.2f}, {100 * g['high']:+.2f}]"


def _tost_iv(e):
    t = e["tost"]
    return "–" if math.isnan(t["low"]) else f"[{100 * t['low']:+.2f}, {100 * t['high']:+.2f}]"


def _level(design):
    return f"{100 * (1 - design['alpha']):g}%"


def design_section(ev, extension=None):
    """What was declared, and the rules every verdict follows (`extension`:
    the seeds added after an interim look, ``results["seed_extension"]``)."""
    d = ev["design"]
    seeds = f"Seeds {list(d['seeds'])}, fixed before the runs"
    if extension:
        seeds = (
            f"Seeds {list(d['seeds'])}: {list(extension['declared'])} declared before the runs, "
            f"{list(extension['added'])} added after their results were written "
            "(so the tests below are not a pre-declared analysis; see "
            "[the added seeds](#seeds-added-after-an-interim-look))"
        )
    a, m = d["alpha"], d["equivalence_margin"]
    declared = (
        "declared in the study's flagfile (`--study_alpha`, `--equivalence_margin`, "
        "`--primary_metric`) and stored in results.json"
        if d["declared"]
        else "not stored in these results (they predate the flags), so the defaults apply"
    )
    metric = {
        "test_accuracy": "Keras accuracy on the full test split",
        "int8_accuracy": "the int8 TFLite file's accuracy on the full test split",
    }[d["primary_metric"]]
    return [
        "## The statistical design",
        "",
        f"{seeds}; primary metric: {metric}; "
        f"α = {a:g}; equivalence margin ±{m:g} pts. The design is {declared}.",
        "",
        f"* **KD's gain** per technique: the {_level(d)} paired t-interval over seeds, the "
        "paired t-test and, beside it, the Wilcoxon signed-rank test; each test's p-values "
        "Holm-adjusted across the techniques. The outcome reads the Holm-adjusted t-test: "
        f"*KD gains* / *KD costs* when p ≤ {a:g}, *no difference within ±{m:g} pts* when "
        f"two one-sided tests (TOST) put the gain inside ±{m:g} pts (Holm p ≤ {a:g}), "
        "otherwise *inconclusive*.",
        "* **Additivity** of KD and a technique: the interaction per seed, Δ(T) − Δ(none) "
        "(for a composition A+B: AB − A − B + base), tested both ways and Holm-adjusted "
        f"across the pairs: *interaction* when the t-test rejects 0 (Holm p ≤ {a:g}); "
        f"*additive within ±{m:g} pts* when TOST rejects an interaction of {m:g} pts or "
        f"more (Holm p ≤ {a:g}, i.e. the {100 * (1 - 2 * a):g}% interval lies inside "
        f"±{m:g}); *interaction within ±{m:g} pts* when both do; otherwise "
        "*inconclusive*. An interval that merely contains 0 is inconclusive, not additive.",
        "* **The bagging figures**: percentile bootstrap intervals (fixed seed), read as "
        "for / against / inconclusive by whether they contain 0.",
        "",
    ]


def gains_section(ev):
    """KD's gain per technique with both tests, Holm-adjusted, and the outcome."""
    d = ev["design"]
    lines = [
        "## KD's gain per technique, tested",
        "",
        f"| technique | seeds | KD gain (pts) [{_level(d)} CI] | t-test p | Holm p "
        f"| Wilcoxon p | Holm p | outcome |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, e in ev["gains"].items():
        lines.append(
            f"| {label} | {e['interval']['n']} | {_iv(e)} | {_p(e['p'])} | {_p(e['p_holm'])} "
            f"| {_p(e['wilcoxon']['p'])} | {_p(e['wilcoxon_p_holm'])} | {e['words']} |"
        )
    lines.append("")
    min_p = {e["wilcoxon"]["min_p"] for e in ev["gains"].values()}
    if min_p and min(min_p) > d["alpha"]:
        n = max(e["wilcoxon"]["n"] for e in ev["gains"].values())
        lines += [
            f"With {n} seeds the signed-rank test's smallest possible two-sided p is "
            f"{min(min_p):.4f} (every seed of one sign), above α = {d['alpha']:g}: it cannot "
            "reject with this many seeds, whatever the data. It is shown as a check on the "
            "t-test's direction, not as a second verdict.",
            "",
        ]
    return lines


def additivity_section(ev):
    """Every additivity pair: interaction, TOST interval, Holm p-values, verdict."""
    if not ev["interactions"]:
        return []
    d = ev["design"]
    lines = [
        "## Additivity, tested",
        "",
        "Per seed: interaction = acc(both) − acc(base) − Σ (acc(one) − acc(base)); for "
        "KD × T the base is the plain student and the interaction is Δ(T) − Δ(none).",
        "",
        f"| pair | setting | interaction (pts) [{_level(d)} CI] | t-test Holm p "
        f"| {100 * (1 - 2 * d['alpha']):g}% CI (TOST) | TOST Holm p (±{d['equivalence_margin']:g}) "
        "| verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in ev["interactions"]:
        setting = "vs plain student" if e["kd"] is None else ("with KD" if e["kd"] else "no KD")
        lines.append(
            f"| {' × '.join(e['pair'])} | {setting} | {_iv(e)} | {_p(e['p_holm'])} "
            f"| {_tost_iv(e)} | {_p(e['tost_p_holm'])} | {e['words']} |"
        )
    return lines + [""]


def _names(entries):
    return ", ".join(entries) if entries else "none"


def findings_section(ev, bagging_verdict=None):
    """The findings in words, grouped by outcome."""
    d = ev["design"]
    a, m = d["alpha"], d["equivalence_margin"]
    gains = ev["gains"]
    groups = {}
    for label, e in gains.items():
        groups.setdefault(e["words"], []).append(f"{label} {_iv(e)}")
    lines = [
        "## What the tests support",
        "",
        f"Every sentence here comes from a test at α = {a:g} (Holm-adjusted within its "
        "family), not from a mean.",
        "",
    ]
    for words in sorted(groups):
        lines.append(f"* **{words[0].upper() + words[1:]}**: {'; '.join(groups[words])}.")
    kd_pairs = [e for e in ev["interactions"] if e["kd"] is None]
    other = [e for e in ev["interactions"] if e["kd"] is not None]
    by = {}
    for e in kd_pairs:
        by.setdefault(e["words"], []).append(f"{e['pair'][1]} {_iv(e)}")
    for words in sorted(by):
        lines.append(f"* KD × technique, **{words}**: {'; '.join(by[words])}.")
    for e in other:
        setting = "with KD" if e["kd"] else "without KD"
        lines.append(f"* {' × '.join(e['pair'])} {setting}: **{e['words']}**, {_iv(e)}.")
    if kd_pairs and not any(e["outcome"] in ("equivalent", "small difference") for e in kd_pairs):
        inside = [
            e["pair"][1] for e in kd_pairs if not math.isnan(e["tost"]["p"]) and e["tost"]["p"] <= a
        ]
        lines.append(
            f"* No technique was shown additive with KD within ±{m:g} pts after the Holm "
            "adjustment"
            + (
                f" (unadjusted, the {100 * (1 - 2 * a):g}% interval lies inside ±{m:g} pts "
                f"for {_names(inside)}; the adjustment over {len(ev['interactions'])} pairs "
                "is what keeps them inconclusive)."
                if inside
                else "."
            )
        )
    if bagging_verdict:
        lines.append(f"* KD as bagging: {bagging_verdict}")
    return lines + [""]
