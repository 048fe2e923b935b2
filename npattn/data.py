"""The synthetic data set of the demo: find the plus, name its colour.

Every image is 3 x 32 x 32, float32, made in memory from a seed (nothing is downloaded):

* background noise ``N(0, 0.15^2)`` on every pixel and channel;
* a 5 x 5 plus-shaped *target* painted in one of the 4 colours of :data:`PALETTE`; its colour
  is the label (0 red, 1 green, 2 blue, 3 yellow);
* 4 *distractors*, one of each of the other shapes of :data:`SHAPES` (a 5 x 5 ring, a centred
  3 x 3 square, a T, an L, an X; four of the five, in random order), each in a colour drawn from
  the same palette, so the colours in an image do not give the label: the net has to find the
  plus.  No two of the five 5 x 5 boxes overlap, so no distractor touches the target.

Each image carries its target box ``(top, left, bottom, right)``, bottom and right exclusive.
:func:`box_masks` turns boxes into masks at an attention map's resolution (the supervision
target and the region for the lift and pointing scores of ``docs/attention-map.md``).

Everything here is NumPy on the host: the demo moves batches to its backend.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

from .checks import argument_error, check_int

__all__ = ["PALETTE", "COLOUR_NAMES", "SHAPES", "Dataset", "make_dataset", "make_splits",
           "box_masks", "batches"]

PALETTE = np.array([[1.0, 0.0, 0.0],   # red
                    [0.0, 1.0, 0.0],   # green
                    [0.0, 0.0, 1.0],   # blue
                    [1.0, 1.0, 0.0]],  # yellow
                   dtype=np.float32)
COLOUR_NAMES = ("red", "green", "blue", "yellow")

OBJECT = 5  # every shape lives in a 5 x 5 box


def _shape(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows], dtype=np.float32)


SHAPES = {
    "plus":   _shape(["..#..", "..#..", "#####", "..#..", "..#.."]),
    "ring":   _shape(["#####", "#...#", "#...#", "#...#", "#####"]),
    "square": _shape([".....", ".###.", ".###.", ".###.", "....."]),
    "T":      _shape(["#####", "..#..", "..#..", "..#..", "..#.."]),
    "L":      _shape(["#....", "#....", "#....", "#....", "#####"]),
    "X":      _shape(["#...#", ".#.#.", "..#..", ".#.#.", "#...#"]),
}
DISTRACTORS = ("ring", "square", "T", "L", "X")
N_DISTRACTORS = 4


class Dataset(NamedTuple):
    """An in-memory data set.

    Attributes
    ----------
    images : ndarray, shape (N, 3, S, S), float32
    labels : ndarray, shape (N,), int64
        The palette index of the plus's colour.
    boxes : ndarray, shape (N, 4), int64
        The plus's box ``(top, left, bottom, right)`` in pixels, bottom and right exclusive.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: np.ndarray) -> "Dataset":
        """The images at ``index`` (an integer array or a slice), as a new Dataset."""
        return Dataset(self.images[index], self.labels[index], self.boxes[index])


def _place(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """Top-left corners of ``count`` pairwise disjoint 5 x 5 boxes in a ``size`` x ``size`` image.

    Boxes are drawn one by one, each uniformly among the positions; a draw that overlaps an
    earlier box is redrawn.  In a small image the first boxes can leave no room for the
    next: after 200 failed draws in a row, all the boxes are drawn again.
    """
    corners: list[tuple[int, int]] = []
    failures = 0
    while len(corners) < count:
        y, x = (int(v) for v in rng.integers(0, size - OBJECT + 1, size=2))
        if all(abs(y - cy) >= OBJECT or abs(x - cx) >= OBJECT for cy, cx in corners):
            corners.append((y, x))
            failures = 0
        else:
            failures += 1
            if failures == 200:
                corners, failures = [], 0
    return np.array(corners, dtype=np.int64)


def make_dataset(n: int, seed: int | np.random.SeedSequence, size: int = 32,
                 noise: float = 0.15) -> Dataset:
    """Make ``n`` images from ``seed``; the same seed gives the same images.

    Parameters
    ----------
    n : int
        Number of images.
    seed : int or numpy.random.SeedSequence
    size : int
        Image height and width, at least 15 (room for five disjoint boxes).
    noise : float
        Standard deviation of the background noise.

    Returns
    -------
    Dataset
    """
    n = check_int("make_dataset", "n", n, minimum=0)
    size = check_int("make_dataset", "size", size, minimum=3 * OBJECT)
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 3, size, size), dtype=np.float32)
    labels = rng.integers(0, len(PALETTE), size=n).astype(np.int64)
    boxes = np.zeros((n, 4), dtype=np.int64)
    for i in range(n):
        corners = _place(rng, 1 + N_DISTRACTORS, size)
        kinds = rng.permutation(len(DISTRACTORS))[:N_DISTRACTORS]
        colours = np.concatenate([[labels[i]], rng.integers(0, len(PALETTE), N_DISTRACTORS)])
        names = ["plus"] + [DISTRACTORS[k] for k in kinds]
        for (y, x), name, colour in zip(corners, names, colours):
            images[i, :, y:y + OBJECT, x:x + OBJECT] = (PALETTE[colour][:, None, None]
                                                        * SHAPES[name])
        y, x = corners[0]
        boxes[i] = (y, x, y + OBJECT, x + OBJECT)
    images += rng.normal(0.0, noise, size=images.shape).astype(np.float32)
    return Dataset(images, labels, boxes)


def make_splits(seed: int, n_train: int = 4000, n_test: int = 1000,
                size: int = 32) -> tuple[Dataset, Dataset]:
    """The train and test sets of ``seed``, from two independent streams of it."""
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    return make_dataset(n_train, train_seq, size), make_dataset(n_test, test_seq, size)


def box_masks(boxes: np.ndarray, image_size: int, map_size: int) -> np.ndarray:
    """Masks at an attention map's resolution: 1 on each cell that the box touches, else 0.

    Cell ``(i, j)`` of a ``map_size`` x ``map_size`` map covers the pixels
    ``[i s, (i + 1) s) x [j s, (j + 1) s)`` with ``s = image_size / map_size``.

    Parameters
    ----------
    boxes : ndarray, shape (N, 4), int
        ``(top, left, bottom, right)``, bottom and right exclusive.
    image_size, map_size : int
        ``image_size`` must be a multiple of ``map_size``.

    Returns
    -------
    masks : ndarray, shape (N, 1, map_size, map_size), float32
    """
    if map_size < 1 or image_size % map_size:
        raise argument_error("box_masks", "map_size", f"a divisor of image_size {image_size}",
                             map_size)
    s = image_size // map_size
    start = np.arange(map_size) * s
    top, left, bottom, right = (np.asarray(boxes)[:, k, None] for k in range(4))
    rows = (start < bottom) & (start + s > top)        # (N, map_size)
    cols = (start < right) & (start + s > left)
    return (rows[:, None, :, None] & cols[:, None, None, :]).astype(np.float32)


def batches(n: int, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index arrays of consecutive batches over ``n`` items, shuffled when ``rng`` is given.

    The last batch may be smaller.
    """
    batch_size = check_int("batches", "batch_size", batch_size, minimum=1)
    order = np.arange(n) if rng is None else rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]
