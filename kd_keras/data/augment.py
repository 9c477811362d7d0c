"""Training-time augmentation: the :class:`AugmentConfig`, per-image
augmentation (crop, flip, cutout) and batch mixing (mixup, CutMix).
"""

import dataclasses
from typing import Optional

from kd_keras.keras_compat import tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation. All off by default.

    Attributes:
      crop_padding: pixels of zero padding before a random crop back to the
        original size; 0 disables random cropping.
      flip: random horizontal flip.
      cutout: side of a square zeroed at a random position; 0 disables it.
      mixup: alpha of mixup (Zhang et al. 2018): each batch is blended with
        a permutation of itself, ``lam * x + (1 - lam) * x[perm]`` with
        ``lam ~ Beta(alpha, alpha)``; 0 disables it.
      cutmix: alpha of CutMix (Yun et al. 2019): a box of each image, of
        area ``1 - lam``, is replaced by its partner's; 0 disables it. With
        both mixup and cutmix, each batch uses one of them, with equal odds.

    With mixup or cutmix the training labels are soft: float32 (batch,
    classes), ``lam * onehot(y) + (1 - lam) * onehot(y[perm])`` (see
    :func:`mix_batch`).
    """

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self):
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}.")
        if self.cutout < 0:
            raise ValueError(f"cutout must be >= 0, got {self.cutout}.")
        for name in ("mixup", "cutmix"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} alpha must be >= 0, got {getattr(self, name)}.")

    @property
    def enabled(self):
        return bool(self.crop_padding or self.flip or self.cutout or self.mixes)

    @property
    def spatial(self):
        """The augmentations on that move pixels ('crop', 'flip'): for images
        only. Cutout, mixup and CutMix mask or blend inputs of any kind."""
        return tuple(name for name, on in (("crop", self.crop_padding), ("flip", self.flip)) if on)

    def without_spatial(self):
        """This config without crop and flip (for inputs that are not images)."""
        return dataclasses.replace(self, crop_padding=0, flip=False)

    @property
    def mixes(self):
        """True when batches are mixed (mixup or cutmix): labels are soft."""
        return bool(self.mixup or self.cutmix)

    @classmethod
    def parse(cls, items):
        """Parses ``["crop=2", "flip", "cutout=8", "mixup=0.2"]`` (a flag's list value).

        Raises:
          ValueError: an unknown item or a malformed value.
        """
        kwargs = {}
        for item in items or ():
            key, _, value = item.strip().partition("=")
            try:
                if key == "crop":
                    kwargs["crop_padding"] = int(value or 2)
                elif key == "flip" and not value:
                    kwargs["flip"] = True
                elif key == "cutout":
                    kwargs["cutout"] = int(value or 8)
                elif key in ("mixup", "cutmix"):
                    kwargs[key] = float(value or (0.2 if key == "mixup" else 1.0))
                    if not kwargs[key] > 0:
                        raise ValueError
                elif key in ("", "none"):
                    continue
                else:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"Bad augmentation {item!r}; allowed: crop[=PADDING], flip, "
                    "cutout[=SIZE], mixup[=ALPHA>0], cutmix[=ALPHA>0], none."
                ) from None
        return cls(**kwargs)


def preprocess(images):
    """uint8 images -> float32 in [0, 1]; float inputs (an npz of float32,
    ``kd_keras.data.npz``) -> float32, unchanged. Training, teacher outputs,
    export calibration and accuracy all go through this function."""
    images = tf.convert_to_tensor(images)
    if images.dtype.is_floating:
        return tf.cast(images, tf.float32)
    return tf.cast(images, tf.float32) / 255.0


def augment_fn(config: AugmentConfig, seed: Optional[int] = None):
    """Returns a per-example function (image float32 HWC, label[, key]) -> (image, label).

    The training pipeline augments whole batches (:func:`augment_batch`); this
    per-example form remains for single images and as the reference the
    vectorized one is benchmarked against (``bench/kd_cache.py``).

    With `key` (an int32/int64 tensor of shape [2]) the randomness is stateless:
    a pure function of the key, so the same key gives the same augmentation in
    any process. Without it, stateful random ops seeded by `seed` are used.
    """

    def fn(image, label, key=None):
        keys = (
            [None] * 3
            if key is None
            else [tf.random.experimental.stateless_fold_in(key, i) for i in range(3)]
        )
        shape = tf.shape(image)
        if config.crop_padding:
            p = config.crop_padding
            padded = tf.pad(image, [[p, p], [p, p], [0, 0]])
            image = (
                tf.image.random_crop(padded, shape, seed=seed)
                if key is None
                else tf.image.stateless_random_crop(padded, shape, seed=keys[0])
            )
        if config.flip:
            image = (
                tf.image.random_flip_left_right(image, seed=seed)
                if key is None
                else tf.image.stateless_random_flip_left_right(image, seed=keys[1])
            )
        if config.cutout:
            image = cutout(image, config.cutout, seed=seed, key=keys[2])
        return image, label

    return fn


def cutout(image, size, seed=None, key=None):
    """Zeroes a `size` x `size` square centred at a random pixel (clipped).

    The centre is drawn statelessly from `key` (shape [2]) when given, else
    with stateful ops seeded by `seed`.
    """
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    if key is None:
        cy = tf.random.uniform([], 0, h, dtype=tf.int32, seed=seed)
        cx = tf.random.uniform([], 0, w, dtype=tf.int32, seed=seed)
    else:
        fold = tf.random.experimental.stateless_fold_in
        cy = tf.random.stateless_uniform([], fold(key, 0), 0, h, dtype=tf.int32)
        cx = tf.random.stateless_uniform([], fold(key, 1), 0, w, dtype=tf.int32)
    ys = tf.range(h)[:, None]
    xs = tf.range(w)[None, :]
    half = size // 2
    inside = (
        (ys >= cy - half) & (ys < cy - half + size) & (xs >= cx - half) & (xs < cx - half + size)
    )
    return image * tf.cast(~inside, image.dtype)[:, :, None]


MIX_NONE, MIX_MIXUP, MIX_CUTMIX = 0, 1, 2


def augment_batch(config: AugmentConfig, images, views):
    """Crops, flips and cuts out a batch with the given per-example parameters.

    Vectorized over the batch (one gather per axis, one select, one mask)
    rather than mapped per example.

    Args:
      config: which augmentations are on.
      images: float32 (B, H, W, C).
      views: dict of VIEW_KEYS tensors (B,) for these examples.

    Returns:
      The augmented images, float32 (B, H, W, C).
    """
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    if config.crop_padding:
        p = config.crop_padding
        padded = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
        rows = views["dy"][:, None] + tf.range(h)[None, :]
        cols = views["dx"][:, None] + tf.range(w)[None, :]
        images = tf.gather(padded, rows, axis=1, batch_dims=1)
        images = tf.gather(images, cols, axis=2, batch_dims=1)
    if config.flip:
        flip = tf.reshape(views["flip"] > 0, [-1, 1, 1, 1])
        images = tf.where(flip, tf.reverse(images, [2]), images)
    if config.cutout:
        size, half = config.cutout, config.cutout // 2
        ys = tf.range(h)[None, :, None]
        xs = tf.range(w)[None, None, :]
        cy = views["cy"][:, None, None] - half
        cx = views["cx"][:, None, None] - half
        inside = (ys >= cy) & (ys < cy + size) & (xs >= cx) & (xs < cx + size)
        images = images * tf.cast(~inside, images.dtype)[..., None]
    return images


def mix_batch(images, soft_labels, views):
    """Mixup or CutMix of one batch with its partners, as `views` say.

    The labels are mixed with the same lambda as the images, so that the
    cross-entropy with them is ``lam * CE(y) + (1 - lam) * CE(y_partner)``.

    Args:
      images: float32 (B, H, W, C).
      soft_labels: float32 (B, classes) (one-hot).
      views: dict of VIEW_KEYS tensors (B,); mode, lambda and box are read
        from the first example (they are per batch).

    Returns:
      (images, labels) mixed.
    """
    perm = views["partner"]
    mode, lam = views["mode"][0], views["lam"][0]
    other = tf.gather(images, perm)
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    ys = tf.range(h)[:, None]
    xs = tf.range(w)[None, :]
    box = (
        (ys >= views["box_y0"][0])
        & (ys < views["box_y1"][0])
        & (xs >= views["box_x0"][0])
        & (xs < views["box_x1"][0])
    )
    cut = tf.where(box[None, :, :, None], other, images)
    blend = lam * images + (1.0 - lam) * other
    images = tf.where(mode == MIX_CUTMIX, cut, tf.where(mode == MIX_MIXUP, blend, images))
    labels = lam * soft_labels + (1.0 - lam) * tf.gather(soft_labels, perm)
    return images, labels
