"""Label sets, palettes and the CelebAMask-HQ -> SOF conversion."""
from __future__ import annotations

import numpy as np
import pytest

from toolkit import labels as L


def test_sof20_order_matches_reference():
    assert L.SOF20.num_classes == 20
    assert L.SOF20.names[6] == "r_nose" and L.SOF20.names[7] == "l_nose"
    assert L.SOF20.names[13] == "ear_r" and L.SOF20.names[14] == "eye_g" and L.SOF20.names[19] == "hat"
    assert L.get_label_set("celebamask19").num_classes == 19
    assert L.get_label_set("sofgan17").num_classes == 17


@pytest.mark.parametrize("name", sorted(L.LABEL_SETS))
def test_palettes_have_one_distinct_colour_per_class(name):
    ls = L.get_label_set(name)
    assert ls.palette.shape == (ls.num_classes, 3) and ls.palette.dtype == np.uint8
    assert len({tuple(c) for c in ls.palette}) == ls.num_classes


def test_sofgan_grouping():
    ids = np.arange(20)
    grouped = L.sof_to_sofgan17(ids)
    names17 = L.get_label_set("sofgan17").names
    assert grouped[2] == grouped[3] == names17.index("brow")
    assert grouped[4] == grouped[5] == names17.index("eye")
    assert grouped[11] == grouped[12] == names17.index("ear")
    assert grouped[6] == 4 and grouped[7] == 5  # nose halves kept (SofGAN's 4 = r_nose, 5 = l_nose)
    assert grouped[19] == 16


def test_celebamask_conversion_splits_nose_and_maps_the_rest():
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[1:4, 2:6] = 2            # nose over columns 2..5: median column 3.5
    mask[0, 0], mask[0, 1], mask[5, 7] = 4, 13, 18  # l_eye, hair, cloth
    out = L.celebamask_to_sof(mask)
    assert (out[1:4, 2:4] == L.SOF20.index("r_nose")).all()
    assert (out[1:4, 4:6] == L.SOF20.index("l_nose")).all()
    assert out[0, 0] == L.SOF20.index("l_eye") and out[0, 1] == L.SOF20.index("hair")
    assert out[5, 7] == L.SOF20.index("cloth") and out[5, 0] == 0


def test_celebamask_every_non_nose_class_maps_by_name():
    for cid, name in enumerate(L.CELEBAMASK19_NAMES):
        if name == "nose":
            continue
        sof = L.celebamask_to_sof(np.full((2, 2), cid, dtype=np.uint8))
        assert (sof == L.SOF20.index(name)).all(), name


def test_bad_ids_are_rejected_with_the_range():
    with pytest.raises(ValueError, match="0..18"):
        L.celebamask_to_sof(np.full((2, 2), 19))
    with pytest.raises(ValueError, match="0..19"):
        L.colorize(np.array([20]))
    with pytest.raises(ValueError, match="valid"):
        L.get_label_set("ade20k")


def test_colorize_uses_palette():
    rgb = L.colorize(np.array([[0, 1], [18, 8]]))
    assert rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 1]) == (127, 212, 255) and tuple(rgb[1, 0]) == (212, 127, 255)


def test_label_statistics_of_a_known_map():
    from toolkit.labels import label_statistics

    a = np.zeros((10, 20), np.uint8)
    a[2:4, 5:9] = 1            # skin: 8 pixels, centroid (6.5, 2.5), box 4 x 2
    b = np.zeros((10, 10), np.uint8)
    stats = label_statistics([a, b])
    skin = stats["skin"]
    np.testing.assert_array_equal(skin["present"], [True, False])
    assert skin["area"][0] == pytest.approx(8 / 200) and np.isnan(skin["area"][1])
    assert (skin["cx"][0], skin["cy"][0]) == pytest.approx((6.5 / 20, 2.5 / 10))
    assert (skin["width"][0], skin["height"][0]) == pytest.approx((4 / 20, 2 / 10))
    assert stats["background"]["area"].tolist() == pytest.approx([192 / 200, 1.0])
