"""Flag definitions for ``nas.main``. Only the entry point reads `.value`.

Data, teacher, student-training, distillation, export and budget flags come
from ``kd_keras.flag_groups``: the same names, defaults and meanings as in
``kd_keras.main`` and ``export.main``. Candidates are students: they train
as ``--student_epochs`` (Hyperband: the most epochs of a trial),
``--student_lr`` and so on say.
"""

from absl import flags

from kd_keras import compression, flag_groups
from nas import final, oracles
from nas import hand as hand_lib
from nas import space as search_space

# -- project ------------------------------------------------------------------
PROJECT_DIR = flags.DEFINE_string("project_dir", None, "keras-tuner project directory.")
PROJECT_NAME = flags.DEFINE_string(
    "project_name", "nas", "Project name; outputs go to project_dir/project_name."
)
OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Delete the project and start afresh (default: resume it)."
)
ORACLE = flags.DEFINE_enum(
    "oracle",
    "random",
    list(oracles.ORACLES),
    "keras-tuner oracle: random search, Bayesian optimization, Hyperband, or regularized "
    "evolution from --start_points (nas.oracles.BudgetedEvolutionOracle).",
)
MAX_TRIALS = flags.DEFINE_integer(
    "max_trials", 20, "Trials of random / bayesian / evolution.", lower_bound=1
)
START_POINTS = flags.DEFINE_list(
    "start_points",
    [],
    "--oracle=evolution: students tried first, as points of the space: FAMILY:WIDTH"
    "[:STAGES][/NAME=VALUE...] (e.g. cnn:0.5,cnn_dws:1; stages past the third keep its "
    "width, so cnn:0.5:4 has 8/16/32/32 channels; /NAME=VALUE changes a hyperparameter, "
    "e.g. cnn:0.5:4/stem_padding=valid); the ones over the budget are skipped.",
)
POPULATION = flags.DEFINE_integer(
    "evolution_population",
    8,
    "--oracle=evolution: completed trials before mutations start, and how many trials a "
    "tournament draws from (the most recent ones, or see --evolution_elite).",
    lower_bound=1,
)
SAMPLE = flags.DEFINE_integer(
    "evolution_sample",
    3,
    "--oracle=evolution: tournament size (trials drawn from the population; the best is mutated).",
    lower_bound=1,
)
ELITE = flags.DEFINE_integer(
    "evolution_elite",
    0,
    "--oracle=evolution: how many of the --evolution_population trials a tournament "
    "draws from are the best scoring ones, the rest being the most recent; 0: the most "
    "recent only (aging).",
    lower_bound=0,
)
NUM_INITIAL = flags.DEFINE_integer(
    "num_initial_points", 0, "Random trials before Bayesian modelling (0 = default).", lower_bound=0
)
HB_FACTOR = flags.DEFINE_integer(
    "hyperband_factor", 3, "Hyperband reduction factor.", lower_bound=2
)
HB_ITERATIONS = flags.DEFINE_integer(
    "hyperband_iterations", 1, "Hyperband iterations.", lower_bound=1
)
TOP = flags.DEFINE_integer("show_top", 5, "Trials printed at the end.", lower_bound=1)
RUN = flag_groups.define_run_flags(
    "Seed of the oracle and of every trial's training.",
    "0 = quiet; 1 = keras-tuner trial tables; 2 = also a line per training epoch.",
)
SEED, VERBOSE = RUN.seed, RUN.verbose

# -- shared groups ----------------------------------------------------------------
DATA = flag_groups.define_data_flags()
SOURCE = flag_groups.define_source_flags()
STUDENT = flag_groups.define_student_flags(model=False)
TEACHER = flag_groups.define_teacher_flags()
TEACHER_INPUT_RANGE = flag_groups.define_teacher_input_range_flag()
KD = flag_groups.define_kd_flags()
EXPORT = flag_groups.define_export_flags()
BUDGET = flag_groups.define_budget_flags()
CONSOLE = flag_groups.define_console_flags()

# -- distillation in the loop ---------------------------------------------------------
DISTILL = flags.DEFINE_bool("distill", True, "Distill every candidate from the teacher.")
TEACHER_MODEL = flags.DEFINE_string(
    "teacher_model",
    None,
    "Saved teacher (.keras/.h5 of tf_keras or Keras 3, or a SavedModel directory); if unset, "
    "--teacher (a registry name, trained once and cached in the project, or one path) is used.",
)

