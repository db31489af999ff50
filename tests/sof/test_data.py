"""SOF data format: parity with the original's loader, pose/label alignment, validation, splits, rays, CelebAMask."""
from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from toolkit.cli import main as cli_main
from toolkit.geometry.cameras import (
    DEFAULT_TARGET,
    default_intrinsics,
    orbit_cameras,
    portrait_intrinsics,
    scale_intrinsics,
)
from toolkit.io import DataError, write_label_png, write_rgb_png
from toolkit.labels import CELEBAMASK19_NAMES, SOF20
from toolkit.sof.data import (
    SofDataset,
    Split,
    convert_celebamask,
    load_exclusions,
    make_split,
    read_dataset,
    resize_labels_nearest,
    save_exclusions,
    validate_dataset,
    write_instance,
    write_meta,
)

SIZE = 16


def _pattern(view: int, instance: int = 0, size: int = SIZE) -> np.ndarray:
    """(size, size) labels that identify the view: 7 is invertible mod 20, so views 0..19 differ everywhere."""
    rows, cols = np.mgrid[:size, :size]
    return ((rows * 3 + cols * 5 + 7 * view + 11 * instance) % 20).astype(np.uint8)


def _cameras(views: int, instance: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rigid poses and intrinsics per view (so a swapped view is detectable)."""
    cam2world = orbit_cameras(4.5, 0.1 * np.arange(views) - 0.2 + 0.01 * instance, 0.05 * np.arange(views))
    K = np.stack([np.array([[9.0 + v, 0, 8 + 0.25 * v], [0, 9.5 + v, 7.5 - 0.25 * v], [0, 0, 1]])
                  for v in range(views)])
    return cam2world, K


def _make_dataset(root: Path, names=("a", "b"), views: int = 3, *, meta: bool = True,
                  view_order: list[int] | None = None) -> Path:
    """Instances with pattern labels; ``view_order`` sets the order the views' files are written in."""
    order = list(range(views)) if view_order is None else view_order
    for name in names:
        i = ord(name[0]) - ord("a")
        cam2world, K = _cameras(views, i)
        labels = np.stack([_pattern(v, i) for v in order])
        write_instance(root / name, labels, cam2world[order], K[order], view_ids=order)
    if meta:
        write_meta(root, projection="ortho", image_size=SIZE)
    return root


@pytest.fixture
def good(tmp_path) -> Path:
    return _make_dataset(tmp_path / "good")


# ----------------------------------------------------------------------------------------------------
# Parity with the original's FaceClassDataset
# ----------------------------------------------------------------------------------------------------

@pytest.mark.fixtures
@pytest.mark.parametrize("size", [128, 16], ids=["s128", "s16"])
def test_legacy_parity(sof_fixtures, size):
    ref = np.load(sof_fixtures / "dataset_io.npz")
    ds = SofDataset(sof_fixtures / "legacy_data", image_size=size)
    assert ds.instance_names == ["00000"] and ds.num_instances == 1 and ds.projection == "ortho"
    assert len(ds) == 3
    for i in range(3):
        item = ds[i]
        assert item["view_id"].item() == ref[f"s{size}_observation_idx"][i]
        assert item["instance_idx"].item() == ref[f"s{size}_instance_idx"][i]
        np.testing.assert_array_equal(item["cam2world"].numpy(), ref[f"s{size}_pose"][i], strict=True)
        np.testing.assert_array_equal(item["intrinsics"].numpy(), ref[f"s{size}_intrinsics"][i], strict=True)
        np.testing.assert_array_equal(item["uv"].numpy(), ref[f"s{size}_uv"][i])  # float32 vs int64, as numbers
        assert item["uv"].dtype == torch.float32
        np.testing.assert_array_equal(item["labels"].numpy(), ref[f"s{size}_rgb"][i, :, 0])
        assert item["labels"].dtype == torch.int64
        np.testing.assert_array_equal(item["pixel_index"].numpy(), np.arange(size * size))


@pytest.mark.fixtures
def test_legacy_validates_clean(sof_fixtures):
    assert validate_dataset(sof_fixtures / "legacy_data") == []


def test_resize_nearest_closed_form():
    labels = np.arange(9).reshape(3, 3)
    # OpenCV INTER_NEAREST: floor(r * 3 / 2) = 0, 1.
    np.testing.assert_array_equal(resize_labels_nearest(labels, 2), [[0, 1], [3, 4]])
    # Pixel centres: floor((r + 0.5) * 3 / 2) = 0, 2.
    np.testing.assert_array_equal(resize_labels_nearest(labels, 2, pixel_center=0.5), [[0, 2], [6, 8]])
    small = _pattern(3, size=8)
    np.testing.assert_array_equal(resize_labels_nearest(small, 32), np.repeat(np.repeat(small, 4, 0), 4, 1))
    np.testing.assert_array_equal(resize_labels_nearest(small, (4, 2)), small[::2, ::4])


# ----------------------------------------------------------------------------------------------------
# Pose / label alignment (sof.md 7.1 bug 1)
# ----------------------------------------------------------------------------------------------------

def _assert_aligned(item, *, size=SIZE, instance=0, views=5):
    v = item["view_id"].item()
    cam2world, K = _cameras(views, instance)
    np.testing.assert_array_equal(item["labels"].numpy(), resize_labels_nearest(_pattern(v, instance), size).ravel())
    np.testing.assert_array_equal(item["cam2world"].numpy(), cam2world[v].astype(np.float32))
    np.testing.assert_array_equal(item["intrinsics"].numpy(),
                                  scale_intrinsics(K[v], size / SIZE, size / SIZE).astype(np.float32))


def test_alignment_with_exclusion_and_shuffled_files(tmp_path):
    root = _make_dataset(tmp_path / "d", names=("a",), views=5, view_order=[3, 0, 4, 1, 2])
    save_exclusions(root, {"a": [1]})
    assert load_exclusions(root) == {"a": [1]}
    ds = SofDataset(root, image_size=SIZE)
    assert [ds[i]["view_id"].item() for i in range(len(ds))] == [0, 2, 3, 4]
    for i in range(len(ds)):
        _assert_aligned(ds[i])


def test_alignment_when_served_in_another_order(tmp_path):
    root = _make_dataset(tmp_path / "d", names=("a",), views=5, view_order=[4, 2, 0, 3, 1])
    save_exclusions(root, {"a": [1]})
    with pytest.warns(UserWarning, match=r"1 split pair\(s\) are excluded"):
        ds = SofDataset(root, split=[("a", 4), ("a", 1), ("a", 0), ("a", 2)], image_size=8)
    assert [ds[i]["view_id"].item() for i in range(len(ds))] == [4, 0, 2]
    for i in range(len(ds)):
        _assert_aligned(ds[i], size=8)


@pytest.mark.fixtures
def test_original_shuffle_bug_is_fixed(sof_fixtures):
    ref = np.load(sof_fixtures / "dataset_io.npz")
    order = ref["shuffled_view_order"].tolist()  # [2, 1, 0]: the original's shuffled label order
    ds = SofDataset(sof_fixtures / "legacy_data", image_size=16, split=[("00000", v) for v in order])
    for i, v in enumerate(order):
        item = ds[i]
        np.testing.assert_array_equal(item["labels"].numpy(), ref["shuffled_s16_rgb"][i, :, 0])
        np.testing.assert_array_equal(item["cam2world"].numpy(), ref["s16_pose"][v])  # the pose OF this view
        np.testing.assert_array_equal(item["intrinsics"].numpy(), ref["s16_intrinsics"][v])
    # The original served the poses of positions 0, 2 with the labels of views 2, 0.
    assert not np.array_equal(ds[0]["cam2world"].numpy(), ref["shuffled_s16_pose"][0])


def test_intrinsics_broadcast_and_zrange(tmp_path):
    root = tmp_path / "d"
    cam2world, K = _cameras(3)
    write_instance(root / "a", np.stack([_pattern(v) for v in range(3)]), cam2world, K[0],
                   zrange=np.array([[1.0, 2.0], [1.5, 3.0], [2.0, 4.0]]))
    write_instance(root / "b", np.stack([_pattern(v) for v in range(3)]), cam2world, K[1])
    np.save(root / "b" / "intrinsic.npy", K[1][None])  # (1, 3, 3)
    data = read_dataset(root)
    np.testing.assert_array_equal(data.instances["a"].intrinsics, np.broadcast_to(K[0], (3, 3, 3)))
    np.testing.assert_array_equal(data.instances["b"].intrinsics, np.broadcast_to(K[1], (3, 3, 3)))
    np.testing.assert_array_equal(data.instances["a"].zrange[2], [2.0, 4.0])
    assert data.instances["b"].zrange is None
    assert data.meta.projection == "ortho" and not data.meta.from_file


def test_projection_and_pixel_center_from_meta(tmp_path, good):
    assert SofDataset(good).projection == "ortho"
    nometa = _make_dataset(tmp_path / "nometa", meta=False)
    assert SofDataset(nometa).projection == "ortho"
    assert SofDataset(nometa, projection="perspective").projection == "perspective"
    with pytest.raises(DataError, match="conflicts with the requested projection 'perspective'"):
        SofDataset(good, projection="perspective")
    write_meta(good, projection="perspective", image_size=SIZE, pixel_center=0.5)
    ds = SofDataset(good, image_size=8)
    assert ds.projection == "perspective"
    item = ds[0]
    np.testing.assert_array_equal(item["uv"][:3].numpy(), [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5]])
    _, K = _cameras(3)
    np.testing.assert_allclose(item["intrinsics"][0, 2].item(), (K[0, 0, 2] + 0.5) * 0.5 - 0.5)


