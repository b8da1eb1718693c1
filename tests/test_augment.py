import numpy as np
import torch

from digitformer.data.augment import elastic_flow, random_affine, warp
from digitformer.data.grids import tile_2x2
from digitformer.inference.ensemble import tta_views
from digitformer.inference.readers import DIGIT_VIEWS as TTA_VIEWS


def digits(n=3, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_random_affine_is_seeded_and_zero_ranges_change_nothing():
    x = digits()
    a = random_affine(x, torch.Generator().manual_seed(1))
    b = random_affine(x, torch.Generator().manual_seed(1))
    c = random_affine(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    same = random_affine(x, torch.Generator().manual_seed(1), shift=0, rotate=0, scale=0)
    torch.testing.assert_close(same, x)


def test_warp_moves_whole_pixels_exactly_and_turns_about_the_centre():
    x = digits()
    right, up = warp(x, 0, 1.0, 1, 0), warp(x, 0, 1.0, 0, -1)
    torch.testing.assert_close(right[..., 1:], x[..., :-1])
    assert right[..., 0].abs().max() < 1e-5  # zeros come in at the edge, nothing wraps
    torch.testing.assert_close(up[..., :-1, :], x[..., 1:, :])
    dot = torch.zeros(1, 1, 28, 28)
    dot[..., 4:6, 13:15] = 1  # a 2x2 dot 9 pixels above the centre (13.5, 13.5)
    turned = warp(dot, 90, 1.0, 0, 0)[0, 0]  # a quarter turn: 9 pixels beside the centre
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = turned.sum()
    centre = ((turned * rows).sum() / mass, (turned * cols).sum() / mass)
    assert abs(centre[0] - 13.5) < 0.1 and abs(abs(centre[1] - 13.5) - 9) < 0.1


def test_tta_views_move_each_digit_of_a_grid_on_its_own():
    quads = digits(8).reshape(2, 4, 28, 28)
    grids = tile_2x2(quads).unsqueeze(1)  # (2, 1, 56, 56)
    views = tta_views(grids)
    assert len(views) == len(TTA_VIEWS) and torch.equal(views[0], grids)
    for view, (degrees, dx, dy) in zip(views[1:], TTA_VIEWS[1:]):
        alone = warp(quads.reshape(8, 1, 28, 28), degrees, 1.0, dx, dy)
        torch.testing.assert_close(view, tile_2x2(alone.reshape(2, 4, 28, 28)).unsqueeze(1))
    moved_right = views[TTA_VIEWS.index((0, 1, 0))]
    assert moved_right[..., 28].abs().max() < 1e-5  # the right digits' first column: no spill
    assert len(set(TTA_VIEWS)) == len(TTA_VIEWS)
    (two_right,) = tta_views(grids, views=[(0, 2, 0)])  # other views, as benchmarks/tta_views.py
    alone = warp(quads.reshape(8, 1, 28, 28), 0, 1.0, 2, 0)
    torch.testing.assert_close(two_right, tile_2x2(alone.reshape(2, 4, 28, 28)).unsqueeze(1))


def test_elastic_distortion_is_seeded_smooth_and_of_the_asked_strength():
    x = digits(64)
    a = random_affine(x, torch.Generator().manual_seed(1), elastic=1.5)
    b = random_affine(x, torch.Generator().manual_seed(1), elastic=1.5)
    affine = random_affine(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, affine)
    flow = elastic_flow(64, 28, 28, 1.5, 4.0, torch.Generator().manual_seed(3))
    assert flow.shape == (64, 2, 28, 28)
    assert abs(flow.std().item() - 1.5) < 0.15  # the asked deviation, in pixels
    edge, inner = flow[..., :, :3].std(), flow[..., :, 12:15].std()
    assert abs(edge / inner - 1) < 0.1  # as strong at the border as inside
    # smooth: neighbouring pixels move nearly together (uniform noise: ~2/3 of its mean size)
    assert (flow[..., 1:] - flow[..., :-1]).abs().mean() / flow.abs().mean() < 0.2
    # a uniform flow of one pixel is a one-pixel shift
    shifted = warp(
        x, 0, 1.0, 0, 0, torch.cat([-torch.ones(64, 1, 28, 28), torch.zeros(64, 1, 28, 28)], 1)
    )
    torch.testing.assert_close(shifted, warp(x, 0, 1.0, 1, 0))


def test_random_stroke_thickens_or_thins_each_picked_digit():
    from digitformer.data.augment import random_stroke

    digits = torch.zeros(64, 1, 28, 28)
    digits[:, :, 8:20, 12:15] = 1.0  # a stroke 3 pixels wide
    out = random_stroke(digits, torch.Generator().manual_seed(0), p=1.0)
    ink = out.sum((1, 2, 3))
    thick, thin = ink > digits[0].sum(), ink < digits[0].sum()
    assert (thick | thin).all() and thick.any() and thin.any()
    assert out[thick][0, 0, 7:21, 11:16].sum() == 14 * 5  # a pixel more on every side
    assert out[thin][0, 0].sum() == 11 * 2  # half a pixel less on each side
    again = random_stroke(digits, torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(out, again)


def test_random_stroke_off_changes_nothing_and_draws_nothing():
    from digitformer.data.augment import random_stroke

    digits = torch.rand(8, 1, 28, 28)
    gen = torch.Generator().manual_seed(3)
    assert random_stroke(digits, gen, p=0.0) is digits
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(3).get_state())


def test_lower_resolution_spreads_fine_detail_keeps_the_ink_and_touches_its_share():
    """A digit seen at 9-16 pixels a frame: a one-pixel stroke spreads to its neighbours, the
    brightest ink and the digit's place are kept, and only the chosen share of a batch is
    touched."""
    from digitformer.data.augment import random_resolution

    images = torch.zeros(200, 1, 28, 28)
    images[:, :, 6:22, 13] = 1.0  # a 1-pixel stroke: pure fine detail across
    images[:, :, 6, 9:19] = 0.8
    out = random_resolution(images, torch.Generator().manual_seed(0), 0.5)
    changed = (out != images).flatten(1).any(1)
    assert 0.35 < changed.float().mean() < 0.65
    assert torch.equal(out[~changed], images[~changed])
    assert torch.allclose(out.amax((1, 2, 3)), torch.ones(200))  # the brightest ink kept
    low = out[changed]
    assert (low[:, :, 6:22, 12] > 0.05).float().mean() > 0.9  # the stroke spread to its side
    assert (low[:, :, 6:22, 13] < 1).any()  # and lost its peak in places
    ys = torch.arange(28.0).view(1, 1, 28, 1)
    centre = lambda x: (x * ys).sum((1, 2, 3)) / x.sum((1, 2, 3))  # noqa: E731
    assert (centre(low) - centre(images[:1])).abs().max() < 1.0  # the digit stays where it was
    assert torch.equal(random_resolution(images, torch.Generator(), 0.0), images)
    again = random_resolution(images, torch.Generator().manual_seed(0), 0.5)
    assert torch.equal(again, out)  # seeded


def test_a_slant_leans_the_top_right_and_a_width_narrows_and_neither_unasked_draws_anything():
    """A vertical bar slanted by 20 degrees leans by tan(20) of its height, its top to the
    right; a width of 0.6 makes a level bar 0.6 as long; and a recipe without either draws the
    same maps it drew before they existed (the same stream of random numbers)."""
    import math

    bar = torch.zeros(1, 1, 28, 28)
    bar[..., 4:24, 13:15] = 1.0
    leaned = warp(bar, 0.0, 1.0, 0.0, 0.0, None, 20.0, 1.0)[0, 0]
    cols = torch.arange(28, dtype=torch.float32)

    def centre(rows):
        ink = leaned[rows]
        return float((ink.sum(0) * cols).sum() / ink.sum())

    lean = centre(slice(4, 8)) - centre(slice(20, 24))  # the top's centre minus the bottom's
    assert abs(lean - math.tan(math.radians(20)) * 16) < 1.0
    level = torch.zeros(1, 1, 28, 28)
    level[..., 13:15, 4:24] = 1.0
    narrow = warp(level, 0.0, 1.0, 0.0, 0.0, None, 0.0, 0.6)[0, 0]
    assert abs(float(narrow.sum()) / float(level.sum()) - 0.6) < 0.05
    digits = torch.rand(8, 1, 28, 28)
    unasked = torch.Generator().manual_seed(3)
    random_affine(digits, unasked, rotate=15.0)
    four_each = torch.Generator().manual_seed(3)
    torch.rand(8, 4, generator=four_each)  # what it drew before: shift, rotation, scale
    assert torch.equal(unasked.get_state(), four_each.get_state())
    asked = torch.Generator().manual_seed(3)
    random_affine(digits, asked, rotate=15.0, shear=20.0, aspect=0.4)
    torch.rand(8, 2, generator=four_each)  # ...then a slant and a width for each
    assert torch.equal(asked.get_state(), four_each.get_state())


def test_flagged_ones_add_a_flag_down_left_from_the_top_and_sometimes_a_foot(mnist_dir):
    from digitformer.data.augment import flagged_ones
    from digitformer.data.mnist import load_split
    from digitformer.utils.tensors import to_float

    digits = load_split(mnist_dir, "train")
    ones = to_float(torch.from_numpy(digits.images[digits.labels == 1][:60]))
    out = flagged_ones(ones, torch.Generator().manual_seed(0))
    assert out.shape == ones.shape and out.max() <= 1.0
    assert (out >= ones).all()  # the 1 itself is kept, ink only added
    flags = feet = 0
    for before, after in zip(ones[:, 0].numpy(), out[:, 0].numpy()):
        added = (after - before) > 0.5
        if not added.any():
            continue  # a 1 leaning left is kept plain
        rows = np.nonzero((before > 0.5).any(1))[0]
        top, bottom = rows[0], rows[-1]
        ys, xs = np.nonzero(added)
        upper = ys < top + (bottom - top) / 2
        top_x = np.nonzero(before[top] > 0.5)[0].mean()
        flags += upper.any() and xs[upper].mean() < top_x  # to the left of the stroke's top
        feet += (ys >= bottom - 2).sum() >= 4 and np.ptp(xs[ys >= bottom - 2]) >= 4
    assert flags >= 45  # most of 60 (a few lean left and stay plain)
    assert 10 <= feet <= 40  # two in five


def test_with_flagged_ones_redraws_only_a_share_of_the_ones(mnist_dir):
    from digitformer.data.augment import with_flagged_ones
    from digitformer.data.mnist import load_split
    from digitformer.utils.tensors import to_float

    digits = load_split(mnist_dir, "train")
    images = to_float(torch.from_numpy(digits.images[:400]))
    labels = torch.from_numpy(digits.labels[:400]).long()
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert with_flagged_ones(images, labels, gen, 0.0) is images
    assert torch.equal(gen.get_state(), state)  # p = 0 draws nothing: old runs stay the same
    out = with_flagged_ones(images, labels, gen, 0.5)
    changed = (out != images).flatten(1).any(1)
    assert not changed[labels != 1].any()
    share = changed[labels == 1].float().mean()
    assert 0.25 < share < 0.65
