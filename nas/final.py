"""The final step of a search: the Pareto set and the hand-designed students at full budget.

A search ranks candidates by a cheap proxy (a few epochs, validation
accuracy). What a user deploys is a student trained at full budget and
measured as an int8 file. :func:`run_final`:

1. picks the found architectures to retrain (:func:`select`), at most
   `top`: for each hand-designed student the search tried itself (evolution
   start points), the most accurate found architecture that costs no more
   than its trial and is no same-cost copy of it (int8
   latencies of all trials timed together for this comparison,
   :func:`timed_trials`); then feasible architectures on either Pareto set
   of the search (accuracy vs int8 latency, accuracy vs int8 bytes), spread from
   the most accurate to the cheapest;
2. adds the hand-designed students (``nas.hand``): ``kd_keras.models.cnn`` /
   ``cnn_dws`` at given widths, built as points of the search space
   (``nas.space.hand_point``); registry students at a width
   (``mobilenet_v2:0.35``); the user's own students (a saved model's path or
   ``MODULE:FUNCTION``). Each is measured first as the search measures an
   untrained candidate (:func:`hand_over_budget`); those over the search's
   budget are left out, named (`report`, and in ``final.md``), or, with
   `slim_epochs`, slimmed into it (:func:`slim_into_budget`: the fewest
   channels removed that bring the student within every limit; trained at
   full budget, slimmed, fine-tuned): a larger student reaching the budget
   by removing channels, beside the found ones;
3. gives every one of them a proxy score at the same fidelity: the
   validation accuracy after the search's largest trial budget
   (``train_config.epochs``, Hyperband's ``max_epochs``) -- read from the
   trial when the architecture reached it, else trained to it: a found
   architecture continues its own trial's checkpoint (what a Hyperband
   promotion does, so the number is the one a promotion would have given), a
   hand-designed one trains from scratch with the trial protocol. Hand points
   thus count as architectures of the proxy-versus-final rank correlation;
4. retrains each from scratch for `final_epochs` with the search's recipe
   (optimizer, peak learning rate, warm-up, the same KD losses, temperature
   and alpha from the same teacher, the same augmentation and teacher cache),
   and measures its Keras test accuracy and, with the exporter
   (``export.export_model``: int8 conversion calibrated on training images,
   LiteRT accuracy on the test split, the interleaved latency protocol of
   ``export.latency``), its int8 test accuracy, bytes and median latency,
   and TensorFlow Lite Micro's arena bytes (``export.micro.micro``); once
   all are trained, their int8 files are timed again together, interleaved
   in one timing process, or in each of several one after the other taking
   every file's median process (:func:`retime`), and those latencies are
   the ones compared;
5. chooses the best student: the most accurate on the validation split
   within the budget, found or hand-designed (:func:`best_row`; test
   figures are reported, never used to choose), and copies its model to
   ``<project>/final/best_model.keras``;
6. returns the rows, the fronts of found and of hand-designed students, which
   hand points a found student covers (at least as accurate, no more int8
   bytes, no higher latency), each found student's lead over the hand points
   that cost no more, and Spearman's rank
   correlation between proxy score and final test accuracy.

Every run lives in ``<project>/final/<name>/`` with ``kd_keras.train.fit``'s
resumable checkpoints and a ``final.json`` row once measured: rerunning the
command resumes and measures nothing twice.
"""

import dataclasses
import os
import shutil

import numpy as np

from export import convert as convert_lib
from export import export_model
from export import measure as measure_lib
from export import micro as micro_lib
from kd_keras import compression, runs
from kd_keras import train as train_lib
from kd_keras.keras_compat import keras
from nas import candidate as candidate_lib
from nas import hand as hand_lib
from nas import pareto
from nas import report as search_report
from nas import space as search_space