# ----------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------

def _edit_npy(path: Path, fn) -> None:
    arr = np.load(path)
    np.save(path, fn(arr.copy()))


def _set(arr, index, value):
    arr[index] = value
    return arr


def _write_json(path: Path, obj) -> None:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))


def _scale_rotation(m):
    m[1, :3, :3] *= 2.0
    return m


def _reflect(m):
    m[0, :3, 0] *= -1.0
    return m


BROKEN = [
    # (id, mutation of the good dataset, file named by the problem (relative to the root), message pattern)
    ("missing_cam2world", lambda r: (r / "a/cam2world.npy").unlink(), "a/cam2world.npy", r"missing"),
    ("intrinsics_plural_name", lambda r: (r / "a/intrinsic.npy").rename(r / "a/intrinsics.npy"),
     "a/intrinsic.npy", r"missing.*found intrinsics\.npy"),
    ("no_label_maps", lambda r: [p.unlink() for p in (r / "b").glob("seg_*.png")], "b", r"no seg_XX\.png label maps"),
    ("vis_without_seg", lambda r: (r / "a/seg_01.png").unlink(), "a/seg_vis_01.png",
     r"without its label map seg_01\.png"),
    ("seg_without_vis", lambda r: (r / "a/seg_vis_01.png").unlink(), "a/seg_01.png", r"no seg_vis_01\.png"),
    ("unexpected_view_file", lambda r: shutil.copy(r / "a/seg_00.png", r / "a/00003.png"), "a/00003.png",
     r"unexpected file that looks like a view"),
    ("duplicate_view_id", lambda r: shutil.copy(r / "a/seg_01.png", r / "a/seg_1.png"), "a/seg_1.png",
     r"duplicate view id 1"),
    ("pose_rows_missing", lambda r: _edit_npy(r / "a/cam2world.npy", lambda m: m[:2]), "a/cam2world.npy",
     r"pose count mismatch: 2 rows, but view ids \[2\] have no row"),
    ("pose_rows_without_view", lambda r: [(r / f"b/{n}_02.png").unlink() for n in ("seg", "seg_vis")],
     "b/cam2world.npy", r"pose count mismatch: 3 rows, but no seg_XX\.png for view ids \[2\]"),
    ("pose_wrong_shape", lambda r: _edit_npy(r / "a/cam2world.npy", lambda m: m[:, :3, :]), "a/cam2world.npy",
     r"shape \(3, 3, 4\).*expected \(V, 4, 4\)"),
    ("pose_not_rigid", lambda r: _edit_npy(r / "a/cam2world.npy", _scale_rotation), "a/cam2world.npy",
     r"view 1: not a rigid cam2world transform: rotation is not orthonormal"),
    ("pose_nan", lambda r: _edit_npy(r / "b/cam2world.npy", lambda m: _set(m, (2, 0, 3), np.nan)),
     "b/cam2world.npy", r"view 2: .*NaN"),
    ("pose_reflection", lambda r: _edit_npy(r / "a/cam2world.npy", _reflect), "a/cam2world.npy",
     r"view 0: .*reflection"),
    ("pose_corrupt_npy", lambda r: (r / "b/cam2world.npy").write_bytes(b"not numpy"), "b/cam2world.npy",
     r"not a readable \.npy"),
    ("intrinsics_bad_shape", lambda r: np.save(r / "a/intrinsic.npy", np.ones((3, 4))), "a/intrinsic.npy",
     r"shape \(3, 4\)"),
    ("intrinsics_count", lambda r: _edit_npy(r / "a/intrinsic.npy", lambda k: k[:2]), "a/intrinsic.npy",
     r"2 matrices, but cam2world\.npy has 3"),
    ("intrinsics_negative_focal", lambda r: _edit_npy(r / "a/intrinsic.npy", lambda k: _set(k, (1, 0, 0), -5.0)),
     "a/intrinsic.npy", r"view 1: fx = -5\.0.*must be > 0"),
    ("intrinsics_nan", lambda r: _edit_npy(r / "b/intrinsic.npy", lambda k: _set(k, (0, 1, 2), np.nan)),
     "b/intrinsic.npy", r"view 0: .*NaN"),
    ("zrange_near_after_far", lambda r: np.save(r / "a/zRange.npy", np.array([[5.0, 1.0], [1, 2], [1, 2]])),
     "a/zRange.npy", r"views \[0\]: near/far"),
    ("label_out_of_range", lambda r: write_label_png(r / "a/seg_00.png", np.full((SIZE, SIZE), 25)),
     "a/seg_00.png", r"label ids \[25\] out of range"),
    ("corrupt_png", lambda r: (r / "b/seg_01.png").write_bytes(b"\x89PNG\r\n\x1a\n broken"), "b/seg_01.png",
     r"unreadable PNG"),
    ("rgb_label_map", lambda r: write_rgb_png(r / "a/seg_02.png", np.zeros((SIZE, SIZE, 3))), "a/seg_02.png",
     r"single-channel"),
    ("size_vs_meta", lambda r: write_label_png(r / "a/seg_02.png", _pattern(2, size=8)), "a/seg_02.png",
     r"image size 8x8 does not match meta\.json image_size 16"),
    ("size_within_instance", lambda r: ((r / "meta.json").unlink(),
                                        write_label_png(r / "a/seg_02.png", _pattern(2, size=8))),
     "a/seg_02.png", r"image size 8x8 differs from the other views of this instance \(16x16\)"),
    ("meta_not_json", lambda r: _write_json(r / "meta.json", "{projection: ortho"), "meta.json", r"not valid JSON"),
    ("meta_bad_values", lambda r: _write_json(r / "meta.json", {"projection": "fisheye", "image_size": -1}),
     "meta.json", r"projection 'fisheye'; valid"),
    ("exclusions_not_object", lambda r: _write_json(r / "excluded_views.json", [1, 2]), "excluded_views.json",
     r"expected a JSON object"),
    ("exclusions_bad_ids", lambda r: _write_json(r / "excluded_views.json", {"a": ["x"]}), "excluded_views.json",
     r"instance 'a': expected a list of non-negative integer view ids"),
    ("exclusions_unknown_view", lambda r: _write_json(r / "excluded_views.json", {"a": [7]}), "excluded_views.json",
     r"instance 'a': excluded view ids \[7\] have no seg_XX\.png"),
    ("exclusions_unknown_instance", lambda r: _write_json(r / "excluded_views.json", {"zz": [0]}),
     "excluded_views.json", r"'zz' is not an instance folder"),
    ("empty_dataset", lambda r: [shutil.rmtree(r / n) for n in ("a", "b")], "", r"empty dataset: no instance folders"),
]


