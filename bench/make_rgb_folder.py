"""A procedural RGB image folder: 10 classes of shapes and textures on clutter.

    PYTHONPATH=. python bench/make_rgb_folder.py --out=/tmp/shapes32

Writes ``OUT/<class>/<i>.png`` (the layout ``--dataset=dir:OUT`` reads), the
same bytes for the same ``--seed``, ``--per_class``, ``--size`` and
difficulty flags. Each image is one object of its class, with a random
colour, position, size and rotation, on a cluttered background: a random
two-colour gradient, ``--clutter`` distractors (lines, ellipses, bars, some
drawn over the object), pixel noise of ``--noise`` (standard deviation, out
of 255) and, with probability ``--fade``, an object whose colour is pulled
towards the background.

Classes (sub-folder names, in class order):

* shapes, filled with one colour: circle, square, triangle, star, cross,
  ring (an annulus);
* textures, a round or square patch of one colour pattern: stripes,
  checker, dots;
* blob: a soft-edged Gaussian spot shaded from one colour to another.

The defaults (4,000 images at 32 x 32 with ``--per_class=400``) are the set
``kd_keras/configs/rgb_folder.flags`` and ``docs/rgb_folder.md`` use; their
clutter and noise were tuned so that the small ResNet of
``bench/make_rgb_teacher.py`` reaches about 85% on the pipeline's
validation split, not 99%. About 10 s on a 2-core CPU. Uses numpy and the
standard library only (PNG written with zlib).
"""

import os
import struct
import zlib

import numpy as np
from absl import app, flags

CLASSES = (
    "blob",
    "checker",
    "circle",
    "cross",
    "dots",
    "ring",
    "square",
    "star",
    "stripes",
    "triangle",
)
# Rendering at this many sub-pixels per pixel (each way) anti-aliases edges.
SUPERSAMPLE = 2

_OUT = flags.DEFINE_string("out", None, "Folder to write (one sub-folder per class).")
_PER_CLASS = flags.DEFINE_integer("per_class", 400, "Images per class.", lower_bound=1)
_SIZE = flags.DEFINE_integer("size", 32, "Image height and width, pixels.", lower_bound=8)
_SEED = flags.DEFINE_integer("seed", 0, "Seed: the same seed writes the same files.")
_CLUTTER = flags.DEFINE_integer("clutter", 4, "Distractors per image.", lower_bound=0)
_NOISE = flags.DEFINE_float("noise", 10.0, "Pixel noise standard deviation (of 255).")
_FADE = flags.DEFINE_float(
    "fade",
    0.15,
    "Share of objects whose colour is pulled towards the background.",
    lower_bound=0,
    upper_bound=1,
)


def _rotated(grid, cx, cy, radius, angle):
    """Coordinates (u, v) of `grid` in the object's frame: centred on (cx, cy),
    rotated by `angle`, in units of `radius`."""
    x, y = grid
    dx, dy = (x - cx) / radius, (y - cy) / radius
    c, s = np.cos(angle), np.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def _patch(u, v, round_patch):
    """The area a texture fills: a disc or a square of radius 1."""
    return (u * u + v * v < 1) if round_patch else (np.maximum(abs(u), abs(v)) < 0.85)


def shape_alpha(name, u, v, rng):
    """The coverage (0..1) of class `name` at object coordinates (u, v)."""
    rho = np.hypot(u, v)
    phi = np.arctan2(v, u)
    if name == "circle":
        return (rho < 1).astype(float)
    if name == "square":
        return (np.maximum(abs(u), abs(v)) < 0.8).astype(float)
    if name == "triangle":
        inside = np.ones_like(u, bool)
        for k in range(3):
            a = np.pi / 2 + 2 * np.pi * k / 3
            inside &= u * np.cos(a) + v * np.sin(a) > -0.5
        return inside.astype(float)
    if name == "star":
        t = (phi * 5 / (2 * np.pi)) % 1
        return (rho < 0.42 + 0.58 * abs(2 * t - 1) ** 2).astype(float)
    if name == "cross":
        arm = rng.uniform(0.22, 0.32)
        return (((abs(u) < arm) & (abs(v) < 0.95)) | ((abs(v) < arm) & (abs(u) < 0.95))).astype(
            float
        )
    if name == "ring":
        inner = rng.uniform(0.45, 0.65)
        return ((rho < 1) & (rho > inner)).astype(float)
    round_patch = rng.random() < 0.5
    patch = _patch(u, v, round_patch)
    freq = rng.uniform(2.2, 3.4)
    if name == "stripes":
        return (patch & (np.sin(np.pi * freq * u) > 0)).astype(float)
    if name == "checker":
        return (patch & (np.sin(np.pi * freq * u) * np.sin(np.pi * freq * v) > 0)).astype(float)
    if name == "dots":
        fu, fv = (u * freq / 2) % 1 - 0.5, (v * freq / 2) % 1 - 0.5
        return (patch & (fu * fu + fv * fv < 0.09)).astype(float)
    if name == "blob":
        return np.exp(-2.5 * rho * rho) * (rho < 1.6)
    raise ValueError(f"unknown class {name!r}; classes: {', '.join(CLASSES)}.")