FINAL_DIR = "final"
ROW_FILE = "final.json"
# The search's trials' int8 files timed together, written once: selection uses
# these figures, and a resumed final step selects the same students.
TRIAL_LATENCY_FILE = "trial_latencies.json"
# The hand students' budget check, written once: a resumed final step leaves
# out the same students.
HAND_BUDGET_FILE = "hand_budget.json"
# The fractions slimming the hand students over the budget into it, written
# once: a resumed final step slims them the same.
HAND_SLIM_FILE = "hand_slim.json"
MODEL_FILE = "model.keras"  # Each retrained student's model, in its directory.
BEST_MODEL = "best_model.keras"
FINAL_FRONTS = {
    "accuracy_vs_int8_latency": ("test_accuracy", "int8_latency_us"),
    "accuracy_vs_int8_bytes": ("test_accuracy", "int8_file_bytes"),
}
DEFAULT_HAND = tuple(f"{f}:{w:g}" for f in ("cnn", "cnn_dws") for w in (0.25, 0.5, 0.75, 1.0))


def select(rows, top, hand_rows=(), challenger=None):
    """The found architectures to retrain: a challenger per hand point, then a
    spread along the feasible Pareto sets.

    1. For each row of `hand_rows` (the search's own trials of hand-designed
       students, e.g. evolution start points), in order: the most accurate
       feasible found architecture that costs no more than it (no more int8
       bytes, no higher int8 latency; :func:`nas.pareto.costs_no_more`) and
       may challenge it (`challenger`), if any -- the one most likely to
       cover that hand point at full budget.
    2. The rest, up to `top` in all: the union of the feasible fronts
       (accuracy vs int8 latency, accuracy vs int8 bytes) sorted by proxy
       accuracy, `top` of them taken evenly spaced along that order when it
       holds more, so the most accurate and the cheapest are retrained and
       the points in between cover the range of costs.

    Args:
      rows: ``search_report.trial_rows`` of the search's found architectures.
      top: most architectures returned (>= 1).
      hand_rows: trial rows of hand-designed students (not returned).
      challenger: predicate on a row of `rows`, whether it may be a hand
        point's challenger (default: every row). :func:`entries` excludes
        same-cost copies of hand points, whose covers are not counted as
        found, so the challenger is the best student that could count; they
        are still retrained when the spread takes them.

    Returns:
      list of trial rows (one per architecture, its highest-fidelity trial),
      most accurate proxy first.
    """
    archs = search_report.architectures(rows)
    top = int(top)
    challengers = {}
    for h in hand_rows:
        if h.get("status") != "COMPLETED" or not h.get("feasible"):
            continue
        cheaper = [
            r for r in archs if pareto.costs_no_more(r, h) and (challenger is None or challenger(r))
        ]
        if cheaper and len(challengers) < top:
            best = max(cheaper, key=lambda r: (r["val_accuracy"], r["trial_id"]))
            challengers[best["trial_id"]] = best
    fronts = pareto.fronts(archs, pareto.FEASIBLE_FRONTS)
    on = {r["trial_id"] for front in fronts.values() for r in front}

    def most_accurate_first(rows):
        return sorted(rows, key=lambda r: (-r["val_accuracy"], r["trial_id"]))

    rest = most_accurate_first(
        r for r in archs if r["trial_id"] in on and r["trial_id"] not in challengers
    )
    return most_accurate_first(list(challengers.values()) + _spread(rest, top - len(challengers)))


def _spread(rows, n):
    """`n` of `rows` evenly spaced along their order, the first and the last
    included (all of them when `n` >= their number, none when `n` <= 0)."""
    if n >= len(rows):
        return list(rows)
    if n <= 0:
        return []
    if n == 1:
        return rows[:1]
    last = len(rows) - 1
    return [rows[i] for i in sorted({round(i * last / (n - 1)) for i in range(n)})]