@pytest.mark.parametrize("mutate, rel, pattern", [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_validator_names_file_and_problem(good, mutate, rel, pattern):
    assert validate_dataset(good) == []
    mutate(good)
    problems = validate_dataset(good)
    expected = good / rel if rel else good
    hits = [p for p in problems if Path(p.path) == expected and re.search(pattern, p.message)]
    assert hits, f"no problem for {rel!r} matching {pattern!r}; got {problems}"
    with pytest.raises(DataError, match=re.escape(str(hits[0]))):
        read_dataset(good)


def test_validator_missing_or_file_root(tmp_path):
    assert [p.message for p in validate_dataset(tmp_path / "nope")] == ["dataset folder not found"]
    (tmp_path / "f").write_text("x")
    assert "not a folder" in validate_dataset(tmp_path / "f")[0].message
    _make_dataset(tmp_path / "d")
    (problem,) = validate_dataset(tmp_path / "d" / "a")
    assert "single instance folder" in problem.message


def test_excluded_broken_view_is_not_a_problem(good):
    (good / "a/seg_02.png").write_bytes(b"corrupt")
    assert len(validate_dataset(good)) == 1
    save_exclusions(good, {"a": [2]})
    assert validate_dataset(good) == []
    assert [(n, v) for n, v in SofDataset(good).samples] == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2)]


