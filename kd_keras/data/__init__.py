"""Data: sources, splits, storage, augmentation, epoch views and the tf.data pipeline.

``load_dataset`` (:mod:`.load`) returns the train / validation / test splits of
one of the four registered datasets, any other TFDS image-classification
dataset, an image folder (``dir:PATH``, :mod:`.folders`) or arrays in an
``.npz`` file (``npz:PATH``, :mod:`.npz`), read through
``tf.data`` a chunk at a time (:mod:`.sources`): as numpy arrays in memory when
they fit, or written once to a store on disk (:mod:`.store`) when they do not.
Fashion-MNIST has an offline path through its IDX files (:mod:`.idx`).
``make_datasets`` (:mod:`.pipeline`) turns the splits into batched, prefetched
``tf.data`` pipelines; the training one shuffles and augments
(:mod:`.augment`) as a pure function of the seed and the epoch (:mod:`.views`).

This package re-exports the public names of its modules, so callers write
``from kd_keras import data as data_lib`` and ``data_lib.load_dataset(...)``.
"""

from kd_keras.data import npz  # noqa: F401
from kd_keras.data.augment import (  # noqa: F401
    MIX_CUTMIX,
    MIX_MIXUP,
    MIX_NONE,
    AugmentConfig,
    augment_batch,
    augment_fn,
    cutout,
    mix_batch,
    preprocess,
)
from kd_keras.data.config import (  # noqa: F401
    SOURCE_FIELDS,
    DataConfig,
)
from kd_keras.data.dataset import (  # noqa: F401
    DATASET_SHAPES,
    DATASET_SIZES,
    DEFAULT_MANUAL_DIR,
    DEFAULT_TEST_FRACTION,
    FOLDER_PREFIX,
    NPZ_PREFIX,
    SUPPORTED_DATASETS,
    DataError,
    Dataset,
)
from kd_keras.data.idx import (  # noqa: F401
    FASHION_MNIST_COUNTS,
    IDX_FILES,
    missing_idx_files,
    read_idx,
    read_idx_split,
    verify_fashion_mnist,
)
from kd_keras.data.load import (  # noqa: F401
    SPLITS,
    load_dataset,
)
from kd_keras.data.npz import (  # noqa: F401
    is_npz,
    npz_path,
)
from kd_keras.data.pipeline import (  # noqa: F401
    Pipelines,
    make_datasets,
    with_items,
)
from kd_keras.data.sources import (  # noqa: F401
    DOWNLOAD_HOST,
    STREAM_BATCH,
    as_numpy,
    builder_image_shape,
    folder_path,
    folder_shape,
    is_folder,
    offline_reason,
    placeholder,
    preparation_lock,
    prepare_builder,
    split_count,
    split_sizes,
    write_split,
)
from kd_keras.data.splits import (  # noqa: F401
    split_test,
    split_validation,
    test_index,
    test_size,
    validation_index,
)
from kd_keras.data.views import (  # noqa: F401
    VIEW_KEYS,
    epoch_key,
    epoch_order,
    epoch_views,
    gather_images,
    image_batches,
    steps_per_epoch,
    view_batch,
)
