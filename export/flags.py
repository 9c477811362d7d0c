"""Flag definitions for ``export.main``. Only the entry point reads `.value`.

Data and export flags come from ``kd_keras.flag_groups``: the same names,
defaults and meanings as in ``kd_keras.main`` and ``nas.main``.
"""

from absl import flags

from export.measure import DEFAULT_BATCH_SIZE
from kd_keras import flag_groups
from kd_keras.distill import teachers

NO_DATASET = flag_groups.NO_DATASET

MODEL = flags.DEFINE_string(
    "model", None, "Saved Keras model to export: a .keras/.h5 file or a SavedModel directory."
)
OUT_DIR = flags.DEFINE_string("out_dir", None, "Directory of the .tflite files and results.")
NAME = flags.DEFINE_string("name", None, "File name stem (default: the model file's stem).")
INPUT_RANGE = flags.DEFINE_enum(
    "input_range",
    teachers.DEFAULT_INPUT_RANGE,
    list(teachers.INPUT_RANGES),
    "Input value range the model expects: calibration, accuracy and timing feed it the "
    "data's images mapped to it (the .tflite file takes the same range). With data, a "
    "model that plainly expects another range (much higher accuracy there on training "
    "images) is an error naming it.",
)
DATA = flag_groups.define_data_flags(allow_none=True)
SOURCE = flag_groups.define_source_flags()
EXPORT = flag_groups.define_export_flags()
EVAL_BATCH = flags.DEFINE_integer(
    "eval_batch_size",
    DEFAULT_BATCH_SIZE,
    "Examples per interpreter invocation when measuring accuracy.",
    lower_bound=1,
)
CONSOLE = flag_groups.define_console_flags()

flags.mark_flags_as_required(["model", "out_dir"])
flags.register_validator(
    "export_formats", bool, message="--export_formats: name at least one format to export."
)