def entries(rows, top, hand, hypermodel):
    """What the final step retrains: found architectures then hand-designed points.

    Args:
      rows: the search's trial rows.
      top: most found architectures.
      hand: ``--final_hand`` items (``nas.hand``: space points, registry
        and own students).
      hypermodel: the search's ``StudentSpace`` (space hand points must be in it).

    The found architectures are :func:`select`'s, a hand point's challenger
    being the most accurate trial that costs no more and is no same-cost
    copy of a hand point: the best student whose cover would count.

    Returns:
      list of dicts: name, source ('search' or 'hand'), trial_id (None for
      hand points), values (hyperparameters; None for registry and own
      students); hand ones also kind, student (``nas.hand.entries``); found
      ones also copy_of (the
      hand point's name when the found architecture is a same-cost copy of
      it, the same int8 network up to ``search_space.SAME_COST`` choices such
      as relu6 for relu; else None).

    Raises:
      ValueError: a hand item that is none of ``nas.hand``'s forms, or a
        hand point the space cannot express (naming it).
    """
    hand_entries = hand_lib.entries(hand, hypermodel)
    points = [e for e in hand_entries if e["values"] is not None]
    # A trial of a hand-designed architecture (e.g. an evolution start point) is
    # not a found student: it is retrained once, as the hand point.
    hand_keys = {search_report.architecture_key(e["values"]) for e in points}
    found, tried = [], []
    for r in rows:
        key = search_report.architecture_key(r["hyperparameters"])
        (tried if key in hand_keys else found).append(r)
    # What a found architecture may be a same-cost copy of: the hand points.
    originals = {}
    for e in points:
        originals.setdefault(search_space.same_cost_key(e["values"]), e["name"])

    def marks(r):
        return {"copy_of": originals.get(search_space.same_cost_key(r["hyperparameters"]))}

    def counts(r):  # a cover by it is counted as found (see summarize)
        return marks(r)["copy_of"] is None

    out = [
        dict(
            {
                "name": f"trial_{r['trial_id']}",
                "source": "search",
                "trial_id": r["trial_id"],
                "values": r["hyperparameters"],
            },
            **marks(r),
        )
        for r in select(found, top, tried, challenger=counts)
    ]
    return out + hand_entries


def _build(search, entry):
    keras.utils.set_random_seed(search.train_config.seed)
    if entry["source"] == "hand":
        return hand_lib.build_model(entry, search.hypermodel)
    return search.hypermodel.build(search_space.hyperparameters_from_values(entry["values"]))


def _verdict(search, entry, saved):
    """(the key a saved verdict of `entry` must match: its identity and the
    budget; the verdict in `saved` when it matches, else None)."""
    key = {"identity": hand_lib.identity(entry), "budget": dataclasses.asdict(search.budget)}
    known = saved.get(entry["name"])
    if not known or {k: known.get(k) for k in key} != key:
        return key, None
    return key, known


def _untrained(search, entry):
    """`entry`'s model with distinct random weights, as the search measures a candidate."""
    model = _build(search, entry)
    candidate_lib.distinct_weights(model, np.random.default_rng(0))
    return model


def _read_verdicts(path, then):
    """{name: verdict} written by an earlier final step at `path` ({} when
    absent; a torn file is said, with `then`, and read as {})."""
    return runs.read_valid_json(path, lambda value: runs.missing_keys(value, ()), then=then) or {}


def hand_over_budget(search, entries, directory):
    """{name: why} of the hand entries over the search's budget, measured as
    the search measures an untrained candidate
    (``CandidateMeasurement.budget_figures``: distinct random weights, the
    int8 file, and the float32 one when the budget limits it; parameters).

    Space points are measured too: a hand point is a baseline only where a
    found student could be. The verdicts are written to
    ``directory/HAND_BUDGET_FILE`` and read back on a resumed step (a
    latency measured again could fall on the other side of the limit).
    """
    if not any(getattr(search.budget, attr) for _, attr in search.budget.LIMITS):
        return {}
    path = os.path.join(directory, HAND_BUDGET_FILE)
    saved = _read_verdicts(path, "the hand students are measured again")
    out, changed = {}, False
    for e in entries:
        if e["source"] != "hand":
            continue
        key, known = _verdict(search, e, saved)
        if known is None:
            model = _untrained(search, e)
            try:
                figures, excess = search.budget_figures(model)
                why = search.budget.overs(figures, excess)
            except convert_lib.ExportError as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                why = f"does not convert to int8: {first}"
            known = dict(key, over=why)
            saved[e["name"]] = known
            changed = True
        if known["over"]:
            out[e["name"]] = known["over"]
    if changed:
        runs.write_json(path, saved)
    return out


