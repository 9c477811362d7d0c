"""What data a run reads: :class:`DataConfig`, one object passed whole from
the flags to the loader."""

import dataclasses
from typing import Optional

from kd_keras.data.dataset import DEFAULT_MANUAL_DIR, DEFAULT_TEST_FRACTION, DataError
from kd_keras.data.load import load_dataset
from kd_keras.data.npz import is_npz
from kd_keras.data.sources import folder_path, is_folder, placeholder, split_sizes

# Settings of user datasets, part of a run's key only when not the default.
SOURCE_FIELDS = ("test_fraction", "image_size", "train_split", "test_split", "val_split")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """A dataset, its splits and how it is stored and batched.

    Attributes:
      dataset: a TFDS name, ``dir:PATH`` (an image folder) or ``npz:PATH``
        (arrays in an .npz file, :mod:`kd_keras.data.npz`).
      data_dir: TFDS data directory (None: TFDS's default).
      manual_dir: where the offline Fashion-MNIST IDX files are.
      val_size: validation examples carved from train (0: none).
      limit_train, limit_test: keep this many examples (0: all).
      batch_size: training batch size.
      storage: 'memory', 'disk' or 'auto' (``kd_keras.data.store``); an
        npz is held in memory ('disk' is refused).
      test_fraction: ``dir:`` datasets only, the held-out test share.
      image_size: (height, width) to resize to, or None.
      train_split, test_split, val_split: TFDS split strings (val_split
        None: carve `val_size` from train).
    """

    dataset: str = "fashion_mnist"
    data_dir: Optional[str] = None
    manual_dir: str = DEFAULT_MANUAL_DIR
    val_size: int = 5000
    limit_train: int = 0
    limit_test: int = 0
    batch_size: int = 128
    storage: str = "auto"
    test_fraction: float = DEFAULT_TEST_FRACTION
    image_size: Optional[tuple] = None
    train_split: str = "train"
    test_split: str = "test"
    val_split: Optional[str] = None

    def spec(self):
        """The settings that change what a run trains on (part of run keys).

        The settings of user datasets enter only when they differ from their
        defaults, so the keys of runs on the registered datasets are unchanged.
        """
        spec = {
            k: getattr(self, k)
            for k in ("dataset", "val_size", "limit_train", "limit_test", "batch_size")
        }
        for field in dataclasses.fields(self):
            if field.name in SOURCE_FIELDS and getattr(self, field.name) != field.default:
                spec[field.name] = getattr(self, field.name)
        return spec

    def placeholder(self):
        """An empty Dataset with the right shape and class count (read from
        metadata, without loading the data).

        Raises:
          ValueError: naming --dataset and what is wrong.
        """
        if is_npz(self.dataset) and self.storage == "disk":
            raise ValueError(
                f"--data_storage=disk with --dataset={self.dataset}: an npz is read whole "
                "into memory (numpy.load); use --data_storage=memory or auto."
            )
        try:
            shapes = placeholder(self.dataset, self.data_dir, self.image_size)
        except DataError as e:
            raise ValueError(f"--dataset={self.dataset}: {e}") from None
        self.check_sizes()
        return shapes

    def check_sizes(self):
        """Checks --val_size against the training split's size when that is
        known without loading the data (``kd_keras.data.sources.split_sizes``).

        Raises:
          ValueError: naming --val_size, the value and the largest allowed.
        """
        if self.val_split or not self.val_size:
            return
        try:
            sizes = split_sizes(
                self.dataset, self.data_dir, self.test_fraction, self.train_split, self.test_split
            )
        except DataError as e:
            raise ValueError(f"--dataset={self.dataset}: {e}") from None
        if sizes is None or self.val_size < sizes[0]:
            return
        if is_folder(self.dataset):
            total = sizes[0] + sizes[1]
            what = (
                f"image folder {folder_path(self.dataset)} has {total} images, {sizes[0]} "
                f"for training after --test_fraction={self.test_fraction:g}"
            )
        else:
            what = f"{self.dataset} has {sizes[0]} training examples"
        raise ValueError(
            f"--val_size={self.val_size}: {what}; the validation split is carved from them "
            f"and must leave some, so --val_size must be at most {max(sizes[0] - 1, 0)}."
        )

    def load(self, seed=0):
        """The Dataset these settings describe (its validation split drawn with `seed`).

        Raises:
          kd_keras.data.DataError: the data is missing or malformed.
        """
        return load_dataset(
            self.dataset,
            self.data_dir,
            self.manual_dir,
            self.val_size,
            seed=seed,
            limit_train=self.limit_train,
            limit_test=self.limit_test,
            test_fraction=self.test_fraction,
            image_size=self.image_size,
            train_split=self.train_split,
            test_split=self.test_split,
            val_split=self.val_split,
            storage=self.storage,
        )
