"""DiffAugment's three operations against the reference code's ranges (Zhao et al. 2020, `DiffAugment_pytorch.py`):

- colour: brightness + U[-0.5, 0.5), saturation x U[0, 2) around the per-pixel channel mean, contrast x U[0.5, 1.5)
  around the per-image mean;
- translation: whole-pixel shifts of up to 1/8 of the side (rounded), both ways, filled with 0;
- cutout: a square of half the side at a uniform centre, allowed to reach over the border, filled with 0.

A wrong offset, factor, direction or size changes the values or ranges these tests check.
"""

from __future__ import annotations

import pytest
import torch

from benchmark.augment import colour, cutout, diff_augment, translation
from benchmark.errors import BenchmarkError


def uniform_draws(seed: int, n: int, count: int) -> list[torch.Tensor]:
    rng = torch.Generator().manual_seed(seed)
    return [torch.rand((n, 1, 1, 1), generator=rng) for _ in range(count)]


def test_colour_applies_brightness_saturation_and_contrast_with_the_reference_ranges():
    images = torch.rand((4, 3, 6, 6), generator=torch.Generator().manual_seed(1)) * 2 - 1
    brightness, saturation, contrast = uniform_draws(7, 4, 3)
    expected = images + (brightness - 0.5)
    channel_mean = expected.mean(dim=1, keepdim=True)
    expected = (expected - channel_mean) * (saturation * 2) + channel_mean
    image_mean = expected.mean(dim=(1, 2, 3), keepdim=True)
    expected = (expected - image_mean) * (contrast + 0.5) + image_mean
    torch.testing.assert_close(colour(images, torch.Generator().manual_seed(7)), expected)


def test_brightness_and_contrast_ranges_over_many_draws():
    """A constant grey image only moves by the brightness offset: its range is [-0.5, 0.5). An image of +1 and -1
    pixels keeps its deviations from the mean, scaled by the contrast factor: its range is [0.5, 1.5)."""
    rng = torch.Generator().manual_seed(0)
    offsets = colour(torch.zeros(4000, 1, 2, 2), rng).flatten(1)
    assert torch.allclose(offsets, offsets[:, :1])  # a constant image stays constant
    assert -0.5 <= offsets.min() < -0.49 and 0.49 < offsets.max() < 0.5 and abs(offsets.mean()) < 0.02
    checkerboard = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).expand(4000, 1, 2, 2)
    out = colour(checkerboard, rng)
    factors = (out[:, 0, 0, 0] - out[:, 0, 0, 1]) / 2
    assert 0.5 <= factors.min() < 0.51 and 1.49 < factors.max() < 1.5


def shift_of(original: torch.Tensor, moved: torch.Tensor, reach: int) -> tuple[int, int]:
    """The (dy, dx) for which `moved` is `original` shifted by (dy, dx) with zero fill; exactly one must fit."""
    fits = []
    height, width = original.shape[-2:]
    for dy in range(-reach - 2, reach + 3):
        for dx in range(-reach - 2, reach + 3):
            expected = torch.zeros_like(original)
            rows, cols = slice(max(dy, 0), height + min(dy, 0)), slice(max(dx, 0), width + min(dx, 0))
            source_rows, source_cols = slice(max(-dy, 0), height + min(-dy, 0)), slice(max(-dx, 0), width + min(-dx, 0))
            expected[..., rows, cols] = original[..., source_rows, source_cols]
            if torch.equal(expected, moved):
                fits.append((dy, dx))
    assert len(fits) == 1, fits
    return fits[0]