def slim_into_budget(search, entries, left_out, directory, epochs, criterion="bn_gamma"):
    """Hand students over the budget, slimmed into it instead of left out.

    Each left-out hand student's untrained model (distinct random weights, as
    :func:`hand_over_budget` measured it) is slimmed by
    ``compression.plan_to_fit``: the smallest fraction of every group of
    coupled channels whose slimmed model is within every limit, measured as
    the search measures a candidate. The number of channels a group keeps
    depends on the fraction only, so the trained student slimmed by the same
    fraction (its own channels ranked by `criterion`) costs the same. The
    fractions are written to ``directory/HAND_SLIM_FILE`` and read back on a
    resumed step.

    Args:
      search: the ``nas.search.StudentSearch``.
      entries: :func:`entries`' list.
      left_out: :func:`hand_over_budget`'s {name: why}.
      directory: the final step's directory.
      epochs: fine-tuning epochs after slimming (>= 1).
      criterion: how the trained student's channels are ranked
        (``compression.SLIM_CRITERIA``).

    Returns:
      (entries with each slimmed student in its hand student's place, named
      ``<name>_slim`` and holding ``slim``: fraction, criterion, epochs, from;
      left_out without them, and with why slimming could not reach the budget
      for those it could not).
    """
    path = os.path.join(directory, HAND_SLIM_FILE)
    saved = _read_verdicts(path, "the hand students are slimmed again")
    out, still, changed = [], dict(left_out), False
    for e in entries:
        if e["name"] not in left_out:
            out.append(e)
            continue
        key, known = _verdict(search, e, saved)
        if known is None:
            model = _untrained(search, e)

            def fits(plan, model=model):
                figures, excess = search.budget_figures(compression.slim_model(model, plan))
                return not any(excess.values())

            try:
                plan = compression.plan_to_fit(model, fits, criterion, what="the budget")
                known = dict(key, fraction=plan.fraction, why=None)
            except (ValueError, convert_lib.ExportError) as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                known = dict(key, fraction=None, why=first)
            saved[e["name"]] = known
            changed = True
        if known["fraction"] is None:
            still[e["name"]] = f"{left_out[e['name']]}; slimming cannot reach it: {known['why']}"
            continue
        del still[e["name"]]
        slim = {
            "fraction": known["fraction"],
            "criterion": criterion,
            "epochs": int(epochs),
            "from": e["name"],
        }
        out.append(dict(e, name=f"{e['name']}_slim", slim=slim))
    if changed:
        runs.write_json(path, saved)
    return out, still


def _slim_and_finetune(search, entry, model, config, directory):
    """`model` (trained) slimmed by its entry's fraction and fine-tuned with
    the search's recipe (full peak learning rate, no warm-up) in
    ``directory/slim_train``: (the slimmed model, its figures (the row's
    ``slimmed``: the plan's summary, params_before), the fine-tuning seconds)."""
    settings = entry["slim"]
    plan = compression.plan_slim(model, settings["fraction"], settings["criterion"])
    slimmed = compression.slim_model(model, plan)
    fine_tune = dataclasses.replace(config, epochs=settings["epochs"], warmup_epochs=0)
    fit_out = search.train(slimmed, fine_tune, os.path.join(directory, "slim_train"))
    figures = dict(plan.summary(), params_before=int(model.count_params()))
    return slimmed, figures, float(fit_out["train_time_s"])