# -- search space ---------------------------------------------------------------
MIN_STAGES = flags.DEFINE_integer("min_stages", 2, "Fewest stages.", lower_bound=1)
MAX_STAGES = flags.DEFINE_integer("max_stages", 4, "Most stages.", lower_bound=1)
MAX_BLOCKS = flags.DEFINE_integer("max_blocks", 2, "Most blocks per stage.", lower_bound=1)
FILTERS = flags.DEFINE_list(
    "filters", ["8", "16", "24", "32", "48", "64"], "Channel counts a stage picks from."
)
KERNELS = flags.DEFINE_list("kernel_sizes", ["3", "5"], "Kernel sizes (odd).")
EXPANSIONS = flags.DEFINE_list(
    "expansions", ["1", "2", "4"], "Expansion ratios of separable blocks."
)
CONV_TYPES = flags.DEFINE_list(
    "conv_types",
    list(search_space.CONV_TYPES),
    f"Block types, a subset of {search_space.CONV_TYPES}.",
)
DOWNSAMPLING = flags.DEFINE_list(
    "downsampling",
    list(search_space.DOWNSAMPLING),
    f"Downsampling, a subset of {search_space.DOWNSAMPLING}.",
)
STEM_PADDINGS = flags.DEFINE_list(
    "stem_paddings",
    list(search_space.STEM_PADDINGS),
    f"Padding of the very first convolution, a subset of {search_space.STEM_PADDINGS} "
    "('valid' computes kernel - 1 fewer rows and columns at full resolution).",
)
HEAD_UNITS = flags.DEFINE_list(
    "head_units", ["0", "32", "64", "128"], "Hidden Dense widths before the logits (0 = none)."
)
DROPOUTS = flags.DEFINE_list("dropouts", ["0.0", "0.1", "0.25"], "Dropout rates.")

SE_RATIOS = flags.DEFINE_list(
    "se_ratios", ["0", "4"], "Squeeze-excite reductions (0 = none; r squeezes C to C // r)."
)
ACTIVATIONS = flags.DEFINE_list(
    "activations",
    list(search_space.ACTIVATIONS),
    f"Block activations, a subset of {search_space.ACTIVATIONS}.",
)
BUDGET_INT8 = flags.DEFINE_bool(
    "budget_int8",
    False,
    "--max_latency_us and --max_bytes apply to each candidate's int8 file (else its float32 one).",
)
SAMPLE_WITHIN_BUDGET = flags.DEFINE_bool(
    "sample_within_budget",
    True,
    "Random search and Hyperband: measure each drawn candidate's untrained files first and "
    f"draw again (up to {oracles.MAX_DRAWS} times) while it misses the budget, so no trial "
    "trains a candidate the budget rules out.",
)

# -- final step -------------------------------------------------------------------
FINAL_EPOCHS = flags.DEFINE_integer(
    "final_epochs",
    0,
    "After the search, retrain the Pareto set (--final_top) and the hand-designed students "
    "(--final_hand) for this many epochs with the same KD recipe and measure them as int8 "
    "files (0 = no final step).",
    lower_bound=0,
)
FINAL_TOP = flags.DEFINE_integer(
    "final_top",
    6,
    "Most found architectures the final step retrains: taken from the feasible Pareto sets, "
    "spread from the most accurate to the cheapest.",
    lower_bound=1,
)
FINAL_TIMINGS = flags.DEFINE_integer(
    "final_timings",
    5,
    "Joint timing processes of the final step, one after the other, each timing every int8 "
    "file interleaved: a file's latency is its median process's (one process can run slow "
    "as a whole).",
    lower_bound=1,
)
FINAL_HAND = flags.DEFINE_list(
    "final_hand",
    list(final.DEFAULT_HAND),
    "Hand-designed students the final step retrains beside the found ones, with the same "
    "recipe, as baselines (its best student may be one of them): FAMILY:WIDTH with FAMILY "
    f"in {sorted(search_space.HAND_FAMILIES)} (a point of the search space); NAME:WIDTH with "
    f"NAME a registry student taking a width ({', '.join(hand_lib.registry_names())}), e.g. "
    "mobilenet_v2:0.35 or ds_cnn:1; the path of a saved model (its architecture, fresh "
    "weights); or MODULE:FUNCTION (a builder on PYTHONPATH, called with the input shape and "
    "class count). Each is built for the search's input shape and classes; those over the "
    "budget (--max_params, --max_bytes, --max_latency_us, --max_arena_bytes, measured as "
    "the search measures a candidate) are named and left out.",
)

FINAL_SLIM_EPOCHS = flags.DEFINE_integer(
    "final_slim_epochs",
    0,
    "If > 0, a --final_hand student over the budget is not left out but slimmed into it: "
    "trained at full budget, the fewest channels removed that bring it within every limit "
    "(measured as a candidate is), then fine-tuned for this many epochs with the same KD "
    "recipe. 0 = leave it out.",
    lower_bound=0,
)
FINAL_SLIM_CRITERION = flags.DEFINE_enum(
    "final_slim_criterion",
    "bn_gamma",
    list(compression.SLIM_CRITERIA),
    "How --final_slim_epochs ranks a trained hand student's channels: bn_gamma "
    "(|gamma| of its BatchNormalizations; l1 where a group has none) or l1.",
)

flags.mark_flag_as_required("project_dir")
flags.register_validator(
    "export_threads",
    lambda v: len(v) == 1,
    message="--export_threads: the search times one thread count.",
)
flags.register_validator(
    "val_size",
    lambda v: v >= 1,
    message="--val_size: the search ranks candidates on validation examples; it must be >= 1.",
)
