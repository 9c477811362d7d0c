"""Flag definitions for ``export.main``. Only the entry point reads `.value`."""

from absl import flags

from export.convert import DEFAULT_NUM_CALIBRATION, QUANTIZATIONS
from export.measure import DEFAULT_BATCH_SIZE, DEFAULT_NUM_RUNS, DEFAULT_WARMUP
from kd_keras import data as data_lib

NO_DATASET = "none"

_MODEL = flags.DEFINE_string(
    "model", None, "Saved Keras model to export: a .keras/.h5 file or a SavedModel directory.")
_QUANTIZATION = flags.DEFINE_list(
    "quantization", list(QUANTIZATIONS), f"Formats to export, a subset of {QUANTIZATIONS}.")
_SHOW_LOGS = flags.DEFINE_bool("show_logs", False, "Show TensorFlow's logs and library "
                                "warnings on the console (default: --out_dir/log.txt).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Directory of the .tflite files and results.")
_NAME = flags.DEFINE_string("name", None, "File name stem (default: the model file's stem).")
_DATASET = flags.DEFINE_enum(
    "dataset", "fashion_mnist", list(data_lib.SUPPORTED_DATASETS) + [NO_DATASET],
    "TFDS dataset: training images calibrate int8, the test split measures accuracy. "
    f"'{NO_DATASET}': sizes and latency only.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default ~/tensorflow_datasets).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", data_lib.DEFAULT_MANUAL_DIR,
                                  "Directory of the Fashion-MNIST IDX .gz files.")
_LIMIT_TEST = flags.DEFINE_integer("limit_test", 0, "Measure accuracy on the first N test "
                                   "examples only (0 = all).", lower_bound=0)
_NUM_CALIBRATION = flags.DEFINE_integer("num_calibration", DEFAULT_NUM_CALIBRATION,
                                        "Training images that calibrate int8.", lower_bound=1)
_THREADS = flags.DEFINE_list("threads", ["1"], "Interpreter thread counts to time.")
_LATENCY_RUNS = flags.DEFINE_integer("latency_runs", DEFAULT_NUM_RUNS,
                                     "Timed single-example invocations.", lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup_runs", DEFAULT_WARMUP, "Untimed invocations first.",
                               lower_bound=0)
_XNNPACK = flags.DEFINE_bool("xnnpack", True, "Run with the XNNPack delegate.")
_INT8_IO = flags.DEFINE_bool("int8_io", False, "int8 inputs and outputs for the int8 format.")
_BATCH = flags.DEFINE_integer("batch_size", DEFAULT_BATCH_SIZE,
                              "Examples per invocation when measuring accuracy.", lower_bound=1)

flags.mark_flags_as_required(["model", "out_dir"])


@flags.validator("quantization", message=f"--quantization: each item must be in {QUANTIZATIONS}.")
def _check_quantization(value):
    return bool(value) and all(q in QUANTIZATIONS for q in value)


@flags.validator("threads", message="--threads: a list of integers >= 1.")
def _check_threads(value):
    return bool(value) and all(str(t).strip().isdigit() and int(t) >= 1 for t in value)