def proxy_score(search, entry, rows, directory):
    """(validation accuracy at the search's largest trial budget, where it came from).

    From the entry's trial when it reached that budget; otherwise trained to
    it in `directory` (continuing the entry's trial when it has one).
    """
    epochs = search.train_config.epochs
    if entry["trial_id"] is not None:
        done = [
            r
            for r in rows
            if r["status"] == "COMPLETED"
            and search_report.architecture_key(r["hyperparameters"])
            == search_report.architecture_key(entry["values"])
            and r["epochs"] == epochs
        ]
        if done:
            return done[0]["val_accuracy"], f"trial {done[0]['trial_id']}"
    model = _build(search, entry)
    source = "trained from scratch"
    if entry["trial_id"] is not None and search.continue_from(entry["trial_id"], directory):
        source = f"continued trial {entry['trial_id']}"
    search.train(model, search.train_config, directory)
    return train_lib.evaluate(model, search.datasets["val"]), source


def retrain(search, entry, final_epochs, directory, latency_runs=100, latency_warmup=10):
    """Trains one entry at full budget and measures it as deployed (a row).

    Args:
      search: the ``nas.search.StudentSearch`` (data, teacher, recipe, budget).
      entry: one of :func:`entries`.
      final_epochs: training epochs.
      directory: the entry's run directory.
      latency_runs, latency_warmup: the exporter's latency protocol settings.

    Returns:
      dict: params, val_accuracy, test_accuracy, int8_test_accuracy,
      int8_file_bytes, int8_latency_us (median) with its 95% CI and runs,
      arena_bytes, tflm_runs, train_time_s, feasible (the search's budget on
      these figures) and violations.
    """
    config = dataclasses.replace(
        search.train_config,
        epochs=int(final_epochs),
        warmup_epochs=min(search.train_config.warmup_epochs, int(final_epochs) - 1),
    )
    model = _build(search, entry)
    fit_out = search.train(model, config, os.path.join(directory, "train"))
    seconds, slimmed = float(fit_out["train_time_s"]), {}
    if entry.get("slim"):
        model, figures, more = _slim_and_finetune(search, entry, model, config, directory)
        seconds, slimmed = seconds + more, {"slimmed": figures}
    _save(model, os.path.join(directory, MODEL_FILE))
    datasets = search.datasets
    row = {
        "params": int(model.count_params()),
        "val_accuracy": train_lib.evaluate(model, datasets["val"]),
        "test_accuracy": train_lib.evaluate(model, datasets["test"]),
        "train_time_s": round(seconds, 1),
        **slimmed,
    }
    exported = export_model(
        model,
        os.path.join(directory, "export"),
        formats=["int8"],
        data=search.data,
        threads=(search.measure.threads,),
        latency_runs=latency_runs,
        warmup=latency_warmup,
        name=entry["name"],
        tflm=False,  # The arena comes next; TFLM accuracy over the test split is slow.
        command=["nas.final"],
    )[0]
    with open(exported["path"], "rb") as f:
        tflm = micro_lib.micro(f.read())
    row.update(
        int8_test_accuracy=exported.get("accuracy"),
        int8_file_bytes=int(exported["file_bytes"]),
        int8_latency_us=float(exported["latency_us_median"]),
        int8_latency_us_ci95=exported.get("latency_us_ci95"),
        int8_latency_runs=exported.get("latency_runs"),
        arena_bytes=int(tflm.get("arena_bytes") or 0),
        tflm_runs=bool(tflm["tflm_runs"]),
        tflite=exported["path"],
    )
    row.update(_feasibility(search, row))
    return row


