"""Flag definitions for ``nas.main``. Only the entry point reads `.value`."""

from absl import flags

from kd_keras import data as data_lib
from kd_keras import models, training
from nas import search_space, tuner

# -- project ------------------------------------------------------------------
_PROJECT_DIR = flags.DEFINE_string("project_dir", None, "keras-tuner project directory.")
_PROJECT_NAME = flags.DEFINE_string("project_name", "nas",
                                    "Project name; outputs go to project_dir/project_name.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Delete the project and start afresh (default: resume it).")
_ORACLE = flags.DEFINE_enum("oracle", "random", list(tuner.ORACLES), "keras-tuner oracle.")
_MAX_TRIALS = flags.DEFINE_integer("max_trials", 20, "Trials of random / bayesian.",
                                   lower_bound=1)
_NUM_INITIAL = flags.DEFINE_integer("num_initial_points", 0,
                                    "Random trials before Bayesian modelling (0 = default).",
                                    lower_bound=0)
_HB_FACTOR = flags.DEFINE_integer("hyperband_factor", 3, "Hyperband reduction factor.",
                                  lower_bound=2)
_HB_ITERATIONS = flags.DEFINE_integer("hyperband_iterations", 1, "Hyperband iterations.",
                                      lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the oracle and of every trial's training.")
_TOP = flags.DEFINE_integer("show_top", 5, "Trials printed at the end.", lower_bound=1)
_SHOW_LOGS = flags.DEFINE_bool("show_logs", False, "Show TensorFlow's logs and library "
                                "warnings on the console (default: the project/log.txt).")
_VERBOSE = flags.DEFINE_enum("verbose", "1", ["0", "1", "2"],
                             "0 = quiet; 1 = keras-tuner trial tables; 2 = also a line per "
                             "training epoch.")

# -- data ---------------------------------------------------------------------
_DATASET = flags.DEFINE_enum("dataset", "fashion_mnist", list(data_lib.SUPPORTED_DATASETS),
                             "TFDS dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default ~/tensorflow_datasets).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", data_lib.DEFAULT_MANUAL_DIR,
                                  "Directory of the Fashion-MNIST IDX .gz files.")
_VAL_SIZE = flags.DEFINE_integer("val_size", 5000,
                                 "Validation examples (carved from train) ranking candidates.",
                                 lower_bound=1)
_LIMIT_TRAIN = flags.DEFINE_integer("limit_train", 0, "Keep only N train examples (0 = all).",
                                    lower_bound=0)
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)

# -- training of every candidate ----------------------------------------------
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Epochs per trial (Hyperband: max_epochs).",
                               lower_bound=1)
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adam", list(training.OPTIMIZERS),
                               "Optimizer of the candidates.")
_LR = flags.DEFINE_float("lr", 3e-3, "Peak learning rate of the candidates.", lower_bound=0)
_WARMUP = flags.DEFINE_integer("warmup", 0, "Warm-up epochs of the candidates.", lower_bound=0)
_AUGMENT = flags.DEFINE_list("augment", [], "Candidates' augmentation: crop[=P], flip, cutout[=S].")

# -- search space ---------------------------------------------------------------
_MIN_STAGES = flags.DEFINE_integer("min_stages", 2, "Fewest stages.", lower_bound=1)
_MAX_STAGES = flags.DEFINE_integer("max_stages", 4, "Most stages.", lower_bound=1)
_MAX_BLOCKS = flags.DEFINE_integer("max_blocks", 2, "Most blocks per stage.", lower_bound=1)
_FILTERS = flags.DEFINE_list("filters", ["8", "16", "24", "32", "48", "64"],
                             "Channel counts a stage picks from.")
_KERNELS = flags.DEFINE_list("kernel_sizes", ["3", "5"], "Kernel sizes (odd).")
_EXPANSIONS = flags.DEFINE_list("expansions", ["1", "2", "4"],
                                "Expansion ratios of separable blocks.")
_CONV_TYPES = flags.DEFINE_list("conv_types", list(search_space.CONV_TYPES),
                                f"Block types, a subset of {search_space.CONV_TYPES}.")
_DOWNSAMPLING = flags.DEFINE_list("downsampling", list(search_space.DOWNSAMPLING),
                                  f"Downsampling, a subset of {search_space.DOWNSAMPLING}.")
_HEAD_UNITS = flags.DEFINE_list("head_units", ["0", "32", "64", "128"],
                                "Hidden Dense widths before the logits (0 = none).")
_DROPOUTS = flags.DEFINE_list("dropouts", ["0.0", "0.1", "0.25"], "Dropout rates.")

# -- distillation -----------------------------------------------------------------
_KD = flags.DEFINE_bool("kd", True, "Distill every candidate from the teacher.")
_TEACHER_MODEL = flags.DEFINE_string("teacher_model", None,
                                     "Saved teacher (.keras); if unset, --teacher is trained "
                                     "once and cached in the project.")
_TEACHER = flags.DEFINE_enum("teacher", "resnet", sorted(models.REGISTRY),
                             "Registry teacher trained when --teacher_model is unset.")
_TEACHER_ARGS = flags.DEFINE_list("teacher_args", [], "Teacher builder kwargs, k=v,...")
_TEACHER_EPOCHS = flags.DEFINE_integer("teacher_epochs", 10, "Teacher epochs.", lower_bound=1)
_TEACHER_OPTIMIZER = flags.DEFINE_enum("teacher_optimizer", "sgd", list(training.OPTIMIZERS),
                                       "Teacher optimizer.")
_TEACHER_LR = flags.DEFINE_float("teacher_lr", 0.1, "Teacher peak learning rate.", lower_bound=0)
_TEACHER_WARMUP = flags.DEFINE_integer("teacher_warmup", 1, "Teacher warm-up epochs.",
                                       lower_bound=0)
_TEACHER_AUGMENT = flags.DEFINE_list("teacher_augment", ["crop=2", "flip"],
                                     "Teacher augmentation: crop[=P], flip, cutout[=S], none.")
_ALPHA = flags.DEFINE_float("alpha", 0.1, "Weight of the label loss.", lower_bound=0,
                            upper_bound=1)
_TEMPERATURE = flags.DEFINE_float("temperature", 4.0, "KD temperature.", lower_bound=1e-3)

# -- budget and measurement -----------------------------------------------------------
_MAX_LATENCY = flags.DEFINE_float("max_latency_us", 0.0,
                                  "Budget: median float32 TFLite latency, us (0 = none).",
                                  lower_bound=0)
_MAX_BYTES = flags.DEFINE_integer("max_bytes", 0, "Budget: .tflite bytes (0 = none).",
                                  lower_bound=0)
_MAX_PARAMS = flags.DEFINE_integer("max_params", 0, "Budget: Keras parameters (0 = none).",
                                   lower_bound=0)
_LATENCY_RUNS = flags.DEFINE_integer("latency_runs", 50, "Timed LiteRT invocations per trial.",
                                     lower_bound=1)
_LATENCY_WARMUP = flags.DEFINE_integer("latency_warmup", 10, "Untimed invocations first.",
                                       lower_bound=0)
_LATENCY_THREADS = flags.DEFINE_integer("latency_threads", 1, "LiteRT threads.", lower_bound=1)

flags.mark_flag_as_required("project_dir")