def test_translation_shifts_whole_pixels_both_ways_up_to_an_eighth_of_the_side():
    """28 px: shifts of -4..4 (28 / 8 = 3.5, rounded to 4) in each direction, every value of each seen."""
    original = torch.arange(1, 28 * 28 + 1, dtype=torch.float32).reshape(1, 1, 28, 28)
    moved = translation(original.expand(1500, 1, 28, 28), torch.Generator().manual_seed(0))
    seen = {shift_of(original[0], image, reach=4) for image in moved[:400]}
    # Exactly the drawn shifts, in their direction: content moves down by dy and right by dx.
    draws = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(-4, 5, (1500, 1), generator=draws), torch.randint(-4, 5, (1500, 1), generator=draws)
    assert [shift_of(original[0], image, reach=4) for image in moved[:50]] == list(zip(dy[:50, 0].tolist(), dx[:50, 0].tolist()))
    assert {dy for dy, _ in seen} == set(range(-4, 5)) and {dx for _, dx in seen} == set(range(-4, 5))
    # Over all draws: the share of images with a shifted top-left corner pixel has the size a uniform shift gives.
    untouched = (moved[:, 0, 0, 0] == original[0, 0, 0, 0]).double().mean()
    assert untouched == pytest.approx(1 / 81, abs=0.01)


def test_translation_of_a_non_square_image_uses_each_side():
    original = torch.arange(1, 16 * 40 + 1, dtype=torch.float32).reshape(1, 1, 16, 40)
    moved = translation(original.expand(300, 1, 16, 40), torch.Generator().manual_seed(1))
    shifts = [shift_of(original[0], image, reach=5) for image in moved[:120]]
    assert max(abs(dy) for dy, _ in shifts) == 2 and max(abs(dx) for _, dx in shifts) == 5  # 16 / 8 and 40 / 8


def zero_extent(mask: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = torch.nonzero(mask.any(dim=1)).flatten(), torch.nonzero(mask.any(dim=0)).flatten()
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def cut_extents(size: int, draws: int, seed: int) -> list[tuple[int, int, int, int]]:
    """The zeroed rectangle of each cutout draw on random positive images; everything else must be unchanged."""
    images = torch.rand((draws, 1, size, size), generator=torch.Generator().manual_seed(9)) + 0.5
    out = cutout(images, torch.Generator().manual_seed(seed))
    extents = []
    for image, original in zip(out[:, 0], images[:, 0]):
        zeros = image == 0
        top, bottom, left, right = zero_extent(zeros)
        assert zeros[top:bottom, left:right].all() and int(zeros.sum()) == (bottom - top) * (right - left)  # one rectangle
        assert torch.equal(image[~zeros], original[~zeros])
        extents.append((top, bottom, left, right))
    return extents


def expected_spans(size: int, cut: int) -> dict[tuple[int, int], float]:
    """Share of each visible (start, stop) of the square along one side: centre uniform on 0..size (both ends
    included when the cut is even, as in the reference), square [centre - cut // 2, centre - cut // 2 + cut)."""
    centres = range(size + 1 - cut % 2)
    spans = [(max(c - cut // 2, 0), min(c - cut // 2 + cut, size)) for c in centres]
    return {span: spans.count(span) / len(spans) for span in set(spans)}


@pytest.mark.parametrize(("size", "cut"), [(28, 14), (30, 15), (29, 15)])
def test_cutout_zeroes_one_square_of_half_the_side_at_a_uniform_centre(size, cut):
    """A square of half the side, rounded (28 px: 14; 30 px: 15; 29 px: 15), centred uniformly, reaching over the border: the visible
    rows and columns of the 3,000 draws follow the shares that uniform centres give, within 0.02."""
    extents = cut_extents(size, 3000, seed=0)
    for spans in ([(top, bottom) for top, bottom, _, _ in extents], [(left, right) for _, _, left, right in extents]):
        expected = expected_spans(size, cut)
        assert set(spans) == set(expected)
        for span, share in expected.items():
            assert spans.count(span) / len(spans) == pytest.approx(share, abs=0.02), span


def test_the_policy_runs_in_order_and_unknown_operations_are_refused():
    images = torch.rand((3, 1, 8, 8), generator=torch.Generator().manual_seed(2))
    rng = torch.Generator().manual_seed(5)
    expected = cutout(translation(images, rng), rng)  # one generator serves the operations in turn
    got = diff_augment(images, ("translation", "cutout"), torch.Generator().manual_seed(5))
    assert torch.equal(got, expected) and got.is_contiguous()
    with pytest.raises(BenchmarkError, match="DiffAugment operation 'flip' is unknown"):
        diff_augment(images, ("flip",), rng)