def test_every_problem_listed_and_cli_exit_codes(good, capsys):
    assert cli_main(["validate", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    (good / "a/cam2world.npy").unlink()
    write_label_png(good / "b/seg_00.png", np.full((SIZE, SIZE), 21))
    _write_json(good / "excluded_views.json", {"b": [9]})
    problems = validate_dataset(good)
    assert {Path(p.path).relative_to(good).as_posix() for p in problems} == {
        "a/cam2world.npy", "b/seg_00.png", "excluded_views.json"}
    assert cli_main(["validate", str(good)]) == 1
    out = capsys.readouterr().out
    assert f"{len(problems)} problem(s)" in out
    for p in problems:
        assert str(p) in out
    with pytest.raises(DataError, match=r"3 problem\(s\)"):
        SofDataset(good)


# ----------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------

def test_split_is_deterministic_and_file_order_free(tmp_path):
    r1 = _make_dataset(tmp_path / "r1", names=("a", "b", "c"), views=6)
    r2 = tmp_path / "r2"
    _make_dataset(r2, names=("c",), views=6, view_order=[5, 3, 1, 0, 2, 4])  # other creation order
    _make_dataset(r2, names=("a", "b"), views=6, view_order=[2, 0, 5, 4, 1, 3])
    s1, s2 = make_split(r1, seed=4), make_split(r2, seed=4)
    assert s1 == s2 == make_split(r1, seed=4)
    assert s1.instances == ["a", "b", "c"]
    train, val = set(s1.train), set(s1.val)
    assert not train & val and train | val == {(n, v) for n in "abc" for v in range(6)}
    assert all(sum(n == m for n, _ in s1.val) == 2 for m in "abc")
    # Each instance's choice depends only on (seed, name): adding an instance changes nothing else.
    _make_dataset(r1, names=("d",), views=6)
    s3 = make_split(r1, seed=4)
    assert [p for p in s3.val if p[0] != "d"] == s1.val and s3.instances == ["a", "b", "c", "d"]
    assert len({tuple(make_split(r2, seed=s).val) for s in range(6)}) > 1


def test_split_held_out_instances_exclusions_and_round_trip(tmp_path):
    root = _make_dataset(tmp_path / "d", names=("a", "b", "c"), views=4)
    save_exclusions(root, {"a": [0, 3], "c": [1]})
    split = make_split(root, val_views_per_instance=1, val_instances=["b"], seed=1)
    assert split.held_out_instances == ["b"] and split.train_instances == ["a", "c"]
    assert {v for n, v in split.val if n == "b"} == {0, 1, 2, 3} and all(n != "b" for n, _ in split.train)
    used = set(split.train) | set(split.val)
    assert not used & {("a", 0), ("a", 3), ("c", 1)}
    assert used == {("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2), ("b", 3), ("c", 0), ("c", 2), ("c", 3)}
    loaded = Split.load(split.save(tmp_path / "run" / "split.json"))
    assert loaded == split and split.instance_index("c") == 2
    val = SofDataset.from_split(root, loaded, "val")
    assert len(val) == len(split.val)
    assert {(loaded.instances[it["instance_idx"].item()], it["view_id"].item()) for it in val} == set(split.val)


def test_split_errors(tmp_path):
    root = _make_dataset(tmp_path / "d", names=("a",), views=2)
    with pytest.raises(ValueError, match=r"val_instances \['zz'\] are not instances"):
        make_split(root, val_instances=["zz"])
    with pytest.warns(UserWarning, match="fewer were held out"):
        split = make_split(root, val_views_per_instance=3)
    assert len(split.train) == 1 and len(split.val) == 1  # one view always stays in training
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "sof-split", "instances": ["a"], "train": [["b", 0]], "val": []}))
    with pytest.raises(DataError, match=r"'train' names instances \['b'\]"):
        Split.load(bad)
    with pytest.raises(ValueError, match=r"'zz' is not an instance folder"):
        save_exclusions(root, {"zz": [0]})
    with pytest.raises(ValueError, match=r"view ids \[5\] have no seg_XX\.png"):
        save_exclusions(root, {"a": [5]})


# ----------------------------------------------------------------------------------------------------
# Random ray subsets
# ----------------------------------------------------------------------------------------------------

def test_ray_subsets(good):
    full = SofDataset(good, image_size=SIZE)
    ds = SofDataset(good, image_size=SIZE, num_rays=40, seed=3)
    item = ds[4]
    pix = item["pixel_index"]
    assert item["uv"].shape == (40, 2) and item["labels"].shape == (40,) and pix.shape == (40,)
    assert len(torch.unique(pix)) == 40 and bool((pix.diff() > 0).all())
    ref = full[4]
    torch.testing.assert_close(item["uv"], ref["uv"][pix])
    torch.testing.assert_close(item["labels"], ref["labels"][pix])
    torch.testing.assert_close(item["uv"], torch.stack([pix % SIZE, pix // SIZE], -1).float())
    torch.testing.assert_close(item["cam2world"], ref["cam2world"])
    # Reproducible: same (seed, epoch) -> same rays, also in a new dataset object; epochs and items differ.
    torch.testing.assert_close(ds[4]["pixel_index"], pix)
    torch.testing.assert_close(SofDataset(good, image_size=SIZE, num_rays=40, seed=3)[4]["pixel_index"], pix)
    assert not torch.equal(ds[3]["pixel_index"], pix)
    ds.set_epoch(1)
    assert not torch.equal(ds[4]["pixel_index"], pix)
    ds.set_epoch(0)
    torch.testing.assert_close(ds[4]["pixel_index"], pix)
    assert not torch.equal(SofDataset(good, image_size=SIZE, num_rays=40, seed=4)[4]["pixel_index"], pix)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["labels"].shape == (3, 40) and batch["instance_idx"].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match=r"num_rays must be in 1\.\.256"):
        SofDataset(good, image_size=SIZE, num_rays=257)


def test_balanced_rays_oversample_small_classes(tmp_path):
    """A view that is 97 % class 1 and 3 % class 2: uniform draws give class 2 about 3 % of the rays, the
    balanced draw (half uniform, half weight 1/sqrt(class pixels)) its expected 14.4 %; draws stay distinct,
    sorted and reproducible."""
    size = 32
    labels = np.ones((size, size), np.uint8)
    labels[:6, :5] = 2  # 30 of 1024 pixels
    write_instance(tmp_path / "a", labels[None], orbit_cameras(4.5, 0.0, 0.0)[None], default_intrinsics(size))
    write_meta(tmp_path, projection="ortho", image_size=size)
    small = {}
    for how in ("uniform", "balanced"):
        ds = SofDataset(tmp_path, image_size=size, num_rays=200, ray_sampling=how)
        fractions = []
        for epoch in range(40):
            ds.set_epoch(epoch)
            item = ds[0]
            pix = item["pixel_index"]
            assert len(torch.unique(pix)) == 200 and bool((pix.diff() > 0).all())
            fractions.append(float((item["labels"] == 2).float().mean()))
        small[how] = np.mean(fractions)
    w1, w2 = 994 / np.sqrt(994), 30 / np.sqrt(30)  # total balanced weight of each class
    expected = 0.5 * 30 / 1024 + 0.5 * w2 / (w1 + w2)
    assert abs(small["uniform"] - 30 / 1024) < 0.01, small
    assert abs(small["balanced"] - expected) < 0.02, (small, expected)
    ds = SofDataset(tmp_path, image_size=size, num_rays=200, ray_sampling="balanced")
    torch.testing.assert_close(ds[0]["pixel_index"], SofDataset(tmp_path, image_size=size, num_rays=200,
                                                                ray_sampling="balanced")[0]["pixel_index"])
    with pytest.raises(ValueError, match=r"unknown ray_sampling 'edges'; valid: \['uniform', 'balanced'\]"):
        SofDataset(tmp_path, image_size=size, num_rays=20, ray_sampling="edges")


# ----------------------------------------------------------------------------------------------------
# CelebAMask-HQ conversion
# ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def celeba(shared_data, tmp_path_factory):
    masks = shared_data / "celebamask_hq_masks"
    out = tmp_path_factory.mktemp("celeba")
    written = {s: convert_celebamask(masks, out / f"s{s}", size=s) for s in (512, 128)}
    return masks, out, written


@pytest.mark.realdata
def test_celebamask_classes_and_nose_split(celeba):
    masks, _, written = celeba
    assert [p.name for p in written[512]] == ["00000", "00001"]
    r_nose, l_nose = SOF20.index("r_nose"), SOF20.index("l_nose")
    for src_path, folder in zip(sorted(masks.glob("*.png")), written[512]):
        src = np.array(Image.open(src_path))
        sof = np.array(Image.open(folder / "seg_00.png"))
        assert sof.shape == src.shape
        for cid, name in enumerate(CELEBAMASK19_NAMES):
            if name == "nose":
                continue
            np.testing.assert_array_equal(sof == SOF20.index(name), src == cid, err_msg=name)
        nose = src == CELEBAMASK19_NAMES.index("nose")
        np.testing.assert_array_equal(np.isin(sof, [r_nose, l_nose]), nose)
        r_cols, l_cols = np.nonzero(sof == r_nose)[1], np.nonzero(sof == l_nose)[1]
        assert r_cols.size and l_cols.size and r_cols.size + l_cols.size == nose.sum()
        assert r_cols.max() < l_cols.min()  # person's right half = image left


@pytest.mark.realdata
def test_celebamask_dataset_validates_and_loads(celeba):
    _, out, written = celeba
    root = out / "s128"
    assert validate_dataset(root) == []
    meta = json.loads((root / "meta.json").read_text())
    assert meta["source"] == "celebamask" and meta["projection"] == "ortho" and meta["image_size"] == 128
    ds = SofDataset(root)
    assert len(ds) == 2 and ds.instance_names == ["00000", "00001"] and ds.projection == "ortho"
    for i in range(2):
        item = ds[i]
        full = np.array(Image.open(written[512][i] / "seg_00.png"))
        np.testing.assert_array_equal(item["labels"].numpy(), full[::4, ::4].ravel())  # floor(r·512/128) = 4r
        np.testing.assert_array_equal(item["cam2world"].numpy(), orbit_cameras(4.5, 0.0, 0.0).astype(np.float32))
        np.testing.assert_array_equal(item["intrinsics"].numpy(), portrait_intrinsics(128, "ortho").astype(np.float32))


@pytest.mark.realdata
def test_celebamask_perspective_and_cli(shared_data, tmp_path, capsys):
    masks = shared_data / "celebamask_hq_masks"
    (folder, _) = convert_celebamask(masks, tmp_path / "p", size=32, projection="perspective")
    cam = np.load(folder / "cam2world.npy")
    assert cam.shape == (1, 4, 4)
    np.testing.assert_allclose(np.linalg.norm(cam[0, :3, 3] - DEFAULT_TARGET), 9.5)
    assert SofDataset(tmp_path / "p", image_size=32).projection == "perspective"
    with pytest.raises(DataError, match=r"projection 'perspective' \(requested 'ortho'\)"):
        convert_celebamask(masks, tmp_path / "p", size=32)
    assert cli_main(["convert", "celebamask", str(masks), str(tmp_path / "c"), "--size", "16"]) == 0
    assert cli_main(["validate", str(tmp_path / "c")]) == 0
    assert np.array(Image.open(tmp_path / "c/00001/seg_00.png")).shape == (16, 16)


def _mask_dir(tmp_path: Path, kind: str) -> Path:
    d = tmp_path / "masks"
    if kind != "missing":
        d.mkdir()
    if kind == "rgb":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "0.png")
    elif kind == "ids":
        Image.fromarray(np.full((8, 8), 19, np.uint8)).save(d / "0.png")
    elif kind == "nonsquare":
        Image.fromarray(np.zeros((8, 6), np.uint8)).save(d / "0.png")
    return d


@pytest.mark.parametrize("kind, pattern", [
    ("missing", r"masks folder not found"), ("empty", r"no \.png masks found"), ("rgb", r"single-channel|mode RGB"),
    ("ids", r"ids \[19\] out of range"), ("nonsquare", r"expected a square mask"),
], ids=["missing_folder", "no_pngs", "wrong_mode", "ids_over_18", "not_square"])
def test_celebamask_errors(tmp_path, kind, pattern):
    with pytest.raises(DataError, match=pattern):
        convert_celebamask(_mask_dir(tmp_path, kind), tmp_path / "out")


def test_no_warnings_on_good_dataset(good):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = SofDataset(good, num_rays=10)
        _ = [ds[i] for i in range(len(ds))]


# ----------------------------------------------------------------------------------------------------
# Depth maps (optional depth supervision)
# ----------------------------------------------------------------------------------------------------

def _depth_dataset(root: Path) -> tuple[Path, np.ndarray]:
    """Two views whose depth is a closed-form ramp on the pattern's foreground (labels > 0)."""
    cam2world, K = _cameras(2)
    labels = np.stack([_pattern(v) for v in range(2)])
    rows, cols = np.mgrid[:SIZE, :SIZE]
    depth = np.stack([4.0 + 0.01 * rows + 0.02 * cols + 0.5 * v for v in range(2)])
    depth[labels == 0] = np.inf
    write_instance(root / "a", labels, cam2world, K, depth=depth)
    write_meta(root, projection="ortho", image_size=SIZE)
    return root, depth


def test_depth_round_trip_and_dataset_serves_it(tmp_path):
    root, depth = _depth_dataset(tmp_path / "d")
    inst = read_dataset(root).instances["a"]
    assert sorted(inst.depth_files) == [0, 1]
    near, far = inst.zrange[1]
    assert near < depth[1][np.isfinite(depth[1])].min() and far > depth[1][np.isfinite(depth[1])].max()
    back = inst.read_depth(1)
    fg = np.isfinite(depth[1])
    np.testing.assert_array_equal(np.isnan(back), ~fg)
    np.testing.assert_allclose(back[fg], depth[1][fg], atol=(far - near) / 65535)  # 16-bit quantisation

    ds = SofDataset(root, image_size=8, num_rays=20, with_depth=True)
    item = ds[1]
    expected = resize_labels_nearest(back, 8).reshape(-1)[item["pixel_index"].numpy()]
    np.testing.assert_array_equal(item["depth"].numpy(), expected)
    np.testing.assert_array_equal(np.isfinite(item["depth"].numpy()), item["labels"].numpy() > 0)
    assert "depth" not in SofDataset(root, image_size=8)[0]


def test_depth_errors_name_the_file(tmp_path, good):
    with pytest.raises(DataError, match=r"with_depth: 6 served view\(s\) have no depth_XX.png"):
        SofDataset(good, image_size=8, with_depth=True)
    root, _ = _depth_dataset(tmp_path / "d")
    (root / "a" / "zRange.npy").unlink()
    assert any("need zRange.npy" in p.message for p in validate_dataset(root))
    root, _ = _depth_dataset(tmp_path / "e")
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(root / "a" / "depth_01.png")
    with pytest.raises(DataError, match=r"depth_01.png.*expected a single-channel 8- or 16-bit depth map"):
        SofDataset(root, image_size=8, with_depth=True)[1]
