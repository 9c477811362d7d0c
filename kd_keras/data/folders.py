"""Image-classification data in a folder: one sub-folder per class.

The layout ``keras.utils.image_dataset_from_directory`` reads::

    PATH/
      cat/  a.png  b.jpg ...
      dog/  c.png ...

Class names are the sorted sub-folder names (class ``i`` is the ``i``-th);
images are found recursively inside each class folder (PNG, JPEG, BMP, GIF;
a GIF gives its first frame). Links are followed, each real directory and
each real file once: a link loop, a link to the root or to another class's
folder adds no image twice, and one image under two classes is an error.
Images are decoded with ``tf.io`` into uint8 arrays.
:func:`shape` reads the listing and one image only, so a configuration is
checked against the folder before the images are read; :func:`read` decodes
them one at a time into an array it is given room in (in memory, or a file on
disk through :mod:`kd_keras.data.store` for folders larger than memory).
"""

import os

import numpy as np

from kd_keras.keras_compat import tf

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class FolderError(ValueError):
    """The folder is missing, empty, has fewer than 2 classes, or a bad image."""


def list_images(path):
    """The class names and the image files of an image folder.

    Args:
      path: the folder, one sub-folder per class.

    Returns:
      (class names: tuple of str, files: list of paths, labels: int64 array),
      files sorted within each class.

    Raises:
      FolderError: `path` is missing or not a folder, has fewer than 2 class
        sub-folders, or a class sub-folder holds no image.
    """
    if not os.path.isdir(path):
        what = "is not a folder" if os.path.exists(path) else "does not exist"
        raise FolderError(f"image folder {path} {what}.")
    classes = sorted(e.name for e in os.scandir(path) if e.is_dir())
    if len(classes) < 2:
        raise FolderError(
            f"image folder {path} has {len(classes)} class sub-folder(s) "
            f"({', '.join(classes) or 'none'}); it needs one sub-folder per class, at least 2."
        )
    files, labels = [], []
    # Links are followed, each real directory at most once: a link back to
    # the root, to another class's folder or into a cycle adds nothing, and a
    # file reached twice (by a link) counts once.
    seen_dirs = {os.path.realpath(path)} | {
        os.path.realpath(os.path.join(path, name)) for name in classes
    }
    owner = {}  # real path of each image -> its class
    for label, name in enumerate(classes):
        found = []
        for root, dirs, names in os.walk(os.path.join(path, name), followlinks=True):
            keep = []
            for d in sorted(dirs):
                real = os.path.realpath(os.path.join(root, d))
                if real not in seen_dirs:
                    seen_dirs.add(real)
                    keep.append(d)
            dirs[:] = keep
            for f in names:
                if not f.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                file = os.path.join(root, f)
                real = os.path.realpath(file)
                if real in owner:
                    if owner[real] != name:
                        raise FolderError(
                            f"image {real} is in two class folders ({owner[real]} and {name}, "
                            "through a link); an image must have one class."
                        )
                    continue
                owner[real] = name
                found.append(file)
        found.sort()
        if not found:
            raise FolderError(
                f"class folder {os.path.join(path, name)} holds no image "
                f"({', '.join(IMAGE_EXTENSIONS)})."
            )
        files += found
        labels += [label] * len(found)
    return tuple(classes), files, np.asarray(labels, np.int64)


def decode(path, channels=0):
    """One image file as a uint8 array (H, W, C).

    Args:
      path: a PNG, JPEG, BMP or GIF file.
      channels: channels to decode to (0: the file's own).

    Raises:
      FolderError: the file cannot be read or decoded.
    """
    try:
        image = tf.io.decode_image(
            tf.io.read_file(path), channels=channels, dtype=tf.uint8, expand_animations=False
        )
    except (tf.errors.OpError, ValueError) as e:
        message = getattr(e, "message", str(e)).strip().splitlines()[0]
        raise FolderError(f"cannot decode image {path}: {message}") from None
    return image.numpy()


def shape(path):
    """(input shape (H, W, C) of the first image, number of classes), read
    from the listing and that one image.

    Raises:
      FolderError: as :func:`list_images` and :func:`decode`.
    """
    classes, files, _ = list_images(path)
    return decode(files[0]).shape, len(classes)


def resize(image, size):
    """A uint8 image resized (bilinear, antialiased) to `size` = (H, W)."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    out = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8).numpy()


def read(path, image_size=None, allocate=None):
    """Decodes every image of a folder into one array.

    Every image is decoded to the first image's channel count (grayscale
    stays 1 channel) and resized to `image_size` when given; without it,
    all images must have the first image's size.

    Args:
      path: the folder.
      image_size: (height, width), or None.
      allocate: function (shape) -> a writable uint8 array of that shape to
        decode into (e.g. a memmap); default ``numpy.empty``.

    Returns:
      (images uint8 (N, H, W, C), labels int64 (N,), class names tuple).

    Raises:
      FolderError: as :func:`list_images`, an unreadable image, or images of
        different sizes without `image_size`.
    """
    classes, files, labels = list_images(path)
    first = decode(files[0])
    channels = first.shape[-1]
    size = tuple(image_size) if image_size else first.shape[:2]
    shape = (len(files),) + tuple(size) + (channels,)
    images = allocate(shape) if allocate else np.empty(shape, np.uint8)
    for i, f in enumerate(files):
        image = decode(f, channels) if i else first
        if image_size:
            image = resize(image, size)
        elif image.shape[:2] != size:
            raise FolderError(
                f"image {f} is {image.shape[0]}x{image.shape[1]} but {files[0]} is "
                f"{size[0]}x{size[1]}; give --image_size=HEIGHT,WIDTH to resize them all."
            )
        images[i] = image
    return images, labels, classes
