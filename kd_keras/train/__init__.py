"""Training: the train config and optimizer (:mod:`.config`), callbacks
(:mod:`.callbacks`), resumable state (:mod:`.state`), ``fit`` and ``evaluate``
(:mod:`.fit`) and the cached-run trainer ``train_or_load`` (:mod:`.cached`).

This package re-exports the public names of its modules:
``from kd_keras import train as train_lib``; ``train_lib.fit(...)``.
"""

from kd_keras.train.cached import (  # noqa: F401
    CorruptRunError,
    split_accuracy,
    train_or_load,
)
from kd_keras.train.callbacks import (  # noqa: F401
    Progress,
    ResumableEarlyStopping,
)
from kd_keras.train.config import (  # noqa: F401
    OPTIMIZERS,
    TrainConfig,
    make_optimizer,
)
from kd_keras.train.fit import (  # noqa: F401
    compile_plain,
    evaluate,
    even_batches,
    fit,
    weighted_shares,
)
from kd_keras.train.state import (  # noqa: F401
    CHECKPOINT_DIR,
    PROGRESS_FILE,
    copy_state,
    random_generators,
    read_progress,
    training_state,
)