def _colour(rng):
    return rng.uniform(0, 255, 3)


def _paint(image, alpha, colour):
    """Composites `colour` over `image` (H, W, 3 float) with coverage `alpha`."""
    a = alpha[..., None]
    image *= 1 - a
    image += a * colour


def _distractor(image, grid, n, rng):
    """One random distractor: a line, an ellipse or a bar, partly transparent."""
    kind = rng.integers(3)
    cx, cy = rng.uniform(0, n, 2)
    angle = rng.uniform(0, np.pi)
    if kind == 0:  # A thin line across part of the image.
        u, v = _rotated(grid, cx, cy, n / 2, angle)
        alpha = (abs(v) < rng.uniform(0.02, 0.05)) & (abs(u) < rng.uniform(0.3, 1.0))
    elif kind == 1:  # A small ellipse.
        u, v = _rotated(grid, cx, cy, n * rng.uniform(0.04, 0.12), angle)
        alpha = u * u + (v * rng.uniform(1, 2.5)) ** 2 < 1
    else:  # A short bar.
        u, v = _rotated(grid, cx, cy, n * rng.uniform(0.05, 0.15), angle)
        alpha = (abs(u) < 1) & (abs(v) < rng.uniform(0.15, 0.4))
    _paint(image, alpha * rng.uniform(0.4, 0.9), _colour(rng))


def render(name, size, rng, clutter=4, noise=10.0, fade=0.15):
    """One image of class `name` as a uint8 array (size, size, 3).

    Args:
      name: one of CLASSES.
      size: height and width in pixels.
      rng: a ``numpy.random.Generator`` (its state decides the whole image).
      clutter: distractors drawn (about a third of them over the object).
      noise: standard deviation of the Gaussian pixel noise, of 255.
      fade: probability that the object's colour is pulled towards the
        background's.
    """
    n = size * SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / SUPERSAMPLE
    grid = np.meshgrid(coords, coords)
    # Background: a linear gradient between two colours.
    c0, c1 = _colour(rng), _colour(rng)
    ramp_angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(ramp_angle) * grid[0] + np.sin(ramp_angle) * grid[1]) / size
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    image = c0 + ramp[..., None] * (c1 - c0)
    over = rng.integers(0, clutter // 3 + 1) if clutter else 0
    for _ in range(clutter - over):
        _distractor(image, grid, size, rng)
    # The object.
    radius = size * rng.uniform(0.2, 0.36)
    cx, cy = rng.uniform(radius * 0.8, size - radius * 0.8, 2)
    u, v = _rotated(grid, cx, cy, radius, rng.uniform(0, 2 * np.pi))
    alpha = shape_alpha(name, u, v, rng)
    colour = _colour(rng)
    if rng.random() < fade:
        colour = 0.5 * colour + 0.5 * (c0 + c1) / 2
    if name == "blob":  # Shaded from one colour to another across the spot.
        second = _colour(rng)
        shade = np.clip((u + 1.6) / 3.2, 0, 1)[..., None]
        a = alpha[..., None]
        image = image * (1 - a) + a * (colour + shade * (second - colour))
    else:
        _paint(image, alpha, colour)
    for _ in range(over):
        _distractor(image, grid, size, rng)
    image = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    image += rng.normal(0, noise, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def png_bytes(image):
    """A uint8 (H, W, 3) array as the bytes of an RGB PNG file."""
    h, w, _ = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(h))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def write_folder(out, per_class=400, size=32, seed=0, clutter=4, noise=10.0, fade=0.15):
    """Writes ``out/<class>/<i>.png`` for every class of CLASSES.

    Image i of class k is drawn from its own generator, seeded by (`seed`,
    k, i): the files do not depend on the order they are written in, and a
    larger `per_class` adds images without changing the first ones.

    Returns:
      The number of files written.
    """
    for k, name in enumerate(CLASSES):
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([seed, k, i])
            image = render(name, size, rng, clutter, noise, fade)
            with open(os.path.join(folder, f"{i:05d}.png"), "wb") as f:
                f.write(png_bytes(image))
    return per_class * len(CLASSES)


def main(argv):
    del argv
    if not _OUT.value:
        raise app.UsageError("--out is required: the folder to write.")
    count = write_folder(
        _OUT.value,
        _PER_CLASS.value,
        _SIZE.value,
        _SEED.value,
        _CLUTTER.value,
        _NOISE.value,
        _FADE.value,
    )
    print(f"{count} images ({len(CLASSES)} classes, {_SIZE.value}x{_SIZE.value}) in {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
