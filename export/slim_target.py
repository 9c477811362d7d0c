"""Slimming to a target that only a converted model shows: int8 bytes or latency.

    plan = slim_target.plan(student, config, train_images)  # None: no such target
    slim_student = compression.slim_model(student, plan)

``CompressionConfig.slim_target_bytes`` is a share of the unslimmed student's
int8 file, ``slim_target_latency`` a share of its int8 latency. Both are met
by bisection on the slim fraction (``compression.plan_to_fit``): each
candidate plan is built, converted to int8 (calibrated on a few training
images) and, for latency, timed interleaved with the unslimmed file in one
timing process (``export.measure.latency_together``), so the share is a ratio
measured in one run, not two latencies from different moments of a shared
machine. The plan kept is the one removing the fewest channels that fits.
"""

from export import convert as convert_lib
from export import measure as measure_lib
from kd_keras import compression

# Calibration images per candidate conversion: the file's bytes do not depend
# on them and the latency hardly does; the kept student is converted again,
# fully calibrated, by the exporter.
NUM_CALIBRATION = 16


def plan(model, config, images, threads=1, xnnpack=True, num_runs=50, warmup=10, progress=None):
    """The slim plan meeting `config`'s int8 target, or None when it sets none.

    Args:
      model: the student to slim (functional, no TF-MOT wrappers).
      config: ``compression.CompressionConfig``.
      images: training images (N, H, W, C), uint8 or as the model reads them:
        calibration, and the timed example.
      threads, xnnpack: the interpreter settings latency is timed with.
      num_runs, warmup: the timing protocol of each comparison.
      progress: None, or a callable given one line per candidate measured.

    Returns:
      a ``compression.SlimPlan``, or None when neither ``slim_target_bytes``
      nor ``slim_target_latency`` is set.

    Raises:
      ValueError: the target cannot be met by removing channels (one line).
      export.convert.ExportError: a candidate does not convert or time.
    """
    if config.int8_slim_target is None:
        return None
    share_bytes, share_latency = config.slim_target_bytes, config.slim_target_latency

    def int8(candidate):
        return convert_lib.convert(
            candidate, "int8", representative_images=images, num_calibration=NUM_CALIBRATION
        )

    full = int8(model)
    say = progress or (lambda line: None)

    def fits_bytes(candidate_plan):
        size = len(int8(compression.slim_model(model, candidate_plan)))
        say(f"slim: fraction {candidate_plan.fraction:.4f} gives {size:,} int8 bytes")
        return size <= share_bytes * len(full)

    def fits_latency(candidate_plan):
        timed = measure_lib.latency_together(
            {"unslimmed": full, "slimmed": int8(compression.slim_model(model, candidate_plan))},
            images[0],
            num_runs=num_runs,
            warmup=warmup,
            threads=threads,
            xnnpack=xnnpack,
        )
        ratio = timed["slimmed"]["latency_us_median"] / timed["unslimmed"]["latency_us_median"]
        say(f"slim: fraction {candidate_plan.fraction:.4f} times {ratio:.3f} of the unslimmed")
        return ratio <= share_latency

    if share_bytes is not None:
        fits = fits_bytes
        what = f"slim_target_bytes={share_bytes} (of {len(full):,} int8 bytes)"
    else:
        fits = fits_latency
        what = f"slim_target_latency={share_latency} (of the unslimmed int8 latency)"
    return compression.plan_to_fit(
        model, fits, config.slim_criterion, config.slim_multiple, tolerance=1e-3, what=what
    )