def _save(model, path):
    """Saves `model` atomically (a temporary name, then renamed)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path[: -len(".keras")] + ".partial.keras"
    model.save(partial)
    os.replace(partial, path)


def best_row(rows):
    """The final step's choice: the row with the highest validation accuracy
    among those within the budget (ties: lower int8 latency, then name),
    found or hand-designed; None when none is within it. Test figures are
    never read."""
    within = [r for r in rows if r.get("feasible") and r.get("val_accuracy") is not None]
    if not within:
        return None
    return min(within, key=lambda r: (-r["val_accuracy"], r["int8_latency_us"], r["name"]))


def _feasibility(search, row):
    """{'feasible', 'violations'}: the search's budget applied to a final row's int8 figures."""
    figures = dict(
        row,
        latency_us=row["int8_latency_us"],
        file_bytes=row["int8_file_bytes"],
        tflm_runs=float(row["tflm_runs"]),
    )
    excess = dataclasses.replace(search.budget, int8=True).excess(figures)
    return {
        "feasible": not any(excess.values()),
        "violations": ";".join(f"{k}+{v * 100:.0f}%" for k, v in excess.items() if v),
    }


def retime(search, rows, latency_runs=100, latency_warmup=10, timings=1):
    """Times every row's int8 file together, interleaved, in `timings` timing processes.

    Each row's latency was first measured by the exporter when that student
    finished, in its own timing process, minutes or hours from the others;
    the same file can time 50% apart between two such processes. Compared
    with each other, the students must be timed in the same rounds
    (``export.measure.latency_together``). And one joint timing process can
    run slow as a whole, not by one factor for every file, so with
    `timings` > 1 every file is timed in that many processes, one after the
    other, and a row takes the figures (median, CI, runs) of its median
    process (the upper median for an even count); ``int8_latency_us_timings``
    lists its median in each process. The first measurement is kept as
    ``int8_latency_us_alone``, and the budget is applied again.
    """
    if int(timings) < 1:
        raise ValueError(f"timings must be >= 1, got {timings}.")
    files = {r["name"]: r["tflite"] for r in rows}
    processes = [
        measure_lib.latency_together(
            files,
            example=search.data.x_test[0],
            num_runs=latency_runs,
            warmup=latency_warmup,
            threads=search.measure.threads,
        )
        for _ in range(int(timings))
    ]
    for r in rows:
        figures = [p[r["name"]] for p in processes]
        medians = [float(t["latency_us_median"]) for t in figures]
        # The median process (the upper one for an even count).
        t = sorted(figures, key=lambda f: float(f["latency_us_median"]))[len(figures) // 2]
        r.setdefault("int8_latency_us_alone", r["int8_latency_us"])
        r.update(
            int8_latency_us=float(t["latency_us_median"]),
            int8_latency_us_ci95=t.get("latency_us_ci95"),
            int8_latency_runs=t.get("latency_runs"),
            int8_latency_us_timings=medians,
        )
        r.update(_feasibility(search, r))
    return rows


def margins(found, hand):
    """Each found student's accuracy lead over the hand-designed points it costs no less than.

    Returns:
      {found name: (test accuracy minus the best test accuracy among hand rows
      with int8 bytes and latency both <= the found row's, that hand row's
      name)}, or (None, None) when no hand row costs that little.
    """
    out = {}
    for f in found:
        cheaper = [h for h in hand if pareto.costs_no_more(h, f)]
        if not cheaper:
            out[f["name"]] = (None, None)
            continue
        best = max(cheaper, key=lambda h: h["test_accuracy"])
        out[f["name"]] = (f["test_accuracy"] - best["test_accuracy"], best["name"])
    return out


def summarize(rows, target_margin=0.005):
    """Fronts, dominance and rank correlation of the final rows.

    Returns:
      dict: fronts ({'found'|'hand': {front name: rows}}), dominated
      ({front name: names of hand rows some found row dominates on that
      plane}), covered ({hand name: the most accurate found row that
      :func:`nas.pareto.covers` it, or None}), margins (:func:`margins`), beats_hand
      (every hand row covered and some found row's margin >= `target_margin`),
      covered_without_copies (as covered, by found rows that are no
      same-cost copies of a hand point: ``copy_of``), n_copies,
      spearman_all / spearman_found (proxy score vs test accuracy; None with
      fewer than 3 points), n_all / n_found, and best (:func:`best_row`'s
      name, or None).
    """
    found = [r for r in rows if r["source"] == "search"]
    hand = [r for r in rows if r["source"] == "hand"]
    fronts = {
        "found": pareto.fronts(found, FINAL_FRONTS),
        "hand": pareto.fronts(hand, FINAL_FRONTS),
    }
    dominated = {}
    for name, (acc, cost) in FINAL_FRONTS.items():
        dominated[name] = [
            h["name"]
            for h in hand
            if any(
                pareto.dominates((f[acc], f[cost]), (h[acc], h[cost]), (True, False)) for f in found
            )
        ]

    def cover(h, candidates):
        by = [f for f in candidates if pareto.covers(f, h)]
        return max(by, key=lambda f: f["test_accuracy"])["name"] if by else None

    covered = {h["name"]: cover(h, found) for h in hand}
    new = [f for f in found if not f.get("copy_of")]
    lead = margins(found, hand)
    best_margin = max((m for m, _ in lead.values() if m is not None), default=None)

    def rho(subset):
        subset = [r for r in subset if r.get("proxy_val_accuracy") is not None]
        if len(subset) < 3:
            return None
        return search_report.spearman(
            [r["proxy_val_accuracy"] for r in subset], [r["test_accuracy"] for r in subset]
        )

    return {
        "fronts": fronts,
        "dominated": dominated,
        "covered": covered,
        "covered_without_copies": {h["name"]: cover(h, new) for h in hand},
        "n_copies": len(found) - len(new),
        "margins": lead,
        "target_margin": target_margin,
        "beats_hand": bool(
            hand
            and all(covered.values())
            and best_margin is not None
            and best_margin >= target_margin
        ),
        "spearman_all": rho(rows),
        "spearman_found": rho(found),
        "n_all": sum(r.get("proxy_val_accuracy") is not None for r in rows),
        "n_found": len(found),
        "best": (best_row(rows) or {}).get("name"),
    }


def left_out_line(left_out):
    """One line naming the hand students left out and the limits each breaks."""
    named = "; ".join(f"{name} ({why})" for name, why in left_out.items())
    return (
        f"Final step: {len(left_out)} hand-designed student(s) over the search's budget, "
        f"measured as the search measures a candidate, left out: {named}."
    )


def timed_trials(search, rows, directory):
    """`rows` with the int8 latency of every completed trial that has an int8
    file replaced by its figure timed together with all the others
    (``StudentSearch.trial_latencies``); the trial's own figure, timed alone
    when it finished, is kept as ``int8_latency_us_alone``.

    The figures are written to ``directory/TRIAL_LATENCY_FILE`` the first
    time and read from there afterwards, so a resumed final step compares,
    and selects, exactly as the first one did.
    """
    path = os.path.join(directory, TRIAL_LATENCY_FILE)
    ids = [
        r["trial_id"]
        for r in rows
        if r["status"] == "COMPLETED" and os.path.exists(search.trial_int8_path(r["trial_id"]))
    ]
    saved = runs.read_valid_json(
        path, lambda value: runs.missing_keys(value, ()), then="the latencies are measured again"
    )
    if saved is None or set(saved) != set(ids):
        saved = search.trial_latencies(ids) if ids else {}
        runs.write_json(path, saved)
    out = []
    for r in rows:
        if r["trial_id"] in saved:
            r = dict(
                r, int8_latency_us=saved[r["trial_id"]], int8_latency_us_alone=r["int8_latency_us"]
            )
        out.append(r)
    return out


def _saved_row(entry, path, final_epochs):
    """The row of `entry` a previous final step wrote at `path`, when it was
    for the same student and epochs (None otherwise): nothing is trained or
    measured twice."""
    saved = runs.read_valid_json(
        path,
        lambda value: runs.missing_keys(value, ("final_epochs", "values", "tflite")),
        then="this student's final step runs again",
    )
    if saved is None or saved.get("final_epochs") != final_epochs:
        return None
    if any(saved.get(k) != v for k, v in hand_lib.identity(entry).items()):
        return None
    # Its file, in this run's directory: the stored path is as the writing
    # process named it (relative to its working directory).
    directory = os.path.dirname(path)
    saved["tflite"] = os.path.join(directory, "export", os.path.basename(saved["tflite"]))
    if "copy_of" in entry:
        saved["copy_of"] = entry["copy_of"]
    return saved


def run_final(
    search,
    rows,
    final_epochs,
    top=6,
    hand=DEFAULT_HAND,
    latency_runs=100,
    latency_warmup=10,
    timings=1,
    report=None,
    slim_epochs=0,
    slim_criterion="bn_gamma",
):
    """Retrains and measures the Pareto set and the hand points; writes the report.

    Args:
      search: the finished ``nas.search.StudentSearch`` (chief or single process).
      rows: its ``search_report.trial_rows``.
      final_epochs: full training budget (epochs).
      top: most found architectures.
      hand: hand-designed students, ``--final_hand`` items (``nas.hand``).
      latency_runs, latency_warmup: the exporter's latency protocol settings.
      timings: joint timing processes of the final figures (:func:`retime`).
      report: None, or a callable given one line of text naming the hand
        students left out as over the budget, before any training.
      slim_epochs: 0, or slim each hand student over the budget into it
        instead of leaving it out (:func:`slim_into_budget`): trained at full
        budget, slimmed, then fine-tuned for this many epochs.
      slim_criterion: how the slimmed students' channels are ranked.

    Returns:
      dict: rows (one per retrained student: name, source, trial_id, values,
      proxy_val_accuracy, proxy_source and :func:`retrain`'s figures), the
      :func:`summarize` figures, left_out ({hand name: the limits it
      breaks}), and paths of final.json, final.md, final_fronts.png and
      (when a student is within the budget) best_model.keras in
      ``<project>/final/``.
    """
    out_dir = os.path.join(search.project_dir, FINAL_DIR)
    rows = timed_trials(search, rows, out_dir)
    todo = entries(rows, top, hand, search.hypermodel)
    left_out = hand_over_budget(search, todo, out_dir)
    if left_out and slim_epochs:
        todo, left_out = slim_into_budget(
            search, todo, left_out, out_dir, slim_epochs, slim_criterion
        )
    if left_out and report is not None:
        report(left_out_line(left_out))
    final_rows = []
    for entry in (e for e in todo if e["name"] not in left_out):
        directory = os.path.join(out_dir, entry["name"])
        path = os.path.join(directory, ROW_FILE)
        saved = _saved_row(entry, path, final_epochs)
        if saved is not None:
            final_rows.append(saved)
            continue
        if entry.get("slim"):  # A proxy of its unslimmed architecture would say nothing.
            proxy, source = None, "none (slimmed)"
        else:
            proxy, source = proxy_score(search, entry, rows, os.path.join(directory, "proxy"))
        row = dict(
            entry,
            proxy_val_accuracy=proxy,
            proxy_source=source,
            proxy_epochs=search.train_config.epochs,
            final_epochs=final_epochs,
        )
        row.update(retrain(search, entry, final_epochs, directory, latency_runs, latency_warmup))
        runs.write_json(path, row)
        final_rows.append(row)
    final_rows = retime(search, final_rows, latency_runs, latency_warmup, timings)
    summary = summarize(final_rows)
    paths = {
        name: os.path.join(out_dir, name) for name in ("final.json", "final.md", "final_fronts.png")
    }
    if summary["best"] is not None:
        src = os.path.join(out_dir, summary["best"], MODEL_FILE)
        if os.path.exists(src):
            paths[BEST_MODEL] = os.path.join(out_dir, BEST_MODEL)
            partial = paths[BEST_MODEL] + ".partial"
            shutil.copyfile(src, partial)
            os.replace(partial, paths[BEST_MODEL])
    result = dict(
        summary,
        rows=final_rows,
        paths=paths,
        latency_timings=int(timings),
        left_out=left_out,
    )
    runs.write_json(paths["final.json"], {k: v for k, v in result.items() if k != "fronts"})
    runs.write_text(paths["final.md"], search_report.final_markdown(result))
    search_report.plot_final(final_rows, summary["fronts"], paths["final_fronts.png"])
    return result
