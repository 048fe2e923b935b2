"""The synthetic data set: reproducible, the plus where its box says, no overlaps, masks by loops.

The data set is made in NumPy on the host; the one test that takes ``backend`` moves a batch
to each library and scores it with a loss, as the demo does.
"""

from __future__ import annotations

import numpy as np
import pytest

from npattn import data
from npattn.data import PALETTE, SHAPES, batches, box_masks, make_dataset, make_splits
from npattn.losses import bce_forward


def test_same_seed_same_images_and_splits_differ():
    a, b, c = make_dataset(6, 3), make_dataset(6, 3), make_dataset(6, 4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.images, c.images)
    train, test = make_splits(7, n_train=5, n_test=4)
    assert len(train) == 5 and len(test) == 4
    assert not np.array_equal(train.images[:4], test.images)


def test_shapes_dtypes_and_ranges():
    ds = make_dataset(20, 0)
    assert ds.images.shape == (20, 3, 32, 32) and ds.images.dtype == np.float32
    assert ds.labels.dtype == np.int64 and set(ds.labels) <= {0, 1, 2, 3}
    top, left, bottom, right = ds.boxes.T
    assert (bottom - top == 5).all() and (right - left == 5).all()
    assert top.min() >= 0 and left.min() >= 0 and bottom.max() <= 32 and right.max() <= 32


def test_noise_free_images_hold_one_plus_in_the_label_colour_and_four_other_shapes():
    ds = make_dataset(40, 1, noise=0.0)
    sizes = {name: int(mask.sum()) for name, mask in SHAPES.items() if name != "plus"}
    totals = {9 + sum(sizes.values()) - left_out for left_out in sizes.values()}
    for img, label, (t, l, b, r) in zip(ds.images, ds.labels, ds.boxes):
        patch = img[:, t:b, l:r]
        np.testing.assert_array_equal(patch, PALETTE[label][:, None, None] * SHAPES["plus"])
        painted = (img != 0).any(axis=0)
        # one plus and four distinct distractors, nothing overlapping: their pixel counts add up
        assert int(painted.sum()) in totals


def test_plus_visible_under_noise_and_noise_level():
    ds = make_dataset(50, 2)
    clean = make_dataset(50, 2, noise=0.0)
    noise = ds.images - clean.images
    assert abs(float(noise.std()) - 0.15) < 0.005 and abs(float(noise.mean())) < 0.005
    plus = SHAPES["plus"].astype(bool)
    for img, label, (t, l, b, r) in zip(ds.images, ds.labels, ds.boxes):
        colour = img[:, t:b, l:r][:, plus].mean(axis=1)
        assert np.abs(colour - PALETTE[label]).max() < 0.3


def test_colour_alone_does_not_give_the_label():
    """In most images some distractor wears a colour other than the label's."""
    ds = make_dataset(100, 5, noise=0.0)
    other = [any(((img[:, p] != 0).any() and not np.array_equal(img[:, p], PALETTE[label]))
                 for p in zip(*np.nonzero((img != 0).any(axis=0))))
             for img, label in zip(ds.images, ds.labels)]
    assert np.mean(other) > 0.8


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("size", [15, 16, 20])
def test_placed_boxes_are_disjoint_even_when_tight(seed, size):
    """At size 15 five boxes barely fit: placement restarts when the first boxes leave no room."""
    corners = data._place(np.random.default_rng(seed), 5, size)
    for i in range(5):
        for j in range(i):
            dy, dx = np.abs(corners[i] - corners[j])
            assert dy >= 5 or dx >= 5


def test_box_masks_against_loops():
    boxes = np.array([[14, 12, 19, 17], [0, 0, 5, 5], [27, 24, 32, 29], [3, 8, 8, 13]])
    masks = box_masks(boxes, 32, 8)
    assert masks.shape == (4, 1, 8, 8) and masks.dtype == np.float32
    for n, (t, l, b, r) in enumerate(boxes):
        for i in range(8):
            for j in range(8):
                touched = any(t <= y < b and l <= x < r
                              for y in range(4 * i, 4 * i + 4) for x in range(4 * j, 4 * j + 4))
                assert masks[n, 0, i, j] == float(touched)
    np.testing.assert_array_equal(masks[0, 0, 3:5, 3:5], np.ones((2, 2)))
    # a 5-pixel side always meets exactly two 4-pixel cells
    np.testing.assert_array_equal(masks.sum(axis=(1, 2, 3)), [4, 4, 4, 4])
    with pytest.raises(ValueError, match="box_masks: argument 'map_size' expected a divisor"):
        box_masks(boxes, 32, 5)


def test_batches_cover_everything_once():
    plain = list(batches(10, 4))
    assert [len(b) for b in plain] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(plain), np.arange(10))
    shuffled = list(batches(10, 4, np.random.default_rng(0)))
    again = list(batches(10, 4, np.random.default_rng(0)))
    assert sorted(np.concatenate(shuffled).tolist()) == list(range(10))
    assert all(np.array_equal(a, b) for a, b in zip(shuffled, again))
    with pytest.raises(ValueError, match="batches: argument 'batch_size' expected an int >= 1"):
        list(batches(10, 0))


def test_a_batch_on_each_backend(backend):
    ds = make_dataset(4, 0).subset(np.array([2, 0]))
    masks = backend.asarray(box_masks(ds.boxes, 32, 8))
    assert backend.to_numpy(masks).sum() >= 8
    half = backend.asarray(np.full((2, 1, 8, 8), 0.5, dtype=np.float32))
    loss, _ = bce_forward(half, masks)
    np.testing.assert_allclose(backend.to_numpy(loss), np.log(2.0), rtol=1e-6)
