"""The `explain` picture: the weight map over the image, and below it a colour bar with its
scale and a legend saying what low and high HeW weights mean."""

from __future__ import annotations

import numpy as np
import pytest

from heatsearch.app.cli import main
from heatsearch.app.explain import LEGEND_HIGH, LEGEND_LOW, colormap, explain_image, weight_overlay

PIL = pytest.importorskip("PIL", reason="pictures are drawn with Pillow")


class FakeExtractor:
    """A 4 x 6 feature map whose right half repeats one feature (bursty: low HeW weights)."""

    def feature_map(self, image, bbox=None):
        rng = np.random.default_rng(1)
        fmap = rng.random((4, 6, 16)).astype(np.float32)
        fmap[:, 3:] = fmap[0, 3]
        return fmap


def picture(tmp_path, **kwargs):
    from PIL import Image

    image = np.full((60, 90, 3), 128, np.uint8)
    out = tmp_path / "w.png"
    weights = explain_image(image, str(out), extractor=FakeExtractor(), **kwargs)
    with Image.open(out) as im:
        return weights, np.asarray(im.convert("RGB"))


def test_picture_has_a_colour_bar_below_the_image(tmp_path):
    weights, pic = picture(tmp_path)
    assert weights.shape == (4, 6)
    assert pic.shape[0] > 60 + 60 and pic.shape[1] >= 90  # the legend is below, readable width
    # The bar: a row in the legend going from the map's darkest to its brightest colour.
    rows = [r for r in range(60, pic.shape[0]) if np.array_equal(pic[r, 10], colormap(np.zeros((1, 1)))[0, 0])]
    assert rows, "no colour bar starting with the darkest colour"
    bar = pic[rows[0], 10:-10].astype(int)
    brightness = bar.sum(axis=1)
    assert brightness[0] < 50 and brightness[-1] > 600 and np.all(np.diff(brightness[::20]) >= -30)
    # Text (dark pixels) above and below the bar: the scale's numbers and the legend.
    below = pic[rows[-1] + 3:]
    assert (below.sum(axis=2) < 200).sum() > 200


def test_a_fixed_scale_makes_pictures_comparable():
    image = np.zeros((4, 4, 3), np.uint8)
    w = np.array([[1.0, 2.0], [3.0, 4.0]])
    own = weight_overlay(image, w, alpha=1.0)
    fixed = weight_overlay(image, w, alpha=1.0, scale=(0.0, 8.0))
    assert own[0, 0].sum() < 20 and own[-1, -1].sum() > 600   # own scale: lowest dark, highest bright
    assert fixed[-1, -1].sum() < own[-1, -1].sum()              # 4 of 8: mid-scale
    np.testing.assert_array_equal(weight_overlay(image, w * 0 + 9, alpha=1.0, scale=(0.0, 8.0))[0, 0],
                                  colormap(np.ones((1, 1)))[0, 0])  # clipped to the brightest


def test_legend_and_help_say_the_same(capsys):
    assert "bursty" in LEGEND_LOW and "down-weighted" in LEGEND_LOW and "distinctive" in LEGEND_HIGH
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("colour bar", "dark (black, purple) regions are bursty, repeated features that HeW down-weights",
                  "bright (orange, yellow) ones distinctive features it keeps", "--range"):
        assert words in text, text
