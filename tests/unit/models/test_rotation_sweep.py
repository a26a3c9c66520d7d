"""RotationSweep maps boxes found in turned images back to the original: checked with a detector whose
answer is known independently (the bounding box of the red pixels), and merges duplicates."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facefd.models.faces import Box, RotationSweep


def red_pixels(image: Image.Image) -> list[Box]:
    """The bounding box of the pure-red pixels: a detector whose truth needs no model."""
    array = np.asarray(image.convert("RGB")).astype(int)
    ys, xs = np.nonzero((array[..., 0] > 200) & (array[..., 1] < 60) & (array[..., 2] < 60))
    return [Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)] if len(xs) else []


def upright_only(image: Image.Image) -> list[Box]:
    """Finds the red square only when it lies in the upper half of what it is shown (a turned image)."""
    boxes = red_pixels(image)
    return [b for b in boxes if b.bottom <= image.height / 2]


@pytest.mark.parametrize("angle", [90, -90, 180, 30])
def test_a_box_found_in_a_turned_image_maps_back(angle):
    image = Image.new("RGB", (120, 80), (0, 0, 0))
    image.paste((255, 0, 0), (10, 50, 34, 74))  # red square at left 10, top 50, right 34, bottom 74
    sweep = RotationSweep(red_pixels, angles=(angle,))
    (box,) = sweep(image)
    if angle % 90 == 0:  # a right-angle turn maps a box onto a box: within the one pixel of resampling
        assert np.allclose(box.as_list(), [10, 50, 34, 74], atol=1)
    else:  # the bounding box (back in the original) of the turned square's bounding box holds the square
        assert box.left <= 10 and box.top <= 50 and box.right >= 34 and box.bottom >= 74
        grow = np.cos(np.deg2rad(30)) + np.sin(np.deg2rad(30))  # each turn of a square grows its box by this
        assert max(box.right - box.left, box.bottom - box.top) <= 24 * grow**2 + 2


def test_sweep_finds_what_only_a_turn_shows_and_merges_duplicates():
    image = Image.new("RGB", (120, 80), (0, 0, 0))
    image.paste((255, 0, 0), (10, 50, 34, 74))  # lower half: the upright pass misses it
    assert upright_only(image) == []
    boxes = RotationSweep(upright_only, angles=(0, 180))(image)
    assert len(boxes) == 1 and np.allclose(boxes[0].as_list(), [10, 50, 34, 74], atol=1)
    both = RotationSweep(red_pixels, angles=(0, 90, -90, 180))(image)
    assert len(both) == 1  # four passes, one face
